// This file holds one proxy's measurement at one size, in the order the
// parts run: cold starts (cold.go), changes (change.go), connections
// (conn.go), then the process's CPU and memory.

package main

import (
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
)

// measure runs one proxy at one size: cold starts, then changes and
// connections against the last cold-started process, and that process's
// CPU time and peak memory.
func (b *bench) measure(p proxyKind, size int) *result {
	r := &result{}
	pp := b.coldStarts(p, size, r)
	if pp == nil {
		return r
	}
	// Let startup syncs settle before changing anything; forget the
	// probes' unanswered connections.
	time.Sleep(2 * time.Second)
	flushConntrack()
	b.changes(p, size, r)
	flushConntrack()
	r.conn = b.connRate(b.vip)
	logf("%s at %d Services: %.0f conn/s (%d failed; %.0f/s without the failed attempts' time)", p.label, size, r.conn.rate, r.conn.errs, r.conn.clean)
	pid := pp.cmd.Process.Pid
	r.cpuTotal = host.CPUSeconds(pid)
	r.peakRSS = max(pp.peakRSS.Load(), host.StatusKB(pid, "VmHWM")*1024) // the proxy's own peak, which sampling may miss
	b.stopProxy()
	b.flush()
	return r
}

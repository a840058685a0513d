// This file holds one proxy's measurement at one size, in the order the
// parts run: cold starts (cold.go), changes (change.go), connections
// (conn.go), then the process's CPU and memory.

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/stats"
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
	if p.name == "sluice" && *heapProfF {
		r.heap = b.heapProfiles(size)
	}
	b.sample(p, size, r)
	b.stopProxy()
	b.flush()
	return r
}

// debugAddr is where Sluice serves its profiles (in the external namespace).
const debugAddr = "127.0.0.1:6060"

// heapProfiles saves Sluice's heap profile twice, after the measurements
// (taken after its peak was read): as of its last garbage collection, and
// after a forced one (what stays live). It returns the files' names.
func (b *bench) heapProfiles(size int) string {
	if b.res == nil {
		return ""
	}
	base := strings.TrimSuffix(b.res.Path, ".txt")
	var names []string
	for _, h := range []struct{ kind, query string }{{"last-gc", ""}, {"live", "?gc=1"}} {
		path := fmt.Sprintf("%s-heap-%d-r%d-%s.pb.gz", base, size, b.repeat, h.kind)
		if err := fetch("http://"+debugAddr+"/debug/pprof/heap"+h.query, path); err != nil {
			logf("heap profile: %v", err)
			continue
		}
		names = append(names, filepath.Base(path))
	}
	return strings.Join(names, ",")
}

func fetch(url, path string) error {
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sample writes one run's raw figures to the results file.
func (b *bench) sample(p proxyKind, size int, r *result) {
	if b.res == nil {
		return
	}
	for i, d := range r.cold {
		b.res.Sample("kind=cold proxy=%s size=%d repeat=%d start=%d ms=%.1f cpu_s=%.2f", p.name, size, b.repeat, i, stats.Millis(d), r.coldCPU[i])
	}
	for i, d := range r.changes {
		b.res.Sample("kind=change proxy=%s size=%d repeat=%d change=%d ms=%.1f", p.name, size, b.repeat, i, stats.Millis(d))
	}
	b.res.Sample("kind=run proxy=%s size=%d repeat=%d change_misses=%d conn_per_s=%.0f conn_clean_per_s=%.0f conn_failed=%d conn_mean_ms=%.3f cpu_total_s=%.2f peak_rss_mib=%.1f heap_profiles=%s",
		p.name, size, b.repeat, r.changeMiss, r.conn.rate, r.conn.clean, r.conn.errs, stats.Millis(stats.Mean(r.conn.lat)), r.cpuTotal, float64(r.peakRSS)/(1<<20), r.heap)
}

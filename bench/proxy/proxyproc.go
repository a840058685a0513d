// This file holds the proxy under test as a process: started, sampled for
// memory, stopped, and the namespace's ruleset and conntrack table cleared
// between runs.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// flush empties the external namespace's ruleset (only the proxies under
// test use it) and its connection tracking table.
func (b *bench) flush() {
	if err := host.Sh("nft", "flush", "ruleset"); err != nil {
		logf("warning: %v", err)
	}
	flushConntrack()
}

// flushConntrack empties the external namespace's connection tracking table
// (this process runs in it). Entries left by unanswered probes (SYN_SENT,
// not NATed, 120 s) would otherwise catch later connections that reuse a
// source port and send them, un-NATed, nowhere.
func flushConntrack() {
	if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		logf("warning: conntrack flush: %v", err)
	}
}

// proxyProc is one running proxy process.
type proxyProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	peakRSS atomic.Int64
	stopS   chan struct{}
	logPath string
}

func (b *bench) startProxy(p proxyKind, size, rep int) (*proxyProc, time.Time, error) {
	kc := b.c.AdminKubeconfigFabric()
	var argv []string
	switch p.name {
	case "sluice", "sluice-baseline":
		dir := binDir()
		if p.name == "sluice-baseline" {
			if *baseBinF == "" {
				return nil, time.Time{}, fmt.Errorf("sluice-baseline needs --baseline-bin-dir")
			}
			dir = *baseBinF
		}
		argv = []string{filepath.Join(dir, "sluice-agent"), "--services-only", "--node-name=node1", "--kubeconfig=" + kc}
		if p.name == "sluice" && *heapProfF {
			argv = append(argv, "--debug-bind-address="+debugAddr)
		}
	default:
		mode := strings.TrimPrefix(p.name, "kube-proxy-")
		mode, zero := strings.CutSuffix(mode, "-0")
		argv = []string{filepath.Join(kubebuild.BinDir(), "kube-proxy"), "--kubeconfig=" + kc, "--hostname-override=node1",
			"--proxy-mode=" + mode, "--cluster-cidr=" + lab.LabClusterCIDR,
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
			"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256", "--v=2"}
		if zero {
			argv = append(argv, "--min-sync-period=0")
		}
	}
	logPath := filepath.Join(*logDirF, fmt.Sprintf("%s-%d-r%d-%d.log", p.name, size, b.repeat, rep))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, time.Time{}, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, t0, err
	}
	pp := &proxyProc{cmd: cmd, done: make(chan struct{}), stopS: make(chan struct{}), logPath: logPath}
	go func() {
		cmd.Wait()
		lf.Close()
		close(pp.done)
	}()
	go pp.sampleRSS()
	b.running = pp
	return pp, t0, nil
}

// sampleRSS records the peak resident memory of the proxy and its children
// (nft, iptables-restore), summed, every 100 ms.
func (pp *proxyProc) sampleRSS() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if rss := host.TreeRSS(pp.cmd.Process.Pid); rss > pp.peakRSS.Load() {
			pp.peakRSS.Store(rss)
		}
		select {
		case <-pp.done:
			return
		case <-pp.stopS:
			return
		case <-t.C:
		}
	}
}

func (b *bench) stopProxy() {
	pp := b.running
	if pp == nil {
		return
	}
	b.running = nil
	close(pp.stopS)
	pp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pp.done:
	case <-time.After(15 * time.Second):
		pp.cmd.Process.Kill()
		<-pp.done
	}
}

// This file holds the benchmark's flags and constants, the proxies it
// knows, and the state and results the measurements share.

package main

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/pkg/lab"
)

const (
	innerEnv  = "SLUICE_BENCH_PROXY_INNER"
	namespace = "bench-proxy"
	managedBy = "bench.sluice.dev"
	sentinel  = "sentinel"
)

var (
	sizesF       = flag.String("sizes", "1000,10000,30000", "numbers of Services to measure at (each with --endpoints endpoints); 10 is always measured first as the baseline")
	endpointsF   = flag.Int("endpoints", 10, "endpoints per Service")
	repeatsF     = flag.Int("repeats", 3, "repeats of every proxy's measurement at each size, the proxies' order reversed every other repeat; medians and spreads are over repeats")
	bigRepeatsF  = flag.Int("big-repeats", 3, "repeats at sizes above 10000 (a kube-proxy nftables cold start there takes minutes); fewer than 3 is labelled in the report")
	heapProfF    = flag.Bool("heap-profiles", true, "fetch Sluice's heap profiles (sluice-agent --debug-bind-address) at the end of each of its runs into bench/results/ (not for sluice-baseline)")
	repsF        = flag.Int("reps", 3, "cold starts per proxy, size and repeat (the median is the repeat's figure)")
	bigRepsF     = flag.Int("big-reps", 1, "cold starts per proxy at sizes above 10000")
	changesF     = flag.Int("changes", 30, "EndpointSlice changes per proxy and size")
	changeGapF   = flag.Duration("change-gap", 1100*time.Millisecond, "pause between changes (longer than kube-proxy's default --min-sync-period, so each change is measured alone)")
	changeBudF   = flag.Duration("change-budget", 90*time.Second, "time limit for the changes of one proxy at one size")
	probeEveryF  = flag.Duration("probe-interval", 5*time.Millisecond, "pace of the probes that wait for a change to be live (the resolution of the change latency; faster probes take CPU from the proxy)")
	connSecsF    = flag.Duration("conn-time", 5*time.Second, "duration of each connection-rate run")
	connTimeoutF = flag.Duration("conn-timeout", 200*time.Millisecond, "timeout of one connection in the rate runs (a failed one counts against the rate)")
	workersF     = flag.Int("workers", 16, "parallel API clients creating the Services")
	proxiesF     = flag.String("proxies", "sluice,kube-proxy-nftables,kube-proxy-iptables", "proxies to measure; kube-proxy-nftables-0 is kube-proxy nftables with --min-sync-period=0")
	stateDirF    = flag.String("state-dir", "/tmp/sluice-bench-proxy", "the benchmark lab's state directory")
	apiPortF     = flag.Int("api-port", 0, "the lab's API port on the host (0: a free one)")
	binDirF      = flag.String("bin-dir", "", "directory with sluice-lab and sluice-agent (default: beside this program)")
	baseBinF     = flag.String("baseline-bin-dir", "", "directory with an earlier build's sluice-agent, measured as the proxy sluice-baseline (before/after a change, in one run)")
	logDirF      = flag.String("log-dir", "/tmp/sluice-bench-proxy-logs", "where each proxy run's stderr goes")
	keepLabF     = flag.Bool("keep-lab", false, "leave the lab running at the end")
	iptMaxF      = flag.Int("iptables-max", 3000, "measure kube-proxy iptables mode only up to this many Services (its cold start took minutes at 3000 on the 2-vCPU machine)")
	coldTimeout  = flag.Duration("cold-timeout", 10*time.Minute, "give up on one cold start after this long")
)

func binDir() string {
	if *binDirF != "" {
		return *binDirF
	}
	self, _ := os.Executable()
	return filepath.Dir(self)
}

type proxyKind struct {
	name, label string
}

var allProxies = map[string]proxyKind{
	"sluice":                {"sluice", "Sluice"},
	"sluice-baseline":       {"sluice-baseline", "Sluice (baseline build)"},
	"kube-proxy-nftables":   {"kube-proxy-nftables", "kube-proxy nftables"},
	"kube-proxy-iptables":   {"kube-proxy-iptables", "kube-proxy iptables"},
	"kube-proxy-nftables-0": {"kube-proxy-nftables-0", "kube-proxy nftables, --min-sync-period=0"},
}

// bench is the state of the measurements, inside the external namespace.
type bench struct {
	c        *lab.Config
	cs       kubernetes.Interface
	ctx      context.Context
	podIP    map[string]netip.Addr // pod name → IP
	vip      netip.AddrPort        // the sentinel's ClusterIP:80
	slice    *discoveryv1.EndpointSlice
	current  string // the pod the sentinel's slice points at, confirmed live
	pending  string // the pod it was pointed at but the proxy has not served yet
	services int    // filler Services created
	running  *proxyProc
	res      *results.File
	repeat   int // the repeat being measured (0-based)
}

// result is one proxy at one size in one repeat.
type result struct {
	cold       []time.Duration
	coldCPU    []float64 // CPU seconds at the moment the sentinel went live
	changes    []time.Duration
	changeMiss int
	conn       connStats
	cpuTotal   float64 // CPU seconds over the whole last process (cold start, changes, connections)
	peakRSS    int64   // bytes
	heap       string  // files of the heap profiles taken at the end, if any
	err        string
}

// Command scale measures Sluice past the size of this machine by simulation
// (issue 13): N Node objects without kubelets against the lab's real
// kube-apiserver and etcd, Sluice's real host-subnet controller
// (pkg/controller wired as cmd/sluice-controller wires it, in this process),
// and one agent's real overlay (pkg/agent/overlay, the shipped agent's code
// path) programming routes, FDB and neighbour entries in a throw-away network
// namespace of its own. Per size (1k, 2k, 5k nodes by default) it reports:
//
//   - allocation: Nodes created → every HostSubnet exists, with the
//     controller running (one growth step), and a cold controller with N
//     Nodes waiting → every HostSubnet exists (repeated);
//   - the agent: the first overlay sync with N remote subnets (cold), and
//     one node join and one leave: HostSubnet event → the route, neighbour
//     and FDB entry present / absent in the namespace, seen through netlink
//     notifications;
//   - watch fan-out: every simulated Node's address changes, the controller
//     updates every HostSubnet, and 50 agent-like watchers (HostSubnets and
//     the ClusterNetwork, one connection each) receive every change;
//
// and once, the planner's node limit for a /14 at hostSubnetLength 9 against
// what the allocator does (allocate until exhaustion), and, when asked, the
// controller at client-go's default rate limit (5 QPS), the binary's before
// --kube-api-qps.
//
// There is no peer anchor: the figures are compared with issue 13's targets
// only. Run as root: `make bench-scale`. The raw output goes to
// bench/results/scale-<UTC time>-<commit>.txt (bench/internal/results) as
// well as to the terminal; `make bench-doc SECTION=scale RESULTS=…` puts its
// report into docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/proc"
)

var (
	sizesF    = flag.String("sizes", "1000,2000,5000", "numbers of simulated nodes, ascending (the growth curve)")
	repeatsF  = flag.Int("repeats", 3, "repeats of each measurement per size")
	joinsF    = flag.Int("joins", 3, "node joins and leaves per agent run")
	watchersF = flag.Int("watchers", 50, "agent-like watchers in the fan-out measurement")
	shippedF  = flag.Int("shipped-nodes", 0, "nodes allocated by the controller at client-go's default rate limit (5 QPS, the binary's before --kube-api-qps); 0 skips")
	exhaustF  = flag.Bool("exhaust", true, "allocate a /14 at hostSubnetLength 9 until exhaustion and compare with the planner")
	stateDirF = flag.String("state-dir", "/tmp/sluice-bench-scale", "the benchmark lab's state directory")
	keepLabF  = flag.Bool("keep-lab", false, "leave the lab running at the end")
	skipF     = flag.String("skip", "", "measurements to leave out, comma-separated: cold (the cold-controller repeats), agent, fanout")
)

// The main goroutine keeps the main thread: netns.Do discards the threads it
// moves into namespaces.
func init() { runtime.LockOSThread() }

// out is stderr and the raw file (progress and raw samples); tab is stdout
// and the raw file (the report).
var out, tab io.Writer = os.Stderr, os.Stdout

func logf(format string, a ...any) {
	fmt.Fprintf(out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-scale: run as root (it runs a lab and makes a network namespace)")
		os.Exit(2)
	}
	sizes, err := parseSizes(*sizesF)
	if err != nil || *repeatsF < 1 || *joinsF < 1 || *watchersF < 1 {
		fmt.Fprintf(os.Stderr, "bench-scale: --sizes %q: want ascending numbers ≥ 2 (%v); --repeats, --joins, --watchers ≥ 1\n", *sizesF, err)
		os.Exit(2)
	}
	root, err := image.FindSource(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(2)
	}
	f, err := results.Open(root, "scale")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(1)
	}
	// Progress and raw samples to stderr and the file; the report is
	// collected and written between the file's report markers at the end.
	var report strings.Builder
	out, tab = f.Log, &report
	// The controller and informers in this process log through klog: their
	// errors go with the progress, their info lines (one per allocation)
	// nowhere.
	klog.SetLogger(logr.New(errorSink{}))
	rc := run(root, f.Commit, sizes)
	if rc == 0 {
		f.Report(report.String())
	} else if report.Len() > 0 {
		fmt.Fprintf(f.Log, "incomplete report (the run failed):\n%s", report.String())
	}
	f.Close()
	fmt.Fprintf(os.Stderr, "raw output: %s\n", f.Path)
	os.Exit(rc)
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if n < 2 || len(sizes) > 0 && n <= sizes[len(sizes)-1] {
			return nil, fmt.Errorf("%d", n)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// run brings the lab up, measures, and brings the lab down whatever
// happened (also on SIGINT/SIGTERM).
func run(root, rev string, sizes []int) int {
	l := labrun.Lab{Bin: filepath.Join(root, "bin", "sluice-lab"), StateDir: *stateDirF}
	port, err := labrun.FreePort()
	if err != nil {
		logf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	down := func() {
		if *keepLabF {
			logf("lab left running: %s --state-dir %s down", l.Bin, l.StateDir)
			return
		}
		logf("lab down")
		cmd := l.Command("down")
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Run()
	}
	logf("bench-scale at %s: lab up (%s, api port %d)", rev, l.StateDir, port)
	up := l.Command("up", "--nodes", "1", "--api-port", strconv.Itoa(port))
	up.Stdout, up.Stderr = out, out
	if err := up.Run(); err != nil {
		logf("lab up: %v", err)
		down()
		return 1
	}
	defer down()
	cfg, err := lab.LoadConfig(l.StateDir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	// The lab's own Sluice controllers would allocate the simulated nodes'
	// subnets, and its agent would program them into node1: the bench runs
	// its own controller and agent instead, and stops those. The
	// kube-controller-manager is stopped too: its node lifecycle controller
	// would mark thousands of kubelet-less nodes unreachable (two writes
	// each) in the middle of the measurements. etcd, the API server, the
	// scheduler and node1's kubelet keep running.
	for _, name := range []string{"sluice-controller-1", "sluice-controller-2", "sluice-agent-node1", "kube-controller-manager"} {
		if err := proc.Stop(cfg.PidFile(name), 10*time.Second); err != nil {
			logf("stop %s: %v", name, err)
			return 1
		}
	}
	b, err := newBench(ctx, cfg)
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer b.close()
	fmt.Fprintf(tab, "Machine: nproc %d, kernel %s, %s, %s. Run at %s, commit %s.\n",
		runtime.NumCPU(), host.Kernel(), runtime.Version(), memTotal(), time.Now().UTC().Format(time.RFC3339), rev)
	fmt.Fprintf(tab, "Command: `make bench-scale` (`bench-scale --sizes %s --repeats %d --joins %d --watchers %d --shipped-nodes %d --exhaust=%v --skip=%q`).\n\n",
		*sizesF, *repeatsF, *joinsF, *watchersF, *shippedF, *exhaustF, *skipF)
	if err := b.measure(ctx, sizes); err != nil {
		logf("measurements: %v", err)
		return 1
	}
	return 0
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return fmt.Sprintf("%.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "RAM unknown"
}

// errorSink is a logr sink that prints errors to out (but those of the
// bench stopping the controller) and drops info lines.
type errorSink struct {
	name   string
	values []any
}

func (errorSink) Init(logr.RuntimeInfo)    {}
func (errorSink) Enabled(int) bool         { return false }
func (errorSink) Info(int, string, ...any) {}
func (s errorSink) Error(err error, msg string, kv ...any) {
	if err != nil && (strings.Contains(err.Error(), "context canceled") || strings.Contains(err.Error(), "broadcaster already stopped")) ||
		strings.Contains(msg, "broadcaster already stopped") {
		return // the bench stopping the controller
	}
	logf("%s: %s: %v %v", s.name, msg, err, append(s.values, kv...))
}
func (s errorSink) WithValues(kv ...any) logr.LogSink {
	return errorSink{name: s.name, values: append(append([]any(nil), s.values...), kv...)}
}
func (s errorSink) WithName(n string) logr.LogSink {
	return errorSink{name: s.name + "/" + n, values: s.values}
}

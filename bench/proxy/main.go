// Command proxy measures Sluice's service proxy side by side with kube-proxy
// (the lab's pinned Kubernetes release) in its nftables and iptables modes,
// in one run, on one lab, against the same Services:
//
//   - cold programming: time from starting the proxy process until a new TCP
//     connection to a sentinel ClusterIP is answered by its pod, with N
//     Services × E endpoints loaded;
//   - change latency: time from just before one EndpointSlice update (the
//     sentinel's slice switched between two pods) until a new connection is
//     answered by the new pod (p50, p99);
//   - new connections per second and their latency to the sentinel
//     ClusterIP, at each size (10 Services is the baseline);
//   - the proxy's CPU seconds (its own and its reaped children's: nft,
//     iptables-restore) and peak memory.
//
// Every proxy is measured --repeats times at each size, the proxies' order
// reversed every other repeat; the report gives medians over repeats with
// their range, and ratios taken within each repeat. Raw samples, the log
// and the report go to bench/results/proxy-<time>-<commit>.txt (bench/docgen
// generates the doc's section from it); Sluice's heap profiles at the end of
// each of its runs go beside it.
//
// A dedicated lab with one node is brought up (and down at the end); its
// agent's service proxy is switched off (ClusterNetwork serviceProxy:
// External). Each proxy under test runs alone, as a process inside the lab's
// external network namespace, whose ruleset nothing else uses; the
// benchmark's probes run there too.
//
// It prints a Markdown report. Run as root, from the source tree:
// `make bench-proxy BENCH_ARGS="--sizes 10000,30000"`.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: the benchmark runs a lab (network namespaces)")
	}
	if os.Getenv(innerEnv) == "" {
		os.Exit(outer())
	}
	if err := inner(); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/proxy:", msg)
	os.Exit(1)
}

// rawLog, once open, gets every log line too.
var rawLog *results.File

func logf(format string, a ...any) {
	line := fmt.Sprintf("%s bench/proxy: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	if rawLog != nil {
		rawLog.Log.Write([]byte(line))
		return
	}
	os.Stderr.WriteString(line)
}

// repeatsAt is the number of repeats at size.
func repeatsAt(size int) int {
	if size > 10000 {
		return *bigRepeatsF
	}
	return *repeatsF
}

// resultsOrder is the proxies' order in repeat rep: as given in even
// repeats, reversed in odd ones, so that none always runs first.
func resultsOrder(rep int, proxies []proxyKind) []proxyKind { return results.Rotate(rep, proxies) }

func inner() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := lab.LoadConfig(*stateDirF)
	if err != nil {
		return err
	}
	cs, err := labrun.Client(c.AdminKubeconfigFabric(), 2000, 4000)
	if err != nil {
		return err
	}
	os.MkdirAll(*logDirF, 0o755)
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 10 {
			return fmt.Errorf("--sizes: %q", s)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(append([]int{10}, sizes...))
	var proxies []proxyKind
	for _, p := range strings.Split(*proxiesF, ",") {
		k, ok := allProxies[strings.TrimSpace(p)]
		if !ok {
			return fmt.Errorf("--proxies: unknown %q", p)
		}
		proxies = append(proxies, k)
	}
	if *repeatsF < 1 || *bigRepeatsF < 1 {
		return fmt.Errorf("--repeats %d, --big-repeats %d: want at least 1", *repeatsF, *bigRepeatsF)
	}
	root, err := image.FindSource(".")
	if err != nil {
		return err
	}
	res, err := results.Open(root, "proxy")
	if err != nil {
		return err
	}
	defer res.Close()
	rawLog = res
	b := &bench{c: c, cs: cs, ctx: ctx, podIP: map[string]netip.Addr{}, res: res}
	defer b.stopProxy()
	if err := b.setup(); err != nil {
		return err
	}
	measured := map[string]map[int][]*result{} // proxy → size → one per repeat
	direct := map[int][]connStats{}
	var done []int // sizes measured completely
	var stopped error
sizesLoop:
	for _, size := range sizes {
		if err := b.load(size); err != nil {
			stopped = err
			break
		}
		for rep := range repeatsAt(size) {
			b.repeat = rep
			b.flush()
			flushConntrack()
			d := b.connRate(netip.AddrPortFrom(b.podIP[b.current], 80))
			direct[size] = append(direct[size], d)
			logf("%d services, repeat %d: direct to the pod %.0f conn/s", size, rep, d.rate)
			res.Sample("kind=direct size=%d repeat=%d conn_per_s=%.0f conn_failed=%d conn_mean_ms=%.3f", size, rep, d.rate, d.errs, stats.Millis(stats.Mean(d.lat)))
			for _, p := range resultsOrder(rep, proxies) {
				if ctx.Err() != nil {
					stopped = ctx.Err()
					break sizesLoop
				}
				if p.name == "kube-proxy-iptables" && size > *iptMaxF {
					logf("%s at %d Services: skipped (--iptables-max %d)", p.label, size, *iptMaxF)
					continue
				}
				logf("%s at %d Services, repeat %d of %d", p.label, size, rep+1, repeatsAt(size))
				r := b.measure(p, size)
				if ctx.Err() != nil { // interrupted in the middle: not a result
					stopped = ctx.Err()
					break sizesLoop
				}
				if measured[p.name] == nil {
					measured[p.name] = map[int][]*result{}
				}
				measured[p.name][size] = append(measured[p.name][size], r)
			}
		}
		done = append(done, size)
	}
	// Interrupted or failed part-way: report what was measured in full.
	if len(done) > 0 {
		md := report(done, proxies, measured, direct)
		if stopped != nil {
			md += fmt.Sprintf("\n**Incomplete run**: stopped before finishing %s (%v).\n", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(sizes[len(done):])), ", "), "[]"), stopped)
		}
		res.Report(md)
		fmt.Fprintf(os.Stderr, "raw output: %s\n", res.Path)
	}
	return stopped
}

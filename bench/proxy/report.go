// This file holds the Markdown report: printed on stdout and kept between
// the results file's report markers, from which bench/docgen generates the
// section of docs/performance.md.

package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

const anchor = "kube-proxy-nftables"

func report(sizes []int, proxies []proxyKind, res map[string]map[int][]*result, direct map[int][]connStats) string {
	var w strings.Builder
	kube, _ := kubebuild.Versions()
	hostname, _ := os.Hostname()
	fmt.Fprintf(&w, "## Service proxy\n\nMachine: %s, %d CPUs (%s), kernel %s, %s. Run on %s.\n", hostname, runtime.NumCPU(), results.CPUModel(), host.Kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&w, "Command: `make bench-proxy` (runs `bin/bench-proxy %s`).\n\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&w, "Setup: one `sluice-lab` (1 node, Kubernetes %s) whose agent's proxy is off (ClusterNetwork `serviceProxy: External`). "+
		"Each proxy runs alone, as a process in the lab's external network namespace (ruleset flushed before each start), against the same API server and the same objects: "+
		"N Services without selector (port 80 → 8080), each with one EndpointSlice of %d ready endpoints at fake addresses, plus a sentinel Service whose slice points at a real test-server pod. "+
		"kube-proxy %s runs with its defaults (`--min-sync-period` 1 s) plus `--cluster-cidr` and conntrack sysctls left alone; Sluice is `sluice-agent --services-only`. "+
		"Every proxy is measured %d times at each size (repeats), the proxies' order reversed every other repeat; a cell is the median over repeats with the range in brackets, \"median (min–max)\"; "+
		"a ratio is taken within each repeat (both proxies measured minutes apart on the same lab), then its median and range.\n\n", kube, *endpointsF, kube, *repeatsF)
	for _, size := range sizes {
		if n := repeatsAt(size); n < 3 {
			fmt.Fprintf(&w, "**At %d Services: %d repeat(s) only** (`--big-repeats %d`): its figures are from %s, not medians; its ratios are still against kube-proxy in the same run.\n\n", size, n, n, map[bool]string{true: "one run", false: fmt.Sprintf("%d runs", n)}[n == 1])
		}
	}

	label := func(name string) string { return allProxies[name].label }
	has := func(name string) bool { return res[name] != nil }
	// per collects f over the repeats of proxy name at size that have it.
	per := func(name string, size int, f func(r *result) (float64, bool)) []float64 {
		var out []float64
		for _, r := range res[name][size] {
			if v, ok := f(r); ok {
				out = append(out, v)
			}
		}
		return out
	}
	// ratio collects f(a)/f(b) within each repeat that has both.
	ratio := func(a, b string, size int, f func(r *result) (float64, bool)) []float64 {
		var out []float64
		ra, rb := res[a][size], res[b][size]
		for i := range min(len(ra), len(rb)) {
			x, ok1 := f(ra[i])
			y, ok2 := f(rb[i])
			if ok1 && ok2 && y > 0 {
				out = append(out, x/y)
			}
		}
		return out
	}
	cell := func(format string, v []float64) string {
		if len(v) == 0 {
			return "–"
		}
		return results.Spread(format, v)
	}
	cold := func(r *result) (float64, bool) {
		if len(r.cold) == 0 {
			return 0, false
		}
		return stats.NearestRank(r.cold, 50).Seconds(), true
	}
	rss := func(r *result) (float64, bool) { return float64(r.peakRSS) / (1 << 20), r.peakRSS > 0 }
	q := func(p int) func(r *result) (float64, bool) {
		return func(r *result) (float64, bool) {
			if len(r.changes) == 0 {
				return 0, false
			}
			return stats.Millis(stats.NearestRank(r.changes, p)), true
		}
	}
	var ratioCols []string
	if has("sluice") {
		for _, k := range []string{anchor, "kube-proxy-iptables", "sluice-baseline"} {
			if has(k) {
				ratioCols = append(ratioCols, k)
			}
		}
	}
	header := func(first string, extra ...string) {
		fmt.Fprintf(&w, "| %s |", first)
		for _, p := range proxies {
			fmt.Fprintf(&w, " %s |", p.label)
		}
		for _, e := range extra {
			fmt.Fprintf(&w, " %s |", e)
		}
		fmt.Fprint(&w, "\n|---|"+strings.Repeat("---|", len(proxies)+len(extra))+"\n")
	}

	fmt.Fprintf(&w, "### Cold programming (s, start of the process → sentinel ClusterIP answers; per repeat the median of %d starts, %d above 10k)\n\n", *repsF, *bigRepsF)
	var coldRatios []string
	for _, k := range ratioCols {
		coldRatios = append(coldRatios, label(k)+" / Sluice")
	}
	header("Services", coldRatios...)
	for _, size := range sizes {
		fmt.Fprintf(&w, "| %d |", size)
		for _, p := range proxies {
			fmt.Fprintf(&w, " %s |", orFailed(cell("%.2f", per(p.name, size, cold)), res[p.name][size]))
		}
		for _, k := range ratioCols {
			fmt.Fprintf(&w, " **%s** |", cell("%.1f", ratio(k, "sluice", size, cold)))
		}
		fmt.Fprintln(&w)
	}

	fmt.Fprintf(&w, "\n### One EndpointSlice change → live (ms, p50 / p99 of each repeat's changes; changes %v apart, each confirmed by two answers in a row from probes %v apart)\n\n", *changeGapF, *probeEveryF)
	header("Services")
	for _, size := range sizes {
		fmt.Fprintf(&w, "| %d |", size)
		for _, p := range proxies {
			rs := res[p.name][size]
			n, miss := 0, 0
			for _, r := range rs {
				n, miss = n+len(r.changes), miss+r.changeMiss
			}
			if n == 0 {
				if miss > 0 {
					fmt.Fprintf(&w, " none live in 30 s (%d tried) |", miss)
				} else {
					fmt.Fprintf(&w, " %s |", orFailed("–", rs))
				}
				continue
			}
			extra := ""
			if miss > 0 {
				extra = fmt.Sprintf(", %d not live in 30 s", miss)
			}
			fmt.Fprintf(&w, " %s / %s (n %d%s) |", cell("%.1f", per(p.name, size, q(50))), cell("%.1f", per(p.name, size, q(99))), n, extra)
		}
		fmt.Fprintln(&w)
	}
	fmt.Fprintf(&w, "\np99 is the nearest-rank one of each repeat's samples (%s).\n", rankNote(*changesF))

	fmt.Fprintf(&w, "\n### New connections to the sentinel ClusterIP (one client in the external namespace, sequential connect + reply line + reset, %v per cell, %v timeout)\n\n", *connSecsF, *connTimeoutF)
	fmt.Fprint(&w, "conn/s: answered connections per second of wall time. Latency: connect + reply, answered connections. Failed: summed over repeats.\n\n")
	fmt.Fprint(&w, "| Services | proxy | conn/s | failed | mean ms | conn/s vs its rate at 10 Services |\n|---|---|---|---|---|---|\n")
	rate := func(r *result) (float64, bool) { return r.conn.rate, r.conn.rate > 0 }
	meanLat := func(r *result) (float64, bool) { return stats.Millis(stats.Mean(r.conn.lat)), len(r.conn.lat) > 0 }
	for _, size := range sizes {
		var dr, dl []float64
		derr := 0
		for _, d := range direct[size] {
			dr, dl, derr = append(dr, d.rate), append(dl, stats.Millis(stats.Mean(d.lat))), derr+d.errs
		}
		fmt.Fprintf(&w, "| %d | none: direct to the pod IP | %s | %d | %s | – |\n", size, cell("%.0f", dr), derr, cell("%.3f", dl))
		for _, p := range proxies {
			rs := res[p.name][size]
			errs := 0
			for _, r := range rs {
				errs += r.conn.errs
			}
			var vs10 []float64
			for i, r := range rs {
				if base := res[p.name][10]; i < len(base) && base[i].conn.rate > 0 {
					vs10 = append(vs10, r.conn.rate/base[i].conn.rate)
				}
			}
			fmt.Fprintf(&w, "| %d | %s | %s | %d | %s | %s |\n", size, p.label, orFailed(cell("%.0f", per(p.name, size, rate)), rs), errs,
				cell("%.3f", per(p.name, size, meanLat)), cell("%.2f", vs10))
		}
	}

	fmt.Fprint(&w, "\n### CPU and memory of the proxy process (its own and its reaped children's — nft, iptables-restore)\n\n")
	fmt.Fprint(&w, "CPU to program: per repeat the median over its cold starts. Whole run: the last cold start, the changes and the connection runs, until SIGTERM. "+
		"Peak RSS: the process and its children, summed, sampled every 100 ms, or the process's own VmHWM if higher, over the repeat's last process.\n\n")
	fmt.Fprint(&w, "| Services | proxy | CPU s to program | CPU s, whole run | peak RSS MiB |")
	rssCols := []string{}
	if has("sluice") {
		for _, k := range []string{anchor, "sluice-baseline"} {
			if has(k) {
				rssCols = append(rssCols, k)
				fmt.Fprintf(&w, " peak RSS, Sluice / %s |", label(k))
			}
		}
	}
	fmt.Fprint(&w, "\n|---|---|---|---|---|"+strings.Repeat("---|", len(rssCols))+"\n")
	coldCPU := func(r *result) (float64, bool) {
		if len(r.coldCPU) == 0 {
			return 0, false
		}
		return stats.Median(r.coldCPU), true
	}
	cpuAll := func(r *result) (float64, bool) { return r.cpuTotal, len(r.cold) > 0 }
	for _, size := range sizes {
		for _, p := range proxies {
			if len(per(p.name, size, cold)) == 0 {
				continue
			}
			fmt.Fprintf(&w, "| %d | %s | %s | %s | %s |", size, p.label, cell("%.2f", per(p.name, size, coldCPU)), cell("%.2f", per(p.name, size, cpuAll)), cell("%.0f", per(p.name, size, rss)))
			for _, k := range rssCols {
				if p.name == "sluice" {
					fmt.Fprintf(&w, " **%s** |", cell("%.2f", ratio("sluice", k, size, rss)))
				} else {
					fmt.Fprint(&w, " |")
				}
			}
			fmt.Fprintln(&w)
		}
	}
	for _, p := range proxies {
		for _, size := range sizes {
			for i, r := range res[p.name][size] {
				if r.heap != "" {
					fmt.Fprintf(&w, "\nHeap profiles of %s at %d Services, repeat %d (bench/results/): %s.", p.label, size, i, strings.ReplaceAll(r.heap, ",", ", "))
				}
			}
		}
	}
	fmt.Fprintln(&w)

	// Issue 13's targets, where this run has the figures.
	fmt.Fprint(&w, "\n### Against the targets (issue 13)\n\n")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	for _, size := range sizes {
		if size == 10000 {
			if v := per("sluice", size, cold); len(v) > 0 {
				med := stats.Median(v)
				fmt.Fprintf(&w, "- Cold programming at 10k ≤ 1.0 s: %s s (%s).\n", cell("%.2f", v), verdict(med <= 1.0))
			}
			if v := ratio(anchor, "sluice", size, cold); len(v) > 0 {
				fmt.Fprintf(&w, "- Cold at 10k ≥ 30× faster than kube-proxy nftables: %s× (%s).\n", cell("%.1f", v), verdict(stats.Median(v) >= 30))
			}
			if v := per("sluice", size, rss); len(v) > 0 {
				fmt.Fprintf(&w, "- Peak RSS at 10k ≤ 150 MiB: %s MiB (%s).\n", cell("%.0f", v), verdict(stats.Median(v) <= 150))
			}
		}
		if size == 30000 {
			if v := ratio("sluice", anchor, size, rss); len(v) > 0 {
				fmt.Fprintf(&w, "- Peak RSS at 30k ≤ 0.5× kube-proxy nftables': %s× (%s).\n", cell("%.2f", v), verdict(stats.Median(v) <= 0.5))
			}
			if v := per("sluice", size, q(99)); len(v) > 0 {
				fmt.Fprintf(&w, "- One change live at 30k, p99 ≤ 15 ms: %s ms (%s; end to end through this lab's probes).\n", cell("%.1f", v), verdict(stats.Median(v) <= 15))
			}
		}
	}
	for _, p := range proxies {
		for _, size := range sizes {
			for i, r := range res[p.name][size] {
				if r.err != "" {
					fmt.Fprintf(&w, "\n%s at %d Services, repeat %d: %s\n", p.label, size, i, r.err)
				}
			}
		}
	}
	return w.String()
}

// orFailed is s, or why a cell has no figure.
func orFailed(s string, rs []*result) string {
	if s != "–" {
		return s
	}
	if len(rs) == 0 {
		return "skipped"
	}
	for _, r := range rs {
		if r.err != "" {
			return "failed"
		}
	}
	return "–"
}

// rankNote says which sample the nearest-rank p99 of n samples is.
func rankNote(n int) string {
	if n < 100 {
		return fmt.Sprintf("with up to %d samples per repeat, the largest", n)
	}
	return fmt.Sprintf("the %d-th smallest of %d", (99*n+99)/100, n)
}

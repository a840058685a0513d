// This file holds the Markdown report printed on stdout at the end.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

func nproc() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return strconv.Itoa(runtime.NumCPU())
	}
	return strings.TrimSpace(string(out))
}

func report(sizes []int, proxies []proxyKind, res map[string]map[int]*result, direct map[int]connStats) {
	kube, _ := kubebuild.Versions()
	hostname, _ := os.Hostname()
	fmt.Printf("## Service proxy\n\nMachine: %s, nproc %s, kernel %s, %s. Run on %s.\n", hostname, nproc(), host.Kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("Command: `make bench-proxy` (runs `bin/bench-proxy %s`).\n\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("Setup: one `sluice-lab` (1 node, Kubernetes %s) whose agent's proxy is off (ClusterNetwork `serviceProxy: External`). "+
		"Each proxy runs alone, as a process in the lab's external network namespace (ruleset flushed before each start), against the same API server and the same objects: "+
		"N Services without selector (port 80 → 8080), each with one EndpointSlice of %d ready endpoints at fake addresses, plus a sentinel Service whose slice points at a real test-server pod. "+
		"kube-proxy %s runs with its defaults (`--min-sync-period` 1 s) plus `--cluster-cidr` and conntrack sysctls left alone; Sluice is `sluice-agent --services-only`. "+
		"Figures are from one run; ratios are against kube-proxy in the same run.\n\n", kube, *endpointsF, kube)

	label := func(name string) string { return allProxies[name].label }
	has := func(name string) bool { return res[name] != nil }
	medCold := func(name string, size int) (time.Duration, bool) {
		r := res[name][size]
		if r == nil || len(r.cold) == 0 {
			return 0, false
		}
		return stats.NearestRank(r.cold, 50), true
	}

	fmt.Printf("### Cold programming (s, start of the process → sentinel ClusterIP answers; median of %d, %d above 10k)\n\n", *repsF, *bigRepsF)
	fmt.Print("| Services |")
	for _, p := range proxies {
		fmt.Printf(" %s |", p.label)
	}
	ratioCols := []string{}
	if has("sluice") {
		for _, k := range []string{"kube-proxy-nftables", "kube-proxy-iptables"} {
			if has(k) {
				ratioCols = append(ratioCols, k)
				fmt.Printf(" %s / Sluice |", label(k))
			}
		}
	}
	fmt.Print("\n|---|" + strings.Repeat("---|", len(proxies)+len(ratioCols)) + "\n")
	for _, size := range sizes {
		fmt.Printf("| %d |", size)
		for _, p := range proxies {
			if d, ok := medCold(p.name, size); ok {
				fmt.Printf(" %.2f |", d.Seconds())
			} else {
				fmt.Printf(" %s |", failed(res[p.name][size]))
			}
		}
		s, sok := medCold("sluice", size)
		for _, k := range ratioCols {
			if d, ok := medCold(k, size); ok && sok {
				fmt.Printf(" **%.2f** |", d.Seconds()/s.Seconds())
			} else {
				fmt.Print(" – |")
			}
		}
		fmt.Println()
	}
	if s, ok := medCold("sluice", 10000); ok {
		if k, ok := medCold("kube-proxy-nftables", 10000); ok {
			verdict := "met"
			if k.Seconds()/s.Seconds() < 5 {
				verdict = "**missed**"
			}
			fmt.Printf("\nTarget: at 10k Services Sluice ≥ 5× faster than kube-proxy nftables: **%.2f×** (%s).\n", k.Seconds()/s.Seconds(), verdict)
		}
	}

	fmt.Printf("\n### One EndpointSlice change → live (ms, p50 / p99; changes %v apart, each confirmed by two answers in a row from probes %v apart; n per cell in brackets)\n\n", *changeGapF, *probeEveryF)
	fmt.Print("| Services |")
	for _, p := range proxies {
		fmt.Printf(" %s |", p.label)
	}
	fmt.Print("\n|---|" + strings.Repeat("---|", len(proxies)) + "\n")
	for _, size := range sizes {
		fmt.Printf("| %d |", size)
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || len(r.changes) == 0 {
				fmt.Printf(" %s |", failed(r))
				continue
			}
			miss := ""
			if r.changeMiss > 0 {
				miss = fmt.Sprintf(", %d not live in 30 s", r.changeMiss)
			}
			fmt.Printf(" %.1f / %.1f (%d%s) |", stats.Millis(stats.NearestRank(r.changes, 50)), stats.Millis(stats.NearestRank(r.changes, 99)), len(r.changes), miss)
		}
		fmt.Println()
	}
	largest := sizes[len(sizes)-1]
	if r := res["sluice"][largest]; r != nil && len(r.changes) > 0 {
		verdict := "met"
		if stats.NearestRank(r.changes, 99) >= 50*time.Millisecond {
			verdict = "**missed**"
		}
		fmt.Printf("\nTarget: a change live in < 50 ms p99 at %d Services (Sluice): **%.1f ms** (%s; p99 is the nearest-rank one: with %d samples, %s).\n",
			largest, stats.Millis(stats.NearestRank(r.changes, 99)), verdict, len(r.changes), rankNote(len(r.changes)))
	}

	fmt.Printf("\n### New connections to the sentinel ClusterIP (one client in the external namespace, sequential connect + reply line + reset, %v per cell, %v timeout)\n\n", *connSecsF, *connTimeoutF)
	fmt.Print("conn/s: answered connections per second of wall time; in brackets, not counting the time spent in failed attempts (failed ones time out or are refused; see below). Latency: connect + reply, answered connections.\n\n")
	fmt.Print("| Services | proxy | conn/s | failed | mean / p99 ms | added mean ms vs direct | conn/s vs 10 Services |\n|---|---|---|---|---|---|---|\n")
	for _, size := range sizes {
		d := direct[size]
		fmt.Printf("| %d | none: direct to the pod IP | %.0f (%.0f) | %d | %.3f / %.3f | – | – |\n", size, d.rate, d.clean, d.errs, stats.Millis(stats.Mean(d.lat)), stats.Millis(stats.NearestRank(d.lat, 99)))
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || r.conn.rate == 0 {
				fmt.Printf("| %d | %s | %s | | | | |\n", size, p.label, failed(r))
				continue
			}
			ratio := "–"
			if base := res[p.name][10]; base != nil && base.conn.rate > 0 {
				ratio = fmt.Sprintf("**%.2f** (%.2f)", r.conn.rate/base.conn.rate, r.conn.clean/base.conn.clean)
			}
			fmt.Printf("| %d | %s | %.0f (%.0f) | %d | %.3f / %.3f | %.3f | %s |\n", size, p.label, r.conn.rate, r.conn.clean, r.conn.errs,
				stats.Millis(stats.Mean(r.conn.lat)), stats.Millis(stats.NearestRank(r.conn.lat, 99)), stats.Millis(stats.Mean(r.conn.lat)-stats.Mean(d.lat)), ratio)
		}
	}
	if r, base := res["sluice"][largest], res["sluice"][10]; r != nil && base != nil && base.conn.rate > 0 {
		q := r.conn.rate / base.conn.rate
		verdict := "met"
		if q < 0.95 {
			verdict = "**missed**"
		}
		fmt.Printf("\nTarget: Sluice's connection rate at %d Services ≥ 0.95 of its rate at 10: **%.2f** (%s); not counting failed attempts' time: %.2f.\n",
			largest, q, verdict, r.conn.clean/base.conn.clean)
	}

	fmt.Print("\n### CPU and memory of the proxy process (CPU: its own and its reaped children's — nft, iptables-restore)\n\n")
	fmt.Print("| Services | proxy | CPU s to program (median) | CPU s, whole run of the last process | peak RSS MiB (process + children, sampled) |\n|---|---|---|---|---|\n")
	for _, size := range sizes {
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || len(r.cold) == 0 {
				continue
			}
			fmt.Printf("| %d | %s | %.2f | %.2f | %.0f |\n", size, p.label, stats.Median(r.coldCPU), r.cpuTotal, float64(r.peakRSS)/(1<<20))
		}
	}
	fmt.Println("\n\"Whole run of the last process\": the last cold start, the changes and the connection runs, until SIGTERM.")
	for _, p := range proxies {
		for _, size := range sizes {
			if r := res[p.name][size]; r != nil && r.err != "" {
				fmt.Printf("\n%s at %d Services: %s\n", p.label, size, r.err)
			}
		}
	}
}

func failed(r *result) string {
	if r == nil {
		return "skipped"
	}
	if r.err != "" {
		return "failed"
	}
	return "–"
}

// rankNote says which sample the nearest-rank p99 of n samples is.
func rankNote(n int) string {
	if n < 100 {
		return "the largest"
	}
	return fmt.Sprintf("the %d-th smallest of %d", (99*n+99)/100, n)
}

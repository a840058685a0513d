// This file runs the measurements in order and prints the report.

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/controller/apiclient"
)

type sizeResult struct {
	n          int
	created    time.Duration   // the growth step's Node creates (controller running)
	createdN   int             // how many Nodes that step created
	streaming  time.Duration   // first create of the step → every HostSubnet
	cold       []time.Duration // controller start → every HostSubnet, N Nodes waiting
	agents     []agentResult
	fanouts    []fanoutResult
	subnetsTot int // HostSubnets at this size (the simulated nodes and the lab's node1)
}

func (b *bench) measure(ctx context.Context, sizes []int) error {
	var ex *exhaustResult
	if *exhaustF {
		r, err := b.exhaust(ctx)
		if err != nil {
			return fmt.Errorf("exhaustion: %w", err)
		}
		ex = &r
		logf("exhaustion: %d nodes, %d HostSubnets (planner %d) in %v; without: %v; event %q; condition %q",
			r.nodes, r.allocated, r.planner, r.took.Round(time.Millisecond), r.without, r.event, r.condition)
	}
	if err := b.setNetwork(ctx, growthNetwork); err != nil {
		return err
	}
	var shippedTook time.Duration
	var shippedN int
	if *shippedF > 0 {
		var err error
		if shippedTook, err = b.shipped(ctx, *shippedF); err != nil {
			return fmt.Errorf("shipped rate limit: %w", err)
		}
		shippedN = *shippedF
		logf("controller at client-go's default rate limit: %d nodes (+ node1) in %v", shippedN, shippedTook.Round(time.Millisecond))
	}
	base, err := b.nodeCount(ctx) // the lab's own node(s)
	if err != nil {
		return err
	}
	var results []sizeResult
	gen := 0
	for _, n := range sizes {
		r := sizeResult{n: n, subnetsTot: n + base}
		// Growth step: the controller running, the missing Nodes created.
		if err := b.startController(ctx, false); err != nil {
			return err
		}
		if _, err := b.obs.waitAll(ctx, b.sims+base, 10*time.Minute); err != nil {
			return fmt.Errorf("before growing to %d: %w", n, err)
		}
		start := time.Now()
		if err := b.createNodes(ctx, "sim", blockSim, b.sims, n, simName); err != nil {
			return err
		}
		r.created, r.createdN = time.Since(start), n-b.sims
		b.sims = n
		last, err := b.obs.waitAll(ctx, r.subnetsTot, 30*time.Minute)
		if err != nil {
			return fmt.Errorf("growing to %d: %w", n, err)
		}
		r.streaming = last.Sub(start)
		if d := b.obs.duplicates(); d != "" {
			return fmt.Errorf("growing to %d: a subnet handed out twice: %s", n, d)
		}
		logf("size %d: %d Nodes created in %v, every HostSubnet %v after the first create",
			n, r.createdN, r.created.Round(time.Millisecond), r.streaming.Round(time.Millisecond))
		// Cold controller, N Nodes waiting.
		for k := range repeats("cold") {
			if err := b.stopController(); err != nil {
				return err
			}
			if err := b.clearSubnets(ctx); err != nil {
				return err
			}
			t := time.Now()
			if err := b.startController(ctx, false); err != nil {
				return err
			}
			last, err := b.obs.waitAll(ctx, r.subnetsTot, 30*time.Minute)
			if err != nil {
				return fmt.Errorf("size %d, cold controller %d: %w", n, k+1, err)
			}
			r.cold = append(r.cold, last.Sub(t))
			if d := b.obs.duplicates(); d != "" {
				return fmt.Errorf("size %d, cold controller %d: a subnet handed out twice: %s", n, k+1, d)
			}
			logf("size %d: cold controller %d/%d: %d HostSubnets in %v", n, k+1, *repeatsF, r.subnetsTot, last.Sub(t).Round(time.Millisecond))
		}
		// One agent, N remote subnets (every HostSubnet but its own).
		if err := b.startController(ctx, false); err != nil {
			return err
		}
		for k := range repeats("agent") {
			a, err := b.runAgent(ctx, k, r.subnetsTot-1)
			if err != nil {
				return fmt.Errorf("size %d, agent %d: %w", n, k+1, err)
			}
			r.agents = append(r.agents, a)
			logf("size %d: agent %d/%d: informers %v, first sync %v (%d routes, %d neighbours, %d FDB); join event→kernel %v, leave %v; node write→kernel join %v, leave %v",
				n, k+1, *repeatsF, a.informerSync.Round(time.Millisecond), a.cold.Round(time.Millisecond), a.routes, a.neighs, a.fdb,
				rounded(a.joinEvent), rounded(a.leaveEvent), rounded(a.joinWrite), rounded(a.leaveWrite))
		}
		// Fan-out: every node moves to an address generation it never had
		// (nodes created at 0, each run a new one).
		for k := range repeats("fanout") {
			gen = 1 + gen%(generations-1)
			f, err := b.fanout(ctx, n, *watchersF, gen)
			if err != nil {
				return fmt.Errorf("size %d, fan-out %d: %w", n, k+1, err)
			}
			r.fanouts = append(r.fanouts, f)
			logf("size %d: fan-out %d/%d: %d watchers synced in %v; %d node writes in %v; controller's node watch %v, HostSubnet updates %v; watchers' last update %v … %v",
				n, k+1, *repeatsF, f.w, f.watchersSync.Round(time.Millisecond), n, f.writes.Round(time.Millisecond),
				f.ctrlWatch.Round(time.Millisecond), f.ctrlUpdates.Round(time.Millisecond),
				f.watchers[0].Round(time.Millisecond), f.watchers[len(f.watchers)-1].Round(time.Millisecond))
		}
		results = append(results, r)
	}
	report(results, ex, shippedN, shippedTook)
	fmt.Fprintf(tab, "\nThe lab's %s (since the lab started).\n", b.etcdFsync(ctx))
	return nil
}

// repeats is how often a measurement runs: --repeats, or 0 when --skip
// names it.
func repeats(what string) int {
	for _, s := range strings.Split(*skipF, ",") {
		if strings.TrimSpace(s) == what {
			return 0
		}
	}
	return *repeatsF
}

func rounded(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(100 * time.Microsecond).String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// spread is "median (min–max)" of durations in a unit.
func spread(ds []time.Duration, unit time.Duration, prec int) string {
	med, lo, hi := stats.Spread(ds)
	f := func(d time.Duration) string { return fmt.Sprintf("%.*f", prec, float64(d)/float64(unit)) }
	return fmt.Sprintf("%s (%s–%s)", f(med), f(lo), f(hi))
}

// rateSpread is "median (min–max)" of n/d per second over samples.
func rateSpread(rates []float64) string {
	med, lo, hi := stats.Spread(rates)
	return fmt.Sprintf("%.0f (%.0f–%.0f)", med, lo, hi)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func report(results []sizeResult, ex *exhaustResult, shippedN int, shippedTook time.Duration) {
	w := tab
	fmt.Fprintf(w, "No anchor in the same run: the figures are compared with issue 13's targets only. Median (min–max) of %d repeats unless said otherwise. "+
		"The simulated nodes are Node objects without kubelets (InternalIPs in 100.64.0.0/10); the lab's node1 is one more node and HostSubnet. "+
		"The controller is pkg/controller wired as cmd/sluice-controller wires it with its default flags (--kube-api-qps %d, --kube-api-burst %d, --workers %d), in the bench's process, without leader election. The agent is pkg/agent/overlay fed by its informers, in a network namespace of its own.\n\n", *repeatsF, apiclient.DefaultQPS, apiclient.DefaultBurst, apiclient.DefaultWorkers)

	fmt.Fprintf(w, "### HostSubnet allocation (target: all allocated ≤ 10 s)\n\n")
	fmt.Fprintf(w, "| nodes | growth step: Nodes created (s) | growth step: first create → every HostSubnet (s) | cold controller, N Nodes waiting: start → every HostSubnet (s) | per node (ms) | target |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		if len(r.cold) == 0 {
			fmt.Fprintf(w, "| %d | %d in %.1f | %.1f | not measured | | |\n", r.n, r.createdN, r.created.Seconds(), r.streaming.Seconds())
			continue
		}
		med, _, _ := stats.Spread(r.cold)
		fmt.Fprintf(w, "| %d | %d in %.1f | %.1f | %s | %.2f | %s |\n", r.n, r.createdN, r.created.Seconds(), r.streaming.Seconds(),
			spread(r.cold, time.Second, 1), float64(med.Milliseconds())/float64(r.subnetsTot), verdict(med <= 10*time.Second))
	}

	fmt.Fprintf(w, "\n### One agent (targets: N remote subnets programmed ≤ 2 s cold; a join or leave ≤ 50 ms)\n\n")
	fmt.Fprintf(w, "Cold: the overlay's first sync (routes, neighbours, FDB entries for every remote subnet; counted in the namespace afterwards). "+
		"Join / leave: the HostSubnet's add / delete event reaching the agent's informer → the route, neighbour and FDB notification from the namespace, whichever came last "+
		"(%d joins and leaves per agent run, %d runs); in brackets, from the Node's create / delete request (the controller's allocation included).\n\n", *joinsF, *repeatsF)
	fmt.Fprintf(w, "| remote subnets | informers synced (ms) | cold first sync (s) | kernel entries | join (ms) | leave (ms) | cold target | join/leave target |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		if len(r.agents) == 0 {
			continue
		}
		var inf, cold, je, jw, le, lw []time.Duration
		entries := ""
		for _, a := range r.agents {
			inf, cold = append(inf, a.informerSync), append(cold, a.cold)
			je, jw = append(je, a.joinEvent...), append(jw, a.joinWrite...)
			le, lw = append(le, a.leaveEvent...), append(lw, a.leaveWrite...)
			entries = fmt.Sprintf("%d routes, %d neighbours, %d FDB", a.routes, a.neighs, a.fdb)
		}
		cm, _, _ := stats.Spread(cold)
		jm, _, _ := stats.Spread(je)
		lm, _, _ := stats.Spread(le)
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s [%s] | %s [%s] | %s | %s |\n", r.subnetsTot-1,
			spread(inf, time.Millisecond, 0), spread(cold, time.Second, 2), entries,
			spread(je, time.Millisecond, 1), spread(jw, time.Millisecond, 1), spread(le, time.Millisecond, 1), spread(lw, time.Millisecond, 1),
			verdict(cm <= 2*time.Second), verdict(jm <= 50*time.Millisecond && lm <= 50*time.Millisecond))
	}

	fmt.Fprintf(w, "\n### Watch fan-out (every simulated Node's InternalIP changes; the controller updates every HostSubnet; %d agent-like watchers get every update)\n\n", *watchersF)
	fmt.Fprintf(w, "Rates are events per second from the first Node write to the last event of the kind; a rate below the write rate means the stage kept up with the writes, which bound it. "+
		"Watchers: each the agent's HostSubnet and ClusterNetwork informers on a connection of its own; delivered = watchers × N updates.\n\n")
	fmt.Fprintf(w, "| nodes | watchers' initial sync (s) | Node writes/s | controller's Node watch (events/s) | controller's HostSubnet updates/s | %d watchers: delivered events/s | slowest watcher behind the last update (ms) |\n|---|---|---|---|---|---|---|\n", *watchersF)
	for _, r := range results {
		if len(r.fanouts) == 0 {
			continue
		}
		var syncs, lags []time.Duration
		var writes, ctrlW, ctrlU, deliv []float64
		for _, f := range r.fanouts {
			n := float64(f.n)
			syncs = append(syncs, f.watchersSync)
			writes = append(writes, n/f.writes.Seconds())
			ctrlW = append(ctrlW, n/f.ctrlWatch.Seconds())
			ctrlU = append(ctrlU, n/f.ctrlUpdates.Seconds())
			slowest := f.watchers[len(f.watchers)-1]
			deliv = append(deliv, float64(f.w)*n/slowest.Seconds())
			lags = append(lags, slowest-f.ctrlUpdates)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", r.n, spread(syncs, time.Second, 2),
			rateSpread(writes), rateSpread(ctrlW), rateSpread(ctrlU), rateSpread(deliv), spread(lags, time.Millisecond, 0))
	}

	if ex != nil {
		fmt.Fprintf(w, "\n### Planner against allocator (allocate until exhaustion)\n\n")
		fmt.Fprintf(w, "| ClusterNetwork | planner maxNodes | Nodes | HostSubnets allocated | status allocated / capacity | nodes without one | match |\n|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(w, "| %s | %d (%s) | %d | %d in %.1f s | %d / %d | %s | %s |\n", ex.network, ex.planner, ex.workings, ex.nodes, ex.allocated, ex.took.Seconds(),
			ex.statusCount, ex.capacity, strings.Join(ex.without, ", "), verdict(int64(ex.allocated) == ex.planner && len(ex.without) == ex.nodes-ex.allocated && ex.event != ""))
		fmt.Fprintf(w, "\nThe node left over: event `%s`; ClusterNetwork condition `%s`.\n", ex.event, ex.condition)
	}
	if shippedN > 0 {
		fmt.Fprintf(w, "\n### The controller at client-go's default rate limit (%d QPS, burst %d: cmd/sluice-controller's before --kube-api-qps)\n\n", clientGoQPS, clientGoBurst)
		fmt.Fprintf(w, "| nodes | cold controller: start → every HostSubnet (s, one run) | per node (ms) | at that rate, 5000 nodes (min) |\n|---|---|---|---|\n")
		per := shippedTook.Seconds() / float64(shippedN+1)
		fmt.Fprintf(w, "| %d (+ node1) | %.1f | %.0f | %.0f |\n", shippedN, shippedTook.Seconds(), per*1000, per*5000/60)
	}
}

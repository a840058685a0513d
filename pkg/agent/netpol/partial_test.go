package netpol

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/policy"
)

// normalize sorts a dump's element lines: the kernel keeps no element order, the fake keeps
// insertion order. Rule order, which matters, is untouched.
func normalize(dump string) string {
	var rest, elems []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
		} else {
			rest = append(rest, l)
		}
	}
	slices.Sort(elems)
	return strings.Join(append(rest, elems...), "\n")
}

func mustBuild(t *testing.T, in policy.Input, node string) State {
	t.Helper()
	st, err := Build(in, node, []netip.Addr{hostIP(0), hostIP(1), tunnelIP(0), tunnelIP(1)})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// transitions are (prev, next) input pairs for one node: single edits of a random cluster
// (a pod gone, relabelled, moved; a policy gone or added; a mode or VNID change) and
// unrelated random clusters.
func transitions(seed int64) [][2]policy.Input {
	r := rand.New(rand.NewSource(seed))
	a, _ := randomInput(seed)
	b, _ := randomInput(seed + 10000)
	edit := func(f func(in *policy.Input)) policy.Input {
		in := a
		in.Pods = slices.Clone(a.Pods)
		for i := range in.Pods {
			l := map[string]string{}
			for k, v := range in.Pods[i].Labels {
				l[k] = v
			}
			in.Pods[i].Labels = l
		}
		in.Policies = slices.Clone(a.Policies)
		in.VNIDs = map[string]uint32{}
		for k, v := range a.VNIDs {
			in.VNIDs[k] = v
		}
		f(&in)
		return in
	}
	k := r.Intn(len(a.Pods))
	out := [][2]policy.Input{
		{a, a},
		{a, b},
		{a, edit(func(in *policy.Input) { in.Pods = slices.Delete(in.Pods, k, k+1) })},
		{a, edit(func(in *policy.Input) { in.Pods[k].Labels["app"] = "web"; in.Pods[k].Labels["tier"] = "be" })},
		{a, edit(func(in *policy.Input) {
			if in.Pods[k].Node == nodeName(0) {
				in.Pods[k].Node = nodeName(1)
			} else {
				in.Pods[k].Node = nodeName(0)
			}
		})},
		{a, edit(func(in *policy.Input) { in.Policies = append(in.Policies, b.Policies...) })},
		{a, edit(func(in *policy.Input) { in.Mode = policy.ModeMultitenant })},
		{a, edit(func(in *policy.Input) { in.Mode = policy.ModeSubnet })},
		{a, edit(func(in *policy.Input) { in.Mode = policy.ModeNetworkPolicy })},
		{a, edit(func(in *policy.Input) {
			for ns := range in.VNIDs {
				in.VNIDs[ns] = uint32(r.Intn(3))
			}
		})},
	}
	if len(a.Policies) > 0 {
		out = append(out, [2]policy.Input{a, edit(func(in *policy.Input) { in.Policies = in.Policies[1:] })})
	}
	return out
}

// Re-rendering a changed state over an old table and pruning leaves exactly what a fresh
// render builds; so does a partial sync, which touches nothing when nothing changed.
func TestRenderConvergesAndPartialEqualsFull(t *testing.T) {
	ctx := context.Background()
	pairs, partialOps, fullOps := 0, 0, 0
	for seed := int64(1); seed <= 60; seed++ {
		for i, tr := range transitions(seed) {
			prev, next := mustBuild(t, tr[0], nodeName(0)), mustBuild(t, tr[1], nodeName(0))
			label := fmt.Sprintf("seed %d transition %d", seed, i)
			want := normalize(renderFake(t, next).Dump())

			// Full: Render + Prune of what the table lists.
			f := renderFake(t, prev)
			chains, _ := f.List(ctx, "chains")
			sets, _ := f.List(ctx, "sets")
			tx := f.NewTransaction()
			Render(tx, next)
			Prune(tx, chains, sets, next)
			fullOps += tx.NumOperations()
			if err := f.Run(ctx, tx); err != nil {
				t.Fatalf("%s: full re-render refused: %v", label, err)
			}
			if got := normalize(f.Dump()); got != want {
				t.Fatalf("%s: full re-render differs from a fresh one:\n--- got\n%s\n--- want\n%s", label, got, want)
			}

			// Partial.
			f = renderFake(t, prev)
			tx = f.NewTransaction()
			RenderPartial(tx, prev, next)
			partialOps += tx.NumOperations()
			if err := f.Run(ctx, tx); err != nil {
				t.Fatalf("%s: partial transaction refused: %v\n%s", label, err, tx)
			}
			if got := normalize(f.Dump()); got != want {
				t.Fatalf("%s: partial differs from full:\n--- got\n%s\n--- want\n%s\n--- transaction\n%s", label, got, want, tx)
			}
			if i == 0 && tx.NumOperations() != 0 {
				t.Errorf("%s: no change, yet:\n%s", label, tx)
			}
			pairs++
		}
	}
	t.Logf("%d transitions: full re-render + prune and partial sync both equal a fresh render (%d vs %d operations)", pairs, fullOps, partialOps)
}

// A partial sync for one new pod that no policy selects touches its own elements only.
func TestRenderPartialIsSmall(t *testing.T) {
	in := e2eInput("", netpol("x", "deny", sel("pod", "a"), bothTypes, nil, nil))
	prev := mustBuild(t, in, nodeName(0))
	in.Pods = append(slices.Clone(in.Pods), policy.Pod{Namespace: "y", Name: "new", IP: podAddr(0, 50), Node: nodeName(0)})
	next := mustBuild(t, in, nodeName(0))
	tx := knftables.NewFake(knftables.InetFamily, "sluice").NewTransaction()
	RenderPartial(tx, prev, next)
	for _, l := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
		if !strings.HasPrefix(l, "add element ") || !strings.Contains(l, podAddr(0, 50).String()) {
			t.Errorf("unexpected operation: %s", l)
		}
	}
	if tx.NumOperations() != 3 { // loopback, egress and ingress dispatch
		t.Errorf("want 3 operations, got:\n%s", tx)
	}
}

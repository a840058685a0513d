package netpol

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/internal/nfttrace"
	"github.com/sluice-net/sluice/pkg/policy"
)

// world is the objects of a random cluster, changed one at a time by the sequence test; it
// hands the same change to every node's Compiler and builds Build's input from scratch.
type world struct {
	g        *gen
	nodes    int
	mode     policy.Mode
	ns       map[string]map[string]string // namespace → labels (as given)
	vnids    map[string]uint32
	pods     map[string]policy.Pod
	policies map[string]networkingv1.NetworkPolicy
	extraIPs []netip.Addr // node addresses beyond the real nodes'
	next     int          // for new names
	comps    []*Compiler
}

var allNamespaces = []string{"red", "green", "blue", "default", "ghost"}

func newWorld(seed int64) *world {
	in, nodes := randomInput(seed)
	w := &world{g: &gen{r: rand.New(rand.NewSource(seed * 7919)), nodes: nodes, in: in}, nodes: nodes, mode: in.Mode,
		ns: map[string]map[string]string{}, vnids: maps.Clone(in.VNIDs), pods: map[string]policy.Pod{},
		policies: map[string]networkingv1.NetworkPolicy{}, next: 1000}
	for _, ns := range in.Namespaces {
		w.ns[ns.Name] = ns.Labels
	}
	for _, p := range in.Pods {
		w.pods[p.Key()] = p
	}
	for _, np := range in.Policies {
		w.policies[np.Namespace+"/"+np.Name] = np
	}
	for i := 0; i < nodes; i++ {
		c := NewCompiler(nodeName(i))
		w.feedAll(c)
		w.comps = append(w.comps, c)
	}
	return w
}

// feedAll gives c every object, in an order unlike the map's (pods before their namespaces).
func (w *world) feedAll(c *Compiler) {
	for _, k := range sortedKeys(w.pods) {
		c.SetPod(w.pods[k])
	}
	for _, k := range sortedKeys(w.policies) {
		np := w.policies[k]
		if err := c.SetPolicy(&np); err != nil {
			panic(err)
		}
	}
	for _, name := range sortedKeys(w.ns) {
		c.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: w.ns[name]}})
	}
	for _, name := range sortedKeys(w.vnids) {
		c.SetVNID(name, w.vnids[name])
	}
	if err := c.SetMode(w.mode); err != nil {
		panic(err)
	}
	c.SetNodeIPs(w.nodeIPs())
}

func (w *world) nodeIPs() []netip.Addr {
	var out []netip.Addr
	for i := 0; i < w.nodes; i++ {
		out = append(out, hostIP(i), tunnelIP(i))
	}
	return append(out, w.extraIPs...)
}

// input is Build's input for the current objects: pods of unknown namespaces left out.
func (w *world) input() policy.Input {
	in := policy.Input{Mode: w.mode, VNIDs: maps.Clone(w.vnids)}
	for _, name := range sortedKeys(w.ns) {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: w.ns[name]}})
	}
	for _, k := range sortedKeys(w.pods) {
		if _, ok := w.ns[w.pods[k].Namespace]; ok {
			in.Pods = append(in.Pods, w.pods[k])
		}
	}
	for _, k := range sortedKeys(w.policies) {
		in.Policies = append(in.Policies, w.policies[k])
	}
	return in
}

func (w *world) randomPod() (policy.Pod, bool) {
	if len(w.pods) == 0 {
		return policy.Pod{}, false
	}
	keys := sortedKeys(w.pods)
	return w.pods[keys[w.g.r.Intn(len(keys))]], true
}

func (w *world) labels() map[string]string {
	l := map[string]string{}
	if w.g.chance(0.7) {
		l["app"] = w.g.pick("web", "db", "cache")
	}
	if w.g.chance(0.5) {
		l["tier"] = w.g.pick("fe", "be")
	}
	return l
}

func (w *world) address() netip.Addr {
	switch x := w.g.r.Intn(40); {
	case x == 0:
		return netip.Addr{}
	case x == 1: // another pod's address: a stale cache
		if p, ok := w.randomPod(); ok {
			return p.IP
		}
	case x == 2:
		return netip.MustParseAddr("fd00::5")
	}
	n := w.g.r.Intn(w.nodes)
	return podAddr(n, 20+w.g.r.Intn(200))
}

// step makes one random change to the objects and to every Compiler; it returns what it did.
func (w *world) step() string {
	g := w.g
	switch g.r.Intn(14) {
	case 0, 1: // a new pod
		n := g.r.Intn(w.nodes)
		p := policy.Pod{Namespace: g.pick(allNamespaces...), Name: fmt.Sprintf("pod-%d", w.next), Labels: w.labels(),
			IP: w.address(), Node: nodeName(n)}
		w.next++
		if g.chance(0.1) {
			p.Node = ""
		}
		if g.chance(0.5) {
			p.Ports = []policy.ContainerPort{{Name: g.pick("http", "dns", "alt"), Port: int32(80 + g.r.Intn(2)), Protocol: corev1.Protocol(g.pick("", "TCP", "UDP"))}}
		}
		w.setPod(p)
		return "add pod " + p.Key()
	case 2: // a pod goes
		if p, ok := w.randomPod(); ok {
			delete(w.pods, p.Key())
			for _, c := range w.comps {
				c.DeletePod(p.Key())
			}
			return "delete pod " + p.Key()
		}
	case 3, 4: // relabelled
		if p, ok := w.randomPod(); ok {
			p.Labels = w.labels()
			w.setPod(p)
			return "relabel pod " + p.Key()
		}
	case 5: // moved, readdressed or new ports
		if p, ok := w.randomPod(); ok {
			switch g.r.Intn(3) {
			case 0:
				p.Node = nodeName(g.r.Intn(w.nodes))
			case 1:
				p.IP = w.address()
			default:
				p.Ports = append(slices.Clone(p.Ports), policy.ContainerPort{Name: g.pick("http", "dns", "assoc"), Port: 81, Protocol: corev1.Protocol(g.pick("", "UDP", "SCTP"))})
			}
			w.setPod(p)
			return "change pod " + p.Key()
		}
	case 6: // namespace labels
		name := g.pick(allNamespaces...)
		if _, ok := w.ns[name]; ok {
			l := map[string]string{}
			if g.chance(0.6) {
				l["team"] = g.pick("a", "b")
			}
			if g.chance(0.5) {
				l["env"] = g.pick("prod", "dev")
			}
			w.setNamespace(name, l)
			return "relabel namespace " + name
		}
	case 7: // a namespace goes or comes
		name := g.pick(allNamespaces...)
		if _, ok := w.ns[name]; ok && g.chance(0.5) {
			delete(w.ns, name)
			for _, c := range w.comps {
				c.DeleteNamespace(name)
			}
			return "delete namespace " + name
		}
		w.setNamespace(name, map[string]string{"team": g.pick("a", "b")})
		return "set namespace " + name
	case 8, 9: // a new or replaced policy
		ns := g.pick(allNamespaces[:4]...)
		name := fmt.Sprintf("np-%d", g.r.Intn(6))
		g.in = w.input()
		if len(g.in.Pods) == 0 {
			return "nothing"
		}
		np := g.policy(name, ns)
		w.policies[ns+"/"+name] = np
		for _, c := range w.comps {
			if err := c.SetPolicy(&np); err != nil {
				panic(err)
			}
		}
		return "set policy " + ns + "/" + name
	case 10: // a policy goes
		if len(w.policies) > 0 {
			keys := sortedKeys(w.policies)
			k := keys[g.r.Intn(len(keys))]
			delete(w.policies, k)
			for _, c := range w.comps {
				c.DeletePolicy(k)
			}
			return "delete policy " + k
		}
	case 11: // a VNID
		name := g.pick(allNamespaces...)
		if g.chance(0.2) {
			delete(w.vnids, name)
			for _, c := range w.comps {
				c.DeleteVNID(name)
			}
			return "delete VNID " + name
		}
		v := uint32(g.r.Intn(3))
		w.vnids[name] = v
		for _, c := range w.comps {
			c.SetVNID(name, v)
		}
		return fmt.Sprintf("VNID %s = %d", name, v)
	case 12: // the mode
		w.mode = policy.Mode(g.pick("", string(policy.ModeNetworkPolicy), string(policy.ModeMultitenant), string(policy.ModeSubnet)))
		for _, c := range w.comps {
			if err := c.SetMode(w.mode); err != nil {
				panic(err)
			}
		}
		return "mode " + string(w.mode)
	case 13: // node addresses beyond the nodes' own, sometimes a pod's
		w.extraIPs = nil
		if g.chance(0.7) {
			w.extraIPs = append(w.extraIPs, netip.MustParseAddr("10.128.9.9"))
			if p, ok := w.randomPod(); ok && p.IP.IsValid() {
				w.extraIPs = append(w.extraIPs, p.IP)
			}
		}
		for _, c := range w.comps {
			c.SetNodeIPs(w.nodeIPs())
		}
		return fmt.Sprintf("node addresses + %v", w.extraIPs)
	}
	return "nothing"
}

func (w *world) setPod(p policy.Pod) {
	w.pods[p.Key()] = p
	for _, c := range w.comps {
		c.SetPod(p)
	}
}

func (w *world) setNamespace(name string, l map[string]string) {
	w.ns[name] = l
	for _, c := range w.comps {
		c.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}})
	}
}

// untraceable: two pods of the input share an address, or a pod has an IPv6 one. The model
// and the dataplane then disagree by design (README: such an address belongs to nobody;
// IPv6 from and to pod interfaces is dropped), so the state is compared with Build only.
func (w *world) untraceable(in policy.Input) bool {
	seen := map[netip.Addr]bool{}
	for _, p := range in.Pods {
		if p.IP.IsValid() {
			if seen[p.IP] || !p.IP.Is4() {
				return true
			}
			seen[p.IP] = true
		}
	}
	return false
}

// syncNode programs node i's table from its Compiler: partial, or full (Render of State +
// Prune of the listed table) after a failed transaction. fail makes the transaction fail
// (it is not run: the kernel applies all of a transaction or nothing).
func syncNode(t *testing.T, f *knftables.Fake, c *Compiler, full, fail bool) (ops int) {
	t.Helper()
	ctx := context.Background()
	tx := f.NewTransaction()
	if full {
		chains, _ := f.List(ctx, "chains")
		sets, _ := f.List(ctx, "sets")
		maps, _ := f.List(ctx, "maps")
		st := c.State()
		Render(tx, st)
		Prune(tx, chains, append(sets, maps...), st)
	} else {
		c.Render(tx)
	}
	if fail {
		return tx.NumOperations()
	}
	if err := f.Run(ctx, tx); err != nil {
		t.Fatalf("transaction refused: %v\n%s", err, tx)
	}
	c.Commit()
	return tx.NumOperations()
}

// After random sequences of single changes (pods, namespaces, policies, VNIDs, mode, node
// addresses; some transactions failing, followed by a full sync), every node's Compiler
// holds exactly Build's State of the same objects, its table (programmed by partial
// transactions) equals a fresh render of that State, and traced packets agree with the
// model.
func TestIncrementalSequencesAgreeWithBuild(t *testing.T) {
	seeds, steps := 120, 30
	if testing.Short() {
		seeds = 30
	}
	var changes, partialOps, failed, traced, queries int
	for seed := int64(1); seed <= int64(seeds); seed++ {
		w := newWorld(seed)
		fakes := make([]*knftables.Fake, w.nodes)
		needFull := make([]bool, w.nodes)
		for i := range fakes {
			fakes[i] = renderFake(t, State{}) // the dataplane skeleton and the empty isolation table
			syncNode(t, fakes[i], w.comps[i], false, false)
		}
		var history []string
		for s := 0; s < steps; s++ {
			for n := 1 + w.g.r.Intn(3); n > 0; n-- {
				history = append(history, w.step())
				changes++
			}
			in := w.input()
			for i, c := range w.comps {
				fail := w.g.chance(0.08)
				ops := syncNode(t, fakes[i], c, needFull[i], fail)
				if !needFull[i] {
					partialOps += ops
				}
				needFull[i] = fail
				if fail {
					failed++
					continue
				}
				label := fmt.Sprintf("seed %d step %d node %d after %s", seed, s, i, strings.Join(history, "; "))
				want, err := Build(in, nodeName(i), w.nodeIPs())
				if err != nil {
					t.Fatalf("%s: Build: %v", label, err)
				}
				if got := c.State(); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: Compiler's State differs from Build's:\n%s", label, stateDiff(got, want))
				}
				if got, want := normalize(fakes[i].Dump()), normalize(renderFake(t, want).Dump()); got != want {
					t.Fatalf("%s: table differs from a fresh render:\n--- got\n%s\n--- want\n%s", label, got, want)
				}
			}
			if (s == steps/2 || s == steps-1) && !w.untraceable(in) && !slices.Contains(needFull, true) {
				m, err := policy.Compile(in)
				if err != nil {
					t.Fatal(err)
				}
				cl := &cluster{t: t, in: in, model: m, nodes: w.nodes}
				for i := range fakes {
					cl.tracers = append(cl.tracers, nfttrace.NewIsolation(t, fakes[i]))
				}
				pods := cl.podEnds()
				label := fmt.Sprintf("seed %d step %d after %s", seed, s, strings.Join(history, "; "))
				n, _ := cl.check(t, append(pods, cl.otherEnds()...), pods, propertyProbes, label)
				queries += n
				n, _ = cl.check(t, pods, cl.otherEnds(), propertyProbes, label+" (to non-pods)")
				queries += n
				traced++
				if t.Failed() {
					t.FailNow()
				}
			}
		}
	}
	t.Logf("%d sequences, %d changes: every node's Compiler equals Build and its table a fresh render after each sync "+
		"(%d partial operations; %d failed transactions, each followed by a full sync); %d traced states, %d queries agree with the model",
		seeds, changes, partialOps, failed, traced, queries)
}

// stateDiff names the first objects that differ.
func stateDiff(got, want State) string {
	var out []string
	if got.Mode != want.Mode {
		out = append(out, fmt.Sprintf("mode %q, want %q", got.Mode, want.Mode))
	}
	index := func(st State) map[string]string {
		m := map[string]string{}
		for _, c := range st.Chains {
			m["chain "+c.Name] = fmt.Sprintf("%+v", c)
		}
		for _, s := range st.Sets {
			m["set "+s.Name] = fmt.Sprintf("%+v", s)
		}
		return m
	}
	g, w := index(got), index(want)
	for _, k := range sortedKeys(g) {
		if w[k] != g[k] {
			out = append(out, fmt.Sprintf("%s:\n  got  %s\n  want %s", k, g[k], w[k]))
		}
	}
	for _, k := range sortedKeys(w) {
		if _, ok := g[k]; !ok {
			out = append(out, fmt.Sprintf("%s: missing, want %s", k, w[k]))
		}
	}
	return strings.Join(out, "\n")
}

// A change no object of the table depends on is an empty transaction; one pod no policy
// selects is its three elements; a policy's new port rewrites that policy's chain only; a
// namespace's new labels move exactly its matching pods into the peer sets that now select
// them.
func TestCompilerPartialIsSmall(t *testing.T) {
	in := benchInput(1000, 100, 10)
	c := compilerFor(t, in, "node0")
	render := func() *knftables.Transaction {
		tx := knftables.NewFake(knftables.InetFamily, dataplane.Table).NewTransaction()
		c.Render(tx)
		c.Commit()
		return tx
	}
	render()

	// The same pod again, and a pod of another node no peer selects.
	c.SetPod(in.Pods[0])
	c.SetPod(policy.Pod{Namespace: "ns1", Name: "other", IP: netip.MustParseAddr("10.200.0.1"), Node: "node1"})
	if tx := render(); tx.NumOperations() != 0 {
		t.Errorf("changes that concern nothing in the table:\n%s", tx)
	}

	c.SetPod(policy.Pod{Namespace: "ns1", Name: "new", IP: netip.MustParseAddr("10.200.0.2"), Node: "node0"})
	tx := render()
	for _, l := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
		if !strings.HasPrefix(l, "add element ") || !strings.Contains(l, "10.200.0.2") {
			t.Errorf("unexpected operation: %s", l)
		}
	}
	if tx.NumOperations() != 3 { // loopback, egress and ingress dispatch
		t.Errorf("want 3 operations, got:\n%s", tx)
	}

	np := in.Policies[7].DeepCopy()
	port := intstr.FromInt32(9090)
	np.Spec.Ingress[0].Ports[0].Port = &port
	if err := c.SetPolicy(np); err != nil {
		t.Fatal(err)
	}
	tx = render()
	chain := policyChainName(np.Namespace+"/"+np.Name, true)
	if want := "flush chain inet sluice " + chain; !strings.HasPrefix(tx.String(), want) || tx.NumOperations() != 2 {
		t.Errorf("a policy's new port: want %q and its one rule, got:\n%s", want, tx)
	}

	// ns3 (team t3) becomes team t4: its pods with tier tX leave the peer set of
	// (team=t3, tier=tX) and join that of (team=t4, tier=tX), where those are in use.
	before := c.State()
	c.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns3", Labels: map[string]string{"team": "t4"}}})
	tx = render()
	after := c.State()
	moved := 0
	for i := range after.Sets {
		if !strings.HasPrefix(after.Sets[i].Name, prefixPeers) {
			continue
		}
		was := map[string]bool{}
		for _, s := range before.Sets {
			if s.Name == after.Sets[i].Name {
				for _, e := range s.Elements {
					was[elementKey(e)] = true
				}
			}
		}
		for _, e := range after.Sets[i].Elements {
			if !was[elementKey(e)] {
				moved++
			}
			delete(was, elementKey(e))
		}
		moved += len(was)
	}
	if moved == 0 || tx.NumOperations() != moved {
		t.Errorf("namespace relabelled: %d elements moved between peer sets, transaction has %d operations:\n%s", moved, tx.NumOperations(), tx)
	}
	for _, l := range strings.Split(strings.TrimSpace(tx.String()), "\n") {
		if !strings.Contains(l, " element inet sluice "+prefixPeers) {
			t.Errorf("namespace relabelled: unexpected operation %s", l)
		}
	}
}

func compilerFor(t testing.TB, in policy.Input, node string) *Compiler {
	t.Helper()
	c := NewCompiler(node)
	if err := c.SetMode(in.Mode); err != nil {
		t.Fatal(err)
	}
	for i := range in.Namespaces {
		c.SetNamespace(&in.Namespaces[i])
	}
	for ns, v := range in.VNIDs {
		c.SetVNID(ns, v)
	}
	for _, p := range in.Pods {
		c.SetPod(p)
	}
	for i := range in.Policies {
		if err := c.SetPolicy(&in.Policies[i]); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// The Compiler refuses what Build refuses, and keeps what it had.
func TestCompilerRefusesInvalid(t *testing.T) {
	c := NewCompiler(nodeName(0))
	if err := c.SetMode("Flat"); err == nil || c.Mode() != policy.ModeNetworkPolicy {
		t.Errorf("mode Flat: err %v, mode now %q", err, c.Mode())
	}
	bad := netpol("x", "bad", expr("app", "In"), nil, nil, nil)
	err := c.SetPolicy(&bad)
	if e, ok := err.(*policy.InvalidPolicyError); !ok || e.Policy != "x/bad" {
		t.Errorf("invalid policy: err %v", err)
	}
	if in, _ := c.Input(); len(in.Policies) != 0 {
		t.Errorf("the invalid policy was kept: %+v", in.Policies)
	}
}

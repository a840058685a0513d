package hostsubnet

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

func TestAllocatesEveryNode(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("node1", "172.28.0.11"), node("node2", "172.28.0.12"), node("node3", "172.28.0.13"))
	c := f.newController()
	c.settle()
	f.wantSubnets(
		"node1=172.28.0.11,10.128.0.0/23",
		"node2=172.28.0.12,10.128.2.0/23",
		"node3=172.28.0.13,10.128.4.0/23")
	st := f.status()
	if st.AllocatedSubnets != 3 || st.Capacity != 512 {
		t.Errorf("status allocated %d capacity %d, want 3 and 512", st.AllocatedSubnets, st.Capacity)
	}
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionTrue, "3 of 512 host subnets allocated")
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionFalse, "509 of 512")
	f.wantCondition(sluicev1alpha1.ClusterNetworkInvalidSpec, metav1.ConditionFalse)
	wantEvent(t, c.drainEvents(), "Normal", ReasonAllocated, "10.128.0.0/23")

	// Nothing changes on another pass: reconcile is level-based and idempotent.
	before := len(f.sluice.Actions())
	c.settle()
	for _, a := range f.sluice.Actions()[before:] {
		if a.GetVerb() != "list" && a.GetVerb() != "get" {
			t.Errorf("unexpected write on a settled cluster: %v", a)
		}
	}
}

// TestNoDuplicatesFromOneStaleCache allocates several nodes in one pass without the cache
// catching up in between: pending allocations keep them apart.
func TestNoDuplicatesFromOneStaleCache(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("a", "10.0.0.1"), node("b", "10.0.0.2"), node("c", "10.0.0.3"))
	c := f.newController()
	c.syncKeys("a", "b", "c") // no refresh between them
	f.wantSubnets("a=10.0.0.1,10.128.0.0/23", "b=10.0.0.2,10.128.2.0/23", "c=10.0.0.3,10.128.4.0/23")
}

func TestStableAcrossRestart(t *testing.T) {
	// HostSubnets left by an earlier controller, out of address order and with a hole.
	f := newFixture(t, defaultNetwork,
		node("node1", "172.28.0.11"), node("node2", "172.28.0.12"), node("node3", "172.28.0.13"),
		hostSubnet("node1", "172.28.0.11", "10.128.4.0/23"),
		hostSubnet("node2", "172.28.0.12", "10.128.0.0/23"))
	first := f.newController()
	first.settle()
	f.wantSubnets(
		"node1=172.28.0.11,10.128.4.0/23",
		"node2=172.28.0.12,10.128.0.0/23",
		"node3=172.28.0.13,10.128.2.0/23")

	// A new controller (a restart, or the other replica taking over) changes nothing.
	before := len(f.sluice.Actions())
	second := f.newController()
	second.settle()
	for _, a := range f.sluice.Actions()[before:] {
		if a.GetVerb() != "list" && a.GetVerb() != "get" {
			t.Errorf("restarted controller wrote: %v", a)
		}
	}
	f.wantSubnets(
		"node1=172.28.0.11,10.128.4.0/23",
		"node2=172.28.0.12,10.128.0.0/23",
		"node3=172.28.0.13,10.128.2.0/23")
}

func TestNodeDeletionFrees(t *testing.T) {
	f := newFixture(t, defaultNetwork,
		node("node1", "172.28.0.11"), node("node2", "172.28.0.12"),
		// The node of this one was deleted while no controller ran.
		hostSubnet("gone", "172.28.0.99", "10.128.0.0/23"))
	c := f.newController()
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.128.2.0/23", "node2=172.28.0.12,10.128.4.0/23")

	if err := f.kube.CoreV1().Nodes().Delete(context.Background(), "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node2=172.28.0.12,10.128.4.0/23")

	// Freed subnets are handed out again, lowest first.
	if _, err := f.kube.CoreV1().Nodes().Create(context.Background(), node("node3", "172.28.0.13"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node2=172.28.0.12,10.128.4.0/23", "node3=172.28.0.13,10.128.0.0/23")
	if st := f.status(); st.AllocatedSubnets != 2 {
		t.Errorf("allocated = %d, want 2", st.AllocatedSubnets)
	}
}

// TestFreeChecksTheAPIServer keeps the HostSubnet of a node that the node cache does not
// show yet but the API server has.
func TestFreeChecksTheAPIServer(t *testing.T) {
	f := newFixture(t, defaultNetwork, hostSubnet("new", "172.28.0.20", "10.128.0.0/23"))
	c := f.newController()
	if _, err := f.kube.CoreV1().Nodes().Create(context.Background(), node("new", "172.28.0.20"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.syncKeys("new") // the node cache is stale: it has no node "new"
	f.wantSubnets("new=172.28.0.20,10.128.0.0/23")
}

func TestHostIPFollowsTheNode(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("node1", "172.28.0.11"))
	c := f.newController()
	c.settle()
	n, _ := f.kube.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.28.0.111"}}
	if _, err := f.kube.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.111,10.128.0.0/23")
}

func TestExhaustion(t *testing.T) {
	// 10.0.0.0/24 in /25 host subnets: room for two nodes.
	f := newFixture(t, network("172.30.0.0/16", entry("10.0.0.0/24", 7)),
		node("node1", "172.28.0.11"), node("node2", "172.28.0.12"))
	c := f.newController()
	c.settle()
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionFalse)
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionTrue, "2 of 2 host subnets allocated")
	c.drainEvents()

	if _, err := f.kube.CoreV1().Nodes().Create(context.Background(), node("node3", "172.28.0.13"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.0.0.0/25", "node2=172.28.0.12,10.0.0.128/25")
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionTrue, "node3", "10.0.0.0/24", "all 2 host subnets")
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionFalse, "10.0.0.0/24")
	wantEvent(t, c.drainEvents(), "Warning", ReasonSubnetsExhausted, "10.0.0.0/24")

	// A second cluster network lets node3 in.
	cn, _ := f.sluice.SluiceV1alpha1().ClusterNetworks().Get(context.Background(), "default", metav1.GetOptions{})
	cn.Spec.ClusterNetworks = append(cn.Spec.ClusterNetworks, entry("10.0.1.0/24", 7))
	cn.Generation++
	if _, err := f.sluice.SluiceV1alpha1().ClusterNetworks().Update(context.Background(), cn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.0.0.0/25", "node2=172.28.0.12,10.0.0.128/25", "node3=172.28.0.13,10.0.1.0/25")
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionFalse)
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionTrue, "3 of 4")
}

func TestExhaustionClearsWhenANodeGoes(t *testing.T) {
	f := newFixture(t, network("172.30.0.0/16", entry("10.0.0.0/24", 7)),
		node("node1", "172.28.0.11"), node("node2", "172.28.0.12"), node("node3", "172.28.0.13"))
	c := f.newController()
	c.settle()
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionTrue, "1 node(s) have no host subnet (node3)")
	if err := f.kube.CoreV1().Nodes().Delete(context.Background(), "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node2=172.28.0.12,10.0.0.128/25", "node3=172.28.0.13,10.0.0.0/25")
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionFalse)
}

func TestNodeWithoutInternalIP(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("node1", ""))
	c := f.newController()
	c.settle()
	f.wantSubnets()
	wantEvent(t, c.drainEvents(), "Warning", ReasonNoInternalIP, "status.addresses")
	// Not waiting for a subnet: it cannot have one yet.
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionTrue, "0 of 512")

	n, _ := f.kube.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "172.28.0.11"})
	if _, err := f.kube.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23")
}

func TestInvalidSpec(t *testing.T) {
	bad := network("172.30.0.0/16", entry("10.128.0.0/14", 9), entry("10.128.0.0/15", 9))
	f := newFixture(t, bad,
		node("node1", "172.28.0.11"), node("node2", "172.28.0.12"),
		hostSubnet("node1", "172.28.0.11", "10.128.0.0/23"))
	c := f.newController()
	c.settle()
	// node1 keeps its HostSubnet; node2 gets none.
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23")
	f.wantCondition(sluicev1alpha1.ClusterNetworkInvalidSpec, metav1.ConditionTrue,
		"spec.clusterNetworks[1].cidr: 10.128.0.0/15 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14")
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionFalse, "no new host subnet")
	f.wantCondition(sluicev1alpha1.ClusterNetworkSubnetsExhausted, metav1.ConditionUnknown)

	// Fixing the spec lets node2 in.
	cn, _ := f.sluice.SluiceV1alpha1().ClusterNetworks().Get(context.Background(), "default", metav1.GetOptions{})
	cn.Spec.ClusterNetworks = cn.Spec.ClusterNetworks[:1]
	cn.Generation++
	if _, err := f.sluice.SluiceV1alpha1().ClusterNetworks().Update(context.Background(), cn, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23", "node2=172.28.0.12,10.128.2.0/23")
	f.wantCondition(sluicev1alpha1.ClusterNetworkInvalidSpec, metav1.ConditionFalse)
	f.wantCondition(sluicev1alpha1.ClusterNetworkReady, metav1.ConditionTrue)
}

func TestInvalidSpecKeepsOverlappingSubnets(t *testing.T) {
	// Even an overlap between existing HostSubnets is left alone while the spec is invalid:
	// settling it means allocating, and there is nothing valid to allocate from.
	f := newFixture(t, network("10.128.0.0/16", entry("10.128.0.0/14", 9)),
		node("a", "172.28.0.11"), node("b", "172.28.0.12"),
		hostSubnet("a", "172.28.0.11", "10.128.0.0/23"))
	f.tick()
	if _, err := f.sluice.SluiceV1alpha1().HostSubnets().Create(context.Background(), hostSubnet("b", "172.28.0.12", "10.128.0.0/23"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := f.newController()
	c.settle()
	f.wantSubnets("a=172.28.0.11,10.128.0.0/23", "b=172.28.0.12,10.128.0.0/23")
	f.wantCondition(sluicev1alpha1.ClusterNetworkInvalidSpec, metav1.ConditionTrue, "spec.serviceNetwork: 10.128.0.0/16 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14")
}

func TestNoClusterNetwork(t *testing.T) {
	f := newFixture(t, node("node1", "172.28.0.11"))
	c := f.newController()
	c.settle()
	f.wantSubnets()
	if _, err := f.sluice.SluiceV1alpha1().ClusterNetworks().Create(context.Background(), defaultNetwork.DeepCopy(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23")
}

// TestRacingControllers runs two controllers on one API server, each with a cache that has
// not seen the other's HostSubnets: both pick the same subnet for different nodes. The
// second to create sees the first's in its check against the API server, deletes its own
// and allocates again from the API server's list.
func TestRacingControllers(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("node1", "172.28.0.11"), node("node2", "172.28.0.12"))
	a, b := f.newController(), f.newController() // both see no HostSubnet
	a.syncKeys("node1")
	f.tick()
	b.syncKeys("node2")
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23", "node2=172.28.0.12,10.128.2.0/23")
	wantEvent(t, b.drainEvents(), "Warning", ReasonSubnetConflict, "node1")

	// Both settle on the same answer.
	a.settle()
	b.settle()
	f.wantSubnets("node1=172.28.0.11,10.128.0.0/23", "node2=172.28.0.12,10.128.2.0/23")
}

// TestRacingTieBreak: the two HostSubnets have the same creationTimestamp (one-second
// granularity) and the one created first has the greater name, so its creator's check passes
// and the second creator's check passes too (its HostSubnet is the older by name). The
// overlap is settled when a cache shows both: the younger by name is deleted and its node
// allocated again.
func TestRacingTieBreak(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("b-node", "172.28.0.12"), node("a-node", "172.28.0.11"))
	a, b := f.newController(), f.newController()
	a.syncKeys("b-node")
	b.syncKeys("a-node") // same second
	f.wantSubnets("a-node=172.28.0.11,10.128.0.0/23", "b-node=172.28.0.12,10.128.0.0/23")

	a.refresh()
	a.syncKeys("b-node")
	f.wantSubnets("a-node=172.28.0.11,10.128.0.0/23", "b-node=172.28.0.12,10.128.2.0/23")
	wantEvent(t, a.drainEvents(), "Warning", ReasonSubnetConflict, "a-node")

	b.settle()
	a.settle()
	f.wantSubnets("a-node=172.28.0.11,10.128.0.0/23", "b-node=172.28.0.12,10.128.2.0/23")
}

// TestRacingMany has three controllers with stale caches allocate six nodes between them;
// in the end no two HostSubnets overlap.
func TestRacingMany(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	f := newFixture(t, defaultNetwork)
	for i, n := range names {
		if _, err := f.kube.CoreV1().Nodes().Create(context.Background(), node(n, fmt.Sprintf("172.28.0.%d", 11+i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cs := []*ctl{f.newController(), f.newController(), f.newController()}
	for i, n := range names {
		cs[i%3].syncKeys(n)
	}
	for range 2 {
		for _, c := range cs {
			c.settle()
		}
	}
	got := f.subnets()
	if len(got) != len(names) {
		t.Fatalf("HostSubnets = %v", got)
	}
	seen := map[string]string{}
	for _, s := range got {
		name, rest, _ := strings.Cut(s, "=")
		_, sub, _ := strings.Cut(rest, ",")
		if o, dup := seen[sub]; dup {
			t.Errorf("%s and %s share %s", o, name, sub)
		}
		seen[sub] = name
	}
}

func TestOlder(t *testing.T) {
	t0 := metav1.Now()
	t1 := metav1.NewTime(t0.Add(1e9))
	hs := func(name string, ts metav1.Time) *sluicev1alpha1.HostSubnet {
		return &sluicev1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: ts}}
	}
	for _, tc := range []struct {
		a, b *sluicev1alpha1.HostSubnet
		want bool
	}{
		{hs("z", t0), hs("a", t1), true},
		{hs("a", t1), hs("z", t0), false},
		{hs("a", t0), hs("b", t0), true},
		{hs("b", t0), hs("a", t0), false},
	} {
		if got := older(tc.a, tc.b); got != tc.want {
			t.Errorf("older(%s@%v, %s@%v) = %v", tc.a.Name, tc.a.CreationTimestamp, tc.b.Name, tc.b.CreationTimestamp, got)
		}
	}
}

// TestStaleCacheDoesNotDelete: the cache shows an older HostSubnet overlapping b's, but the
// API server no longer has it. b's HostSubnet, which pods may use, stays.
func TestStaleCacheDoesNotDelete(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("a", "172.28.0.11"), node("b", "172.28.0.12"),
		hostSubnet("a", "172.28.0.11", "10.128.0.0/23"))
	f.tick()
	if _, err := f.sluice.SluiceV1alpha1().HostSubnets().Create(context.Background(), hostSubnet("b", "172.28.0.12", "10.128.0.0/23"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := f.newController() // its cache shows both
	if err := f.sluice.SluiceV1alpha1().HostSubnets().Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.syncKeys("b")
	f.wantSubnets("b=172.28.0.12,10.128.0.0/23")
	c.settle()
	f.wantSubnets("a=172.28.0.11,10.128.2.0/23", "b=172.28.0.12,10.128.0.0/23")
}

// wantDistinct checks that no two HostSubnets of the fake API share a subnet and that there
// are n of them.
func (f *fixture) wantDistinct(n int) {
	f.t.Helper()
	got := f.subnets()
	if len(got) != n {
		f.t.Fatalf("%d HostSubnets, want %d", len(got), n)
	}
	seen := map[string]string{}
	for _, s := range got {
		name, rest, _ := strings.Cut(s, "=")
		_, sub, _ := strings.Cut(rest, ",")
		if o, dup := seen[sub]; dup {
			f.t.Errorf("%s and %s share %s", o, name, sub)
		}
		seen[sub] = name
	}
}

// listsOfHostSubnets counts the LISTs of HostSubnets sent to the fake API server.
func (f *fixture) listsOfHostSubnets() int {
	n := 0
	for _, a := range f.sluice.Actions() {
		if a.GetVerb() == "list" && a.GetResource().Resource == "hostsubnets" {
			n++
		}
	}
	return n
}

// TestManyNodesOnePass allocates 3,000 nodes in one pass over the queue from a cache that
// never catches up: every node gets its own subnet, in name order from the lowest, and the
// created HostSubnets are checked against the API server together (one LIST, not one per
// node as before the index).
func TestManyNodesOnePass(t *testing.T) {
	const n = 3000
	f := newFixture(t, network("172.30.0.0/16", entry("10.64.0.0/10", 9)))
	for i := range n {
		if _, err := f.kube.CoreV1().Nodes().Create(context.Background(), node(fmt.Sprintf("node%05d", i), fmt.Sprintf("100.64.%d.%d", i/250, 1+i%250)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c := f.newController()
	c.events = record.NewFakeRecorder(2 * n) // one event per node; the fake blocks when full
	c.recorder = c.events
	f.sluice.ClearActions()
	c.enqueueAll()
	c.process(3 * n)
	lists := f.listsOfHostSubnets()
	f.wantDistinct(n)
	hs, err := f.sluice.SluiceV1alpha1().HostSubnets().Get(context.Background(), "node02999", metav1.GetOptions{})
	if err != nil || hs.Spec.Subnet != "10.87.110.0/23" {
		t.Errorf("node02999: %v, %v; want 10.87.110.0/23, the 3000th /23", hs, err)
	}
	if lists != 1 {
		t.Errorf("%d LISTs of HostSubnets for %d allocations, want 1", lists, n)
	}
	if st := f.status(); st.AllocatedSubnets != n {
		t.Errorf("status allocated %d, want %d", st.AllocatedSubnets, n)
	}
	c.refresh()
	c.enqueueAll()
	c.process(3 * n)
	f.wantDistinct(n)
}

// TestManyNodesParallelWorkers runs the controller as cmd/sluice-controller does, with 8
// workers allocating at once and informers following the fake API, while 1,000 nodes are
// created and some of them deleted: no subnet is ever held by two HostSubnets, and freed
// subnets are handed out again.
func TestManyNodesParallelWorkers(t *testing.T) {
	f := newFixture(t, network("172.30.0.0/16", entry("10.64.0.0/10", 9)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := f.runWithInformers(ctx, 5000, 8)

	// The check runs while the controller works: any two HostSubnets sharing a subnet at
	// any moment are a failure, not only at the end.
	dupes := make(chan string, 1)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			list, err := f.sluice.SluiceV1alpha1().HostSubnets().List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			seen := map[string]string{}
			for _, hs := range list.Items {
				if o, dup := seen[hs.Spec.Subnet]; dup {
					select {
					case dupes <- fmt.Sprintf("%s and %s share %s", o, hs.Name, hs.Spec.Subnet):
					default:
					}
				}
				seen[hs.Spec.Subnet] = hs.Name
			}
		}
	}()

	const n = 1000
	create := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := f.kube.CoreV1().Nodes().Create(ctx, node(fmt.Sprintf("node%04d", i), fmt.Sprintf("100.64.%d.%d", i/250, 1+i%250)), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// The fake API's watches hold 100 events and panic when full.
			time.Sleep(time.Millisecond)
		}
	}
	waitCount := func(what string, want int) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
			l, err := f.sluice.SluiceV1alpha1().HostSubnets().List(ctx, metav1.ListOptions{})
			return err == nil && len(l.Items) == want, nil
		})
		if err != nil {
			t.Fatalf("%s: %d HostSubnets, want %d", what, len(f.subnets()), want)
		}
	}
	create(0, n/2)
	waitCount("first half", n/2)
	for i := 0; i < n/2; i += 10 {
		if err := f.kube.CoreV1().Nodes().Delete(ctx, fmt.Sprintf("node%04d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	create(n/2, n)
	waitCount("all", n-n/20)
	close(stopWatch)
	<-watchDone
	select {
	case d := <-dupes:
		t.Errorf("a subnet was held twice: %s", d)
	default:
	}
	f.wantDistinct(n - n/20)
	// The 50 freed subnets went to new nodes: the lowest 950 host subnets are the ones held.
	for _, s := range f.subnets() {
		_, rest, _ := strings.Cut(s, "=")
		_, sub, _ := strings.Cut(rest, ",")
		p := netip.MustParsePrefix(sub)
		if idx := (int(p.Addr().As4()[1]-64)<<8 | int(p.Addr().As4()[2])) / 2; idx >= n-n/20 {
			t.Errorf("%s: beyond the lowest %d host subnets, although freed ones were available", s, n-n/20)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

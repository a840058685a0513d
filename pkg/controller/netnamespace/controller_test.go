package netnamespace

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/vnid"
)

func TestAllocation(t *testing.T) {
	f := newFixture(t, namespace("default"), namespace("kube-system"), namespace("a"), namespace("b"))
	c := f.newController()
	c.syncNames("default", "kube-system", "a", "b")
	wantNetIDs(t, f, "a=2 b=3 default=0 kube-system=1")
	for name, id := range map[string]string{"a": "2", "b": "3", "kube-system": "1"} {
		nn := f.get(name)
		if nn.Spec.NetName != name || nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID] != id {
			t.Errorf("%s: netname %q, %s=%q; want %q and %q", name, nn.Spec.NetName, sluicev1alpha1.AnnotationAllocatedNetID, nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID], name, id)
		}
	}
	if a := f.get("default").Annotations[sluicev1alpha1.AnnotationAllocatedNetID]; a != "" {
		t.Errorf("default: %s=%q; the global netID is not an allocation", sluicev1alpha1.AnnotationAllocatedNetID, a)
	}
	if ev := c.drainEvents(); !hasEvent(ev, "Normal", ReasonAllocated, "netID 2 to namespace a") {
		t.Errorf("events %q: no %s for a", ev, ReasonAllocated)
	}

	// The caches are behind our creates: nothing is created twice, no netID handed out twice.
	f.createNamespace("c")
	f.createNamespace("d")
	c.refresh()
	c.syncNames("c")
	c.syncNames("d", "c", "a", "b")
	creates := 0
	for _, a := range f.sluice.Actions() {
		if a.GetVerb() == "create" {
			creates++
		}
	}
	if creates != 6 {
		t.Errorf("%d creates for 6 namespaces", creates)
	}
	c.settle()
	wantNetIDs(t, f, "a=2 b=3 c=4 d=5 default=0 kube-system=1")

	// Settled: another round writes nothing.
	before := len(f.sluice.Actions())
	c.settle()
	for _, a := range f.sluice.Actions()[before:] {
		if v := a.GetVerb(); v != "list" && v != "get" && v != "watch" {
			t.Errorf("settled controller wrote: %s %s", v, a.GetResource().Resource)
		}
	}
}

func TestGlobalNamespacesOption(t *testing.T) {
	f := newFixture(t, namespace("default"), namespace("kube-system"), namespace("a"))
	c := f.newController(func(o *Options) { o.GlobalNamespaces = []string{"default", "kube-system"} })
	c.settle()
	wantNetIDs(t, f, "a=1 default=0 kube-system=0")
}

func TestReuseAfterDeletion(t *testing.T) {
	f := newFixture(t, namespace("a"), namespace("b"), namespace("c"))
	c := f.newController()
	c.syncNames("a", "b", "c")
	c.settle()
	wantNetIDs(t, f, "a=1 b=2 c=3")

	// b is deleted; until its NetNamespace is gone, netID 2 is held: d does not get it.
	f.deleteNamespace("b")
	f.createNamespace("d")
	c.refresh()
	c.syncNames("d")
	wantNetIDs(t, f, "a=1 b=2 c=3 d=4")

	c.settle()
	wantNetIDs(t, f, "a=1 c=3 d=4")
	f.createNamespace("e")
	c.settle()
	wantNetIDs(t, f, "a=1 c=3 d=4 e=2")

	// A netID that a joined namespace still holds is not free when its first owner goes.
	f.request("d", "join:a")
	c.settle()
	f.deleteNamespace("a")
	c.settle()
	f.createNamespace("g")
	c.settle()
	wantNetIDs(t, f, "c=3 d=1 e=2 g=4")
}

func TestNamespaceCacheBehind(t *testing.T) {
	// The NetNamespace cache shows x, the namespace cache not yet: the API server is asked,
	// and x keeps its NetNamespace.
	f := newFixture(t, allocatedNN("x", 1))
	c := f.newController()
	f.createNamespace("x")
	c.syncNames("x")
	wantNetIDs(t, f, "x=1")
	// A NetNamespace whose namespace does not exist goes.
	f2 := newFixture(t, allocatedNN("gone", 7), namespace("a"))
	c2 := f2.newController()
	c2.settle()
	wantNetIDs(t, f2, "a=1")
}

func TestTerminatingNamespaceKeepsNetID(t *testing.T) {
	ns := namespace("a")
	now := metav1.Now()
	ns.DeletionTimestamp = &now
	ns.Finalizers = []string{"kubernetes"}
	f := newFixture(t, ns, namespace("b"), allocatedNN("b", 1))
	c := f.newController()
	c.settle()
	// a is going away: no NetNamespace is made for it. b's stays while b exists.
	wantNetIDs(t, f, "b=1")
}

// TestRestart: a new controller (or the other replica) starts from the NetNamespaces in the
// API, keeps every netID, whatever made it, and allocates around them.
func TestRestart(t *testing.T) {
	f := newFixture(t,
		namespace("default"), namespace("a"), namespace("b"), namespace("c"), namespace("d"), namespace("e"),
		netNamespace("default", 0),
		allocatedNN("a", 1),
		netNamespace("b", 1), // joined to a by hand
		allocatedNN("c", 3),
		netNamespace("d", 0), // made global
	)
	c := f.newController()
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=3 d=0 default=0 e=2")
	f.createNamespace("g")
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=3 d=0 default=0 e=2 g=4")
	if ev := c.drainEvents(); hasEvent(ev, "Warning") {
		t.Errorf("warnings on a clean restart: %q", ev)
	}
}

func TestJoinIsolateGlobal(t *testing.T) {
	f := newFixture(t, namespace("default"), namespace("a"), namespace("b"), namespace("c"), namespace("d"))
	c := f.newController()
	c.syncNames("default", "a", "b", "c", "d")
	wantNetIDs(t, f, "a=1 b=2 c=3 d=4 default=0")

	f.request("b", "join:a")
	f.request("c", "join:a")
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=1 d=4 default=0")
	for _, n := range []string{"b", "c"} {
		nn := f.get(n)
		if _, ok := nn.Annotations[sluicev1alpha1.AnnotationMultitenantChange]; ok {
			t.Errorf("%s: the request is still there after it was applied", n)
		}
		if _, ok := nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID]; ok {
			t.Errorf("%s: a joined namespace still records an allocation: %v", n, nn.Annotations)
		}
	}
	if ev := c.drainEvents(); !hasEvent(ev, ReasonChanged, "join:a: spec.netID 2 -> 1") {
		t.Errorf("events %q: no %s for b", ev, ReasonChanged)
	}

	// Isolate a: it shares 1 with b and c, so it gets the lowest free netID; b and c keep 1.
	f.request("a", sluicev1alpha1.MultitenantChangeIsolate)
	c.settle()
	wantNetIDs(t, f, "a=2 b=1 c=1 d=4 default=0")
	// Isolate b and c: b shares with c and moves; c is then alone on 1 and keeps it.
	f.request("b", sluicev1alpha1.MultitenantChangeIsolate)
	f.request("c", sluicev1alpha1.MultitenantChangeIsolate)
	c.refresh()
	c.syncNames("b", "c") // c's from a cache that still shows b on 1: our write counts
	c.settle()
	wantNetIDs(t, f, "a=2 b=3 c=1 d=4 default=0")
	for _, n := range []string{"a", "b", "c"} {
		nn := f.get(n)
		if nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID] != vnid.Format(nn.Spec.NetID) {
			t.Errorf("%s: isolated but %s=%q, netID %d", n, sluicev1alpha1.AnnotationAllocatedNetID, nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID], nn.Spec.NetID)
		}
	}

	// Global, and back.
	f.request("d", sluicev1alpha1.MultitenantChangeGlobal)
	c.settle()
	wantNetIDs(t, f, "a=2 b=3 c=1 d=0 default=0")
	f.request("d", sluicev1alpha1.MultitenantChangeIsolate)
	c.settle()
	wantNetIDs(t, f, "a=2 b=3 c=1 d=4 default=0")
	// Joining a global namespace makes global.
	f.request("a", "join:default")
	c.settle()
	wantNetIDs(t, f, "a=0 b=3 c=1 d=4 default=0")
	// Joining oneself changes nothing.
	f.request("b", "join:b")
	c.settle()
	wantNetIDs(t, f, "a=0 b=3 c=1 d=4 default=0")
	if _, ok := f.get("b").Annotations[sluicev1alpha1.AnnotationMultitenantChange]; ok {
		t.Error("b: a no-op request was not removed")
	}
}

// TestChangesBeforeCacheCatchesUp: requests applied one after the other before the cache
// shows the first — the controller's own writes count.
func TestChangesBeforeCacheCatchesUp(t *testing.T) {
	f := newFixture(t, namespace("a"), namespace("b"), namespace("c"),
		allocatedNN("a", 1), allocatedNN("b", 2), allocatedNN("c", 3))
	c := f.newController()
	f.request("b", "join:a")
	f.request("c", "join:a")
	c.refresh()
	c.syncNames("b", "c")
	// Not refreshed: a is isolated from a cache that still shows b=2 and c=3.
	f.request("a", sluicev1alpha1.MultitenantChangeIsolate)
	f.request("b", sluicev1alpha1.MultitenantChangeIsolate)
	f.request("c", sluicev1alpha1.MultitenantChangeIsolate)
	c.refresh() // the cache shows the requests, and b and c joined to a
	c.syncNames("a", "b", "c")
	c.settle()
	got := f.netIDs()
	seen := map[string]bool{}
	for _, kv := range strings.Fields(got) {
		id := kv[strings.Index(kv, "=")+1:]
		if seen[id] {
			t.Fatalf("after isolating all three, a netID is shared: %s", got)
		}
		seen[id] = true
	}
}

func TestOperatorEditsKept(t *testing.T) {
	f := newFixture(t, namespace("a"), namespace("b"), namespace("c"))
	c := f.newController()
	c.syncNames("a", "b", "c")
	c.settle()
	wantNetIDs(t, f, "a=1 b=2 c=3")

	// kubectl edit: b joins a by hand, c takes an unused netID.
	f.edit("b", 1)
	f.edit("c", 100)
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=100")
	// The allocation records no longer match: dropped, so that sharing 1 with a is no
	// duplicate to settle.
	if _, ok := f.get("b").Annotations[sluicev1alpha1.AnnotationAllocatedNetID]; ok {
		t.Error("b: stale allocation record kept after a hand edit")
	}
	// Freed 2 is reused; 100 is held and is not.
	f.createNamespace("d")
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=100 d=2")

	// default made non-global by hand: kept too.
	f.createNamespace("default")
	c.settle()
	f.edit("default", 2)
	c.settle()
	wantNetIDs(t, f, "a=1 b=1 c=100 d=2 default=2")
	if ev := c.drainEvents(); hasEvent(ev, "Warning") {
		t.Errorf("warnings for operator edits: %q", ev)
	}
}

// TestDuplicateSettled: two controllers with stale caches allocate the same netID to two
// namespaces; the younger NetNamespace moves, whichever controller sees it.
func TestDuplicateSettled(t *testing.T) {
	f := newFixture(t, namespace("a"))
	c1, c2 := f.newController(), f.newController()
	c1.syncNames("a")
	f.tick()
	f.createNamespace("x")
	f.createNamespace("y")
	c1.refresh()
	c2.refresh()
	// Neither cache shows the other's create.
	c1.syncNames("x")
	f.tick()
	c2.syncNames("y")
	wantNetIDs(t, f, "a=1 x=2 y=2")

	c2.settle()
	wantNetIDs(t, f, "a=1 x=2 y=3")
	if ev := c2.drainEvents(); !hasEvent(ev, "Warning", ReasonConflict, "netID 2 was also allocated to the older NetNamespace x", "moved to netID 3") {
		t.Errorf("events %q: no %s", ev, ReasonConflict)
	}
	c1.settle()
	wantNetIDs(t, f, "a=1 x=2 y=3")

	// Same timestamps: the name decides, the same way in both controllers.
	f2 := newFixture(t, namespace("p"), namespace("q"), allocatedNN("p", 5), allocatedNN("q", 5))
	f2.newController().settle()
	wantNetIDs(t, f2, "p=5 q=1")

	// A shared netID without allocation records is a join: left alone.
	f3 := newFixture(t, namespace("p"), namespace("q"), allocatedNN("p", 5), netNamespace("q", 5))
	f3.newController().settle()
	wantNetIDs(t, f3, "p=5 q=5")
}

func TestBadInput(t *testing.T) {
	mismatched := allocatedNN("m", 4)
	mismatched.Spec.NetName = "other"
	f := newFixture(t, namespace("default"), namespace("a"), namespace("b"), namespace("m"),
		netNamespace("default", 0), allocatedNN("a", 1), netNamespace("b", sluicev1alpha1.MaxNetID+1), mismatched)
	c := f.newController()
	c.settle()
	wantNetIDs(t, f, "a=1 b=2 default=0 m=4")
	ev := c.drainEvents()
	if !hasEvent(ev, "Warning", ReasonInvalidNetID, "spec.netID 16777216 is out of range", "replaced with the free netID 2") {
		t.Errorf("events %q: no %s naming spec.netID and its value", ev, ReasonInvalidNetID)
	}
	if !hasEvent(ev, "Warning", ReasonNetNameMismatch, `spec.netname "other" is not metadata.name "m"`) {
		t.Errorf("events %q: no %s naming spec.netname and its value", ev, ReasonNetNameMismatch)
	}

	for _, tc := range []struct{ name, req, want string }{
		{"a", "join:nope", "namespace nope has no NetNamespace to join"},
		{"a", "join:", "no namespace to join"},
		{"a", "frobnicate", `sluice.dev/multitenant-change="frobnicate": unknown request`},
		{"default", sluicev1alpha1.MultitenantChangeIsolate, "namespace default is global by the controller's configuration and cannot be isolated"},
		{"default", "join:a", "namespace default is global by the controller's configuration and cannot join namespace a"},
	} {
		f.request(tc.name, tc.req)
		c.settle()
		nn := f.get(tc.name)
		if msg := nn.Annotations[sluicev1alpha1.AnnotationMultitenantChangeError]; !strings.Contains(msg, tc.want) {
			t.Errorf("%s %q: %s=%q, want it to contain %q", tc.name, tc.req, sluicev1alpha1.AnnotationMultitenantChangeError, msg, tc.want)
		}
		if _, ok := nn.Annotations[sluicev1alpha1.AnnotationMultitenantChange]; ok {
			t.Errorf("%s %q: the refused request is still there", tc.name, tc.req)
		}
		if ev := c.drainEvents(); !hasEvent(ev, "Warning", ReasonChangeFailed, tc.want) {
			t.Errorf("%s %q: events %q", tc.name, tc.req, ev)
		}
		wantNetIDs(t, f, "a=1 b=2 default=0 m=4")
	}
	// A new request clears the old error.
	f.request("a", sluicev1alpha1.MultitenantChangeGlobal)
	c.settle()
	if nn := f.get("a"); nn.Spec.NetID != 0 || nn.Annotations[sluicev1alpha1.AnnotationMultitenantChangeError] != "" {
		t.Errorf("a: netID %d annotations %v after make-global", nn.Spec.NetID, nn.Annotations)
	}
}

func TestExhaustion(t *testing.T) {
	f := newFixture(t, namespace("a"), namespace("b"), namespace("c"), namespace("d"))
	c := f.newController()
	c.alloc = vnid.New(3)
	c.syncNames("a", "b", "c", "d")
	wantNetIDs(t, f, "a=1 b=2 c=3")
	if ev := c.drainEvents(); !hasEvent(ev, "Warning", ReasonExhausted, "all netIDs 1 to 3 are held") {
		t.Errorf("events %q: no %s", ev, ReasonExhausted)
	}
	f.request("a", sluicev1alpha1.MultitenantChangeIsolate) // alone on 1 already: keeps it
	f.request("b", "join:c")
	c.settle()
	wantNetIDs(t, f, "a=1 b=3 c=3 d=2")
	f.request("b", sluicev1alpha1.MultitenantChangeIsolate)
	c.settle()
	if msg := f.get("b").Annotations[sluicev1alpha1.AnnotationMultitenantChangeError]; !strings.Contains(msg, "all netIDs 1 to 3 are held") {
		t.Errorf("isolate with no free netID: %s=%q", sluicev1alpha1.AnnotationMultitenantChangeError, msg)
	}
}

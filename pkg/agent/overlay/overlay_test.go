package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
)

func hostSubnet(name, subnet, hostIP string) *v1alpha1.HostSubnet {
	return &v1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HostSubnetSpec{Host: name, Subnet: subnet, HostIP: hostIP}}
}

type fixture struct {
	t          *testing.T
	subnets    cache.Indexer
	networks   cache.Indexer
	o          *Overlay
	clock      time.Time
	programmed []desired
	full       []bool    // whether each programming was a full one
	prevs      []desired // the state each partial one started from
	fail       bool
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, clock: time.Unix(1_000_000, 0),
		subnets:  cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		networks: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})}
	self := hostSubnet("node1", "10.128.0.0/23", "172.28.0.11")
	f.subnets.Add(self)
	f.subnets.Add(hostSubnet("node2", "10.128.2.0/23", "172.28.0.12"))
	f.networks.Add(&v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName, Generation: 1},
		Spec: v1alpha1.ClusterNetworkSpec{ServiceNetwork: "172.30.0.0/16", Encapsulation: v1alpha1.EncapsulationVXLAN,
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}}})
	f.o = &Overlay{NodeName: "node1", HostSubnets: listers.NewHostSubnetLister(f.subnets),
		Networks: listers.NewClusterNetworkLister(f.networks), Log: logr.Discard(), self: self,
		now: func() time.Time { return f.clock },
		program: func(prev *desired, d desired) error {
			if f.fail {
				return errors.New("netlink: no")
			}
			f.programmed = append(f.programmed, d)
			f.full = append(f.full, prev == nil)
			if prev != nil {
				f.prevs = append(f.prevs, *prev)
			}
			return nil
		}}
	return f
}

// sync runs one Sync and checks whether it programmed the kernel.
func (f *fixture) sync(what string, wantProgram bool) {
	f.t.Helper()
	before := len(f.programmed)
	if err := f.o.Sync(f.t.Context()); err != nil && !f.fail {
		f.t.Fatalf("%s: %v", what, err)
	}
	if got := len(f.programmed) > before; got != wantProgram {
		f.t.Errorf("%s: programmed %v, want %v", what, got, wantProgram)
	}
}

func (f *fixture) lastRemotes() []string {
	var out []string
	for _, r := range f.programmed[len(f.programmed)-1].remotes {
		out = append(out, r.Node+"="+r.Subnet.String()+"@"+r.NodeIP.String())
	}
	return out
}

// TestSyncProgramsOnlyChanges: the loop is kicked by every HostSubnet and
// ClusterNetwork event — at 5,000 nodes a full programming is three netlink
// writes per remote subnet, and the controller writes the ClusterNetwork's
// status on every allocation — so a sync whose desired state is what the
// last successful sync programmed does nothing, until ResyncPeriod has
// passed or a sync failed.
func TestSyncProgramsOnlyChanges(t *testing.T) {
	f := newFixture(t)
	f.sync("first sync", true)
	if got := f.lastRemotes(); len(got) != 1 || got[0] != "node2=10.128.2.0/23@172.28.0.12" {
		t.Fatalf("remotes %v", got)
	}
	f.sync("the loop's first run right after the agent's own first sync", false)

	// Status writes and unrelated HostSubnet fields change nothing programmed.
	for i := range 100 {
		cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName, Generation: 1},
			Spec:   v1alpha1.ClusterNetworkSpec{ServiceNetwork: "172.30.0.0/16", Encapsulation: v1alpha1.EncapsulationVXLAN, ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}},
			Status: v1alpha1.ClusterNetworkStatus{AllocatedSubnets: int32(i + 2), Capacity: 512}}
		f.networks.Update(cn)
		f.clock = f.clock.Add(100 * time.Millisecond)
		f.sync("ClusterNetwork status write", false)
	}
	if len(f.programmed) != 1 {
		t.Fatalf("100 status writes programmed the kernel %d times", len(f.programmed)-1)
	}

	// A join, a moved node and a leave are programmed.
	f.subnets.Add(hostSubnet("node3", "10.128.4.0/23", "172.28.0.13"))
	f.sync("node3 joins", true)
	if got := f.lastRemotes(); len(got) != 2 || got[1] != "node3=10.128.4.0/23@172.28.0.13" {
		t.Errorf("after the join: %v", got)
	}
	f.subnets.Update(hostSubnet("node2", "10.128.2.0/23", "172.28.0.22"))
	f.sync("node2's address moves", true)
	f.subnets.Delete(hostSubnet("node3", "", ""))
	f.sync("node3 leaves", true)
	if got := f.lastRemotes(); len(got) != 1 || got[0] != "node2=10.128.2.0/23@172.28.0.22" {
		t.Errorf("after the leave: %v", got)
	}

	// The service network and the encapsulation are part of the state.
	cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName, Generation: 2},
		Spec: v1alpha1.ClusterNetworkSpec{ServiceNetwork: "172.31.0.0/16", Encapsulation: v1alpha1.EncapsulationNone}}
	f.networks.Update(cn)
	f.sync("encapsulation None, another service network", true)
	if d := f.programmed[len(f.programmed)-1]; d.vxlan || len(d.services) != 1 || d.services[0] != netip.MustParsePrefix("172.31.0.0/16") {
		t.Errorf("programmed %+v", d)
	}

	// Unchanged, but the period has passed since the last programming: re-asserted.
	f.clock = f.clock.Add(ResyncPeriod - time.Second)
	f.sync("unchanged, within the period", false)
	f.clock = f.clock.Add(time.Second)
	f.sync("unchanged, the period passed", true)

	// After a failure the next sync programs even though nothing changed.
	f.subnets.Add(hostSubnet("node4", "10.128.6.0/23", "172.28.0.14"))
	f.fail = true
	f.sync("a failing sync", false)
	f.fail = false
	f.sync("after the failure", true)
	f.sync("settled", false)
}

// TestDesiredIgnoresListOrder: the lister lists in no particular order; the
// desired state must not differ with it, or every sync would program.
func TestDesiredIgnoresListOrder(t *testing.T) {
	f := newFixture(t)
	for i := 3; i < 200; i++ {
		a := netip.AddrFrom4([4]byte{172, 28, byte(i >> 8), byte(i)})
		s := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>7), byte(i<<1) & 0xfe, 0}), 23)
		f.subnets.Add(hostSubnet("node"+a.String(), s.String(), a.String()))
	}
	first, err := f.o.desired()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		d, err := f.o.desired()
		if err != nil {
			t.Fatal(err)
		}
		if !d.equal(first) {
			t.Fatal("desired state depends on the lister's order")
		}
	}
	if len(first.remotes) != 198 {
		t.Errorf("%d remotes, want 198", len(first.remotes))
	}
	for i := 1; i < len(first.remotes); i++ {
		if first.remotes[i-1].Node > first.remotes[i].Node {
			t.Fatalf("remotes not sorted: %v before %v", first.remotes[i-1], first.remotes[i])
		}
	}
}

// TestSyncWritesOnlyTheDifference: within ResyncPeriod of a full
// programming a join, a move and a leave are programmed as the difference
// from what the kernel holds (link writes only the changed entries); the
// start, a failure, a change of encapsulation and the period program
// everything.
func TestSyncWritesOnlyTheDifference(t *testing.T) {
	f := newFixture(t)
	f.sync("first sync", true)
	wantFull := func(what string, full bool, prevRemotes int) {
		t.Helper()
		if got := f.full[len(f.full)-1]; got != full {
			t.Errorf("%s: full %v, want %v", what, got, full)
		}
		if !full {
			if got := len(f.prevs[len(f.prevs)-1].remotes); got != prevRemotes {
				t.Errorf("%s: started from %d remotes, want %d", what, got, prevRemotes)
			}
		}
	}
	wantFull("first sync", true, 0)

	f.clock = f.clock.Add(time.Second)
	f.subnets.Add(hostSubnet("node3", "10.128.4.0/23", "172.28.0.13"))
	f.sync("node3 joins", true)
	wantFull("node3 joins", false, 1)
	f.subnets.Update(hostSubnet("node3", "10.128.4.0/23", "172.28.0.33"))
	f.sync("node3 moves", true)
	wantFull("node3 moves", false, 2)
	f.subnets.Delete(hostSubnet("node3", "", ""))
	f.sync("node3 leaves", true)
	wantFull("node3 leaves", false, 2)
	if got := f.lastRemotes(); len(got) != 1 || got[0] != "node2=10.128.2.0/23@172.28.0.12" {
		t.Errorf("after the leave: %v", got)
	}

	// A failed partial sync: the next one programs everything.
	f.subnets.Add(hostSubnet("node4", "10.128.6.0/23", "172.28.0.14"))
	f.fail = true
	f.sync("a failing sync", false)
	f.fail = false
	f.sync("after the failure", true)
	wantFull("after the failure", true, 0)

	// Changes keep being partial until the period since the last full
	// programming has passed, however many there were.
	for i := range 5 {
		f.clock = f.clock.Add(5 * time.Second)
		f.subnets.Add(hostSubnet(fmt.Sprintf("node%d", 10+i), fmt.Sprintf("10.128.%d.0/23", 20+2*i), fmt.Sprintf("172.28.0.%d", 20+i)))
		f.sync("a join", true)
		wantFull("a join", false, 2+i)
	}
	f.clock = f.clock.Add(5 * time.Second)
	f.subnets.Delete(hostSubnet("node10", "", ""))
	f.sync("a leave after the period", true)
	wantFull("a leave after the period", true, 0)

	// Another encapsulation: everything.
	f.networks.Update(&v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName, Generation: 2},
		Spec: v1alpha1.ClusterNetworkSpec{ServiceNetwork: "172.30.0.0/16", Encapsulation: v1alpha1.EncapsulationNone}})
	f.sync("encapsulation None", true)
	wantFull("encapsulation None", true, 0)
}

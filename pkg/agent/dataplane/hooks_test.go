package dataplane_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/netpol"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
)

func indexer(objs ...any) cache.Indexer {
	i := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		i.Add(o)
	}
	return i
}

// allFeatures renders the three features of a node with nothing in the
// cluster into one fake table and returns the owner.
func allFeatures(t *testing.T) (*dataplane.Owner, *knftables.Fake) {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	o := dataplane.NewOwner(f, logr.Discard())
	o.Register(dataplane.NewBase())
	cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{Mode: "NetworkPolicy"}}
	o.Register(proxy.NewProxier(corelisters.NewServiceLister(indexer()), cache.NewIndexer(cache.MetaNamespaceKeyFunc, proxy.SliceIndexers()),
		proxy.NodeInfo{Name: "n1"}, logr.Discard(), func() {}))
	o.Register(netpol.NewIsolation(netpol.Listers{
		Pods: corelisters.NewPodLister(indexer()), Namespaces: corelisters.NewNamespaceLister(indexer()),
		Policies: networkinglisters.NewNetworkPolicyLister(indexer()), NetNamespaces: listers.NewNetNamespaceLister(indexer()),
		HostSubnets: listers.NewHostSubnetLister(indexer()), ClusterNetworks: listers.NewClusterNetworkLister(indexer(cn)),
	}, "n1", logr.Discard(), func() {}))
	if err := o.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o, f
}

// The base chains in the rendered table are exactly the declared ones, with
// the declared hooks and priorities.
func TestRenderedHooksAreDeclared(t *testing.T) {
	o, f := allFeatures(t)
	declared := map[string]dataplane.Hook{}
	for _, h := range o.Hooks() {
		declared[h.Name] = h
	}
	seen := 0
	for name, c := range f.Table.Chains {
		if c.Hook == nil {
			continue
		}
		seen++
		d, ok := declared[name]
		if !ok {
			t.Errorf("base chain %s rendered but not declared", name)
			continue
		}
		if *c.Type != d.Type || *c.Hook != d.Hook || *c.Priority != d.Priority {
			t.Errorf("base chain %s rendered as %s %s %s, declared as %s %s %s", name, *c.Type, *c.Hook, *c.Priority, d.Type, d.Hook, d.Priority)
		}
	}
	if seen != len(declared) {
		t.Errorf("%d base chains rendered, %d declared", seen, len(declared))
	}
}

// The orderings the features rely on.
func TestHookOrderContract(t *testing.T) {
	o, _ := allFeatures(t)
	prio := map[string]int{}
	feature := map[string]string{}
	for _, h := range o.Hooks() {
		p, err := dataplane.PriorityValue(h.Priority)
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		prio[h.Name], feature[h.Name] = p, h.Feature
	}
	const conntrack, dstnat = -200, -100
	if prio[dataplane.ChainAntiSpoof] >= conntrack {
		t.Errorf("anti-spoofing at %d must run before conntrack (%d): the first packet of a flow is checked", prio[dataplane.ChainAntiSpoof], conntrack)
	}
	// Priorities order chains within one hook only. In prerouting the
	// source-range check must see the load balancer's address, before DNAT;
	// in output the proxy's checks run before the node's own DNAT and its
	// post chain after it. Forward and input come after prerouting, so
	// isolation there always sees DNATed addresses, whatever its priority.
	if p := prio[proxy.ChainFilterPrerouting]; p >= dstnat || p <= prio[dataplane.ChainAntiSpoof] {
		t.Errorf("the proxy's prerouting filter at %d must run after anti-spoofing and before DNAT (%d)", p, dstnat)
	}
	if prio[proxy.ChainFilterOutput] >= dstnat || prio[proxy.ChainFilterOutputPost] <= dstnat {
		t.Errorf("output: the proxy's checks at %d and %d must straddle DNAT (%d)", prio[proxy.ChainFilterOutput], prio[proxy.ChainFilterOutputPost], dstnat)
	}
	for _, c := range netpol.BaseChains {
		if c.Hook == knftables.PreroutingHook || c.Hook == knftables.OutputHook {
			t.Errorf("isolation chain %s hooks %s: it would see service addresses before DNAT", c.Name, c.Hook)
		}
	}
	if prio[netpol.ChainForwardIngress] <= prio[netpol.ChainForwardEgress] {
		t.Errorf("ingress (%d) must follow egress (%d)", prio[netpol.ChainForwardIngress], prio[netpol.ChainForwardEgress])
	}
	if feature[dataplane.ChainMasq] != "pod network" || feature[proxy.ChainNATPrerouting] != "service proxy" || feature[netpol.ChainForwardEgress] != "isolation" {
		t.Errorf("owners: %v", feature)
	}
}

// README.md carries the generated table of hooks.
func TestReadmeListsTheHooks(t *testing.T) {
	o, _ := allFeatures(t)
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := o.HooksMarkdown()
	if !strings.Contains(string(b), want) {
		t.Errorf("README.md does not carry the table of hooks as the code declares them; replace its table with:\n\n%s", want)
	}
}

// Two features cannot declare one base chain.
func TestRegisterRefusesADuplicateHook(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a second feature declaring pod-antispoof was accepted")
		}
	}()
	o := dataplane.NewOwner(knftables.NewFake(knftables.InetFamily, dataplane.Table), logr.Discard())
	o.Register(dataplane.NewBase())
	o.Register(dataplane.NewBase())
}

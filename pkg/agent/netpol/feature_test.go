package netpol

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
)

// isoEnv is one node's isolation feature under a table owner over the fake,
// synced by the test (SyncNow), with indexers standing in for informers.
type isoEnv struct {
	t        *testing.T
	nft      *refusing
	owner    *dataplane.Owner
	base     *dataplane.Base
	iso      *Isolation
	policies cache.Indexer
	pods     cache.Indexer
	requests int
}

// refusing fails every transaction while refuse is set.
type refusing struct {
	*knftables.Fake
	refuse bool
}

func (r *refusing) Run(ctx context.Context, tx *knftables.Transaction) error {
	if r.refuse {
		return errors.New("netlink: refused")
	}
	return r.Fake.Run(ctx, tx)
}

func newIsoEnv(t *testing.T) *isoEnv {
	idx := func(objs ...any) cache.Indexer {
		i := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		for _, o := range objs {
			i.Add(o)
		}
		return i
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName}, Spec: v1alpha1.ClusterNetworkSpec{Mode: "NetworkPolicy"}}
	e := &isoEnv{t: t, nft: &refusing{Fake: knftables.NewFake(knftables.InetFamily, dataplane.Table)}, policies: idx(denyIngress()), pods: idx(pod)}
	e.iso = NewIsolation(Listers{
		Pods: corelisters.NewPodLister(e.pods), Namespaces: corelisters.NewNamespaceLister(idx(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}})),
		Policies: networkinglisters.NewNetworkPolicyLister(e.policies), NetNamespaces: listers.NewNetNamespaceLister(idx()),
		HostSubnets: listers.NewHostSubnetLister(idx()), ClusterNetworks: listers.NewClusterNetworkLister(idx(cn)),
	}, "n1", logr.Discard(), func() { e.requests++ })
	e.base = dataplane.NewBase()
	e.base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, nil)
	e.owner = dataplane.NewOwner(e.nft, logr.Discard())
	e.owner.Register(e.base)
	e.owner.Register(e.iso)
	return e
}

func denyIngress() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "deny"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
}

func (e *isoEnv) sync() {
	e.t.Helper()
	if err := e.owner.SyncNow(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// ingressVerdict is the np-ingress-pods element of ip ("" when absent).
func (e *isoEnv) ingressVerdict(ip string) string {
	for _, el := range e.nft.Table.Maps[MapIngressPods].Elements {
		if el.Key[0] == ip {
			return strings.Join(el.Value, " ")
		}
	}
	return ""
}

func sortedDump(f *knftables.Fake) string {
	l := strings.Split(f.Dump(), "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

// A pod admitted through the hooks is in the same transaction as its
// anti-spoofing element and is isolated by it; an informer change is a
// partial contribution that leaves the table as a full render would; after
// a failed transaction the next contribution is full.
func TestIsolationFeatureUnderTheOwner(t *testing.T) {
	e := newIsoEnv(t)
	e.sync()
	const ip = "10.128.0.2"
	if v := e.ingressVerdict(ip); v != "" {
		t.Fatalf("a pod CNI has not wired yet already has a verdict: %q", v)
	}
	p := dataplane.Pod{Iface: "slp0000000000a1", IP: netip.MustParseAddr(ip), Owner: "ns/a"}
	e.base.PodAdded(p)
	e.iso.PodAdded(p)
	e.sync()
	last := e.nft.LastTransaction.String()
	if !strings.Contains(last, "pod-ifaddrs { slp0000000000a1 . "+ip+" }") || !strings.Contains(last, MapIngressPods+" { "+ip) {
		t.Fatalf("the pod's admission was not one transaction with both elements:\n%s", last)
	}
	if v := e.ingressVerdict(ip); !strings.HasPrefix(v, "goto np-isolated-in-") {
		t.Fatalf("isolated pod's ingress verdict %q", v)
	}

	// The policy goes: a partial change; the pod is no longer isolated.
	if err := e.policies.Delete(denyIngress()); err != nil {
		t.Fatal(err)
	}
	e.iso.Changed()
	if e.requests != 1 {
		t.Errorf("Changed asked the owner for %d syncs, want 1", e.requests)
	}
	e.sync()
	if strings.Contains(e.nft.LastTransaction.String(), "flush chain inet sluice "+ChainForwardEgress) {
		t.Errorf("an informer change was a full render:\n%s", e.nft.LastTransaction)
	}
	if v := e.ingressVerdict(ip); v != "accept" {
		t.Errorf("after the policy was deleted: verdict %q, want accept", v)
	}
	fresh := newIsoEnv(t)
	fresh.policies.Delete(denyIngress())
	fresh.base.PodAdded(p)
	fresh.iso.PodAdded(p)
	fresh.sync()
	if got, want := sortedDump(e.nft.Fake), sortedDump(fresh.nft.Fake); got != want {
		t.Errorf("partial != full:\n--- partial\n%s\n--- full\n%s", got, want)
	}

	// A failed transaction changes nothing; the next contribution is full.
	e.policies.Add(denyIngress())
	e.iso.Changed()
	e.nft.refuse = true
	if err := e.owner.SyncNow(context.Background()); err == nil {
		t.Fatal("refused transaction not reported")
	}
	if v := e.ingressVerdict(ip); v != "accept" {
		t.Fatalf("a refused transaction changed the table: %q", v)
	}
	e.nft.refuse = false
	e.sync()
	if !strings.Contains(e.nft.LastTransaction.String(), "flush chain inet sluice "+ChainForwardEgress) {
		t.Errorf("the sync after a failure was not full:\n%s", e.nft.LastTransaction)
	}
	if v := e.ingressVerdict(ip); !strings.HasPrefix(v, "goto np-isolated-in-") {
		t.Errorf("after the retry: verdict %q", v)
	}
}

package dataplane_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/internal/nfttrace"
	"github.com/sluice-net/sluice/pkg/agent/netpol"
	"github.com/sluice-net/sluice/pkg/agent/overlay"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
)

// These tests render the pod network, the service proxy and isolation
// together, as one owner does on a node, and trace a pod's connection to a
// Service through all of it: the proxy's tracer gives the DNAT, isolation's
// tracer decides on the translated destination. Each feature's own tests
// trace its part alone; here one connection crosses all three (shared sets,
// one transaction, base chains of three writers at the same hooks).

// The node under test and the cluster around it. Every pod runs on this
// node, so both ends of a connection are decided here.
const (
	thisNode  = "node-a"
	serviceIP = "172.30.0.10"
)

var hostIP = netip.MustParseAddr("192.168.1.10")

// cluster is the inputs of one node's features: the listers' indexers
// (shared by every owner built from them) and the ClusterNetwork.
type cluster struct {
	cn                                       *v1alpha1.ClusterNetwork
	pods, namespaces, policies, services     cache.Indexer
	slices, netNamespaces, hostSubnets, nets cache.Indexer
}

// newCluster files objs into the listers' indexers; mode is the
// ClusterNetwork's isolation mode.
func newCluster(t *testing.T, mode string, objs ...any) *cluster {
	t.Helper()
	cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{Mode: mode, ServiceNetwork: "172.30.0.0/16",
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}}}
	c := &cluster{cn: cn, pods: indexer(), namespaces: indexer(), policies: indexer(), services: indexer(),
		slices:        cache.NewIndexer(cache.MetaNamespaceKeyFunc, proxy.SliceIndexers()),
		netNamespaces: indexer(), nets: indexer(cn),
		hostSubnets: indexer(&v1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: thisNode},
			Spec: v1alpha1.HostSubnetSpec{Host: thisNode, HostIP: hostIP.String(), Subnet: "10.128.0.0/23"}})}
	for _, o := range objs {
		var into cache.Indexer
		switch o.(type) {
		case *corev1.Pod:
			into = c.pods
		case *corev1.Namespace:
			into = c.namespaces
		case *networkingv1.NetworkPolicy:
			into = c.policies
		case *corev1.Service:
			into = c.services
		case *discoveryv1.EndpointSlice:
			into = c.slices
		case *v1alpha1.NetNamespace:
			into = c.netNamespaces
		default:
			t.Fatalf("no lister for %T", o)
		}
		if err := into.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// node is one owner over the cluster's inputs and its fake table.
type node struct {
	t     *testing.T
	nft   *knftables.Fake
	owner *dataplane.Owner
	iso   *netpol.Isolation
}

// node builds the three features over c's listers as the agent wires them
// (the base first, with the ClusterNetwork's networks; every local pod
// reported to the base and isolation as CNI does), registers them with a new
// owner and runs its first sync, which must be one transaction.
func (c *cluster) node(t *testing.T) *node {
	t.Helper()
	nft := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	n := &node{t: t, nft: nft, owner: dataplane.NewOwner(nft, logr.Discard())}
	base := dataplane.NewBase()
	base.SetNetworks(overlay.ClusterCIDRs(c.cn), overlay.ServiceCIDRs(c.cn))
	n.iso = netpol.NewIsolation(netpol.Listers{
		Pods: corelisters.NewPodLister(c.pods), Namespaces: corelisters.NewNamespaceLister(c.namespaces),
		Policies: networkinglisters.NewNetworkPolicyLister(c.policies), NetNamespaces: listers.NewNetNamespaceLister(c.netNamespaces),
		HostSubnets: listers.NewHostSubnetLister(c.hostSubnets), ClusterNetworks: listers.NewClusterNetworkLister(c.nets),
	}, thisNode, logr.Discard(), func() {})
	for _, o := range c.pods.List() {
		p := o.(*corev1.Pod)
		ip := netip.MustParseAddr(p.Status.PodIP)
		dp := dataplane.Pod{Iface: ifaceOf(ip), IP: ip, Owner: p.Namespace + "/" + p.Name}
		base.PodAdded(dp)
		n.iso.PodAdded(dp)
	}
	n.owner.Register(base)
	n.owner.Register(n.iso)
	n.owner.Register(proxy.NewProxier(corelisters.NewServiceLister(c.services), c.slices,
		proxy.NodeInfo{Name: thisNode, IPs: []netip.Addr{hostIP}}, logr.Discard(), func() {}))
	n.sync()
	if s := n.owner.Stats(); s.Transactions != 1 || s.Full != 3 {
		t.Fatalf("first sync: %d transactions, %d full contributions; want the three features' full parts in one", s.Transactions, s.Full)
	}
	return n
}

func (n *node) sync() {
	n.t.Helper()
	if err := n.owner.SyncNow(context.Background()); err != nil {
		n.t.Fatalf("sync: %v", err)
	}
}

// ifaceOf is the host-side interface of the local pod with address ip
// (dataplane.PodIfPrefix and 12 hex digits, as CNI names them).
func ifaceOf(ip netip.Addr) string {
	return fmt.Sprintf("%s%012x", dataplane.PodIfPrefix, binary.BigEndian.Uint32(ip.AsSlice()))
}

// admitted: anti-spoofing lets iface send from ip (pod-ifaddrs holds the pair).
func (n *node) admitted(iface string, ip netip.Addr) bool {
	return n.nft.Table.Sets[dataplane.SetPodIfAddrs].FindElement(iface, ip.String()) != nil
}

// connect follows a new TCP connection from a local pod to the Service's
// address and port through this node's table: anti-spoofing must admit the
// pod; the proxy's tracer gives every outcome; for each DNAT to an endpoint
// the isolation tracer decides at the forward hook with the translated
// destination (a local pod: out through its interface). The proxy's other
// forward chain at isolation's priority 0 (svc-filter-forward-post) rejects
// only service addresses left untranslated, so after a DNAT their order does
// not matter and isolation alone decides. Outcomes are
// "delivered A:P" and "dropped A:P", or the proxy's own verdict; why holds
// the rules that decided.
func (n *node) connect(from *corev1.Pod, port int) (outcomes, why []string) {
	n.t.Helper()
	src := netip.MustParseAddr(from.Status.PodIP)
	if !n.admitted(ifaceOf(src), src) {
		n.t.Fatalf("pod-ifaddrs lacks %s/%s (%s on %s): anti-spoofing would drop everything it sends", from.Namespace, from.Name, src, ifaceOf(src))
	}
	for _, v := range nfttrace.NewServices(n.t, n.nft).Trace(nfttrace.ServicePacket{Src: src.String(), Dst: serviceIP, Proto: "tcp", Port: port}) {
		target, ok := strings.CutPrefix(v, "dnat ")
		if !ok {
			outcomes = append(outcomes, v)
			continue
		}
		// A pod's connection to a cluster IP keeps its source (no " masq"):
		// isolation must see the pod, not the node.
		ep, err := netip.ParseAddrPort(target)
		if err != nil {
			n.t.Fatalf("%s/%s → %s:%d: proxy outcome %q, want a DNAT that keeps the source", from.Namespace, from.Name, serviceIP, port, v)
		}
		if !slices.ContainsFunc(n.nft.Table.Sets[dataplane.SetPodIfAddrs].Elements, func(e *knftables.Element) bool { return e.Key[1] == ep.Addr().String() }) {
			n.t.Fatalf("endpoint %s is not a local pod: this node would not decide its ingress", ep)
		}
		ok, path := nfttrace.NewIsolation(n.t, n.nft).Trace(nfttrace.IsolationPacket{Hook: knftables.ForwardHook,
			Src: src, Dst: ep.Addr(), Proto: "tcp", Port: int(ep.Port()), FromPod: true, ToPod: true})
		verdict := "dropped "
		if ok {
			verdict = "delivered "
		}
		outcomes = append(outcomes, verdict+ep.String())
		why = append(why, path...)
	}
	return outcomes, why
}

// expect checks every client's outcomes.
func (n *node) expect(want map[*corev1.Pod][]string) {
	n.t.Helper()
	for from, w := range want {
		if got, why := n.connect(from, 80); !slices.Equal(got, w) {
			n.t.Errorf("%s/%s → %s:80: %v, want %v\n  %s", from.Namespace, from.Name, serviceIP, got, w, strings.Join(why, "\n  "))
		}
	}
}

// Objects of the tests.

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/metadata.name": name}}}
}

func netNamespace(name string, id uint32) *v1alpha1.NetNamespace {
	return &v1alpha1.NetNamespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.NetNamespaceSpec{NetName: name, NetID: id}}
}

func pod(ns, name, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: thisNode}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
}

// webService is ns/web at serviceIP:80 → backend:8080.
func webService(ns string, backend *corev1.Pod) []any {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: serviceIP, ClusterIPs: []string{serviceIP},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	tcp, port, ready, node := corev1.ProtocolTCP, int32(8080), true, thisNode
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &svc.Spec.Ports[0].Name, Protocol: &tcp, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{backend.Status.PodIP}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
	return []any{svc, es}
}

// shop is a NetworkPolicy-mode cluster: web serves the Service, a policy
// admits pods labelled role=client to its port 8080 (the endpoint's port:
// isolation sees the connection after DNAT), stranger has no label.
type shop struct {
	*cluster
	web, client, stranger *corev1.Pod
	policy                *networkingv1.NetworkPolicy
}

func newShop(t *testing.T) *shop {
	s := &shop{
		web:      pod("shop", "web", "10.128.0.2", map[string]string{"app": "web"}),
		client:   pod("shop", "client", "10.128.0.3", map[string]string{"role": "client"}),
		stranger: pod("shop", "stranger", "10.128.0.4", nil),
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(8080)
	s.policy = &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-from-clients"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		}}
	s.cluster = newCluster(t, v1alpha1.ModeNetworkPolicy,
		append([]any{namespace("shop"), s.web, s.client, s.stranger, s.policy}, webService("shop", s.web)...)...)
	return s
}

// (a) NetworkPolicy: the policy on the backend admits the labelled client's
// connection to the Service after DNAT and drops the same connection from an
// unlabelled pod, which the proxy DNATs all the same.
func TestTableServiceThenNetworkPolicy(t *testing.T) {
	s := newShop(t)
	n := s.node(t)
	n.expect(map[*corev1.Pod][]string{
		s.client:   {"delivered 10.128.0.2:8080"},
		s.stranger: {"dropped 10.128.0.2:8080"},
	})
	// The anti-spoofing set pairs each interface with its own pod only.
	if n.admitted(ifaceOf(netip.MustParseAddr(s.stranger.Status.PodIP)), netip.MustParseAddr(s.client.Status.PodIP)) {
		t.Error("pod-ifaddrs lets stranger's interface send with client's address")
	}
}

// (b) Multitenant: the Service's backend is in tenant 10. A pod of another
// tenant is DNATed by the proxy, then dropped by isolation; a pod of another
// namespace joined to tenant 10 and a pod of a global namespace (VNID 0) are
// delivered.
func TestTableServiceThenTenants(t *testing.T) {
	web := pod("red", "web", "10.128.0.2", nil)
	joined := pod("red-jobs", "job", "10.128.0.3", nil)
	intruder := pod("blue", "intruder", "10.128.0.4", nil)
	monitor := pod("infra", "monitor", "10.128.0.5", nil)
	objs := []any{web, joined, intruder, monitor}
	for name, id := range map[string]uint32{"red": 10, "red-jobs": 10, "blue": 20, "infra": 0} {
		objs = append(objs, namespace(name), netNamespace(name, id))
	}
	n := newCluster(t, v1alpha1.ModeMultitenant, append(objs, webService("red", web)...)...).node(t)
	n.expect(map[*corev1.Pod][]string{
		joined:   {"delivered 10.128.0.2:8080"},
		monitor:  {"delivered 10.128.0.2:8080"},
		intruder: {"dropped 10.128.0.2:8080"},
	})
}

// (c) After a change only isolation contributes, partially (the policy's
// objects go); the table is then exactly what a fresh owner over the same
// inputs renders in full.
func TestTablePartialSyncEqualsFreshRender(t *testing.T) {
	s := newShop(t)
	n := s.node(t)
	if err := s.policies.Delete(s.policy); err != nil {
		t.Fatal(err)
	}
	n.iso.Changed()
	n.sync()
	if st := n.owner.Stats(); st.Transactions != 2 || st.Full != 3 {
		t.Fatalf("after the change: %d transactions, %d full contributions; want one more transaction, partial", st.Transactions, st.Full)
	}
	n.expect(map[*corev1.Pod][]string{s.stranger: {"delivered 10.128.0.2:8080"}})
	got, want := sortedLines(n.nft.Dump()), sortedLines(s.node(t).nft.Dump())
	if !slices.Equal(got, want) {
		t.Errorf("after a partial sync the table differs from a fresh full render\n--- only after the partial sync:\n%s\n--- only in the fresh render:\n%s",
			strings.Join(minus(got, want), "\n"), strings.Join(minus(want, got), "\n"))
	}
}

func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return l
}

// minus: the lines of a that b lacks.
func minus(a, b []string) []string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, l)
		}
	}
	return out
}

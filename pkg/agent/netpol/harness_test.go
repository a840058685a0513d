package netpol

import (
	"context"
	"fmt"
	"net/netip"
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
	"github.com/sluice-net/sluice/pkg/policy/netpolcases"
)

// The test network: cluster CIDR 10.128.0.0/14, node i (from 0) has host address
// 192.168.0.(i+1), host subnet 10.128.i.0/24 and overlay address 10.128.i.0.
var clusterCIDR = netip.MustParsePrefix("10.128.0.0/14")

func nodeName(i int) string     { return fmt.Sprintf("node-%d", i) }
func hostIP(i int) netip.Addr   { return netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)}) }
func tunnelIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 128, byte(i), 0}) }
func podAddr(node, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 128, byte(node), byte(k + 2)})
}

// renderFake programs a fresh fake with the dataplane skeleton (cluster-cidrs) and st, as
// the agent's full sync does.
func renderFake(t testing.TB, st State) *knftables.Fake {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	tx := f.NewTransaction()
	dataplane.Render(tx, dataplane.State{ClusterCIDRs: []netip.Prefix{clusterCIDR}})
	Render(tx, st)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatalf("transaction refused: %v\n%s", err, tx)
	}
	return f
}

// cluster is every node's rendered table plus the model, for end-to-end questions.
type cluster struct {
	t       testing.TB
	in      policy.Input
	model   *policy.Model
	nodes   int
	states  []State
	tracers []*nfttrace.Isolation
}

func newCluster(t testing.TB, in policy.Input, nodes int) *cluster {
	t.Helper()
	m, err := policy.Compile(in)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	c := &cluster{t: t, in: in, model: m, nodes: nodes}
	var addrs []netip.Addr
	for i := 0; i < nodes; i++ {
		addrs = append(addrs, hostIP(i), tunnelIP(i))
	}
	for i := 0; i < nodes; i++ {
		st, err := Build(in, nodeName(i), addrs)
		if err != nil {
			t.Fatalf("Build(%s): %v", nodeName(i), err)
		}
		c.states = append(c.states, st)
		c.tracers = append(c.tracers, nfttrace.NewIsolation(t, renderFake(t, st)))
	}
	return c
}

// end is one end of a connection for the dataplane: a pod, a node address or an external one.
type end struct {
	ep   policy.Endpoint
	ip   netip.Addr
	node int // the pod's or node's index; -1 for external addresses
}

func (c *cluster) podEnd(p *policy.Pod) end {
	n := -1
	for i := 0; i < c.nodes; i++ {
		if p.Node == nodeName(i) {
			n = i
		}
	}
	return end{ep: policy.PodEndpoint(p.Namespace, p.Name), ip: p.IP, node: n}
}

func nodeEnd(i int, ip netip.Addr) end {
	return end{ep: policy.NodeEndpoint(nodeName(i), ip), ip: ip, node: i}
}

func externalEnd(ip string) end {
	a := netip.MustParseAddr(ip)
	return end{ep: policy.ExternalEndpoint(a), ip: a, node: -1}
}

func (e end) isPod() bool { return e.ep.Kind == policy.EndpointPod }

// allowed walks a new connection through the cluster: on the source's node when the source
// is a pod (forward, or input when the destination is that node) or a node (output), then on
// the destination's node when that is another node (forward to a pod, input to the node).
func (c *cluster) allowed(src, dst end, proto string, port int) (bool, []string) {
	var path []string
	if src.node >= 0 {
		p := nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: src.ip, Dst: dst.ip, Proto: proto, Port: port, FromPod: src.isPod()}
		switch {
		case !src.isPod():
			p.Hook = knftables.OutputHook
		case dst.node == src.node && !dst.isPod():
			p.Hook = knftables.InputHook
		default:
			p.ToPod = dst.isPod() && dst.node == src.node
		}
		ok, pp := c.tracers[src.node].Trace(p)
		path = append(path, prefixed(nodeName(src.node)+" "+string(p.Hook), pp)...)
		if !ok || dst.node == src.node {
			return ok, path
		}
	}
	if dst.node < 0 {
		return true, path
	}
	p := nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: src.ip, Dst: dst.ip, Proto: proto, Port: port, ToPod: dst.isPod()}
	if !dst.isPod() {
		p.Hook = knftables.InputHook
	}
	ok, pp := c.tracers[dst.node].Trace(p)
	return ok, append(path, prefixed(nodeName(dst.node)+" "+string(p.Hook), pp)...)
}

func prefixed(pre string, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = pre + ": " + l
	}
	return out
}

// probe is one protocol and port to ask about.
type probe struct {
	proto corev1.Protocol // "ICMP" for ICMP (port 0)
	port  int
}

// check compares every (source, destination, probe) with the model and returns the number of
// queries and how many were allowed.
func (c *cluster) check(t testing.TB, srcs, dsts []end, probes []probe, label string) (n, allowed int) {
	t.Helper()
	bad := 0
	for _, s := range srcs {
		for _, d := range dsts {
			if !s.isPod() && !d.isPod() || c.nodeLocalDeviation(s, d) {
				continue
			}
			for _, pr := range probes {
				want := c.model.Evaluate(policy.Query{Src: s.ep, Dst: d.ep, Port: pr.port, Protocol: pr.proto})
				if want.Decision == policy.DecisionInvalidQuery {
					t.Fatalf("%s: invalid query: %s", label, want.Reason)
				}
				got, path := c.allowed(s, d, strings.ToLower(string(pr.proto)), pr.port)
				n++
				if got {
					allowed++
				}
				if got != want.Allowed {
					bad++
					if bad <= 5 {
						t.Errorf("%s: %s → %s %d/%s: dataplane %v, model %v (%s)\n  path: %s",
							label, s.ep, d.ep, pr.port, pr.proto, got, want.Allowed, want.Reason, strings.Join(path, "\n        "))
					}
				}
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d more disagreements", label, bad-5)
	}
	return n, allowed
}

// nodeLocalDeviation: in Multitenant mode the model denies every connection of a pod whose
// namespace has no VNID, even from the pod's own node; the dataplane never filters a node's
// own traffic (output hook), so such a pod stays reachable from its node, as in every other
// mode. README.md documents the difference.
func (c *cluster) nodeLocalDeviation(s, d end) bool {
	if c.model.Mode() != policy.ModeMultitenant || s.ep.Kind != policy.EndpointNode || !d.isPod() || s.node != d.node {
		return false
	}
	_, ok := c.in.VNIDs[d.ep.Namespace]
	return !ok
}

// Policy builders.

type (
	inR   = networkingv1.NetworkPolicyIngressRule
	outR  = networkingv1.NetworkPolicyEgressRule
	peers = []networkingv1.NetworkPolicyPeer
	ports = []networkingv1.NetworkPolicyPort
)

var (
	tcp  = corev1.ProtocolTCP
	udp  = corev1.ProtocolUDP
	sctp = corev1.ProtocolSCTP
)

func netpol(ns, name string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType, in []inR, out []outR) networkingv1.NetworkPolicy {
	p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: types, Ingress: in, Egress: out}}
	if podSel != nil {
		p.Spec.PodSelector = *podSel
	}
	return p
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

// Selector and peer builders: the same as the upstream case table's.
var (
	sel      = netpolcases.Sel
	expr     = netpolcases.Expr
	peerPods = netpolcases.PeerPods
	peerNS   = netpolcases.PeerNS
	peerBoth = netpolcases.PeerBoth
	peerIP   = netpolcases.PeerIP
)

func portNum(p *corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: p, Port: &v}
}
func portRange(p *corev1.Protocol, n, end int32) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: p, Port: &v, EndPort: &end}
}
func portNamed(p *corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: p, Port: &v}
}

// e2eInput is upstream's netpol e2e cluster (as pkg/policy's fixture): namespaces x, y, z
// (label ns=<name>), pods a, b, c in each (label pod=<name>) serving 80 and 81 on TCP, UDP
// and SCTP with ports named serve-<port>-<proto>; a and c on node-0, b on node-1.
func e2eInput(mode policy.Mode, policies ...networkingv1.NetworkPolicy) policy.Input {
	in := policy.Input{Mode: mode, Policies: policies, VNIDs: map[string]uint32{}}
	for i, ns := range []string{"x", "y", "z"} {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}})
		in.VNIDs[ns] = uint32(i + 10)
		for j, name := range []string{"a", "b", "c"} {
			node := 0
			if name == "b" {
				node = 1
			}
			p := policy.Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}, IP: podAddr(node, i*3+j), Node: nodeName(node)}
			for _, port := range []int32{80, 81} {
				for _, proto := range []corev1.Protocol{tcp, udp, sctp} {
					p.Ports = append(p.Ports, policy.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), Port: port, Protocol: proto})
				}
			}
			in.Pods = append(in.Pods, p)
		}
	}
	return in
}

// podEnds are the ends of every scheduled pod with an address.
func (c *cluster) podEnds() []end {
	var out []end
	for i := range c.in.Pods {
		p := &c.in.Pods[i]
		if p.IP.IsValid() && p.Node != "" {
			out = append(out, c.podEnd(p))
		}
	}
	return out
}

// otherEnds are every node's host and overlay address and two external addresses, one in
// 10/8 but outside the cluster CIDR.
func (c *cluster) otherEnds() []end {
	var out []end
	for i := 0; i < c.nodes; i++ {
		out = append(out, nodeEnd(i, hostIP(i)), nodeEnd(i, tunnelIP(i)))
	}
	return append(out, externalEnd("203.0.113.7"), externalEnd("10.200.0.1"))
}

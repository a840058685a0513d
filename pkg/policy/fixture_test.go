package policy

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/sluice-net/sluice/pkg/policy/netpolcases"
)

// The upstream netpol e2e cluster (netpolcases): namespaces x, y, z (label ns=<name>, plus the
// kubernetes.io/metadata.name label the model adds), pods a, b, c in each (label pod=<name>)
// serving 80 and 81 on TCP, UDP and SCTP with ports named serve-<port>-<proto>.
// x/a = 10.1.0.1, x/b = 10.1.0.2, ..., z/c = 10.3.0.3; a and c on node-1, b on node-2.
var (
	tcp     = corev1.ProtocolTCP
	udp     = corev1.ProtocolUDP
	sctp    = corev1.ProtocolSCTP
	node1IP = netip.MustParseAddr("192.168.0.1")
	node2IP = netip.MustParseAddr("192.168.0.2")
	worldIP = netip.MustParseAddr("203.0.113.7")
)

const nsName = netpolcases.MetadataNameLabel

func podIP(ns, pod string) netip.Addr {
	i := strings.Index("xyz", ns) + 1
	j := strings.Index("abc", pod) + 1
	return netip.AddrFrom4([4]byte{10, byte(i), 0, byte(j)})
}

// fixtureIPs maps every fixture pod ("ns/pod") to its podIP.
func fixtureIPs() map[string]netip.Addr {
	ips := map[string]netip.Addr{}
	for _, ns := range netpolcases.Namespaces {
		for _, p := range netpolcases.PodNames {
			ips[ns+"/"+p] = podIP(ns, p)
		}
	}
	return ips
}

func fixtureInput(mode Mode, policies ...networkingv1.NetworkPolicy) Input {
	in := Input{Mode: mode, Policies: policies}
	for _, ns := range netpolcases.NamespaceObjects() {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: ns.ObjectMeta})
		for _, p := range netpolcases.PodNames {
			node := "node-1"
			if p == "b" {
				node = "node-2"
			}
			pod := Pod{Namespace: ns.Name, Name: p, Labels: map[string]string{netpolcases.PodLabel: p}, IP: podIP(ns.Name, p), Node: node}
			for _, cp := range netpolcases.ContainerPorts() {
				pod.Ports = append(pod.Ports, ContainerPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: cp.Protocol})
			}
			in.Pods = append(in.Pods, pod)
		}
	}
	return in
}

func mustCompile(t *testing.T, in Input) *Model {
	t.Helper()
	m, err := Compile(in)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

// Policy builders: netpolcases' (after upstream's GenNetworkPolicy helpers; ingress() and
// egress() append their policyType the first time), plus a few only these tests need.
type mod = netpolcases.Mod

var (
	np       = netpolcases.Policy
	ingress  = netpolcases.Ingress
	egress   = netpolcases.Egress
	types    = netpolcases.Types
	sel      = netpolcases.Sel
	expr     = netpolcases.Expr
	num      = netpolcases.Num
	named    = netpolcases.Named
	port     = netpolcases.Port
	peerPods = netpolcases.PeerPods
	peerNS   = netpolcases.PeerNS
	peerBoth = netpolcases.PeerBoth
	peerIP   = netpolcases.PeerIP
)

// rawIngress / rawEgress set rules without touching policyTypes (to test defaulting).
func rawIngress(rules ...networkingv1.NetworkPolicyIngressRule) mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress = append(p.Spec.Ingress, rules...) }
}

func rawEgress(rules ...networkingv1.NetworkPolicyEgressRule) mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.Egress = append(p.Spec.Egress, rules...) }
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }
func i32(n int32) *int32                       { return &n }

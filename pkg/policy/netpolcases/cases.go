package netpolcases

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Case is one upstream test: apply Policies (in order; a later policy with
// the same namespace and name replaces an earlier one) and every Probe's
// table holds.
type Case struct {
	Name     string
	Policies []networkingv1.NetworkPolicy
	Probes   []Probe
}

// Cases returns the upstream cases. ips maps "ns/pod" to the pod's address:
// the ipBlock cases build their CIDRs from the real pod addresses, as
// upstream does (x/b and y/b are needed). Cases panics when one is missing.
func Cases(ips map[string]netip.Addr) []Case {
	ip := func(pod string) string {
		a, ok := ips[pod]
		if !ok || !a.IsValid() {
			panic(fmt.Sprintf("netpolcases: no address for pod %s", pod))
		}
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	tcp, udp, sctp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	i32 := func(n int32) *int32 { return &n }
	notX := Expr(MetadataNameLabel, metav1.LabelSelectorOpNotIn, "x")
	allTCP := func(port int, w Truth) []Probe { return []Probe{{port, tcp, w}} }
	return []Case{
		{
			Name:     "should support a 'default-deny-ingress' policy",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "deny-ingress", Sel(), Ingress())},
			Probes:   allTCP(80, NewTruth(true).Expect("", "x", false)),
		},
		{
			Name:     "should support a 'default-deny-all' policy",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "deny-all", Sel(), Ingress(), Egress())},
			Probes:   allTCP(80, NewTruth(true).Expect("", "x", false).Expect("x", "", false)),
		},
		{
			Name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "x-a-allows-x-b", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerPods(Sel("pod", "b"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true)),
		},
		{
			Name: "should enforce policy to allow ingress traffic for a target",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "deny-all", Sel(), Ingress()),
				Policy("x", "allow-all-to-a", Sel("pod", "a"),
					Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(), Sel())}})),
			},
			Probes: allTCP(80, NewTruth(true).Expect("", "x", false).ExpectAllIngress("x/a", true)),
		},
		{
			Name: "should enforce policy to allow ingress traffic from pods in all namespaces",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-from-another-ns", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel())}}))},
			Probes: allTCP(80, NewTruth(true)),
		},
		{
			Name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-ns-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)),
		},
		{
			Name: "should enforce policy based on PodSelector with MatchExpressions",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "x-a-allows-x-b", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerPods(Expr("pod", metav1.LabelSelectorOpIn, "b"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true)),
		},
		{
			Name: "should enforce policy based on NamespaceSelector with MatchExpressions",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-y-match-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Expr(MetadataNameLabel, metav1.LabelSelectorOpIn, "y"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)),
		},
		{
			Name: "should enforce policy based on PodSelector or NamespaceSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-y-match-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(notX), PeerPods(Sel("pod", "b"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x/c", "x/a", false)),
		},
		{
			Name: "should enforce policy based on PodSelector and NamespaceSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-y-podselector-and-nsselector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(notX, Sel("pod", "b"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false).Expect("y/b", "x/a", true).Expect("z/b", "x/a", true)),
		},
		{
			Name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-y-z-pod-b-c", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(notX, Expr("pod", metav1.LabelSelectorOpIn, "b", "c"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x", "x/a", false).Expect("y/a", "x/a", false).Expect("z/a", "x/a", false)),
		},
		{
			Name: "should enforce policy based on any PodSelectors",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-x-pod-b-c", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerPods(Sel("pod", "b")), PeerPods(Sel("pod", "c"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true).Expect("x/c", "x/a", true)),
		},
		{
			Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(MetadataNameLabel, "y"), Sel("pod", "a"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false).Expect("y/a", "x/a", true)),
		},
		{
			Name: "should enforce policy based on Ports",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-ns-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}, Ports: []networkingv1.NetworkPolicyPort{Port(&tcp, Num(81))}}))},
			Probes: []Probe{
				{81, tcp, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)},
				{80, tcp, NewTruth(true).ExpectAllIngress("x/a", false)},
			},
		},
		{
			Name: "should enforce multiple, stacked policies with overlapping podSelectors",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-client-a-via-ns-selector", Sel("pod", "a"),
					Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}, Ports: []networkingv1.NetworkPolicyPort{Port(&tcp, Num(81))}})),
				Policy("x", "allow-client-a-via-ns-selector-80", Sel("pod", "a"),
					Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}, Ports: []networkingv1.NetworkPolicyPort{Port(&tcp, Num(80))}})),
			},
			Probes: []Probe{
				{80, tcp, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)},
				{81, tcp, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)},
			},
		},
		{
			Name:     "should support allow-all policy",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-all", Sel(), Ingress(networkingv1.NetworkPolicyIngressRule{}))},
			Probes:   []Probe{{80, tcp, NewTruth(true)}, {81, tcp, NewTruth(true)}},
		},
		{
			Name: "should allow ingress access on one named port",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-all", Sel(),
				Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Named("serve-81-tcp"))}}))},
			Probes: []Probe{
				{81, tcp, NewTruth(true)},
				{80, tcp, NewTruth(true).Expect("", "x", false)},
			},
		},
		{
			Name: "should allow ingress access from namespace on one named port",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-ns-selector-80", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}, Ports: []networkingv1.NetworkPolicyPort{Port(&tcp, Named("serve-80-tcp"))}}))},
			Probes: []Probe{
				{80, tcp, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)},
				{81, tcp, NewTruth(true).ExpectAllIngress("x/a", false)},
			},
		},
		{
			Name: "should allow egress access on one named port",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-egress", Sel(),
				Egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Named("serve-80-tcp"))}}))},
			Probes: []Probe{
				{80, tcp, NewTruth(true)},
				{81, tcp, NewTruth(true).Expect("x", "", false)},
			},
		},
		{
			Name:     "should deny egress from pods based on PodSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "deny-egress-pod-a", Sel("pod", "a"), Egress())},
			Probes:   allTCP(80, NewTruth(true).ExpectAllEgress("x/a", false)),
		},
		{
			Name:     "should deny egress from all pods in a namespace",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "deny-egress-ns-x", Sel(), Egress())},
			Probes:   allTCP(80, NewTruth(true).Expect("x", "", false)),
		},
		{
			Name: "should work with Ingress, Egress specified together",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-pod-selector", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerPods(Sel("pod", "b"))}}),
				Egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Num(80))}}),
				Types(networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress))},
			Probes: []Probe{
				{80, tcp, NewTruth(true).ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true)},
				{81, tcp, NewTruth(true).ExpectAllIngress("x/a", false).ExpectAllEgress("x/a", false).Expect("x/b", "x/a", true)},
			},
		},
		{
			Name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-to-ns-y-pod-a", Sel("pod", "a"),
					Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(MetadataNameLabel, "y"), Sel("pod", "a"))}})),
				Policy("y", "allow-from-xa-on-ya-match-selector", Sel("pod", "a"),
					Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(MetadataNameLabel, "x"), Sel("pod", "a"))}})),
				Policy("y", "allow-from-xa-on-yb-match-selector", Sel("pod", "b"),
					Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(MetadataNameLabel, "x"), Sel("pod", "a"))}})),
			},
			Probes: allTCP(80, NewTruth(true).ExpectAllEgress("x/a", false).ExpectAllIngress("y/a", false).
				Expect("x/a", "y/a", true).ExpectAllIngress("y/b", false)),
		},
		{
			Name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-to-ns-y-pod-a", Sel("pod", "a"),
				Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerBoth(Sel(MetadataNameLabel, "y"), Sel("pod", "a"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllEgress("x/a", false).Expect("x/a", "y/a", true)),
		},
		{
			Name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-ingress-by-proto", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(&tcp, nil)}}))},
			Probes: []Probe{
				{80, tcp, NewTruth(true)},
				{80, udp, NewTruth(true).ExpectAllIngress("x/a", false)},
			},
		},
		{
			Name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-ingress-port-80", Sel(), Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Num(80))}})),
				Policy("x", "allow-ingress", Sel(), Ingress(networkingv1.NetworkPolicyIngressRule{})),
			},
			Probes: allTCP(81, NewTruth(true)),
		},
		{
			Name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-egress-port-80", Sel(), Egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Num(80))}})),
				Policy("x", "allow-egress", Sel(), Egress(networkingv1.NetworkPolicyEgressRule{})),
			},
			Probes: allTCP(81, NewTruth(true)),
		},
		{
			Name: "multiple egress policies, port 80 only (first half of the precedence case)",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-egress-port-80", Sel(), Egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{Port(nil, Num(80))}})),
			},
			Probes: allTCP(81, NewTruth(true).Expect("x", "", false)),
		},
		{
			Name: "should allow egress access to server in CIDR block",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-cidr-egress-rule", Sel("pod", "a"),
				Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerIP(ip("y/b"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllEgress("x/a", false).Expect("x/a", "y/b", true)),
		},
		{
			// upstream: makeLargeCIDRForIP(x/b), the /4 around x/b, except x/b.
			Name: "should enforce except clause while egress access to server in CIDR block",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-cidr-egress-rule", Sel("pod", "a"),
				Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerIP(largeCIDR(ip("x/b")), ip("x/b"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x/a", "x/b", false)),
		},
		{
			Name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-client-a-via-cidr-egress-rule", Sel("pod", "a"),
					Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerIP(largeCIDR(ip("x/b")), ip("x/b"))}})),
				Policy("x", "allow-client-a-via-cidr-egress-rule-2", Sel("pod", "a"),
					Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerIP(ip("x/b"))}})),
			},
			Probes: allTCP(80, NewTruth(true)),
		},
		{
			// The update replaces the policy of the same name: only the host CIDR remains.
			Name: "IPBlock.CIDR and Except overlap, after the update",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-cidr-egress-rule", Sel("pod", "a"),
				Egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{PeerIP(ip("x/b"))}}))},
			Probes: allTCP(80, NewTruth(true).ExpectAllEgress("x/a", false).Expect("x/a", "x/b", true)),
		},
		{
			Name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector (egress only)",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-egress-for-target", Sel("pod", "a"), Egress(networkingv1.NetworkPolicyEgressRule{})),
			},
			Probes: allTCP(80, NewTruth(true)),
		},
		{
			Name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "allow-egress-for-target", Sel("pod", "a"), Egress(networkingv1.NetworkPolicyEgressRule{})),
				Policy("x", "deny-ingress-via-label-selector", Sel("pod", "a"), Ingress()),
			},
			Probes: allTCP(80, NewTruth(true).ExpectAllIngress("x/a", false)),
		},
		{
			Name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
			Policies: []networkingv1.NetworkPolicy{
				Policy("x", "deny-ingress", Sel(), Ingress()),
				Policy("x", "allow-only-sctp-ingress-on-port-81", Sel("pod", "a"),
					Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(&sctp, Num(81))}})),
			},
			Probes: []Probe{
				{81, tcp, NewTruth(true).Expect("", "x", false)},
				{81, sctp, NewTruth(true).Expect("", "x/b", false).Expect("", "x/c", false)},
			},
		},
		{
			Name: "should properly isolate pods that are selected by a policy allowing SCTP",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-only-sctp-ingress-on-port-80", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(&sctp, Num(80))}}))},
			Probes: []Probe{
				{81, tcp, NewTruth(true).ExpectAllIngress("x/a", false)},
				{80, sctp, NewTruth(true)},
			},
		},
		{
			Name: "should not allow access by TCP when a policy specifies only UDP",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-only-udp-ingress-on-port-81", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{Port(&udp, Num(81))}}))},
			Probes: []Probe{
				{81, tcp, NewTruth(true).ExpectAllIngress("x/a", false)},
				{81, udp, NewTruth(true)},
			},
		},
		{
			Name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", Sel("pod", "a"),
				Ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))}}))},
			Probes: allTCP(80, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)),
		},
		{
			// [Feature:NetworkPolicyEndPort]: 80..81 from y opens both; 81..81 (x) only 81.
			Name: "should enforce policy based on endPort (range 80-81 from y, 81-81 from x)",
			Policies: []networkingv1.NetworkPolicy{Policy("x", "allow-endport", Sel("pod", "a"),
				Ingress(
					networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "y"))},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: Num(80), EndPort: i32(81)}}},
					networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{PeerNS(Sel(MetadataNameLabel, "x"))},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: Num(81), EndPort: i32(81)}}}))},
			Probes: []Probe{
				{80, tcp, NewTruth(true).Expect("x", "x/a", false).Expect("z", "x/a", false)},
				{81, tcp, NewTruth(true).Expect("z", "x/a", false)},
			},
		},
	}
}

// largeCIDR is upstream's makeLargeCIDRForIP: the /4 (IPv4) or /64 (IPv6)
// holding the address of the "/32" or "/128" prefix cidr.
func largeCIDR(cidr string) string {
	p := netip.MustParsePrefix(cidr)
	bits := 4
	if p.Addr().Is6() {
		bits = 64
	}
	return netip.PrefixFrom(p.Addr(), bits).Masked().String()
}

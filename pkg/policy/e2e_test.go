package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cases transcribed from the upstream Kubernetes netpol e2e suite
// (test/e2e/network/netpol/network_policy.go, v1.36): same namespaces, pods, ports, port
// names, policies and expected truth tables. Upstream's egress policies also allow DNS; the
// model has no DNS, so those rules are left out. Loopback pairs are ignored, as upstream does.

type probe struct {
	port  int
	proto corev1.Protocol
	want  truth
}

const nsName = "kubernetes.io/metadata.name"

func TestUpstreamNetpolE2E(t *testing.T) {
	notX := expr(nsName, metav1.LabelSelectorOpNotIn, "x")
	allTCP := func(port int, w truth) []probe { return []probe{{port, tcp, w}} }
	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		probes   []probe
	}{
		{
			name:     "should support a 'default-deny-ingress' policy",
			policies: []networkingv1.NetworkPolicy{np("x", "deny-ingress", sel(), ingress())},
			probes:   allTCP(80, newTruth(true).expect("", "x", false)),
		},
		{
			name:     "should support a 'default-deny-all' policy",
			policies: []networkingv1.NetworkPolicy{np("x", "deny-all", sel(), ingress(), egress())},
			probes:   allTCP(80, newTruth(true).expect("", "x", false).expect("x", "", false)),
		},
		{
			name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "x-a-allows-x-b", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerPods(sel("pod", "b"))}}))},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false).expect("x/b", "x/a", true)),
		},
		{
			name: "should enforce policy to allow ingress traffic for a target",
			policies: []networkingv1.NetworkPolicy{
				np("x", "deny-all", sel(), ingress()),
				np("x", "allow-all-to-a", sel("pod", "a"),
					ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(sel(), sel())}})),
			},
			probes: allTCP(80, newTruth(true).expect("", "x", false).expectAllIngress("x/a", true)),
		},
		{
			name: "should enforce policy to allow ingress traffic from pods in all namespaces",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-from-another-ns", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel())}}))},
			probes: allTCP(80, newTruth(true)),
		},
		{
			name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-ns-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}}))},
			probes: allTCP(80, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)),
		},
		{
			name: "should enforce policy based on PodSelector with MatchExpressions",
			policies: []networkingv1.NetworkPolicy{np("x", "x-a-allows-x-b", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerPods(expr("pod", metav1.LabelSelectorOpIn, "b"))}}))},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false).expect("x/b", "x/a", true)),
		},
		{
			name: "should enforce policy based on NamespaceSelector with MatchExpressions",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-y-match-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(expr(nsName, metav1.LabelSelectorOpIn, "y"))}}))},
			probes: allTCP(80, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)),
		},
		{
			name: "should enforce policy based on PodSelector or NamespaceSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-y-match-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(notX), peerPods(sel("pod", "b"))}}))},
			probes: allTCP(80, newTruth(true).expect("x/c", "x/a", false)),
		},
		{
			name: "should enforce policy based on PodSelector and NamespaceSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-y-podselector-and-nsselector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(notX, sel("pod", "b"))}}))},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true)),
		},
		{
			name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-y-z-pod-b-c", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(notX, expr("pod", metav1.LabelSelectorOpIn, "b", "c"))}}))},
			probes: allTCP(80, newTruth(true).expect("x", "x/a", false).expect("y/a", "x/a", false).expect("z/a", "x/a", false)),
		},
		{
			name: "should enforce policy based on any PodSelectors",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-x-pod-b-c", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerPods(sel("pod", "b")), peerPods(sel("pod", "c"))}}))},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false).expect("x/b", "x/a", true).expect("x/c", "x/a", true)),
		},
		{
			name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ns-y-pod-a-via-namespace-pod-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(sel(nsName, "y"), sel("pod", "a"))}}))},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false).expect("y/a", "x/a", true)),
		},
		{
			name: "should enforce policy based on Ports",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-ns-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}, Ports: []networkingv1.NetworkPolicyPort{port(&tcp, num(81))}}))},
			probes: []probe{
				{81, tcp, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)},
				{80, tcp, newTruth(true).expectAllIngress("x/a", false)},
			},
		},
		{
			name: "should enforce multiple, stacked policies with overlapping podSelectors",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-client-a-via-ns-selector", sel("pod", "a"),
					ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}, Ports: []networkingv1.NetworkPolicyPort{port(&tcp, num(81))}})),
				np("x", "allow-client-a-via-ns-selector-80", sel("pod", "a"),
					ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}, Ports: []networkingv1.NetworkPolicyPort{port(&tcp, num(80))}})),
			},
			probes: []probe{
				{80, tcp, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)},
				{81, tcp, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)},
			},
		},
		{
			name:     "should support allow-all policy",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-all", sel(), ingress(networkingv1.NetworkPolicyIngressRule{}))},
			probes:   []probe{{80, tcp, newTruth(true)}, {81, tcp, newTruth(true)}},
		},
		{
			name: "should allow ingress access on one named port",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-all", sel(),
				ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, named("serve-81-tcp"))}}))},
			probes: []probe{
				{81, tcp, newTruth(true)},
				{80, tcp, newTruth(true).expect("", "x", false)},
			},
		},
		{
			name: "should allow ingress access from namespace on one named port",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-ns-selector-80", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}, Ports: []networkingv1.NetworkPolicyPort{port(&tcp, named("serve-80-tcp"))}}))},
			probes: []probe{
				{80, tcp, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)},
				{81, tcp, newTruth(true).expectAllIngress("x/a", false)},
			},
		},
		{
			name: "should allow egress access on one named port",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-egress", sel(),
				egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, named("serve-80-tcp"))}}))},
			probes: []probe{
				{80, tcp, newTruth(true)},
				{81, tcp, newTruth(true).expect("x", "", false)},
			},
		},
		{
			name:     "should deny egress from pods based on PodSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "deny-egress-pod-a", sel("pod", "a"), egress())},
			probes:   allTCP(80, newTruth(true).expectAllEgress("x/a", false)),
		},
		{
			name:     "should deny egress from all pods in a namespace",
			policies: []networkingv1.NetworkPolicy{np("x", "deny-egress-ns-x", sel(), egress())},
			probes:   allTCP(80, newTruth(true).expect("x", "", false)),
		},
		{
			name: "should work with Ingress, Egress specified together",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-pod-selector", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerPods(sel("pod", "b"))}}),
				egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, num(80))}}),
				types(networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress))},
			probes: []probe{
				{80, tcp, newTruth(true).expectAllIngress("x/a", false).expect("x/b", "x/a", true)},
				{81, tcp, newTruth(true).expectAllIngress("x/a", false).expectAllEgress("x/a", false).expect("x/b", "x/a", true)},
			},
		},
		{
			name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-to-ns-y-pod-a", sel("pod", "a"),
					egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerBoth(sel(nsName, "y"), sel("pod", "a"))}})),
				np("y", "allow-from-xa-on-ya-match-selector", sel("pod", "a"),
					ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(sel(nsName, "x"), sel("pod", "a"))}})),
				np("y", "allow-from-xa-on-yb-match-selector", sel("pod", "b"),
					ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerBoth(sel(nsName, "x"), sel("pod", "a"))}})),
			},
			probes: allTCP(80, newTruth(true).expectAllEgress("x/a", false).expectAllIngress("y/a", false).
				expect("x/a", "y/a", true).expectAllIngress("y/b", false)),
		},
		{
			name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-to-ns-y-pod-a", sel("pod", "a"),
				egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerBoth(sel(nsName, "y"), sel("pod", "a"))}}))},
			probes: allTCP(80, newTruth(true).expectAllEgress("x/a", false).expect("x/a", "y/a", true)),
		},
		{
			name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-ingress-by-proto", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(&tcp, nil)}}))},
			probes: []probe{
				{80, tcp, newTruth(true)},
				{80, udp, newTruth(true).expectAllIngress("x/a", false)},
			},
		},
		{
			name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-ingress-port-80", sel(), ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, num(80))}})),
				np("x", "allow-ingress", sel(), ingress(networkingv1.NetworkPolicyIngressRule{})),
			},
			probes: allTCP(81, newTruth(true)),
		},
		{
			name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-egress-port-80", sel(), egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, num(80))}})),
				np("x", "allow-egress", sel(), egress(networkingv1.NetworkPolicyEgressRule{})),
			},
			probes: allTCP(81, newTruth(true)),
		},
		{
			name: "multiple egress policies, port 80 only (first half of the precedence case)",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-egress-port-80", sel(), egress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{port(nil, num(80))}})),
			},
			probes: allTCP(81, newTruth(true).expect("x", "", false)),
		},
		{
			name: "should allow egress access to server in CIDR block",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
				egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerIP(podIP("y", "b").String() + "/32")}}))},
			probes: allTCP(80, newTruth(true).expectAllEgress("x/a", false).expect("x/a", "y/b", true)),
		},
		{
			// makeLargeCIDRForIP(10.1.0.2) = 0.0.0.0/4.
			name: "should enforce except clause while egress access to server in CIDR block",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
				egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerIP("0.0.0.0/4", podIP("x", "b").String()+"/32")}}))},
			probes: allTCP(80, newTruth(true).expect("x/a", "x/b", false)),
		},
		{
			name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
					egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerIP("0.0.0.0/4", podIP("x", "b").String()+"/32")}})),
				np("x", "allow-client-a-via-cidr-egress-rule-2", sel("pod", "a"),
					egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerIP(podIP("x", "b").String() + "/32")}})),
			},
			probes: allTCP(80, newTruth(true)),
		},
		{
			// The update replaces the policy of the same name: only the /32 remains.
			name: "IPBlock.CIDR and Except overlap, after the update",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"),
				egress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peerIP(podIP("x", "b").String() + "/32")}}))},
			probes: allTCP(80, newTruth(true).expectAllEgress("x/a", false).expect("x/a", "x/b", true)),
		},
		{
			name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector (egress only)",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-egress-for-target", sel("pod", "a"), egress(networkingv1.NetworkPolicyEgressRule{})),
			},
			probes: allTCP(80, newTruth(true)),
		},
		{
			name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
			policies: []networkingv1.NetworkPolicy{
				np("x", "allow-egress-for-target", sel("pod", "a"), egress(networkingv1.NetworkPolicyEgressRule{})),
				np("x", "deny-ingress-via-label-selector", sel("pod", "a"), ingress()),
			},
			probes: allTCP(80, newTruth(true).expectAllIngress("x/a", false)),
		},
		{
			name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
			policies: []networkingv1.NetworkPolicy{
				np("x", "deny-ingress", sel(), ingress()),
				np("x", "allow-only-sctp-ingress-on-port-81", sel("pod", "a"),
					ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(&sctp, num(81))}})),
			},
			probes: []probe{
				{81, tcp, newTruth(true).expect("", "x", false)},
				{81, sctp, newTruth(true).expect("", "x/b", false).expect("", "x/c", false)},
			},
		},
		{
			name: "should properly isolate pods that are selected by a policy allowing SCTP",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-only-sctp-ingress-on-port-80", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(&sctp, num(80))}}))},
			probes: []probe{
				{81, tcp, newTruth(true).expectAllIngress("x/a", false)},
				{80, sctp, newTruth(true)},
			},
		},
		{
			name: "should not allow access by TCP when a policy specifies only UDP",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-only-udp-ingress-on-port-81", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{port(&udp, num(81))}}))},
			probes: []probe{
				{81, tcp, newTruth(true).expectAllIngress("x/a", false)},
				{81, udp, newTruth(true)},
			},
		},
		{
			name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", sel("pod", "a"),
				ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))}}))},
			probes: allTCP(80, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)),
		},
		{
			// [Feature:NetworkPolicyEndPort]: 80..81 from y opens both; 81..81 (x) only 81.
			name: "should enforce policy based on endPort (range 80-81 from y, 81-81 from x)",
			policies: []networkingv1.NetworkPolicy{np("x", "allow-endport", sel("pod", "a"),
				ingress(
					networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "y"))},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: num(80), EndPort: i32(81)}}},
					networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peerNS(sel(nsName, "x"))},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: num(81), EndPort: i32(81)}}}))},
			probes: []probe{
				{80, tcp, newTruth(true).expect("x", "x/a", false).expect("z", "x/a", false)},
				{81, tcp, newTruth(true).expect("z", "x/a", false)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCompile(t, fixtureInput(ModeNetworkPolicy, tt.policies...))
			for _, p := range tt.probes {
				checkTruth(t, m, p.want, p.port, p.proto)
			}
		})
	}
}

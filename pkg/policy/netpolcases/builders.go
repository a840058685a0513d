package netpolcases

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Policy builders, after upstream's GenNetworkPolicy helpers.

// Mod changes a policy under construction.
type Mod func(*networkingv1.NetworkPolicy)

// Policy is a NetworkPolicy in ns named name selecting podSel (nil: the empty
// selector, every pod of ns), changed by mods in order.
func Policy(ns, name string, podSel *metav1.LabelSelector, mods ...Mod) networkingv1.NetworkPolicy {
	p := networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
	}
	if podSel != nil {
		p.Spec.PodSelector = *podSel
	}
	for _, m := range mods {
		m(&p)
	}
	return p
}

// Ingress appends ingress rules, and the Ingress policyType the first time
// (like upstream's SetSpecIngressRules): Ingress() alone denies all ingress.
func Ingress(rules ...networkingv1.NetworkPolicyIngressRule) Mod {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Ingress == nil {
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		}
		p.Spec.Ingress = append(p.Spec.Ingress, rules...)
	}
}

// Egress appends egress rules, and the Egress policyType the first time
// (like upstream's SetSpecEgressRules): Egress() alone denies all egress.
func Egress(rules ...networkingv1.NetworkPolicyEgressRule) Mod {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Egress == nil {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
		p.Spec.Egress = append(p.Spec.Egress, rules...)
	}
}

// Types sets spec.policyTypes.
func Types(ts ...networkingv1.PolicyType) Mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = ts }
}

// Sel builds a matchLabels selector from key, value pairs; Sel() is the empty selector.
func Sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// Expr is a selector with one matchExpressions requirement.
func Expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

// Num is a numeric port, Named a named one.
func Num(n int) *intstr.IntOrString      { v := intstr.FromInt32(int32(n)); return &v }
func Named(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }

// Port is a policy port; a nil protocol defaults to TCP, a nil port means every port.
func Port(p *corev1.Protocol, n *intstr.IntOrString) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: p, Port: n}
}

// PeerPods, PeerNS, PeerBoth and PeerIP are policy peers: a podSelector, a
// namespaceSelector, both (AND), an ipBlock with optional excepts.
func PeerPods(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func PeerNS(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func PeerBoth(ns, pods *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pods}
}

func PeerIP(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

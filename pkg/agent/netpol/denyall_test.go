package netpol

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/policy"
)

// A policy that cannot be enforced exactly is replaced by one that isolates
// the pods it could select, both ways, and allows nothing — never widened.
func TestDenyAllStandIn(t *testing.T) {
	bad := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "odd"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}}}}},
		}}
	if errs := policy.Validate(bad); len(errs) == 0 {
		t.Fatal("the fixture must be a policy the model refuses")
	}
	got := DenyAll(bad)
	if errs := policy.Validate(&got); len(errs) > 0 {
		t.Fatalf("stand-in invalid: %v", errs)
	}
	if got.Spec.PodSelector.MatchLabels["app"] != "a" || len(got.Spec.Ingress)+len(got.Spec.Egress) != 0 {
		t.Errorf("stand-in %+v: want the same pods, no rules", got.Spec)
	}
	if in, eg := policy.EffectiveTypes(&got); !in || !eg {
		t.Errorf("stand-in isolates ingress=%v egress=%v, want both", in, eg)
	}

	// A selector that is itself invalid: the whole namespace is isolated.
	bad.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Like"}}}
	if got := DenyAll(bad); len(got.Spec.PodSelector.MatchLabels)+len(got.Spec.PodSelector.MatchExpressions) != 0 {
		t.Errorf("invalid selector kept: %+v", got.Spec.PodSelector)
	}
}

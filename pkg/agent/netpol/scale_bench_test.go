package netpol

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/pkg/policy"
)

func benchInput(pods, policies, namespaces int) policy.Input {
	in := policy.Input{Mode: policy.ModeNetworkPolicy}
	for i := range namespaces {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}})
	}
	for i := range pods {
		in.Pods = append(in.Pods, policy.Pod{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50), "tier": fmt.Sprintf("t%d", i%3)},
			IP:     netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)}), Node: fmt.Sprintf("node%d", i%3),
			Ports: []policy.ContainerPort{{Name: "http", Port: 8080}}})
	}
	port := intstr.FromInt32(8080)
	for i := range policies {
		in.Policies = append(in.Policies, networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%50)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", i%3)}}, NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}})
	}
	return in
}

func BenchmarkBuild10kPods1kPolicies(b *testing.B) {
	in := benchInput(10000, 1000, 100)
	for b.Loop() {
		if _, err := Build(in, "node0", nil); err != nil {
			b.Fatal(err)
		}
	}
}

package netpol

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/policy"
)

// scaled is a cluster of pods spread over 2 nodes and nss namespaces, each namespace with
// the usual isolation policies: default deny (both directions), allow from the same
// namespace, allow web pods from team=a namespaces on the named port http, allow egress to
// the world except the cluster.
func scaled(pods, nss int) policy.Input {
	in := policy.Input{Mode: policy.ModeNetworkPolicy}
	for n := 0; n < nss; n++ {
		ns := fmt.Sprintf("ns-%d", n)
		team := []string{"a", "b"}[n%2]
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": team}}})
		in.Policies = append(in.Policies,
			netpol(ns, "default-deny", sel(), bothTypes, nil, nil),
			netpol(ns, "same-namespace", sel(), bothTypes, []inR{{From: peers{peerPods(sel())}}}, []outR{{To: peers{peerPods(sel())}}}),
			netpol(ns, "web-from-team-a", sel("app", "web"), ingressOnly, []inR{{From: peers{peerNS(sel("team", "a"))}, Ports: ports{portNamed(nil, "http")}}}, nil),
			netpol(ns, "world", sel(), egressOnly, nil, []outR{{To: peers{peerIP("0.0.0.0/0", "10.128.0.0/14")}}}),
		)
	}
	for i := 0; i < pods; i++ {
		node := i % 2
		p := policy.Pod{Namespace: fmt.Sprintf("ns-%d", i/2%nss), Name: fmt.Sprintf("pod-%d", i), Node: nodeName(node),
			IP: podAddr(node, i/2), Labels: map[string]string{"app": []string{"web", "db"}[i%3%2]},
			Ports: []policy.ContainerPort{{Name: "http", Port: int32(8000 + i%3)}}}
		in.Pods = append(in.Pods, p)
	}
	return in
}

type size struct{ rules, elements, objects, longestChain int }

func sizeOf(t *testing.T, in policy.Input) size {
	t.Helper()
	st, err := Build(in, nodeName(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	var s size
	for _, c := range st.Chains {
		s.rules += len(c.Rules)
		s.longestChain = max(s.longestChain, len(c.Rules))
	}
	for _, set := range st.Sets {
		s.elements += len(set.Elements)
	}
	s.objects = len(st.Chains) + len(st.Sets)
	return s
}

// Rules and elements grow linearly: twice the pods → at most about twice the elements and
// no more rules (rules depend on policies, not pods); twice the namespaces (and so policies)
// → at most about twice the rules. No chain a packet walks grows with pods.
func TestLinearGrowth(t *testing.T) {
	small, big := sizeOf(t, scaled(100, 5)), sizeOf(t, scaled(200, 5))
	t.Logf("100 pods: %+v; 200 pods: %+v", small, big)
	if big.rules > small.rules {
		t.Errorf("rules grew with pods: %d → %d", small.rules, big.rules)
	}
	if float64(big.elements) > 2.1*float64(small.elements) {
		t.Errorf("elements grew faster than pods: %d → %d", small.elements, big.elements)
	}
	if big.longestChain != small.longestChain {
		t.Errorf("longest chain grew with pods: %d → %d", small.longestChain, big.longestChain)
	}
	few, many := sizeOf(t, scaled(200, 5)), sizeOf(t, scaled(200, 10))
	t.Logf("5 namespaces: %+v; 10 namespaces: %+v", few, many)
	if float64(many.rules) > 2.1*float64(few.rules) || float64(many.objects) > 2.1*float64(few.objects) {
		t.Errorf("rules or objects grew faster than namespaces: %+v → %+v", few, many)
	}
	if float64(many.elements) > 1.5*float64(few.elements) {
		t.Errorf("elements grew with namespaces at constant pods: %d → %d", few.elements, many.elements)
	}
	if many.longestChain != few.longestChain {
		t.Errorf("longest chain grew with namespaces: %d → %d", few.longestChain, many.longestChain)
	}
}

// Multitenant: one chain and one set per VNID with local pods, elements linear in pods.
func TestLinearGrowthMultitenant(t *testing.T) {
	mt := func(pods, nss int) policy.Input {
		in := scaled(pods, nss)
		in.Mode, in.Policies = policy.ModeMultitenant, []networkingv1.NetworkPolicy{}
		in.VNIDs = map[string]uint32{}
		for n := 0; n < nss; n++ {
			in.VNIDs[fmt.Sprintf("ns-%d", n)] = uint32(n)
		}
		return in
	}
	small, big := sizeOf(t, mt(100, 10)), sizeOf(t, mt(200, 10))
	t.Logf("Multitenant 100 pods: %+v; 200 pods: %+v", small, big)
	if big.rules != small.rules || float64(big.elements) > 2.1*float64(small.elements) {
		t.Errorf("not linear: %+v → %+v", small, big)
	}
	few, many := sizeOf(t, mt(200, 10)), sizeOf(t, mt(200, 20))
	if float64(many.rules) > 2.1*float64(few.rules) || many.longestChain != few.longestChain {
		t.Errorf("not linear in namespaces: %+v → %+v", few, many)
	}
}

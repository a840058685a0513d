package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The upstream netpol e2e cluster: namespaces x, y, z (label ns=<name>, plus the
// kubernetes.io/metadata.name label the model adds), pods a, b, c in each (label pod=<name>)
// serving 80 and 81 on TCP, UDP and SCTP with ports named serve-<port>-<proto>.
// x/a = 10.1.0.1, x/b = 10.1.0.2, ..., z/c = 10.3.0.3; a and c on node-1, b on node-2.
var (
	fixtureNamespaces = []string{"x", "y", "z"}
	fixturePods       = []string{"a", "b", "c"}
	tcp               = corev1.ProtocolTCP
	udp               = corev1.ProtocolUDP
	sctp              = corev1.ProtocolSCTP
	node1IP           = netip.MustParseAddr("192.168.0.1")
	node2IP           = netip.MustParseAddr("192.168.0.2")
	worldIP           = netip.MustParseAddr("203.0.113.7")
)

func podIP(ns, pod string) netip.Addr {
	i := strings.Index("xyz", ns) + 1
	j := strings.Index("abc", pod) + 1
	return netip.AddrFrom4([4]byte{10, byte(i), 0, byte(j)})
}

func fixtureInput(mode Mode, policies ...networkingv1.NetworkPolicy) Input {
	in := Input{Mode: mode, Policies: policies}
	for _, ns := range fixtureNamespaces {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}})
		for _, p := range fixturePods {
			node := "node-1"
			if p == "b" {
				node = "node-2"
			}
			pod := Pod{Namespace: ns, Name: p, Labels: map[string]string{"pod": p}, IP: podIP(ns, p), Node: node}
			for _, port := range []int32{80, 81} {
				for _, proto := range []corev1.Protocol{tcp, udp, sctp} {
					pod.Ports = append(pod.Ports, ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), Port: port, Protocol: proto})
				}
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

// Policy builders, after upstream's GenNetworkPolicy helpers: ingress() and egress() append
// their policyType the first time, like SetSpecIngressRules / SetSpecEgressRules.
type mod func(*networkingv1.NetworkPolicy)

func np(ns, name string, podSel *metav1.LabelSelector, mods ...mod) networkingv1.NetworkPolicy {
	p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if podSel != nil {
		p.Spec.PodSelector = *podSel
	}
	for _, m := range mods {
		m(&p)
	}
	return p
}

func ingress(rules ...networkingv1.NetworkPolicyIngressRule) mod {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Ingress == nil {
			p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		}
		p.Spec.Ingress = append(p.Spec.Ingress, rules...)
	}
}

func egress(rules ...networkingv1.NetworkPolicyEgressRule) mod {
	return func(p *networkingv1.NetworkPolicy) {
		if p.Spec.Egress == nil {
			p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
			p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
		p.Spec.Egress = append(p.Spec.Egress, rules...)
	}
}

// rawIngress / rawEgress set rules without touching policyTypes (to test defaulting).
func rawIngress(rules ...networkingv1.NetworkPolicyIngressRule) mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.Ingress = append(p.Spec.Ingress, rules...) }
}

func rawEgress(rules ...networkingv1.NetworkPolicyEgressRule) mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.Egress = append(p.Spec.Egress, rules...) }
}

func types(ts ...networkingv1.PolicyType) mod {
	return func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = ts }
}

// sel builds a matchLabels selector from key, value pairs; sel() is the empty selector.
func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }
func i32(n int32) *int32                       { return &n }
func num(n int) *intstr.IntOrString            { v := intstr.FromInt32(int32(n)); return &v }
func named(s string) *intstr.IntOrString       { v := intstr.FromString(s); return &v }

func port(p *corev1.Protocol, n *intstr.IntOrString) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: p, Port: n}
}

func peerPods(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func peerNS(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func peerBoth(ns, pods *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pods}
}

func peerIP(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// truth is an upstream-style reachability matrix over the fixture pods, loopback excluded.
type truth map[[2]string]bool

func newTruth(def bool) truth {
	t := truth{}
	for _, from := range allPods() {
		for _, to := range allPods() {
			if from != to {
				t[[2]string{from, to}] = def
			}
		}
	}
	return t
}

func allPods() []string {
	var out []string
	for _, ns := range fixtureNamespaces {
		for _, p := range fixturePods {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// peerMatch: "" is every pod, "x" every pod of x, "x/a" one pod.
func peerMatch(pattern, pod string) bool {
	return pattern == "" || pattern == pod || pattern == strings.SplitN(pod, "/", 2)[0]
}

func (t truth) expect(from, to string, v bool) truth {
	for k := range t {
		if peerMatch(from, k[0]) && peerMatch(to, k[1]) {
			t[k] = v
		}
	}
	return t
}

func (t truth) expectAllIngress(to string, v bool) truth  { return t.expect("", to, v) }
func (t truth) expectAllEgress(from string, v bool) truth { return t.expect(from, "", v) }

func checkTruth(t *testing.T, m *Model, want truth, port int, p corev1.Protocol) {
	t.Helper()
	var wrong []string
	for k, w := range want {
		from, to := strings.SplitN(k[0], "/", 2), strings.SplitN(k[1], "/", 2)
		v := m.Evaluate(Query{Src: PodEndpoint(from[0], from[1]), Dst: PodEndpoint(to[0], to[1]), Port: port, Protocol: p})
		if v.Allowed != w {
			wrong = append(wrong, fmt.Sprintf("%s → %s %d/%s: got %v want %v (%s)", k[0], k[1], port, p, v.Allowed, w, v.Reason))
		}
	}
	sort.Strings(wrong)
	for _, w := range wrong {
		t.Error(w)
	}
}

package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pe(key string) Endpoint {
	p := strings.SplitN(key, "/", 2)
	return PodEndpoint(p[0], p[1])
}

func ext(s string) Endpoint { return ExternalEndpoint(netip.MustParseAddr(s)) }

type (
	pol   = networkingv1.NetworkPolicy
	inR   = networkingv1.NetworkPolicyIngressRule
	outR  = networkingv1.NetworkPolicyEgressRule
	peers = []networkingv1.NetworkPolicyPeer
	ports = []networkingv1.NetworkPolicyPort
)

func TestEvaluate(t *testing.T) {
	denyIngressX := np("x", "deny-ingress", sel(), ingress())
	denyEgressX := np("x", "deny-egress", sel(), egress())
	tests := []struct {
		name     string
		mode     Mode
		policies []pol
		vnids    map[string]uint32
		edit     func(*Input)
		q        Query
		allowed  bool
		decision Decision
		egress   Result // "" expects no egress verdict
		ingress  Result // "" expects no ingress verdict
		rule     string // substring of the deciding RuleRef
		reason   string // substring of Verdict.Reason
	}{
		// --- isolation and policyTypes
		{name: "no policies: not isolated", q: Query{Src: pe("x/a"), Dst: pe("y/b"), Port: 80},
			allowed: true, decision: DecisionNetworkPolicy, egress: ResultNotIsolated, ingress: ResultNotIsolated, reason: "not isolated"},
		{name: "defaulted policyTypes: ingress rules only isolate ingress",
			policies: []pol{np("x", "p", sel(), rawIngress(inR{From: peers{peerPods(sel("pod", "b"))}}))},
			q:        Query{Src: pe("x/a"), Dst: pe("x/c"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches,
			reason: "isolated by policies x/p for ingress, no rule matches"},
		{name: "defaulted policyTypes: egress rules add Egress, no ingress rules = deny all ingress",
			policies: []pol{np("x", "p", sel("pod", "a"), rawEgress(outR{}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, ingress: ResultNoRuleMatches, egress: ResultNotIsolated},
		{name: "defaulted policyTypes: egress rules add Egress (egress side)",
			policies: []pol{np("x", "p", sel("pod", "a"), rawEgress(outR{}))},
			q:        Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, allowed: true, egress: ResultAllowedByRule, ingress: ResultNotIsolated,
			rule: "x/p spec.egress[0].to (empty: all peers), spec.egress[0].ports (empty: all ports)"},
		{name: "explicit Egress only: ingress rules are inert",
			policies: []pol{np("x", "p", sel(), rawIngress(inR{From: peers{peerPods(sel("pod", "b"))}}), types(networkingv1.PolicyTypeEgress))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultNotIsolated},
		{name: "explicit Egress only, no egress rules: deny all egress",
			policies: []pol{np("x", "p", sel(), types(networkingv1.PolicyTypeEgress))},
			q:        Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, egress: ResultNoRuleMatches, ingress: ResultNotIsolated},
		{name: "explicit Ingress only: egress rules are inert",
			policies: []pol{np("x", "p", sel(), rawEgress(outR{To: peers{peerPods(sel("pod", "b"))}}), types(networkingv1.PolicyTypeIngress))},
			q:        Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultNotIsolated},
		{name: "empty podSelector selects only its own namespace", policies: []pol{denyIngressX},
			q: Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultNotIsolated},
		{name: "podSelector not matching: not isolated", policies: []pol{np("x", "p", sel("pod", "b"), ingress())},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultNotIsolated},
		{name: "egress and ingress both required: egress denies", policies: []pol{denyEgressX},
			q: Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, egress: ResultNoRuleMatches, ingress: ResultNotIsolated},
		{name: "union: second policy allows, reasons list both isolating policies when none does",
			policies: []pol{
				np("x", "p2", sel(), ingress(inR{From: peers{peerPods(sel("pod", "c"))}})),
				np("x", "p1", sel(), ingress(inR{From: peers{peerPods(sel("pod", "b"))}})),
			},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches,
			reason: "isolated by policies x/p1,x/p2 for ingress, no rule matches"},
		{name: "union: allowed by the second policy's rule",
			policies: []pol{
				np("x", "p1", sel(), ingress(inR{From: peers{peerPods(sel("pod", "b"))}})),
				np("x", "p2", sel(), ingress(inR{From: peers{peerPods(sel("pod", "z"))}}, inR{From: peers{peerPods(sel("pod", "q")), peerPods(sel("pod", "c"))}})),
			},
			q: Query{Src: pe("x/c"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule,
			rule: "x/p2 spec.ingress[1].from[1], spec.ingress[1].ports (empty: all ports)"},

		// --- peers
		{name: "podSelector peer is same-namespace only",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerPods(sel("pod", "b"))}}))},
			q:        Query{Src: pe("y/b"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "namespaceSelector peer on a custom namespace label",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(sel("ns", "y"))}}))},
			q:        Query{Src: pe("y/c"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule, rule: "from[0]"},
		{name: "namespaceSelector AND podSelector: namespace matches, pod does not",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerBoth(sel("ns", "y"), sel("pod", "b"))}}))},
			q:        Query{Src: pe("y/c"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "matchExpressions NotIn",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(expr("ns", metav1.LabelSelectorOpNotIn, "x", "y"))}}))},
			q:        Query{Src: pe("z/a"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "matchExpressions NotIn excludes",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(expr("ns", metav1.LabelSelectorOpNotIn, "x", "y"))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "matchExpressions Exists",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerBoth(expr("ns", metav1.LabelSelectorOpExists), expr("pod", metav1.LabelSelectorOpExists))}}))},
			q:        Query{Src: pe("z/c"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "matchExpressions DoesNotExist",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerPods(expr("pod", metav1.LabelSelectorOpDoesNotExist))}}))},
			q:        Query{Src: pe("x/b"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "matchExpressions In on the policy's podSelector",
			policies: []pol{np("x", "p", expr("pod", metav1.LabelSelectorOpIn, "a", "c"), ingress())},
			q:        Query{Src: pe("y/a"), Dst: pe("x/c"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "implicit kubernetes.io/metadata.name namespace label",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(sel(nsName, "z"))}}))},
			q:        Query{Src: pe("z/b"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "selectors never match an external source",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(sel())}}))},
			q:        Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, ingress: ResultNoRuleMatches},
		{name: "empty from allows external sources",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, num(80))}}))},
			q:        Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultAllowedByRule, rule: "from (empty: all peers), spec.ingress[0].ports[0]"},
		{name: "ipBlock allows an external source",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("203.0.113.0/24", "203.0.113.128/25")}}))},
			q:        Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultAllowedByRule},
		{name: "ipBlock except denies",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("203.0.113.0/24", "203.0.113.0/29")}}))},
			q:        Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, ingress: ResultNoRuleMatches},
		{name: "ipBlock non-canonical cidr is masked",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("203.0.113.99/24")}}))},
			q:        Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultAllowedByRule},
		{name: "ipBlock applies to pod sources",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("10.2.0.0/16")}}))},
			q:        Query{Src: pe("y/c"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "ipBlock IPv6",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("2001:db8::/32", "2001:db8:1::/48")}}))},
			q:        Query{Src: ext("2001:db8:2::1"), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultAllowedByRule},
		{name: "ipBlock never matches a pod without an IP",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("0.0.0.0/0")}}))},
			edit: func(in *Input) {
				in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "w"}})
				in.Pods = append(in.Pods, Pod{Namespace: "w", Name: "pending"})
			},
			q: Query{Src: pe("w/pending"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "egress ipBlock to external",
			policies: []pol{np("x", "p", sel(), egress(outR{To: peers{peerIP("203.0.113.0/24")}, Ports: ports{port(&udp, num(53))}}))},
			q:        Query{Src: pe("x/a"), Dst: ext("203.0.113.7"), Port: 53, Protocol: udp}, allowed: true, egress: ResultAllowedByRule},
		{name: "egress empty to: all destinations, external included",
			policies: []pol{np("x", "p", sel(), egress(outR{Ports: ports{port(nil, num(443))}}))},
			q:        Query{Src: pe("x/a"), Dst: ext("203.0.113.7"), Port: 443}, allowed: true, egress: ResultAllowedByRule},
		{name: "egress named port never matches an external destination",
			policies: []pol{np("x", "p", sel(), egress(outR{Ports: ports{port(nil, named("serve-80-tcp"))}}))},
			q:        Query{Src: pe("x/a"), Dst: ext("203.0.113.7"), Port: 80}, egress: ResultNoRuleMatches},

		// --- ports
		{name: "rule without ports: every protocol, ICMP included",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerNS(sel())}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Protocol: "ICMP"}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "port-only rule never matches ICMP",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, nil)}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Protocol: "ICMP"}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "protocol defaults to TCP: UDP denied",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, num(80))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80, Protocol: udp}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "query protocol defaults to TCP",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(&tcp, num(80))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "SCTP port",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(&udp, num(80)), port(&sctp, num(81))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 81, Protocol: sctp}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule, rule: "ports[1]"},
		{name: "endPort: below range", policies: []pol{endPortPolicy()}, q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 79},
			egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "endPort: first port", policies: []pol{endPortPolicy()}, q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80},
			allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "endPort: last port", policies: []pol{endPortPolicy()}, q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 85},
			allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "endPort: above range", policies: []pol{endPortPolicy()}, q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 86},
			egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "named port with the wrong protocol does not match",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(&udp, named("serve-80-tcp"))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80, Protocol: udp}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "named UDP port",
			policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(&udp, named("serve-81-udp"))}}))},
			q:        Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 81, Protocol: udp}, allowed: true, egress: ResultNotIsolated, ingress: ResultAllowedByRule},
		{name: "named port unknown on the pod", policies: []pol{np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, named("http"))}}))},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},
		{name: "egress named port resolves against the destination pod (match)",
			policies: []pol{np("x", "p", sel(), egress(outR{Ports: ports{port(nil, named("web"))}}))}, edit: webPods,
			q: Query{Src: pe("x/a"), Dst: pe("w/web1"), Port: 8080}, allowed: true, egress: ResultAllowedByRule, ingress: ResultNotIsolated},
		{name: "egress named port resolves against the destination pod (other pod's number)",
			policies: []pol{np("x", "p", sel(), egress(outR{Ports: ports{port(nil, named("web"))}}))}, edit: webPods,
			q: Query{Src: pe("x/a"), Dst: pe("w/web1"), Port: 9090}, egress: ResultNoRuleMatches, ingress: ResultNotIsolated},
		{name: "egress named port resolves against the destination pod (second pod)",
			policies: []pol{np("x", "p", sel(), egress(outR{Ports: ports{port(nil, named("web"))}}))}, edit: webPods,
			q: Query{Src: pe("x/a"), Dst: pe("w/web2"), Port: 9090}, allowed: true, egress: ResultAllowedByRule, ingress: ResultNotIsolated},
		{name: "ingress named port resolves against the destination pod, not the source",
			policies: []pol{np("w", "p", sel(), ingress(inR{Ports: ports{port(nil, named("web"))}}))}, edit: webPods,
			q: Query{Src: pe("w/web1"), Dst: pe("w/web2"), Port: 8080}, egress: ResultNotIsolated, ingress: ResultNoRuleMatches},

		// --- nodes, loopback, odd queries
		{name: "own node always reaches its pod", policies: []pol{denyIngressX},
			q: Query{Src: NodeEndpoint("node-1", node1IP), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultNodeLocal, reason: "own node node-1"},
		{name: "another node is subject to ingress policy", policies: []pol{denyIngressX},
			q: Query{Src: NodeEndpoint("node-2", node2IP), Dst: pe("x/a"), Port: 80}, ingress: ResultNoRuleMatches},
		{name: "another node allowed by ipBlock",
			policies: []pol{np("x", "p", sel(), ingress(inR{From: peers{peerIP("192.168.0.0/24")}}))},
			q:        Query{Src: NodeEndpoint("node-2", node2IP), Dst: pe("x/a"), Port: 80}, allowed: true, ingress: ResultAllowedByRule},
		{name: "a pod's egress to its own node is subject to egress policy", policies: []pol{denyEgressX},
			q: Query{Src: pe("x/a"), Dst: NodeEndpoint("node-1", node1IP), Port: 10250}, egress: ResultNoRuleMatches},
		{name: "loopback", policies: []pol{denyIngressX, denyEgressX}, q: Query{Src: pe("x/a"), Dst: pe("x/a"), Port: 80},
			allowed: true, decision: DecisionLoopback},
		{name: "neither end a pod", policies: []pol{denyIngressX}, q: Query{Src: ext("203.0.113.7"), Dst: NodeEndpoint("node-1", node1IP), Port: 22},
			allowed: true, reason: "NetworkPolicy does not apply"},
		{name: "unknown pod is denied", q: Query{Src: pe("x/nope"), Dst: pe("x/a"), Port: 80}, decision: DecisionInvalidQuery, reason: "not in the model"},
		{name: "external without IP is denied", q: Query{Src: Endpoint{Kind: EndpointExternal}, Dst: pe("x/a"), Port: 80}, decision: DecisionInvalidQuery},
		{name: "zero endpoint is denied", q: Query{Src: pe("x/a"), Port: 80}, decision: DecisionInvalidQuery, reason: "destination"},

		// --- modes
		{name: "Subnet ignores policies", mode: ModeSubnet, policies: []pol{denyIngressX, denyEgressX},
			q: Query{Src: pe("x/a"), Dst: pe("y/a"), Port: 80}, allowed: true, decision: DecisionSubnet},
		{name: "Multitenant same VNID", mode: ModeMultitenant, policies: []pol{denyIngressX}, vnids: map[string]uint32{"x": 10, "y": 10, "z": 0},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, allowed: true, decision: DecisionVNIDMatch},
		{name: "Multitenant VNID mismatch", mode: ModeMultitenant, vnids: map[string]uint32{"x": 10, "y": 11, "z": 0},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, decision: DecisionVNIDMismatch, reason: "VNID mismatch"},
		{name: "Multitenant global source", mode: ModeMultitenant, vnids: map[string]uint32{"x": 10, "y": 11, "z": 0},
			q: Query{Src: pe("z/a"), Dst: pe("x/a"), Port: 80}, allowed: true, decision: DecisionVNIDGlobal},
		{name: "Multitenant global destination", mode: ModeMultitenant, vnids: map[string]uint32{"x": 10, "y": 11, "z": 0},
			q: Query{Src: pe("x/a"), Dst: pe("z/b"), Port: 80}, allowed: true, decision: DecisionVNIDGlobal},
		{name: "Multitenant external is global", mode: ModeMultitenant, vnids: map[string]uint32{"x": 10},
			q: Query{Src: ext("203.0.113.7"), Dst: pe("x/a"), Port: 80}, allowed: true, decision: DecisionVNIDGlobal},
		{name: "Multitenant namespace without VNID is denied", mode: ModeMultitenant, vnids: map[string]uint32{"x": 10},
			q: Query{Src: pe("y/a"), Dst: pe("x/a"), Port: 80}, decision: DecisionVNIDMismatch, reason: `namespace "y" of pod y/a has no VNID`},
		{name: "Multitenant loopback", mode: ModeMultitenant, vnids: map[string]uint32{},
			q: Query{Src: pe("y/a"), Dst: pe("y/a"), Port: 80}, allowed: true, decision: DecisionLoopback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode := tt.mode
			if mode == "" {
				mode = ModeNetworkPolicy
			}
			in := fixtureInput(mode, tt.policies...)
			in.VNIDs = tt.vnids
			if tt.edit != nil {
				tt.edit(&in)
			}
			m := mustCompile(t, in)
			v := m.Evaluate(tt.q)
			if v.Allowed != tt.allowed {
				t.Errorf("Allowed = %v, want %v (%s)", v.Allowed, tt.allowed, v.Reason)
			}
			wantDecision := tt.decision
			if wantDecision == "" {
				wantDecision = DecisionNetworkPolicy
			}
			if v.Decision != wantDecision {
				t.Errorf("Decision = %s, want %s (%s)", v.Decision, wantDecision, v.Reason)
			}
			checkDir(t, "egress", v.Egress, tt.egress)
			checkDir(t, "ingress", v.Ingress, tt.ingress)
			if tt.rule != "" {
				var got []string
				for _, d := range []*DirectionVerdict{v.Egress, v.Ingress} {
					if d != nil && d.Rule != nil {
						got = append(got, d.Rule.String())
					}
				}
				if !strings.Contains(strings.Join(got, " | "), tt.rule) {
					t.Errorf("rules %q do not contain %q", got, tt.rule)
				}
			}
			if !strings.Contains(v.Reason, tt.reason) {
				t.Errorf("Reason %q does not contain %q", v.Reason, tt.reason)
			}
			// Deterministic: the same query on a model compiled again gives the same verdict.
			if v2 := mustCompile(t, in).Evaluate(tt.q); v2.Reason != v.Reason || v2.Allowed != v.Allowed {
				t.Errorf("not deterministic: %q vs %q", v.Reason, v2.Reason)
			}
		})
	}
}

func checkDir(t *testing.T, name string, d *DirectionVerdict, want Result) {
	t.Helper()
	switch {
	case want == "" && d != nil:
		t.Errorf("%s verdict %+v, want none", name, *d)
	case want != "" && d == nil:
		t.Errorf("no %s verdict, want %s", name, want)
	case d != nil && d.Result != want:
		t.Errorf("%s result %s, want %s (%s)", name, d.Result, want, d.Reason)
	case d != nil && (d.Allowed != (want != ResultNoRuleMatches)):
		t.Errorf("%s Allowed=%v inconsistent with %s", name, d.Allowed, d.Result)
	case d != nil && (len(d.IsolatedBy) > 0) != (want == ResultAllowedByRule || want == ResultNoRuleMatches):
		t.Errorf("%s IsolatedBy=%v inconsistent with %s", name, d.IsolatedBy, d.Result)
	}
}

func endPortPolicy() pol {
	return np("x", "range", sel(), ingress(inR{Ports: ports{{Protocol: &tcp, Port: num(80), EndPort: i32(85)}}}))
}

// webPods adds namespace w with two pods whose port "web" has different numbers.
func webPods(in *Input) {
	in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "w"}})
	in.Pods = append(in.Pods,
		Pod{Namespace: "w", Name: "web1", IP: netip.MustParseAddr("10.9.0.1"), Ports: []ContainerPort{{Name: "web", Port: 8080}}},
		Pod{Namespace: "w", Name: "web2", IP: netip.MustParseAddr("10.9.0.2"), Ports: []ContainerPort{{Name: "web", Port: 9090, Protocol: tcp}}},
	)
}

func TestCompileErrors(t *testing.T) {
	base := func() Input { return fixtureInput(ModeNetworkPolicy) }
	tests := []struct {
		name string
		edit func(*Input)
		want []string
	}{
		{"unknown mode", func(in *Input) { in.Mode = "Flat" }, []string{`mode "Flat"`}},
		{"duplicate pod", func(in *Input) { in.Pods = append(in.Pods, in.Pods[0]) }, []string{"pod x/a: duplicate"}},
		{"duplicate namespace", func(in *Input) { in.Namespaces = append(in.Namespaces, in.Namespaces[0]) }, []string{`namespace "x": duplicate`}},
		{"pod in unknown namespace", func(in *Input) { in.Pods = append(in.Pods, Pod{Namespace: "q", Name: "a"}) }, []string{`namespace "q" not in the input`}},
		{"every invalid policy listed", func(in *Input) {
			in.Policies = []pol{
				np("x", "bad1", sel(), ingress(inR{From: peers{{}}})),
				np("y", "bad2", sel(), egress(outR{Ports: ports{port(proto("ICMP"), nil)}})),
			}
		}, []string{"networkpolicy x/bad1", "spec.ingress[0].from[0]", "networkpolicy y/bad2", `spec.egress[0].ports[0].protocol: Unsupported value: "ICMP"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base()
			tt.edit(&in)
			m, err := Compile(in)
			if err == nil || m != nil {
				t.Fatalf("Compile succeeded, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	in := base()
	in.Policies = []pol{np("x", "bad", sel(), ingress(inR{From: peers{{}}}))}
	_, err := Compile(in)
	var ipe *InvalidPolicyError
	if !errors.As(err, &ipe) || ipe.Policy != "x/bad" || len(ipe.Errs) != 1 {
		t.Errorf("errors.As(InvalidPolicyError) = %v, %+v", err, ipe)
	}
}

func TestModeDefault(t *testing.T) {
	m := mustCompile(t, fixtureInput(""))
	if m.Mode() != ModeNetworkPolicy {
		t.Errorf("Mode() = %s", m.Mode())
	}
}

func TestEndpointForIP(t *testing.T) {
	m := mustCompile(t, fixtureInput(ModeNetworkPolicy))
	if got := m.EndpointForIP(podIP("y", "c")); got != pe("y/c") {
		t.Errorf("pod IP: %v", got)
	}
	if got := m.EndpointForIP(netip.MustParseAddr("::ffff:10.2.0.3")); got != pe("y/c") {
		t.Errorf("4in6 pod IP: %v", got)
	}
	if got := m.EndpointForIP(worldIP); got != ExternalEndpoint(worldIP) {
		t.Errorf("external IP: %v", got)
	}
}

func TestPodFromCore(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}},
		Spec: corev1.PodSpec{
			NodeName: "node-1",
			InitContainers: []corev1.Container{
				{Name: "init", Ports: []corev1.ContainerPort{{Name: "ignored", ContainerPort: 1}}},
				{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}}},
			},
			Containers: []corev1.Container{{Name: "main", Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: udp}}}},
		},
		Status: corev1.PodStatus{PodIP: "10.1.0.1"},
	}
	got, err := PodFromCore(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []ContainerPort{{Name: "metrics", Port: 9100}, {Name: "dns", Port: 53, Protocol: udp}}
	if got.IP != netip.MustParseAddr("10.1.0.1") || got.Node != "node-1" || got.Labels["pod"] != "a" || len(got.Ports) != 2 || got.Ports[0] != want[0] || got.Ports[1] != want[1] {
		t.Errorf("PodFromCore = %+v", got)
	}
	p.Status.PodIP = "10.1.0"
	if _, err := PodFromCore(p); err == nil {
		t.Error("bad pod IP accepted")
	}
	p.Status.PodIP = ""
	p.Spec.HostNetwork = true
	if _, err := PodFromCore(p); err == nil {
		t.Error("hostNetwork pod accepted")
	}
}

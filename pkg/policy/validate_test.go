package policy

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestValidate(t *testing.T) {
	badOp := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: "Matches", Values: []string{"a"}}}}
	tests := []struct {
		name string
		np   networkingv1.NetworkPolicy
		want []string // each must appear in one error (field path and value or detail)
	}{
		{name: "every supported field", np: np("x", "ok", expr("pod", metav1.LabelSelectorOpNotIn, "b"),
			ingress(inR{
				From:  peers{peerPods(sel("pod", "a")), peerNS(expr("ns", metav1.LabelSelectorOpExists)), peerBoth(sel("ns", "y"), expr("pod", metav1.LabelSelectorOpDoesNotExist)), peerIP("10.0.0.0/8", "10.1.0.0/16"), peerIP("2001:db8::/32")},
				Ports: ports{port(nil, nil), port(&udp, num(53)), port(&sctp, named("serve-80-sctp")), {Protocol: &tcp, Port: num(1), EndPort: i32(65535)}},
			}),
			egress(outR{To: peers{peerIP("0.0.0.0/0", "169.254.169.254/32")}}))},
		{name: "missing namespace", np: np("", "p", sel()), want: []string{"metadata.namespace: Required"}},
		{name: "podSelector bad operator", np: np("x", "p", badOp), want: []string{"spec.podSelector.matchExpressions[0]", `"Matches" is not a valid label selector operator`}},
		{name: "In without values", np: np("x", "p", sel(), ingress(inR{From: peers{peerPods(expr("pod", metav1.LabelSelectorOpIn))}})),
			want: []string{"spec.ingress[0].from[0].podSelector.matchExpressions[0]", "for 'in', 'notin' operators, values set can't be empty"}},
		{name: "Exists with values", np: np("x", "p", sel(), egress(outR{To: peers{peerNS(expr("ns", metav1.LabelSelectorOpExists, "x"))}})),
			want: []string{"spec.egress[0].to[0].namespaceSelector.matchExpressions[0]"}},
		{name: "bad matchLabels value", np: np("x", "p", sel("pod", "not valid!")), want: []string{"spec.podSelector.matchLabels[pod]", "not valid!"}},
		{name: "empty peer", np: np("x", "p", sel(), ingress(inR{From: peers{{}}})), want: []string{"spec.ingress[0].from[0]: Required value: must specify a peer"}},
		{name: "ipBlock with podSelector", np: np("x", "p", sel(), ingress(inR{From: peers{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: sel()}}})),
			want: []string{"spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"}},
		{name: "bad cidr", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("10.0.0.0/33")}})), want: []string{"spec.egress[0].to[0].ipBlock.cidr", "10.0.0.0/33"}},
		{name: "leading zeros refused", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("010.0.0.0/8")}})), want: []string{"spec.egress[0].to[0].ipBlock.cidr", "010.0.0.0/8"}},
		{name: "IPv4-mapped cidr refused", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("::ffff:10.0.0.0/104")}})), want: []string{"IPv4-mapped"}},
		{name: "except outside cidr", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("10.0.0.0/16", "10.1.0.0/24")}})),
			want: []string{"spec.egress[0].to[0].ipBlock.except[0]", "10.1.0.0/24", "strict subset"}},
		{name: "except equal to cidr", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("10.0.0.0/16", "10.0.0.0/16")}})), want: []string{"except[0]", "strict subset"}},
		{name: "except other family", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("10.0.0.0/8", "2001:db8::/64")}})), want: []string{"except[0]", "strict subset"}},
		{name: "except unparsable", np: np("x", "p", sel(), egress(outR{To: peers{peerIP("10.0.0.0/8", "ten")}})), want: []string{"except[0]", "ten"}},
		{name: "ICMP", np: np("x", "p", sel(), ingress(inR{Ports: ports{port(proto("ICMP"), nil)}})), want: []string{`spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"`}},
		{name: "port 0", np: np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, num(0))}})), want: []string{"spec.ingress[0].ports[0].port: Invalid value: 0"}},
		{name: "port too big", np: np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, num(70000))}})), want: []string{"ports[0].port: Invalid value: 70000"}},
		{name: "endPort below port", np: np("x", "p", sel(), ingress(inR{Ports: ports{{Port: num(81), EndPort: i32(80)}}})), want: []string{"ports[0].endPort: Invalid value: 80", "greater than or equal"}},
		{name: "endPort too big", np: np("x", "p", sel(), ingress(inR{Ports: ports{{Port: num(81), EndPort: i32(65536)}}})), want: []string{"ports[0].endPort: Invalid value: 65536"}},
		{name: "endPort with named port", np: np("x", "p", sel(), ingress(inR{Ports: ports{{Port: named("http"), EndPort: i32(90)}}})), want: []string{"ports[0].endPort", "non-numeric"}},
		{name: "endPort without port", np: np("x", "p", sel(), egress(outR{Ports: ports{{EndPort: i32(90)}}})), want: []string{"spec.egress[0].ports[0].endPort", "not specified"}},
		{name: "invalid port name", np: np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, named("Serve_80"))}})), want: []string{"ports[0].port", "Serve_80"}},
		{name: "unknown IntOrString type", np: np("x", "p", sel(), ingress(inR{Ports: ports{port(nil, &intstr.IntOrString{Type: 7})}})), want: []string{"ports[0].port", "unknown IntOrString type"}},
		{name: "unknown policyType", np: np("x", "p", sel(), types("Forward")), want: []string{`spec.policyTypes[0]: Unsupported value: "Forward"`}},
		{name: "three policyTypes", np: np("x", "p", sel(), types(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress)),
			want: []string{"spec.policyTypes", "more than two"}},
		{name: "several bad matchLabels, sorted", np: np("x", "p", sel("b", "bad value", "a", "bad value", "c", "bad value")),
			want: []string{"matchLabels[a]", "matchLabels[b]", "matchLabels[c]"}},
		{name: "several problems listed together", np: np("x", "p", badOp, ingress(inR{From: peers{{}}, Ports: ports{port(proto("ICMP"), num(0))}})),
			want: []string{"spec.podSelector.matchExpressions[0]", "spec.ingress[0].from[0]", "spec.ingress[0].ports[0].protocol", "spec.ingress[0].ports[0].port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := Validate(&tt.np)
			if again := Validate(&tt.np); again.ToAggregate() != nil && again.ToAggregate().Error() != errs.ToAggregate().Error() {
				t.Errorf("error listing not deterministic: %v vs %v", errs, again)
			}
			if len(tt.want) == 0 {
				if len(errs) > 0 {
					t.Fatalf("Validate = %v, want no errors", errs)
				}
				// And it must compile and evaluate.
				mustCompile(t, fixtureInput(ModeNetworkPolicy, tt.np))
				return
			}
			all := errs.ToAggregate()
			if all == nil {
				t.Fatalf("Validate accepted the policy, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(all.Error(), w) {
					t.Errorf("errors %q do not contain %q", all.Error(), w)
				}
			}
		})
	}
}

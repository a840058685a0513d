package netpol

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/internal/nfttrace"
	"github.com/sluice-net/sluice/pkg/policy"
)

const nsName = "kubernetes.io/metadata.name"

var e2eProbes = []probe{{tcp, 80}, {tcp, 81}, {udp, 80}, {udp, 81}, {sctp, 80}, {sctp, 81}, {"ICMP", 0}}

// Cases from upstream's netpol e2e suite, as transcribed in pkg/policy/e2e_test.go. Every
// pair of pods (and nodes and external addresses) is traced through the rendered tables of
// every node and must agree with the model, which pkg/policy checks against upstream's truth
// tables; the cases with a deny list also check the truth table directly (probe TCP/80,
// loopback excluded).
func TestUpstreamE2ECases(t *testing.T) {
	notX := expr(nsName, metav1.LabelSelectorOpNotIn, "x")
	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		denied   []string // "from → to" pod pairs denied on TCP/80 ("x" = every pod of x, "" = every pod); nil: no truth check
	}{
		{"default-deny-ingress", []networkingv1.NetworkPolicy{netpol("x", "deny-ingress", sel(), ingressOnly, nil, nil)},
			[]string{" → x"}},
		{"default-deny-all", []networkingv1.NetworkPolicy{netpol("x", "deny-all", sel(), bothTypes, nil, nil)},
			[]string{" → x", "x → "}},
		{"allow from pods within namespace by podSelector", []networkingv1.NetworkPolicy{netpol("x", "x-a-allows-x-b", sel("pod", "a"), ingressOnly,
			[]inR{{From: peers{peerPods(sel("pod", "b"))}}}, nil)},
			[]string{"x/a → x/a", "x/c → x/a", "y → x/a", "z → x/a"}},
		{"podSelector and namespaceSelector", []networkingv1.NetworkPolicy{netpol("x", "allow-ns-y-podselector-and-nsselector", sel("pod", "a"), ingressOnly,
			[]inR{{From: peers{peerBoth(notX, sel("pod", "b"))}}}, nil)},
			[]string{"x → x/a", "y/a → x/a", "y/c → x/a", "z/a → x/a", "z/c → x/a"}},
		{"ports by namespaceSelector", []networkingv1.NetworkPolicy{netpol("x", "allow-client-a-via-ns-selector", sel("pod", "a"), ingressOnly,
			[]inR{{From: peers{peerNS(sel(nsName, "y"))}, Ports: ports{portNum(&tcp, 81)}}}, nil)},
			[]string{" → x/a"}},
		{"ingress on one named port", []networkingv1.NetworkPolicy{netpol("x", "allow-all", sel(), ingressOnly,
			[]inR{{Ports: ports{portNamed(nil, "serve-81-tcp")}}}, nil)},
			[]string{" → x"}},
		{"egress on one named port", []networkingv1.NetworkPolicy{netpol("x", "allow-egress", sel(), egressOnly, nil,
			[]outR{{Ports: ports{portNamed(nil, "serve-80-tcp")}}})}, []string{}},
		{"egress to a server by podSelector and namespaceSelector", []networkingv1.NetworkPolicy{netpol("x", "allow-to-ns-y-pod-a", sel("pod", "a"), egressOnly, nil,
			[]outR{{To: peers{peerBoth(sel(nsName, "y"), sel("pod", "a"))}}})},
			[]string{"x/a → x", "x/a → y/b", "x/a → y/c", "x/a → z"}},
		{"except clause in egress CIDR", []networkingv1.NetworkPolicy{netpol("x", "allow-client-a-via-cidr-egress-rule", sel("pod", "a"), egressOnly, nil,
			[]outR{{To: peers{peerIP("0.0.0.0/4", podAddr(1, 1).String()+"/32")}}})}, nil},
		{"CIDR and except overlap across policies", []networkingv1.NetworkPolicy{
			netpol("x", "cidr", sel("pod", "a"), egressOnly, nil, []outR{{To: peers{peerIP("10.0.0.0/8", podAddr(1, 1).String()+"/32")}}}),
			netpol("x", "cidr-2", sel("pod", "a"), egressOnly, nil, []outR{{To: peers{peerIP(podAddr(1, 1).String() + "/32")}}}),
		}, nil},
		{"SCTP is not TCP", []networkingv1.NetworkPolicy{
			netpol("x", "deny-ingress", sel(), ingressOnly, nil, nil),
			netpol("x", "allow-only-sctp-ingress-on-port-81", sel("pod", "a"), ingressOnly, []inR{{Ports: ports{portNum(&sctp, 81)}}}, nil),
		}, nil},
		{"endPort", []networkingv1.NetworkPolicy{netpol("x", "allow-endport", sel("pod", "a"), ingressOnly, []inR{
			{From: peers{peerNS(sel(nsName, "y"))}, Ports: ports{portRange(&tcp, 80, 81)}},
			{From: peers{peerNS(sel(nsName, "x"))}, Ports: ports{portRange(&tcp, 81, 81)}},
		}, nil)}, []string{"x → x/a", "z → x/a"}},
		{"ingress allow-all takes precedence", []networkingv1.NetworkPolicy{
			netpol("x", "allow-ingress-port-80", sel(), ingressOnly, []inR{{Ports: ports{portNum(nil, 80)}}}, nil),
			netpol("x", "allow-ingress", sel(), ingressOnly, []inR{{}}, nil),
		}, []string{}},
		{"ingress and egress controlled independently", []networkingv1.NetworkPolicy{
			netpol("x", "allow-egress-for-target", sel("pod", "a"), egressOnly, nil, []outR{{}}),
			netpol("x", "deny-ingress-via-label-selector", sel("pod", "a"), ingressOnly, nil, nil),
		}, []string{" → x/a"}},
	}
	total := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, e2eInput(policy.ModeNetworkPolicy, tt.policies...), 2)
			srcs := append(c.podEnds(), c.otherEnds()...)
			n, _ := c.check(t, srcs, srcs, e2eProbes, tt.name)
			total += n
			if tt.denied == nil {
				return
			}
			pods := c.podEnds()
			for _, s := range pods {
				for _, d := range pods {
					if s.ep == d.ep {
						continue
					}
					want := true
					for _, pair := range tt.denied {
						from, to, _ := strings.Cut(pair, " → ")
						if matchPattern(from, s.ep) && matchPattern(to, d.ep) {
							want = false
						}
					}
					if got, path := c.allowed(s, d, "tcp", 80); got != want {
						t.Errorf("%s → %s tcp/80: got %v, truth table says %v\n  %s", s.ep, d.ep, got, want, strings.Join(path, "\n  "))
					}
				}
			}
		})
	}
	t.Logf("%d cases, %d traced queries agree with the model", len(tests), total)
}

// matchPattern: "" every pod, "x" every pod of x, "x/a" one pod.
func matchPattern(p string, ep policy.Endpoint) bool {
	return p == "" || p == ep.Namespace || p == ep.Namespace+"/"+ep.Name
}

// Table-driven traces of single packets through one node, for behaviour the model does not
// express (unknown addresses, interfaces) or that the contract fixes.
func TestTrace(t *testing.T) {
	xa, yb := podAddr(0, 0), podAddr(1, 4) // x/a on node-0, y/b on node-1
	unknown := netip.MustParseAddr("10.128.0.200")
	denyX := netpol("x", "deny-all", sel(), bothTypes, nil, nil)
	allowFromY := netpol("x", "from-y", sel("pod", "a"), ingressOnly, []inR{{From: peers{peerNS(sel("ns", "y"))}, Ports: ports{portNum(&tcp, 80)}}}, nil)
	tests := []struct {
		name string
		in   policy.Input
		node int
		p    nfttrace.IsolationPacket
		want bool
	}{
		{"not isolated: accepted", e2eInput(""), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"isolated, allowed namespace and port", e2eInput("", allowFromY), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"isolated, wrong port", e2eInput("", allowFromY), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 81, ToPod: true}, false},
		{"isolated, wrong protocol", e2eInput("", allowFromY), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "udp", Port: 80, ToPod: true}, false},
		{"egress isolation applies to the pod's own node (input)", e2eInput("", denyX), 0,
			nfttrace.IsolationPacket{Hook: knftables.InputHook, Src: xa, Dst: hostIP(0), Proto: "tcp", Port: 22, FromPod: true}, false},
		{"the node's own traffic is not filtered (output)", e2eInput("", denyX), 0,
			nfttrace.IsolationPacket{Hook: knftables.OutputHook, Src: hostIP(0), Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"a pod reaches itself through a service hairpin", e2eInput("", denyX), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: xa, Dst: xa, Proto: "tcp", Port: 80, FromPod: true, ToPod: true}, true},
		{"NetworkPolicy: unknown local destination dropped (fail closed)", e2eInput(""), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: unknown, Proto: "tcp", Port: 80, ToPod: true}, false},
		{"NetworkPolicy: unknown local source dropped (fail closed)", e2eInput(""), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: unknown, Dst: yb, Proto: "tcp", Port: 80, FromPod: true}, false},
		{"NetworkPolicy: unknown remote source is just an address", e2eInput(""), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: netip.MustParseAddr("10.128.3.3"), Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"Multitenant: unknown pod-network source dropped", e2eInput(policy.ModeMultitenant), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: netip.MustParseAddr("10.128.3.3"), Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, false},
		{"Multitenant: external source is global", e2eInput(policy.ModeMultitenant), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: netip.MustParseAddr("203.0.113.7"), Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"Multitenant: another node's overlay address is global", e2eInput(policy.ModeMultitenant), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: tunnelIP(1), Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"Multitenant: another VNID dropped", e2eInput(policy.ModeMultitenant), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, false},
		{"Multitenant: unknown local destination dropped", e2eInput(policy.ModeMultitenant), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: netip.MustParseAddr("203.0.113.7"), Dst: unknown, Proto: "tcp", Port: 80, ToPod: true}, false},
		{"before the informers sync (no pods known): local destinations closed", policy.Input{}, 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, false},
		{"before the informers sync (no pods known): local sources closed", policy.Input{Mode: policy.ModeMultitenant}, 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: xa, Dst: yb, Proto: "tcp", Port: 80, FromPod: true}, false},
		{"Subnet: unknown local destination accepted (no isolation)", e2eInput(policy.ModeSubnet, denyX), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: unknown, Proto: "tcp", Port: 80, ToPod: true}, true},
		{"Subnet: policies ignored", e2eInput(policy.ModeSubnet, denyX), 0,
			nfttrace.IsolationPacket{Hook: knftables.ForwardHook, Src: yb, Dst: xa, Proto: "tcp", Port: 80, ToPod: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := Build(tt.in, nodeName(tt.node), []netip.Addr{hostIP(0), hostIP(1), tunnelIP(0), tunnelIP(1)})
			if err != nil {
				t.Fatal(err)
			}
			got, path := nfttrace.NewIsolation(t, renderFake(t, st)).Trace(tt.p)
			if got != tt.want {
				t.Errorf("got %v, want %v\n  %s", got, tt.want, strings.Join(path, "\n  "))
			}
		})
	}
}

// Build refuses what the model refuses, naming policy, field and value; nothing is rendered.
func TestBuildRefusesInvalid(t *testing.T) {
	bad := netpol("x", "bad", sel(), ingressOnly, []inR{{From: peers{peerIP("10.0.0.0/8", "10.0.0.0/8")}, Ports: ports{{Protocol: ptr(corev1.Protocol("ICMP"))}}}}, nil)
	_, err := Build(e2eInput("", bad), nodeName(0), nil)
	var ipe *policy.InvalidPolicyError
	if !errors.As(err, &ipe) {
		t.Fatalf("want an InvalidPolicyError, got %v", err)
	}
	for _, want := range []string{"x/bad", "spec.ingress[0].from[0].ipBlock.except[0]", "10.0.0.0/8", "spec.ingress[0].ports[0].protocol", "ICMP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := Build(policy.Input{Mode: "Flat"}, nodeName(0), nil); err == nil || !strings.Contains(err.Error(), "Flat") {
		t.Errorf("unknown mode: got %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// The contract: base chains, hooks and priorities as README.md documents them, and names
// that never collide with the dataplane's or the service proxy's.
func TestContract(t *testing.T) {
	st, err := Build(e2eInput("", netpol("x", "p", sel(), bothTypes, []inR{{From: peers{peerPods(sel("pod", "b")), peerIP("10.0.0.0/8", "10.128.0.0/14")},
		Ports: ports{portNamed(&tcp, "serve-80-tcp")}}}, nil)), nodeName(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	dump := renderFake(t, st).Dump()
	for _, want := range []string{
		"add chain inet sluice np-forward-egress { type filter hook forward priority 0 ;",
		"add chain inet sluice np-forward-ingress { type filter hook forward priority 10 ;",
		"add chain inet sluice np-input-egress { type filter hook input priority 0 ;",
		"add map inet sluice np-ingress-pods { type ipv4_addr : verdict ;",
		"add rule inet sluice np-forward-egress ct state established,related accept",
		"add rule inet sluice np-forward-ingress oifname \"slp*\" jump np-ingress",
		"add rule inet sluice np-input-egress iifname \"slp*\" jump np-egress",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("dump lacks %q", want)
		}
	}
	taken := []string{"svc-", "service-", "endpoint-", "external-", "local-", "affinity-", "pod-", "no-endpoint-",
		"cluster-cidrs", "service-cidrs", "nodeport-ips", "reject-chain", "services", "masquerading", "mark-for-masquerade"}
	var names []string
	for _, c := range st.Chains {
		names = append(names, c.Name)
	}
	for _, s := range st.Sets {
		names = append(names, s.Name)
	}
	for _, n := range names {
		if len(n) > maxNameLen {
			t.Errorf("name longer than %d: %s", maxNameLen, n)
		}
		if !strings.HasPrefix(n, "np-") && !strings.HasPrefix(n, "tenant-") {
			t.Errorf("name outside np-* / tenant-*: %s", n)
		}
		for _, p := range taken {
			if strings.HasPrefix(n, p) {
				t.Errorf("name %s collides with %s", n, p)
			}
		}
	}
}

// nfttrace keeps its own copies of the names it needs (it cannot import this package, whose
// tests use it): they must be this package's, and its tracer, which walks only base chains
// named IsolationChainPrefix…, must see every base chain isolation renders.
func TestTracerNames(t *testing.T) {
	if nfttrace.PodIfPattern != PodIfPattern {
		t.Errorf("nfttrace.PodIfPattern %s, netpol's %s", nfttrace.PodIfPattern, PodIfPattern)
	}
	st, err := Build(e2eInput(policy.ModeMultitenant), nodeName(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	bases := 0
	for _, c := range st.Chains {
		if c.Hook == "" {
			continue
		}
		bases++
		if !strings.HasPrefix(c.Name, nfttrace.IsolationChainPrefix) {
			t.Errorf("base chain %s: the tracer walks only %s*", c.Name, nfttrace.IsolationChainPrefix)
		}
	}
	if bases == 0 {
		t.Error("no base chain rendered")
	}
}

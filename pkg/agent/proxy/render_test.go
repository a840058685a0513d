package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/internal/nfttrace"
)

var dpState = dataplane.State{
	ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")},
	ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")},
	Pods: []dataplane.Pod{
		{Iface: "slp000000000002", IP: netip.MustParseAddr(epLocal)},
		{Iface: "slp000000000005", IP: netip.MustParseAddr(pod)},
	},
}

// render programs a fresh fake with the dataplane skeleton and st, as the
// agent's full sync will, and returns it.
func render(t *testing.T, st State) *knftables.Fake {
	t.Helper()
	f := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	tx := f.NewTransaction()
	dataplane.Render(tx, dpState)
	Render(tx, st)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatalf("transaction refused: %v", err)
	}
	return f
}

func buildAll(t *testing.T, svcs []*corev1.Service, sl []*discoveryv1.EndpointSlice) State {
	t.Helper()
	st, errs := Build(svcs, sl, node)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return st
}

const (
	pod     = "10.128.0.5"   // a pod on this node (not an endpoint)
	epLocal = "10.128.0.2"   // endpoint on this node
	epRem   = "10.128.1.2"   // endpoint on node-b
	host    = "192.168.1.10" // this node
	outside = "203.0.113.9"  // a client outside the cluster
)

func scenario(t *testing.T) State {
	both := func(name string) *discoveryv1.EndpointSlice {
		return slice(name, name+"-1", 8080, readyEP(epLocal, "node-a"), readyEP(epRem, "node-b"))
	}
	svcs := []*corev1.Service{
		svc("web", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.ExternalIPs = []string{"203.0.113.50"}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
		}),
		svc("local", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.11", nil
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30081
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.8"}}
		}),
		svc("elsewhere", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.12", nil
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30082
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}),
		svc("empty", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.13", nil
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30083
			s.Spec.ExternalIPs = []string{"203.0.113.51"}
		}),
		svc("itp", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.14", nil
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		}),
		svc("itp-none", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.15", nil
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		}),
		svc("sticky", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.16", nil
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}),
		svc("fw", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.18", nil
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30084
			s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/29", " 192.168.1.0/24 "}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.9"}}
		}),
		svc("fw-v6", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.19", nil
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30085
			s.Annotations = map[string]string{AnnotationSourceRanges: "2001:db8::/32"}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.10"}}
		}),
		svc("dns", func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.17", nil
			s.Spec.Ports = []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolUDP, Port: 53}, {Name: "http", Protocol: corev1.ProtocolSCTP, Port: 53}}
		}),
	}
	dns := slice("dns", "dns-1", 0, readyEP(epRem, "node-b"))
	dns.Ports = []discoveryv1.EndpointPort{
		{Name: ptr("http"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr[int32](5353)},
		{Name: ptr("http"), Protocol: ptr(corev1.ProtocolSCTP), Port: ptr[int32](5354)},
	}
	return buildAll(t, svcs, []*discoveryv1.EndpointSlice{
		both("web"), both("local"), both("itp"), both("sticky"), both("fw"), both("fw-v6"), dns,
		slice("elsewhere", "elsewhere-1", 8080, readyEP(epRem, "node-b")),
		slice("empty", "empty-1", 8080, ep{ip: epRem, ready: no, serving: no}),
		slice("itp-none", "itp-none-1", 8080, readyEP(epRem, "node-b")),
	})
}

// pkt is a new connection from src to dst.
func pkt(src, dst, proto string, port int) nfttrace.ServicePacket {
	return nfttrace.ServicePacket{Src: src, Dst: dst, Proto: proto, Port: port}
}

// nfttrace keeps its own copies of the names it starts from (it cannot
// import this package, whose tests use it): they must be this package's.
func TestTracerNames(t *testing.T) {
	for _, n := range []struct{ tracer, proxy string }{
		{nfttrace.ChainFilterPrerouting, ChainFilterPrerouting},
		{nfttrace.ChainFilterInput, ChainFilterInput},
		{nfttrace.ChainFilterForward, ChainFilterForward},
		{nfttrace.ChainFilterOutput, ChainFilterOutput},
		{nfttrace.ChainFilterForwardPost, ChainFilterForwardPost},
		{nfttrace.ChainFilterOutputPost, ChainFilterOutputPost},
		{nfttrace.ChainNATPrerouting, ChainNATPrerouting},
		{nfttrace.ChainNATOutput, ChainNATOutput},
		{nfttrace.ChainNATPostrouting, ChainNATPostrouting},
		{nfttrace.SetNodePortIPs, SetNodePortIPs},
		{nfttrace.PrefixAffinity, prefixAffinity},
	} {
		if n.tracer != n.proxy {
			t.Errorf("nfttrace has %q where the proxy has %q", n.tracer, n.proxy)
		}
	}
}

func TestTrace(t *testing.T) {
	tr := nfttrace.NewServices(t, render(t, scenario(t)))
	var (
		bothEPs     = []string{"dnat 10.128.0.2:8080", "dnat 10.128.1.2:8080"}
		bothMasq    = []string{"dnat 10.128.0.2:8080 masq", "dnat 10.128.1.2:8080 masq"}
		localOnly   = []string{"dnat 10.128.0.2:8080"}
		notAService = []string{"accept"}
	)
	for _, tc := range []struct {
		name string
		p    nfttrace.ServicePacket
		want []string
	}{
		{"clusterIP from a pod", pkt(pod, "172.30.0.10", "tcp", 80), bothEPs},
		{"clusterIP, other port: rejected", pkt(pod, "172.30.0.10", "tcp", 81), []string{"reject"}},
		{"clusterIP, other protocol: rejected", pkt(pod, "172.30.0.10", "udp", 80), []string{"reject"}},
		{"clusterIP, other port, from the node: rejected", pkt(host, "172.30.0.10", "tcp", 81), []string{"reject"}},
		{"unallocated address of the service network: dropped", pkt(pod, "172.30.9.9", "tcp", 80), []string{"drop"}},
		{"unallocated service address from the node: dropped", pkt(host, "172.30.9.9", "tcp", 80), []string{"drop"}},
		{"outside the service network: not ours", pkt(pod, "10.0.0.1", "tcp", 80), notAService},
		{"clusterIP from the node is masqueraded", pkt(host, "172.30.0.10", "tcp", 80), bothMasq},
		{"hairpin: an endpoint reaching itself is masqueraded", pkt(epLocal, "172.30.0.10", "tcp", 80),
			[]string{"dnat 10.128.0.2:8080 masq", "dnat 10.128.1.2:8080"}},
		{"node port from outside", pkt(outside, host, "tcp", 30080), bothMasq},
		{"node port, other node address is not ours", pkt(outside, "192.168.1.11", "tcp", 30080), notAService},
		{"node port, unknown port", pkt(outside, host, "tcp", 30999), notAService},
		{"node port from the node itself", pkt(host, host, "tcp", 30080), bothMasq},
		{"externalIP", pkt(outside, "203.0.113.50", "tcp", 80), bothMasq},
		{"load-balancer IP", pkt(outside, "198.51.100.7", "tcp", 80), bothMasq},
		{"load-balancer IP, node port number is not a service port", pkt(outside, "198.51.100.7", "tcp", 30080), notAService},

		{"ETP Local: external client keeps its source, local endpoint only", pkt(outside, "198.51.100.8", "tcp", 80), localOnly},
		{"ETP Local: node port too", pkt(outside, host, "tcp", 30081), localOnly},
		{"ETP Local: pods short-circuit to cluster policy", pkt(pod, "198.51.100.8", "tcp", 80), bothEPs},
		{"ETP Local: the node short-circuits, masqueraded", pkt(host, host, "tcp", 30081), bothMasq},
		{"ETP Local: clusterIP is cluster-wide", pkt(pod, "172.30.0.11", "tcp", 80), bothEPs},
		{"ETP Local, no local endpoint: external dropped", pkt(outside, host, "tcp", 30082), []string{"drop"}},
		{"ETP Local, no local endpoint: pods still served", pkt(pod, host, "tcp", 30082), []string{"dnat 10.128.1.2:8080"}},

		{"no endpoints: clusterIP rejected", pkt(pod, "172.30.0.13", "tcp", 80), []string{"reject"}},
		{"no endpoints: node port rejected", pkt(outside, host, "tcp", 30083), []string{"reject"}},
		{"no endpoints: node port from the node rejected", pkt(host, host, "tcp", 30083), []string{"reject"}},
		{"no endpoints: externalIP rejected", pkt(outside, "203.0.113.51", "tcp", 80), []string{"reject"}},

		{"ITP Local: local endpoint only, no masquerade", pkt(pod, "172.30.0.14", "tcp", 80), localOnly},
		{"ITP Local, none local: dropped", pkt(pod, "172.30.0.15", "tcp", 80), []string{"drop"}},

		{"UDP", pkt(pod, "172.30.0.17", "udp", 53), []string{"dnat 10.128.1.2:5353"}},
		{"SCTP", pkt(pod, "172.30.0.17", "sctp", 53), []string{"dnat 10.128.1.2:5354"}},
		{"TCP on a UDP+SCTP service: rejected", pkt(pod, "172.30.0.17", "tcp", 53), []string{"reject"}},

		{"source ranges: admitted client", pkt("203.0.113.5", "198.51.100.9", "tcp", 80), bothMasq},
		{"source ranges: other client dropped", pkt(outside, "198.51.100.9", "tcp", 80), []string{"drop"}},
		{"source ranges: a pod outside them dropped", pkt(pod, "198.51.100.9", "tcp", 80), []string{"drop"}},
		{"source ranges: the node inside them admitted", pkt(host, "198.51.100.9", "tcp", 80), bothMasq},
		{"source ranges: the LB address itself admitted (range holds the node)", pkt("198.51.100.9", "198.51.100.9", "tcp", 80), bothMasq},
		{"source ranges: node port not filtered", pkt(outside, host, "tcp", 30084), bothMasq},
		{"source ranges: clusterIP not filtered", pkt(pod, "172.30.0.18", "tcp", 80), bothEPs},
		{"source ranges: other port of the LB address untouched", pkt(outside, "198.51.100.9", "tcp", 81), notAService},
		{"source ranges of another family only: nobody admitted", pkt("203.0.113.5", "198.51.100.10", "tcp", 80), []string{"drop"}},
		{"source ranges of another family only: node port still served", pkt(outside, host, "tcp", 30085), bothMasq},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tr.Trace(tc.p); !slices.Equal(got, tc.want) {
				t.Errorf("%+v: got %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestTraceAffinity(t *testing.T) {
	st := scenario(t)
	tr := nfttrace.NewServices(t, render(t, st))
	p := pkt(pod, "172.30.0.16", "tcp", 80)
	if got := tr.Trace(p); len(got) != 2 {
		t.Fatalf("first connection: %v", got)
	}
	// The trace explored both branches, so both affinity sets learnt the
	// client; forget one as if its entry had timed out.
	var sticky *ServicePort
	for i := range st.Services {
		if st.Services[i].Name.Name == "sticky" {
			sticky = &st.Services[i]
		}
	}
	delete(tr.Affinity, affinitySet(sticky, sticky.Cluster[0]))
	for range 3 {
		if got := tr.Trace(p); !slices.Equal(got, []string{"dnat 10.128.1.2:8080"}) {
			t.Errorf("sticky client moved: %v", got)
		}
	}
	if got := tr.Trace(pkt("10.128.0.99", "172.30.0.16", "tcp", 80)); len(got) != 2 {
		t.Errorf("a new client is not load-balanced: %v", got)
	}
	dump := render(t, st).Dump()
	want := "add set inet sluice " + affinitySet(sticky, sticky.Cluster[0]) + " { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }"
	if !strings.Contains(dump, want) {
		t.Errorf("no affinity set %q in\n%s", want, dump)
	}
}

// The contract README.md documents, checked on the rendered table.
func TestRenderContract(t *testing.T) {
	st := scenario(t)
	dump := render(t, st).Dump()
	web := st.Services[slices.IndexFunc(st.Services, func(s ServicePort) bool { return s.Name.Name == "web" })]
	local := st.Services[slices.IndexFunc(st.Services, func(s ServicePort) bool { return s.Name.Name == "local" })]
	for _, want := range []string{
		"add chain inet sluice svc-filter-input { type filter hook input priority -110 ; }",
		"add chain inet sluice svc-filter-forward { type filter hook forward priority -110 ; }",
		"add chain inet sluice svc-filter-output { type filter hook output priority -110 ; }",
		"add chain inet sluice svc-nat-prerouting { type nat hook prerouting priority -100 ; }",
		"add chain inet sluice svc-nat-output { type nat hook output priority -100 ; }",
		"add chain inet sluice svc-nat-postrouting { type nat hook postrouting priority 100 ; }",
		"add map inet sluice service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;",
		"add map inet sluice service-nodeports { type inet_proto . inet_service : verdict ;",
		"add element inet sluice nodeport-ips { 192.168.1.10 }",
		"add rule inet sluice mark-for-masquerade meta mark set meta mark or 0x1000",
		"add rule inet sluice masquerading masquerade fully-random",
		// web has no affinity and Cluster policies: shared picking chains, map elements only.
		"add element inet sluice service-ips { 172.30.0.10 . tcp . 80 comment \"ns/web:http/tcp\" : goto pick-masq-tcp-2 }",
		"add element inet sluice service-nodeports { tcp . 30080 comment \"ns/web:http/tcp\" : goto pick-ext-tcp-2 }",
		"add rule inet sluice pick-masq-tcp-2 ip saddr != @cluster-cidrs jump mark-for-masquerade",
		"add rule inet sluice pick-ext-tcp-2 jump mark-for-masquerade",
		"add rule inet sluice pick-tcp-2 meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 2 map @service-endpoints-tcp",
		"add element inet sluice service-endpoints-tcp { 172.30.0.10 . 80 . 1 : 10.128.1.2 . 8080 }",
		"add element inet sluice service-endpoints-tcp { 192.168.1.10 . 30080 . 0 : 10.128.0.2 . 8080 }",
		"add element inet sluice no-endpoint-services { 172.30.0.13 . tcp . 80 comment \"ns/empty:http/tcp\" : goto reject-chain }",
		"add element inet sluice no-endpoint-nodeports { tcp . 30083 comment \"ns/empty:http/tcp\" : goto reject-chain }",
		// local (externalTrafficPolicy Local) keeps chains of its own.
		"add rule inet sluice " + serviceChain(&local) + " meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.128.0.2 . 8080 , 1 : 10.128.1.2 . 8080 }",
		"add element inet sluice service-ips { 198.51.100.8 . tcp . 80 comment \"ns/local:http/tcp\" : goto " + externalChain(&local) + " }",
		"add rule inet sluice svc-nat-postrouting ct status dnat oifname . ip saddr @pod-ifaddrs jump mark-for-masquerade",
		"add chain inet sluice svc-filter-prerouting { type filter hook prerouting priority -110 ; }",
		"add chain inet sluice svc-filter-forward-post { type filter hook forward priority 0 ; }",
		"add chain inet sluice svc-filter-output-post { type filter hook output priority 0 ; }",
		"add element inet sluice cluster-ips { 172.30.0.13 }",
		"add element inet sluice firewall-ips { 198.51.100.9 . tcp . 80 comment \"ns/fw:http/tcp\" }",
		"add element inet sluice firewall-allow { 198.51.100.9 . tcp . 80 . 203.0.113.0/29 }",
		"add rule inet sluice firewall-check ip daddr . meta l4proto . th dport @firewall-ips ip daddr . meta l4proto . th dport . ip saddr != @firewall-allow counter drop",
		"add rule inet sluice cluster-ips-check ip daddr @cluster-ips counter reject",
		"add rule inet sluice cluster-ips-check ip daddr @service-cidrs counter drop",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(dump)
	}
	sticky := st.Services[slices.IndexFunc(st.Services, func(s ServicePort) bool { return s.Name.Name == "sticky" })]
	for _, want := range []string{
		"add rule inet sluice " + endpointChain(&sticky, sticky.Cluster[0]) + " meta l4proto tcp dnat ip to " + sticky.Cluster[0].String(),
		"numgen random mod 2 vmap { 0 : goto " + endpointChain(&sticky, sticky.Cluster[0]) + " , 1 : goto " + endpointChain(&sticky, sticky.Cluster[1]) + " }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	// A shared service has no chain of its own.
	if strings.Contains(dump, "ns/web/tcp/http") {
		t.Errorf("chains rendered for a service the shared picking chains serve")
	}
	if c := serviceChain(&web); !strings.HasPrefix(c, "service-") || !strings.HasSuffix(c, "-ns/web/tcp/http") || len(c) != len("service-12345678-ns/web/tcp/http") {
		t.Errorf("chain name %q", c)
	}
}

func TestNamesAreBoundedAndDistinct(t *testing.T) {
	long := strings.Repeat("n", 63)
	a := ServicePort{Name: PortName{long, long, long + "a"}, Protocol: corev1.ProtocolTCP}
	b := ServicePort{Name: PortName{long, long, long + "b"}, Protocol: corev1.ProtocolTCP}
	if len(serviceChain(&a)) > maxNameLen {
		t.Errorf("name too long: %d", len(serviceChain(&a)))
	}
	if serviceChain(&a) == serviceChain(&b) {
		t.Errorf("truncated names collide")
	}
	e := Endpoint{IP: netip.MustParseAddr("10.128.0.2"), Port: 8080}
	f := Endpoint{IP: netip.MustParseAddr("10.128.0.3"), Port: 8080}
	if endpointChain(&a, e) == endpointChain(&a, f) || len(endpointChain(&a, e)) > maxNameLen {
		t.Errorf("endpoint chain names: %q %q", endpointChain(&a, e), endpointChain(&a, f))
	}
	u := a
	u.Protocol = corev1.ProtocolUDP
	if serviceChain(&a) == serviceChain(&u) {
		t.Errorf("TCP and UDP share a chain")
	}
}

// Rendering again, or rendering a changed state over an old one and pruning,
// leaves exactly what a fresh full render of the new state builds.
func TestRenderConverges(t *testing.T) {
	ctx := context.Background()
	old := scenario(t)
	next := scenario(t)
	// drop "sticky" and "web", change an endpoint set and a node port
	next.Services = slices.DeleteFunc(next.Services, func(s ServicePort) bool { return s.Name.Name == "sticky" || s.Name.Name == "web" })
	for i := range next.Services {
		if next.Services[i].Name.Name == "local" {
			next.Services[i].Cluster = next.Services[i].Cluster[1:]
			next.Services[i].NodePort = 30099
		}
	}
	for _, tc := range []struct {
		name     string
		from, to State
	}{
		{"same state twice", old, old},
		{"changed state", old, next},
		{"to empty", old, State{NodeIPs: old.NodeIPs}},
		{"from empty", State{}, old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := render(t, tc.from)
			chains, err := f.List(ctx, "chains")
			if err != nil {
				t.Fatal(err)
			}
			sets, err := f.List(ctx, "sets")
			if err != nil {
				t.Fatal(err)
			}
			tx := f.NewTransaction()
			dataplane.Render(tx, dpState)
			Render(tx, tc.to)
			Prune(tx, chains, sets, tc.to)
			if err := f.Run(ctx, tx); err != nil {
				t.Fatal(err)
			}
			if got, want := f.Dump(), render(t, tc.to).Dump(); got != want {
				t.Errorf("re-render differs from a fresh one:\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

// A service port with more endpoints than the shared picking chains serve
// gets chains of its own, and traces the same way.
func TestManyEndpointsGetOwnChains(t *testing.T) {
	var eps []ep
	for i := range MaxSharedPick + 1 {
		eps = append(eps, readyEP(fmt.Sprintf("10.128.3.%d", i+1), "node-b"))
	}
	big := svc("big")
	st := buildAll(t, []*corev1.Service{big}, []*discoveryv1.EndpointSlice{slice("big", "big-1", 8080, eps...)})
	if shared(&st.Services[0]) {
		t.Fatalf("%d endpoints: want chains of its own", len(eps))
	}
	f := render(t, st)
	if !strings.Contains(f.Dump(), "add chain inet sluice "+serviceChain(&st.Services[0])) {
		t.Fatalf("no service chain")
	}
	got := nfttrace.NewServices(t, f).Trace(pkt(pod, "172.30.0.10", "tcp", 80))
	if len(got) != len(eps) {
		t.Errorf("%d outcomes, want one per endpoint (%d): %v", len(got), len(eps), got)
	}
}

package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var node = NodeInfo{Name: "node-a", Zone: "zone-a", IPs: []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")}}

func ptr[T any](v T) *T { return &v }

func svc(name string, mod ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "172.30.0.10",
			ClusterIPs: []string{"172.30.0.10"},
			Ports:      []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mod {
		m(s)
	}
	return s
}

type ep struct {
	ip, node, zone       string
	ready, serving, term *bool
	zoneHints, nodeHints []string
}

func slice(svcName, name string, port int32, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(port)}},
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.term}}
		if e.node != "" {
			x.NodeName = ptr(e.node)
		}
		if e.zone != "" {
			x.Zone = ptr(e.zone)
		}
		if e.zoneHints != nil || e.nodeHints != nil {
			x.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zoneHints {
				x.Hints.ForZones = append(x.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodeHints {
				x.Hints.ForNodes = append(x.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		es.Endpoints = append(es.Endpoints, x)
	}
	return es
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

// local / remote ready endpoints
func readyEP(ip, node string) ep { return ep{ip: ip, node: node, ready: yes} }

func ips(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.String())
	}
	return out
}

func build1(t *testing.T, s *corev1.Service, sl ...*discoveryv1.EndpointSlice) ServicePort {
	t.Helper()
	st, errs := Build([]*corev1.Service{s}, sl, node)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(st.Services) != 1 {
		t.Fatalf("want 1 service port, got %+v", st.Services)
	}
	return st.Services[0]
}

func TestBuildEndpointSelection(t *testing.T) {
	for _, tc := range []struct {
		name         string
		svc          *corev1.Service
		slices       []*discoveryv1.EndpointSlice
		cluster      []string
		local        []string
		hasEndpoints bool
	}{
		{
			name:         "ready endpoints only",
			svc:          svc("a"),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, readyEP("10.128.0.2", "node-a"), ep{ip: "10.128.1.2", node: "node-b", ready: no, serving: yes, term: yes}, ep{ip: "10.128.1.3", node: "node-b", ready: no, serving: no})},
			cluster:      []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name:         "nil ready counts as ready",
			svc:          svc("a"),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, ep{ip: "10.128.0.2"})},
			cluster:      []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name:         "none ready: serving and terminating",
			svc:          svc("a"),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, ep{ip: "10.128.1.2", ready: no, serving: yes, term: yes}, ep{ip: "10.128.1.3", ready: no, serving: no, term: yes}, ep{ip: "10.128.1.4", ready: no, serving: yes, term: no})},
			cluster:      []string{"10.128.1.2:8080"},
			hasEndpoints: true,
		},
		{
			name:   "no endpoints",
			svc:    svc("a"),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, ep{ip: "10.128.1.3", ready: no, serving: no})},
		},
		{
			name: "duplicates across slices count once, ready copy wins",
			svc:  svc("a"),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "a-1", 8080, ep{ip: "10.128.0.2", ready: no, serving: no}, readyEP("10.128.0.3", "")),
				slice("a", "a-2", 8080, readyEP("10.128.0.2", ""), readyEP("10.128.0.3", "")),
			},
			cluster:      []string{"10.128.0.2:8080", "10.128.0.3:8080"},
			hasEndpoints: true,
		},
		{
			name: "other services, namespaces and address families ignored",
			svc:  svc("a"),
			slices: func() []*discoveryv1.EndpointSlice {
				other := slice("b", "b-1", 8080, readyEP("10.128.0.9", ""))
				otherNS := slice("a", "a-x", 8080, readyEP("10.128.0.8", ""))
				otherNS.Namespace = "other"
				v6 := slice("a", "a-6", 8080, readyEP("fd00::2", ""))
				v6.AddressType = discoveryv1.AddressTypeIPv6
				return []*discoveryv1.EndpointSlice{other, otherNS, v6, slice("a", "a-1", 8080, readyEP("10.128.0.2", ""))}
			}(),
			cluster:      []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "internalTrafficPolicy Local: local endpoints only",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, readyEP("10.128.0.2", "node-a"), readyEP("10.128.1.2", "node-b"))},
			local:        []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "internalTrafficPolicy Local, none local",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, readyEP("10.128.1.2", "node-b"))},
			hasEndpoints: true,
		},
		{
			name: "local fallback to serving+terminating",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, ep{ip: "10.128.0.2", node: "node-a", ready: no, serving: yes, term: yes}, readyEP("10.128.1.2", "node-b"))},
			local:        []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "externalTrafficPolicy Local: cluster for internal, local for external",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, readyEP("10.128.0.2", "node-a"), readyEP("10.128.1.2", "node-b"))},
			cluster:      []string{"10.128.0.2:8080", "10.128.1.2:8080"},
			local:        []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "externalTrafficPolicy Local ignored for ClusterIP with externalIPs",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"203.0.113.5"}
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
			slices:       []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080, readyEP("10.128.0.2", "node-a"), readyEP("10.128.1.2", "node-b"))},
			cluster:      []string{"10.128.0.2:8080", "10.128.1.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "PreferClose: same-zone hints",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
			}),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080,
				ep{ip: "10.128.0.2", ready: yes, zoneHints: []string{"zone-a"}},
				ep{ip: "10.128.1.2", ready: yes, zoneHints: []string{"zone-b"}})},
			cluster:      []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "PreferClose: a ready endpoint without hints disables topology",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
			}),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080,
				ep{ip: "10.128.0.2", ready: yes, zoneHints: []string{"zone-a"}},
				ep{ip: "10.128.1.2", ready: yes})},
			cluster:      []string{"10.128.0.2:8080", "10.128.1.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "PreferClose: no hint for our zone disables topology",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
			}),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080,
				ep{ip: "10.128.0.2", ready: yes, zoneHints: []string{"zone-c"}},
				ep{ip: "10.128.1.2", ready: yes, zoneHints: []string{"zone-b"}})},
			cluster:      []string{"10.128.0.2:8080", "10.128.1.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "hints ignored without trafficDistribution",
			svc:  svc("a"),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080,
				ep{ip: "10.128.0.2", ready: yes, zoneHints: []string{"zone-a"}},
				ep{ip: "10.128.1.2", ready: yes, zoneHints: []string{"zone-b"}})},
			cluster:      []string{"10.128.0.2:8080", "10.128.1.2:8080"},
			hasEndpoints: true,
		},
		{
			name: "PreferSameNode: node hints first",
			svc: svc("a", func(s *corev1.Service) {
				s.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferSameNode)
			}),
			slices: []*discoveryv1.EndpointSlice{slice("a", "a-1", 8080,
				ep{ip: "10.128.0.2", ready: yes, zoneHints: []string{"zone-a"}, nodeHints: []string{"node-a"}},
				ep{ip: "10.128.0.3", ready: yes, zoneHints: []string{"zone-a"}, nodeHints: []string{"node-c"}},
				ep{ip: "10.128.1.2", ready: yes, zoneHints: []string{"zone-b"}, nodeHints: []string{"node-b"}})},
			cluster:      []string{"10.128.0.2:8080"},
			hasEndpoints: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := build1(t, tc.svc, tc.slices...)
			if got := ips(sp.Cluster); !slices.Equal(got, tc.cluster) {
				t.Errorf("cluster endpoints %v, want %v", got, tc.cluster)
			}
			if got := ips(sp.Local); !slices.Equal(got, tc.local) {
				t.Errorf("local endpoints %v, want %v", got, tc.local)
			}
			if sp.HasEndpoints != tc.hasEndpoints {
				t.Errorf("HasEndpoints %v, want %v", sp.HasEndpoints, tc.hasEndpoints)
			}
		})
	}
}

func TestBuildServiceFields(t *testing.T) {
	s := svc("lb", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ClusterIPs = []string{"172.30.0.10", "fd02::10"}
		s.Spec.ExternalIPs = []string{"203.0.113.5", "2001:db8::5"}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 31999
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053, TargetPort: intstr.FromString("dns")},
			{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 9, NodePort: 30009},
		}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
			{IP: "198.51.100.7"}, {IP: "198.51.100.8", IPMode: ptr(corev1.LoadBalancerIPModeProxy)}, {Hostname: "lb.example"},
		}
	})
	es := slice("lb", "lb-1", 0, readyEP("10.128.0.2", "node-a"))
	es.Ports = []discoveryv1.EndpointPort{
		{Name: ptr("dns"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr[int32](5353)},
		{Name: ptr("sctp"), Protocol: ptr(corev1.ProtocolSCTP), Port: ptr[int32](9999)},
	}
	st, errs := Build([]*corev1.Service{s}, []*discoveryv1.EndpointSlice{es}, node)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := fmt.Sprint(st.NodeIPs); got != "[192.168.1.10]" {
		t.Errorf("node IPs %s", got)
	}
	if len(st.Services) != 2 {
		t.Fatalf("ports: %+v", st.Services)
	}
	dns, sctp := st.Services[0], st.Services[1]
	for _, c := range []struct{ got, want any }{
		{dns.Name.String(), "ns/lb:dns"},
		{dns.Protocol, corev1.ProtocolUDP},
		{sctp.Protocol, corev1.ProtocolSCTP},
		{fmt.Sprint(dns.ClusterIPs), "[172.30.0.10]"},
		{dns.Port, uint16(53)},
		{dns.NodePort, uint16(30053)},
		{fmt.Sprint(dns.ExternalIPs), "[203.0.113.5]"},
		{fmt.Sprint(dns.LoadBalancerIPs), "[198.51.100.7]"},
		{dns.AffinitySeconds, int32(DefaultAffinityTimeout)},
		{dns.ExternalPolicyLocal, true},
		{dns.HealthCheckNodePort, uint16(31999)},
		{fmt.Sprint(ips(dns.Local)), "[10.128.0.2:5353]"},
		{fmt.Sprint(ips(sctp.Cluster)), "[10.128.0.2:9999]"},
	} {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

func TestBuildAffinityTimeout(t *testing.T) {
	sp := build1(t, svc("a", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}}
	}))
	if sp.AffinitySeconds != 60 {
		t.Errorf("affinity %d", sp.AffinitySeconds)
	}
	if sp := build1(t, svc("a")); sp.AffinitySeconds != 0 {
		t.Errorf("affinity without ClientIP: %d", sp.AffinitySeconds)
	}
}

func TestBuildIgnoresAndReports(t *testing.T) {
	headless := svc("headless", func(s *corev1.Service) { s.Spec.ClusterIP = "None"; s.Spec.ClusterIPs = []string{"None"} })
	extName := svc("ext", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeExternalName
		s.Spec.ExternalName = "example.com"
	})
	v6only := svc("v6", func(s *corev1.Service) { s.Spec.ClusterIP = "fd02::1"; s.Spec.ClusterIPs = []string{"fd02::1"} })
	broken := svc("broken", func(s *corev1.Service) { s.Spec.ClusterIP = "nope"; s.Spec.ClusterIPs = []string{"nope"} })
	badPort := svc("badport", func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "x", Protocol: "ICMP", Port: 1})
	})
	clusterIPNodePort := svc("np-on-clusterip", func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30001 })
	st, errs := Build([]*corev1.Service{headless, extName, v6only, broken, badPort, clusterIPNodePort}, nil, node)
	if len(errs) != 2 {
		t.Errorf("want 2 errors (bad clusterIP, bad protocol), got %v", errs)
	}
	var names []string
	for _, sp := range st.Services {
		names = append(names, sp.Name.String())
		if sp.NodePort != 0 {
			t.Errorf("%s: node port on a ClusterIP service", sp.Name)
		}
	}
	if want := []string{"ns/badport:http", "ns/np-on-clusterip:http"}; !slices.Equal(names, want) {
		t.Errorf("services %v, want %v", names, want)
	}
}

// Equal inputs in any order give equal States.
func TestBuildDeterministic(t *testing.T) {
	a, b := svc("a"), svc("b", func(s *corev1.Service) { s.Spec.ClusterIP = "172.30.0.11"; s.Spec.ClusterIPs = nil })
	sa := slice("a", "a-1", 8080, readyEP("10.128.0.3", ""), readyEP("10.128.0.2", ""))
	sb := slice("b", "b-1", 8080, readyEP("10.128.0.4", ""))
	s1, _ := Build([]*corev1.Service{a, b}, []*discoveryv1.EndpointSlice{sa, sb}, node)
	s2, _ := Build([]*corev1.Service{b, a}, []*discoveryv1.EndpointSlice{sb, sa}, node)
	if fmt.Sprintf("%+v", s1) != fmt.Sprintf("%+v", s2) {
		t.Errorf("order-dependent:\n%+v\n%+v", s1, s2)
	}
	if got := ips(s1.Services[0].Cluster); !slices.Equal(got, []string{"10.128.0.2:8080", "10.128.0.3:8080"}) {
		t.Errorf("endpoints not sorted: %v", got)
	}
}

func TestHealthChecks(t *testing.T) {
	lb := func(name, ip string, hc int32) *corev1.Service {
		return svc(name, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, nil
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = hc
			s.Spec.Ports[0].NodePort = hc - 1000
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, NodePort: hc - 2000})
		})
	}
	two := slice("a", "a-1", 8080, readyEP("10.128.0.2", "node-a"), readyEP("10.128.0.3", "node-a"), readyEP("10.128.1.2", "node-b"))
	two.Ports = append(two.Ports, discoveryv1.EndpointPort{Name: ptr("https"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](8443)})
	st, _ := Build([]*corev1.Service{
		lb("a", "172.30.0.20", 32001), lb("b", "172.30.0.21", 32002), lb("c", "172.30.0.22", 32003),
		svc("cluster", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.HealthCheckNodePort = 32004
		}),
	}, []*discoveryv1.EndpointSlice{
		two,
		slice("b", "b-1", 8080, readyEP("10.128.1.3", "node-b")),
		slice("c", "c-1", 8080, ep{ip: "10.128.0.4", node: "node-a", ready: no, serving: yes, term: yes}),
	}, node)
	got := HealthChecks(st)
	want := map[uint16]int{32001: 2, 32002: 0, 32003: 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("health checks %v, want %v", got, want)
	}
}

// One destination claimed twice would make the whole transaction fail: the
// first claim wins, the second is reported.
func TestBuildConflicts(t *testing.T) {
	a := svc("a", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalIPs = []string{"203.0.113.5", "172.30.0.11"}
	})
	b := svc("b", func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.11", nil
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalIPs = []string{"203.0.113.5"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.5"}, {IP: "203.0.113.6"}}
	})
	st, errs := Build([]*corev1.Service{b, a}, nil, node)
	if len(errs) != 4 {
		t.Errorf("want 4 conflicts, got %v", errs)
	}
	sa, sb := st.Services[0], st.Services[1]
	if fmt.Sprint(sa.ExternalIPs) != "[203.0.113.5]" || sa.NodePort != 30080 {
		t.Errorf("a lost its claims: %+v", sa)
	}
	if len(sb.ExternalIPs) != 0 || fmt.Sprint(sb.LoadBalancerIPs) != "[203.0.113.6]" || sb.NodePort != 0 {
		t.Errorf("b kept conflicting claims: %+v", sb)
	}
}

func TestBuildSourceRanges(t *testing.T) {
	lb := func(ingress string, f func(*corev1.Service)) *corev1.Service {
		return svc("lb", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30090
			if ingress != "" {
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ingress}}
			}
			f(s)
		})
	}
	for _, tc := range []struct {
		name       string
		s          *corev1.Service
		firewalled bool
		ranges     string
		err        string // substring of the one expected error
	}{
		{"none", lb("198.51.100.1", func(*corev1.Service) {}), false, "", ""},
		{"field, masked, sorted, deduplicated", lb("198.51.100.1", func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.1.2.3/8", " 192.168.0.0/16", "10.0.0.0/8", "2001:db8::/32"}
		}), true, "10.0.0.0/8 192.168.0.0/16", ""},
		{"annotation when the field is empty", lb("198.51.100.1", func(s *corev1.Service) {
			s.Annotations = map[string]string{AnnotationSourceRanges: "203.0.113.0/24, 198.18.0.0/15"}
		}), true, "198.18.0.0/15 203.0.113.0/24", ""},
		{"field wins over annotation", lb("198.51.100.1", func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
			s.Annotations = map[string]string{AnnotationSourceRanges: "0.0.0.0/0"}
		}), true, "10.0.0.0/8", ""},
		{"malformed range admits nobody, is reported", lb("198.51.100.1", func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.300/8"}
		}), true, "", `spec.loadBalancerSourceRanges: "10.0.0.300/8" is not a CIDR`},
		{"no load-balancer address yet: nothing to filter", lb("", func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		}), false, "10.0.0.0/8", ""},
		{"not a LoadBalancer: ignored", svc("np", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		}), false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, errs := Build([]*corev1.Service{tc.s}, nil, node)
			switch {
			case tc.err == "" && len(errs) > 0:
				t.Fatalf("errors: %v", errs)
			case tc.err != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.err)):
				t.Fatalf("want one error containing %q, got %v", tc.err, errs)
			}
			sp := st.Services[0]
			var got []string
			for _, r := range sp.SourceRanges {
				got = append(got, r.String())
			}
			if sp.Firewalled != tc.firewalled || strings.Join(got, " ") != tc.ranges {
				t.Errorf("firewalled %v ranges %q, want %v %q", sp.Firewalled, strings.Join(got, " "), tc.firewalled, tc.ranges)
			}
		})
	}
}

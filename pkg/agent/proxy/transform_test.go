package proxy

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// richMeta is metadata as the API server returns it: what the transforms
// must drop (managedFields, owner references, finalizers, annotations and
// labels nobody reads) next to what they keep.
func richMeta(name string, labels, annotations map[string]string) metav1.ObjectMeta {
	l := map[string]string{"app": name, "team": "payments"}
	for k, v := range labels {
		l[k] = v
	}
	a := map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"a":"long json"}`}
	for k, v := range annotations {
		a[k] = v
	}
	return metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "uid-" + "name", ResourceVersion: "42", Generation: 3,
		Labels: l, Annotations: a, Finalizers: []string{"example.com/f"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: name, UID: "u"}},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}}
}

// richServices cover every field buildService reads, each with neighbours
// it does not read.
func richServices() []*corev1.Service {
	ipModeProxy, ipModeVIP := corev1.LoadBalancerIPModeProxy, corev1.LoadBalancerIPModeVIP
	local := corev1.ServiceInternalTrafficPolicyLocal
	prefer := corev1.ServiceTrafficDistributionPreferClose
	status := corev1.ServiceStatus{Conditions: []metav1.Condition{{Type: "x", Status: "True", Reason: "r", Message: "m"}}}
	ports := []corev1.ServicePort{
		{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web"), NodePort: 30080, AppProtocol: ptr("http")},
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 30053},
		{Name: "bad", Protocol: "ICMP", Port: 1},
	}
	return []*corev1.Service{
		{ObjectMeta: richMeta("cip", nil, map[string]string{corev1.AnnotationTopologyMode: "Auto"}),
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "172.30.0.1", ClusterIPs: []string{"172.30.0.1", "fd00::1"},
				Selector: map[string]string{"app": "cip"}, Ports: ports[:1], ExternalIPs: []string{"192.0.2.7", "2001:db8::1"},
				SessionAffinity: corev1.ServiceAffinityClientIP, SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}},
				InternalTrafficPolicy: &local, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}},
			Status: status},
		{ObjectMeta: richMeta("np", nil, map[string]string{corev1.DeprecatedAnnotationTopologyAwareHints: "auto"}),
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "172.30.0.2", Ports: ports,
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, TrafficDistribution: &prefer, PublishNotReadyAddresses: true}},
		{ObjectMeta: richMeta("lb", nil, map[string]string{AnnotationSourceRanges: "10.0.0.0/8, 192.168.0.0/16,bogus"}),
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "172.30.0.3", ClusterIPs: []string{"172.30.0.3"}, Ports: ports[:2],
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, HealthCheckNodePort: 31000, LoadBalancerClass: ptr("x"),
				AllocateLoadBalancerNodePorts: ptr(true)},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: "203.0.113.1", Hostname: "lb.example.com", Ports: []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP}}},
				{IP: "203.0.113.2", IPMode: &ipModeProxy},
				{IP: "203.0.113.3", IPMode: &ipModeVIP},
			}}}},
		{ObjectMeta: richMeta("lb-ranges", nil, nil),
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "172.30.0.4", Ports: ports[:1],
				LoadBalancerSourceRanges: []string{"198.51.100.0/24"}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.4"}}}}},
		{ObjectMeta: richMeta("ext", nil, nil), Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}},
		{ObjectMeta: richMeta("headless", nil, nil), Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: ports[:1]}},
	}
}

func richSlices() []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for i, svcName := range []string{"cip", "np", "lb", "lb-ranges", "headless"} {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: richMeta(fmt.Sprintf("%s-abc", svcName), map[string]string{discoveryv1.LabelServiceName: svcName,
				discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}, map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-03T10:00:00Z"}),
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](8080), AppProtocol: ptr("http")},
				{Name: ptr("dns"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr[int32](5353)}},
		}
		for j, node := range []string{"node1", "node2", "node1"} {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.128.%d.%d", i, j+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(j != 2), Serving: ptr(true), Terminating: ptr(j == 2)},
				Hostname:   ptr(fmt.Sprintf("pod-%d", j)), NodeName: ptr(node), Zone: ptr("zone-" + node),
				TargetRef:          &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: fmt.Sprintf("pod-%d", j), UID: "u", ResourceVersion: "7"},
				DeprecatedTopology: map[string]string{"kubernetes.io/hostname": node},
				Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-" + node}},
					ForNodes: []discoveryv1.ForNode{{Name: node}}},
			})
		}
		out = append(out, es)
	}
	// Another family's slice and a slice of no Service.
	v6 := richSlices1(discoveryv1.AddressTypeIPv6, map[string]string{discoveryv1.LabelServiceName: "cip"})
	orphan := richSlices1(discoveryv1.AddressTypeIPv4, nil)
	return append(out, v6, orphan)
}

func richSlices1(at discoveryv1.AddressType, labels map[string]string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: richMeta("other-"+string(at)+fmt.Sprint(len(labels)), labels, nil), AddressType: at,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"fd00::5"}, TargetRef: &corev1.ObjectReference{Name: "p"}}}}
}

func richNode() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: richMeta("node1", map[string]string{corev1.LabelTopologyZone: "zone-node1", corev1.LabelHostname: "node1"}, nil),
		Spec:       corev1.NodeSpec{PodCIDR: "10.128.0.0/24", ProviderID: "x", Taints: []corev1.Taint{{Key: "ToBeDeletedByClusterAutoscaler", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.28.0.11"}, {Type: corev1.NodeExternalIP, Address: "198.51.100.9"},
				{Type: corev1.NodeHostName, Address: "node1"}},
			Images:     []corev1.ContainerImage{{Names: []string{"registry.example.com/big/image:v1"}, SizeBytes: 1 << 30}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			NodeInfo:   corev1.NodeSystemInfo{KernelVersion: "6.18"},
		},
	}
}

func transformed[T any](t *testing.T, fn func(any) (any, error), objs []T) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		cp := reflect.ValueOf(o).MethodByName("DeepCopy").Call(nil)[0].Interface()
		got, err := fn(cp)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got.(T))
	}
	return out
}

// What the proxy builds from trimmed objects is what it builds from the
// API's: every field a reader uses survives the transforms.
func TestTransformsKeepWhatBuildReads(t *testing.T) {
	svcs, eps := richServices(), richSlices()
	tsvcs, teps := transformed(t, Transform, svcs), transformed(t, Transform, eps)
	for _, n := range []NodeInfo{
		{Name: "node1", Zone: "zone-node1", IPs: []netip.Addr{netip.MustParseAddr("172.28.0.11")}},
		{Name: "node2"},
	} {
		want, wantErrs := Build(svcs, eps, n)
		got, gotErrs := Build(tsvcs, teps, n)
		if !reflect.DeepEqual(want, got) {
			t.Errorf("node %s: Build of trimmed objects differs:\n got %+v\nwant %+v", n.Name, got, want)
		}
		if fmt.Sprint(wantErrs) != fmt.Sprint(gotErrs) {
			t.Errorf("node %s: errors %v, want %v", n.Name, gotErrs, wantErrs)
		}
		if len(want.Services) < 6 || len(wantErrs) == 0 {
			t.Fatalf("the input exercises too little: %d ports, errors %v", len(want.Services), wantErrs)
		}
	}
	// The slice index reads the service-name label.
	for i := range eps {
		a, _ := SliceIndexers()[IndexByService](eps[i])
		b, _ := SliceIndexers()[IndexByService](teps[i])
		if !reflect.DeepEqual(a, b) {
			t.Errorf("slice %s: index %v, want %v", eps[i].Name, b, a)
		}
	}
	// The Runner reads the Node's zone, addresses, taints and deletion.
	n := richNode()
	tn := transformed(t, TransformNode, []*corev1.Node{n})[0]
	r := &Runner{NodeName: "node1", HostIP: netip.MustParseAddr("172.28.0.11")}
	if !reflect.DeepEqual(r.nodeInfo(n), r.nodeInfo(tn)) || NodeEligible(n) != NodeEligible(tn) || NodeEligible(tn) {
		t.Errorf("node: %+v eligible %v, want %+v eligible %v", r.nodeInfo(tn), NodeEligible(tn), r.nodeInfo(n), NodeEligible(n))
	}
	now := metav1.Now()
	n.DeletionTimestamp, n.Spec.Taints = &now, nil
	tn = transformed(t, TransformNode, []*corev1.Node{n})[0]
	if tn.DeletionTimestamp == nil || NodeEligible(tn) {
		t.Error("node: the deletion timestamp is lost")
	}
}

// What the proxy never reads is gone.
func TestTransformsDropWhatNobodyReads(t *testing.T) {
	checkMeta := func(kind string, m metav1.ObjectMeta, labels, annotations []string) {
		t.Helper()
		if m.ManagedFields != nil || m.OwnerReferences != nil || m.Finalizers != nil {
			t.Errorf("%s %s: managedFields, owner references or finalizers kept: %+v", kind, m.Name, m)
		}
		if m.Name == "" || m.Namespace == "" || m.UID == "" || m.ResourceVersion != "42" {
			t.Errorf("%s: identity lost: %+v", kind, m)
		}
		for k := range m.Labels {
			if !contains(labels, k) {
				t.Errorf("%s %s: label %s kept", kind, m.Name, k)
			}
		}
		for k := range m.Annotations {
			if !contains(annotations, k) {
				t.Errorf("%s %s: annotation %s kept", kind, m.Name, k)
			}
		}
	}
	for _, s := range transformed(t, Transform, richServices()) {
		checkMeta("service", s.ObjectMeta, nil, []string{AnnotationSourceRanges, corev1.AnnotationTopologyMode, corev1.DeprecatedAnnotationTopologyAwareHints})
		if s.Spec.Selector != nil || s.Spec.IPFamilies != nil || s.Spec.ExternalName != "" || s.Spec.LoadBalancerClass != nil ||
			s.Spec.PublishNotReadyAddresses || s.Status.Conditions != nil {
			t.Errorf("service %s: unread spec or status kept: %+v %+v", s.Name, s.Spec, s.Status)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort != (intstr.IntOrString{}) || p.AppProtocol != nil {
				t.Errorf("service %s: port %s keeps its target port or app protocol", s.Name, p.Name)
			}
		}
		for _, ing := range s.Status.LoadBalancer.Ingress {
			if ing.Hostname != "" || ing.Ports != nil {
				t.Errorf("service %s: ingress %+v keeps a hostname or ports", s.Name, ing)
			}
		}
	}
	for _, es := range transformed(t, Transform, richSlices()) {
		checkMeta("slice", es.ObjectMeta, []string{discoveryv1.LabelServiceName}, nil)
		for _, e := range es.Endpoints {
			if e.TargetRef != nil || e.Hostname != nil || e.DeprecatedTopology != nil || e.Zone != nil {
				t.Errorf("slice %s: endpoint %v keeps its targetRef, hostname, zone or topology", es.Name, e.Addresses)
			}
		}
	}
	n := transformed(t, TransformNode, []*corev1.Node{richNode()})[0]
	checkMeta("node", n.ObjectMeta, []string{corev1.LabelTopologyZone}, nil)
	if n.Status.Images != nil || n.Status.Conditions != nil || n.Status.NodeInfo != (corev1.NodeSystemInfo{}) || n.Spec.PodCIDR != "" {
		t.Errorf("node: unread spec or status kept: %+v %+v", n.Spec, n.Status)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// client-go may hand an object to a transform again: a second pass
// changes nothing, and other types (tombstones) pass through.
func TestTransformsIdempotent(t *testing.T) {
	check := func(name string, fn func(any) (any, error), objs []any) {
		for _, o := range objs {
			once, err := fn(o)
			if err != nil {
				t.Fatal(err)
			}
			keep := reflect.ValueOf(once).MethodByName("DeepCopy").Call(nil)[0].Interface()
			twice, err := fn(once)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(keep, twice) {
				t.Errorf("%s: a second transform changed\n%+v\ninto\n%+v", name, keep, twice)
			}
		}
	}
	var svcs, eps []any
	for _, s := range richServices() {
		svcs = append(svcs, s)
	}
	for _, s := range richSlices() {
		eps = append(eps, s)
	}
	check("service", Transform, svcs)
	check("slice", Transform, eps)
	check("node", TransformNode, []any{richNode()})
	for _, fn := range []func(any) (any, error){Transform, TransformService, TransformEndpointSlice, TransformNode} {
		if v, err := fn("tombstone"); err != nil || v != "tombstone" {
			t.Errorf("a non-object: %v %v", v, err)
		}
	}
}

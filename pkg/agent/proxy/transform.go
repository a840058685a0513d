package proxy

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluice-net/sluice/pkg/informer"
)

// The proxy's informer caches hold every Service and EndpointSlice of the
// cluster. Their transforms (cache.TransformFunc) keep only what Build,
// the Proxier's index and the Runner read, so the caches cost what the
// proxy uses and not what the API objects carry (managedFields, targetRefs,
// owner references, the endpoint controller's annotations, selectors,
// status conditions). Each leaves objects of other types alone and is
// idempotent, as client-go requires. Adding a read of a field dropped here
// means keeping it here too; transform_test.go compares Build's output
// on full and trimmed objects.

// Transform is the transform of the proxy's informer factory: Services and
// EndpointSlices are trimmed, other objects left alone.
func Transform(obj any) (any, error) {
	switch obj.(type) {
	case *corev1.Service:
		return TransformService(obj)
	case *discoveryv1.EndpointSlice:
		return TransformEndpointSlice(obj)
	}
	return obj, nil
}

// TransformService keeps of a Service what buildService reads: its name,
// the annotations it honours (source ranges, topology mode), the spec
// fields that shape load-balancing and the load-balancer ingress addresses.
func TransformService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	informer.KeepMeta(&svc.ObjectMeta, func(string) bool { return false },
		AnnotationSourceRanges, corev1.AnnotationTopologyMode, corev1.DeprecatedAnnotationTopologyAwareHints)
	s := &svc.Spec
	ports := make([]corev1.ServicePort, len(s.Ports))
	for i, p := range s.Ports {
		ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
	}
	svc.Spec = corev1.ServiceSpec{
		Type: s.Type, ClusterIP: s.ClusterIP, ClusterIPs: s.ClusterIPs, ExternalIPs: s.ExternalIPs, Ports: ports,
		SessionAffinity: s.SessionAffinity, SessionAffinityConfig: s.SessionAffinityConfig,
		ExternalTrafficPolicy: s.ExternalTrafficPolicy, InternalTrafficPolicy: s.InternalTrafficPolicy,
		HealthCheckNodePort: s.HealthCheckNodePort, LoadBalancerSourceRanges: s.LoadBalancerSourceRanges,
		TrafficDistribution: s.TrafficDistribution,
	}
	var ingress []corev1.LoadBalancerIngress
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
	}
	svc.Status = corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingress}}
	return svc, nil
}

// TransformEndpointSlice keeps of an EndpointSlice its name, the
// kubernetes.io/service-name label (the index), its address type and ports,
// and of each endpoint the addresses, conditions, node and hints; zones
// (topology follows the hints), targetRefs, hostnames, owner references,
// other labels and annotations go.
func TransformEndpointSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	informer.KeepMeta(&es.ObjectMeta, informer.OnlyLabel(discoveryv1.LabelServiceName))
	for i := range es.Endpoints {
		e := &es.Endpoints[i]
		*e = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName, Hints: e.Hints}
	}
	return es, nil
}

// TransformNode keeps of the proxy's own Node what nodeInfo and
// NodeEligible read: the zone label, the taints, the addresses and the
// deletion timestamp (a Node's status also lists every image it holds).
func TransformNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	informer.KeepMeta(&n.ObjectMeta, informer.OnlyLabel(corev1.LabelTopologyZone))
	n.Spec = corev1.NodeSpec{Taints: n.Spec.Taints}
	n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	return n, nil
}

package node

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/sluice-net/sluice/pkg/informer"
)

// The isolation feature's informer caches hold every Pod, Namespace and
// NetworkPolicy of the cluster. Transform trims them to what isolation
// (pkg/agent/netpol) and the policy model (policy.PodFromCore,
// policy.NamespaceLabels) read, so a node's agent does not keep every
// pod's containers, volumes, environment and status. Objects of other types
// pass through; a second pass changes nothing (client-go may apply it
// again). Adding a read of a field dropped here means keeping it here too;
// transform_test.go checks the readers' view on full and trimmed objects.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		transformPod(o)
	case *corev1.Namespace:
		// Name and labels (policy.NamespaceLabels); spec and status unread.
		informer.KeepMeta(&o.ObjectMeta, nil)
		o.Spec, o.Status = corev1.NamespaceSpec{}, corev1.NamespaceStatus{}
	case *networkingv1.NetworkPolicy:
		// The spec is read whole; labels and annotations are not (kubectl's
		// last-applied-configuration annotation repeats the whole spec).
		informer.KeepMeta(&o.ObjectMeta, func(string) bool { return false })
	}
	return obj, nil
}

// transformPod keeps a pod's name, labels, node, host networking, the
// named ports of its containers (restartable init containers included),
// its phase and its address.
func transformPod(p *corev1.Pod) {
	informer.KeepMeta(&p.ObjectMeta, nil)
	keep := func(cs []corev1.Container) []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			out = append(out, corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy})
		}
		return out
	}
	p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork,
		InitContainers: keep(p.Spec.InitContainers), Containers: keep(p.Spec.Containers)}
	p.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP}
}

package node

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/pkg/policy"
)

func ptr[T any](v T) *T { return &v }

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "uid", ResourceVersion: "42", Generation: 2,
		Labels:          map[string]string{"app": "web", "tier": "front"},
		Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{…}", "prometheus.io/scrape": "true"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1", UID: "u"}},
		Finalizers:      []string{"example.com/f"},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}}
}

func pods() []*corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	full := func(name, node, ip string, phase corev1.PodPhase, hostNet bool) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: meta(name),
			Spec: corev1.PodSpec{NodeName: node, HostNetwork: hostNet, ServiceAccountName: "sa",
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				InitContainers: []corev1.Container{
					{Name: "setup", Image: "busybox", Command: []string{"sh", "-c", "true"}, Ports: []corev1.ContainerPort{{Name: "ignored", ContainerPort: 1}}},
					{Name: "sidecar", Image: "envoy", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}}},
				},
				Containers: []corev1.Container{{Name: "web", Image: "nginx", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
					Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP, HostPort: 53}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}}}},
			},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "172.28.0.11",
				Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Image: "nginx", ImageID: "sha256:…", Ready: true}}},
		}
	}
	return []*corev1.Pod{
		full("a", "node1", "10.128.0.5", corev1.PodRunning, false),
		full("b", "node2", "", corev1.PodPending, false),
		full("c", "node1", "10.128.0.6", corev1.PodSucceeded, false),
		full("d", "node1", "172.28.0.11", corev1.PodRunning, true),
		full("e", "node2", "not-an-ip", corev1.PodRunning, false),
	}
}

func trim[T any](t *testing.T, o T) T {
	t.Helper()
	cp := reflect.ValueOf(o).MethodByName("DeepCopy").Call(nil)[0].Interface()
	got, err := Transform(cp)
	if err != nil {
		t.Fatal(err)
	}
	return got.(T)
}

// Isolation and the policy model see the same pods, namespaces and
// policies in trimmed objects as in the API's.
func TestTransformKeepsWhatIsolationReads(t *testing.T) {
	for _, p := range pods() {
		tp := trim(t, p)
		// What Isolation reads itself (isolation.go), then the model's view.
		if tp.Namespace != p.Namespace || tp.Name != p.Name || tp.Spec.NodeName != p.Spec.NodeName || tp.Spec.HostNetwork != p.Spec.HostNetwork ||
			tp.Status.Phase != p.Status.Phase || tp.Status.PodIP != p.Status.PodIP {
			t.Errorf("pod %s: %+v / %+v, want %+v / %+v", p.Name, tp.Spec, tp.Status, p.Spec, p.Status)
		}
		want, wantErr := policy.PodFromCore(p)
		got, gotErr := policy.PodFromCore(tp)
		if !reflect.DeepEqual(want, got) || (wantErr == nil) != (gotErr == nil) {
			t.Errorf("pod %s: model %+v (%v), want %+v (%v)", p.Name, got, gotErr, want, wantErr)
		}
		if p.Name == "a" && len(want.Ports) != 3 {
			t.Fatalf("pod a: the input exercises too little: ports %+v", want.Ports)
		}
	}
	ns := &corev1.Namespace{ObjectMeta: meta("team-a"), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	ns.Namespace = ""
	if tn := trim(t, ns); !reflect.DeepEqual(policy.NamespaceLabels(ns), policy.NamespaceLabels(tn)) || tn.Name != ns.Name {
		t.Errorf("namespace: labels %v, want %v", policy.NamespaceLabels(tn), policy.NamespaceLabels(ns))
	}
	port := intstr.FromString("http")
	np := &networkingv1.NetworkPolicy{ObjectMeta: meta("allow"), Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}}},
		Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}, Ports: []networkingv1.NetworkPolicyPort{{EndPort: ptr[int32](9000)}}}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
	}}
	if tnp := trim(t, np); !reflect.DeepEqual(tnp.Spec, np.Spec) || tnp.Namespace != np.Namespace || tnp.Name != np.Name {
		t.Errorf("policy: %+v, want %+v", tnp.Spec, np.Spec)
	}
}

// What neither isolation nor the model reads is gone.
func TestTransformDropsWhatNobodyReads(t *testing.T) {
	checkMeta := func(kind string, m metav1.ObjectMeta, wantLabels bool) {
		t.Helper()
		if m.ManagedFields != nil || m.OwnerReferences != nil || m.Finalizers != nil || m.Annotations != nil {
			t.Errorf("%s %s: managedFields, owner references, finalizers or annotations kept: %+v", kind, m.Name, m)
		}
		if (m.Labels != nil) != wantLabels {
			t.Errorf("%s %s: labels %v", kind, m.Name, m.Labels)
		}
		if m.UID != "uid" || m.ResourceVersion != "42" {
			t.Errorf("%s %s: identity lost: %+v", kind, m.Name, m)
		}
	}
	p := trim(t, pods()[0])
	checkMeta("pod", p.ObjectMeta, true)
	if p.Spec.Volumes != nil || p.Spec.ServiceAccountName != "" || p.Status.PodIPs != nil || p.Status.HostIP != "" ||
		p.Status.Conditions != nil || p.Status.ContainerStatuses != nil {
		t.Errorf("pod: unread spec or status kept: %+v %+v", p.Spec, p.Status)
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Image != "" || c.Command != nil || c.Env != nil || c.Resources.Requests != nil || c.ReadinessProbe != nil {
			t.Errorf("pod: container %s keeps unread fields: %+v", c.Name, c)
		}
	}
	ns := trim(t, &corev1.Namespace{ObjectMeta: meta("team-a"), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}})
	checkMeta("namespace", ns.ObjectMeta, true)
	if ns.Spec.Finalizers != nil || ns.Status.Phase != "" {
		t.Errorf("namespace: spec or status kept: %+v %+v", ns.Spec, ns.Status)
	}
	np := trim(t, &networkingv1.NetworkPolicy{ObjectMeta: meta("allow")})
	checkMeta("policy", np.ObjectMeta, false)
}

// A second pass changes nothing; other objects and tombstones pass through.
func TestTransformIdempotent(t *testing.T) {
	objs := []any{&corev1.Namespace{ObjectMeta: meta("team-a")}, &networkingv1.NetworkPolicy{ObjectMeta: meta("allow")}}
	for _, p := range pods() {
		objs = append(objs, p)
	}
	for _, o := range objs {
		once, _ := Transform(o)
		keep := reflect.ValueOf(once).MethodByName("DeepCopy").Call(nil)[0].Interface()
		twice, err := Transform(once)
		if err != nil || !reflect.DeepEqual(keep, twice) {
			t.Errorf("%T: a second transform changed\n%+v\ninto\n%+v (%v)", o, keep, twice, err)
		}
	}
	svc := &corev1.Service{ObjectMeta: meta("web")}
	if v, err := Transform(svc); err != nil || v != svc || svc.Annotations == nil {
		t.Errorf("a Service is not the isolation caches' to trim: %+v %v", v, err)
	}
	if v, err := Transform("tombstone"); err != nil || v != "tombstone" {
		t.Errorf("a non-object: %v %v", v, err)
	}
}

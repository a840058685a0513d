package lab

import (
	"context"
	"fmt"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// DemoNamespace holds the demo workload.
const DemoNamespace = "demo"

// DemoObjects are the demo workload: two test-server pods per node, spread
// across nodes, serving TCP/UDP/SCTP 80 with a readiness probe, and a
// ClusterIP Service in front of them.
func DemoObjects(nodes int) (*corev1.Namespace, *appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": "demo"}
	replicas := int32(2 * nodes)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DemoNamespace}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: DemoNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew:           1,
						TopologyKey:       corev1.LabelHostname,
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name:  "server",
						Image: "sluice-lab/testserver",
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
							{Name: "dns", ContainerPort: 80, Protocol: corev1.ProtocolUDP},
							{Name: "sctp", ContainerPort: 80, Protocol: corev1.ProtocolSCTP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: DemoNamespace},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 80, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
			},
		},
	}
	return ns, dep, svc
}

// Demo applies the demo workload, waits for it and prints what it shows: the
// pods, where they run, and the pod-to-pod truth table.
func (l *Lab) Demo(ctx context.Context) error {
	cs, err := l.Client()
	if err != nil {
		return err
	}
	ns, dep, svc := DemoObjects(l.C.Nodes)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// The namespace's default service account comes from the controller
	// manager a moment after the namespace; pods need it.
	for i := 0; ; i++ {
		_, err := cs.CoreV1().ServiceAccounts(DemoNamespace).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if i > 60 {
			return fmt.Errorf("service account %s/default never appeared: %w", DemoNamespace, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := cs.AppsV1().Deployments(DemoNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := cs.CoreV1().Services(DemoNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	fmt.Fprintf(l.Out, "\ndemo: deployment %s/demo (%d test-server pods) and service %s/demo\n", DemoNamespace, *dep.Spec.Replicas, DemoNamespace)
	wait := 90 * time.Second
	if !l.anyCNIConfig() {
		wait = 10 * time.Second // long enough for every pod to show why it cannot start
	}
	pods, werr := waitPods(ctx, l, DemoNamespace, int(*dep.Spec.Replicas), wait)
	for _, p := range pods {
		fmt.Fprintf(l.Out, "  %-28s node %-8s %-8s ip %-15s %s\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, podReason(&p))
	}
	if werr != nil {
		fmt.Fprintf(l.Out, "\nthe demo's pods are not running: %v\n", werr)
		if !l.anyCNIConfig() {
			// No pod network is installed: pods failing to start is the
			// expected outcome, and each says why. Not an error of the lab.
			fmt.Fprintf(l.Out, "no pod network is installed yet (no CNI configuration in any node's %s): pods wait for one\n", l.C.CNIConfDir("NODE"))
			return nil
		}
		return werr
	}
	m, err := l.Matrix(ctx, MatrixOptions{Namespaces: []string{DemoNamespace}, Port: 80, Protocol: "tcp", Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	fmt.Fprintln(l.Out)
	m.Print(l.Out)
	return nil
}

func (l *Lab) anyCNIConfig() bool {
	for _, n := range l.C.NodeNames() {
		if ents, _ := os.ReadDir(l.C.CNIConfDir(n)); len(ents) > 0 {
			return true
		}
	}
	return false
}

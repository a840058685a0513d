// Package labrun holds what the benchmarks that run a sluice-lab share: the
// lab command, an API client, and creating and waiting for the objects the
// measurements need.
package labrun

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Lab is a sluice-lab binary bound to one state directory: each benchmark
// runs a lab of its own, apart from a developer's.
type Lab struct {
	Bin, StateDir string
}

// Command is `sluice-lab --state-dir DIR args…`; the caller wires its output.
func (l Lab) Command(args ...string) *exec.Cmd {
	return exec.Command(l.Bin, append([]string{"--state-dir", l.StateDir}, args...)...)
}

// FreePort is a TCP port free on the host right now, for the lab's API
// server: a fixed one would collide with a developer's lab.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Client is a clientset for the kubeconfig. qps and burst lift client-go's
// rate limit for benchmarks that create thousands of objects; 0 keeps its
// defaults.
func Client(kubeconfig string, qps float32, burst int) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = qps, burst
	return kubernetes.NewForConfig(rc)
}

// CreateNamespace creates ns unless it exists: a lab kept from an earlier
// run (--keep-lab, a reused state directory) already has it.
func CreateNamespace(ctx context.Context, cs kubernetes.Interface, ns *corev1.Namespace) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// Poll calls cond up to tries times, every interval, until it holds; it
// reports whether it did.
func Poll(tries int, every time.Duration, cond func() bool) bool {
	for i := range tries {
		if cond() {
			return true
		}
		if i < tries-1 {
			time.Sleep(every)
		}
	}
	return false
}

// WaitServiceAccount waits for the namespace's default ServiceAccount, which
// the API server refuses pods without; it returns the last lookup's error
// if the account never showed.
func WaitServiceAccount(ctx context.Context, cs kubernetes.Interface, ns string, tries int, every time.Duration) error {
	var err error
	if Poll(tries, every, func() bool {
		_, err = cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}) {
		return nil
	}
	return err
}

// RunningPod polls the pod every interval until it is Running with an
// address, or deadline passes.
func RunningPod(ctx context.Context, cs kubernetes.Interface, ns, name string, deadline time.Time, every time.Duration) (*corev1.Pod, error) {
	for {
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" {
			return pod, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pod %s/%s not running", ns, name)
		}
		time.Sleep(every)
	}
}

// CreateLoadPod creates load pod i of the policy benchmarks: an API object
// on one of the kubelet-less nodes ghost1–ghost3 (tolerating everything), in
// namespace g(i mod namespaces), labelled app=a(i mod 50), tier=t(i mod 3),
// with a named port http/8080, and marks it Running at 10.131.x.y. A pod
// that exists already is left as it is.
func CreateLoadPod(ctx context.Context, kube kubernetes.Interface, i, namespaces int) error {
	ns := fmt.Sprintf("g%d", i%namespaces)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: ns,
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50), "tier": fmt.Sprintf("t%d", i%3)}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("ghost%d", 1+i%3), Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "c", Image: "none", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}
	p, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ip := netip.AddrFrom4([4]byte{10, 131, byte(i >> 8), byte(i)})
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	_, err = kube.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

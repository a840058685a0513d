// Package labrun holds what the benchmarks that run a sluice-lab share: the
// lab command, an API client, and creating and waiting for the objects the
// measurements need.
package labrun

import (
	"context"
	"fmt"
	"net"
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

package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/lab/kubelet"
	"github.com/sluice-net/sluice/pkg/netns"
)

// Target names where `exec` runs: "NAMESPACE/POD", "node/NODE" or "external".
// It resolves to a network namespace path.
func (l *Lab) Target(ctx context.Context, target string) (string, error) {
	switch {
	case target == "external":
		return netns.Path(l.C.External().Netns), nil
	case strings.HasPrefix(target, "node/"):
		n := strings.TrimPrefix(target, "node/")
		m, ok := l.C.Node(n)
		if !ok {
			return "", fmt.Errorf("node %q: no such node in this lab (nodes: %s)", n, strings.Join(l.C.NodeNames(), ", "))
		}
		return netns.Path(m.Netns), nil
	}
	ns, name, ok := strings.Cut(target, "/")
	if !ok || ns == "" || name == "" {
		return "", fmt.Errorf("target %q: want NAMESPACE/POD, node/NODE or external", target)
	}
	cs, err := l.Client()
	if err != nil {
		return "", err
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("pod %s/%s does not exist", ns, name)
	}
	if err != nil {
		return "", err
	}
	return l.PodNetns(pod)
}

// PodNetns is the path of a running pod's network namespace.
func (l *Lab) PodNetns(pod *corev1.Pod) (string, error) {
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled to a node yet", pod.Namespace, pod.Name)
	}
	if pod.Spec.HostNetwork {
		m, ok := l.C.Node(pod.Spec.NodeName)
		if !ok {
			return "", fmt.Errorf("pod %s/%s runs on unknown node %q", pod.Namespace, pod.Name, pod.Spec.NodeName)
		}
		return netns.Path(m.Netns), nil
	}
	if l.C.RealNodes() {
		// containerd's namespaces are mounted inside the node only; a
		// process of the pod leads to the same namespace from anywhere.
		pid, err := PodPid(string(pod.UID))
		if err != nil {
			return "", fmt.Errorf("pod %s/%s has no running sandbox (phase %s): %w", pod.Namespace, pod.Name, pod.Status.Phase, err)
		}
		return fmt.Sprintf("/proc/%d/ns/net", pid), nil
	}
	name := l.C.PodNetnsPrefix(pod.Spec.NodeName) + string(pod.UID)[:8]
	if !netns.Exists(name) {
		return "", fmt.Errorf("pod %s/%s has no network namespace (phase %s): its sandbox is not created", pod.Namespace, pod.Name, pod.Status.Phase)
	}
	return netns.Path(name), nil
}

// Exec runs argv inside the target's network namespace with the caller's
// stdio, returning its exit code.
func (l *Lab) Exec(ctx context.Context, target string, argv []string) (int, error) {
	path, err := l.Target(ctx, target)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, l.Self, append([]string{"nsexec", path, "--"}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// KubeletOptions are the fixed parts of one node's kubelet.
func (c *Config) KubeletOptions(node string) (kubelet.Options, error) {
	m, ok := c.Node(node)
	if !ok {
		return kubelet.Options{}, fmt.Errorf("--node %q: no such node in the lab at %s", node, c.StateDir)
	}
	return kubelet.Options{
		NodeName:    node,
		NodeIP:      m.Addr,
		StateDir:    c.NodeDir(node),
		NetnsPrefix: c.PodNetnsPrefix(node),
	}, nil
}

// waitPods waits until every pod in ns is Running and Ready, or timeout.
func waitPods(ctx context.Context, l *Lab, ns string, want int, timeout time.Duration) ([]corev1.Pod, error) {
	cs, err := l.Client()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			ready := 0
			for i := range pods.Items {
				if podReady(&pods.Items[i]) && pods.Items[i].DeletionTimestamp == nil {
					ready++
				}
			}
			if ready >= want {
				return pods.Items, nil
			}
			if time.Now().After(deadline) {
				return pods.Items, fmt.Errorf("%d of %d pods in namespace %s ready after %s", ready, want, ns, timeout)
			}
		} else if time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

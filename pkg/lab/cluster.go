package lab

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-net/sluice/pkg/lab/proc"
)

// Client returns an administrator's clientset over the loopback forwarder.
func (l *Lab) Client() (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.C.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cfg.Timeout = 30 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// waitClusterReady waits for every node to be Ready and for the default
// service account, without which no pod can be created.
func (l *Lab) waitClusterReady(ctx context.Context, timeout time.Duration) error {
	cs, err := l.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var why string
	for {
		why = l.clusterNotReady(ctx, cs)
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready after %s: %s", timeout, why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (l *Lab) clusterNotReady(ctx context.Context, cs kubernetes.Interface) string {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	ready := map[string]bool{}
	for _, n := range nodes.Items {
		// A real node without a pod network is NotReady (its runtime says
		// NetworkReady=false) until some CNI configuration appears, as on
		// any cluster: with --pod-network none, registered is enough.
		ready[n.Name] = nodeReady(&n) || l.C.RealNodes() && l.C.PodNetwork == PodNetworkNone && waitsForNetwork(&n)
	}
	for _, n := range l.C.NodeNames() {
		if !ready[n] {
			return "node " + n + " is not Ready"
		}
	}
	if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return "service account default/default does not exist yet"
		}
		return err.Error()
	}
	return ""
}

// waitsForNetwork reports whether a node is NotReady only for want of a
// pod network.
func waitsForNetwork(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "NetworkReady=false")
		}
	}
	return false
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Status prints components, nodes and pods as tables.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	c := l.C
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "COMPONENT\tSTATE\tNAMESPACE\tADDRESS\n")
	for _, comp := range l.components() {
		state := "stopped"
		if pid := proc.Running(c.PidFile(comp.Name)); pid != 0 {
			state = fmt.Sprintf("running (pid %d)", pid)
		}
		ns, addr := comp.Netns, ""
		switch {
		case ns == "":
			ns, addr = "(host)", fmt.Sprintf("127.0.0.1:%d", c.APIPort)
		case ns == c.ControlPlane().Netns:
			addr = c.ControlPlane().Addr.String()
		case ns == c.External().Netns:
			addr = c.External().Addr.String() + ":8080 (tcp, udp, sctp)"
		default:
			if m, ok := c.Node(comp.Name[strings.LastIndexByte(comp.Name, '-')+1:]); ok {
				addr = m.Addr.String()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", comp.Name, state, ns, addr)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nexternal host: %s (namespace %s)\nkubeconfig:    %s\n\n", c.External().Addr, c.External().Netns, c.Kubeconfig())

	cs, err := l.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "API server not reachable: %v\n", err)
		return fmt.Errorf("API server not reachable: %w", err)
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tSTATUS\tINTERNAL-IP\tNAMESPACE\n")
	for _, n := range nodes.Items {
		st := "NotReady"
		if nodeReady(&n) {
			st = "Ready"
		}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		m, _ := c.Node(n.Name)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, st, ip, m.Netns)
	}
	tw.Flush()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	sort.Slice(pods.Items, func(i, j int) bool {
		a, b := pods.Items[i], pods.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "POD\tNODE\tPHASE\tREADY\tIP\tREASON\n")
	for _, p := range pods.Items {
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%v\t%s\t%s\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, podReady(&p), p.Status.PodIP, podReason(&p))
	}
	if len(pods.Items) == 0 {
		fmt.Fprintf(tw, "(no pods)\n")
	}
	return tw.Flush()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReason(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return c.Message
		}
	}
	return ""
}

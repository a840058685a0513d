// This file holds the setup inside the lab: the lab agent's proxy switched
// off, the two test-server pods, routes, and the sentinel Service.

package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// setup switches the lab's own proxy off, starts two test-server pods and the
// sentinel Service, and routes the external namespace to services and pods.
func (b *bench) setup() error {
	ctx, c := b.ctx, b.c
	logf("ClusterNetwork serviceProxy: External (the lab agent's proxy steps aside)")
	kubectl := filepath.Join(kubebuild.BinDir(), "kubectl")
	if out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig="+c.AdminKubeconfigFabric(), "patch", "clusternetwork", "default",
		"--type=merge", "-p", `{"spec":{"serviceProxy":"External"}}`).CombinedOutput(); err != nil {
		return fmt.Errorf("patch clusternetwork: %w: %s", err, out)
	}
	node, _ := c.Node("node1")
	if !labrun.Poll(152, 200*time.Millisecond, func() bool {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", node.Netns, "nft", "list", "chains", "inet", "sluice").CombinedOutput()
		return !strings.Contains(string(out), "chain services ")
	}) {
		return errors.New("the lab agent's service proxy did not step aside within 30 s")
	}
	if err := labrun.CreateNamespace(ctx, b.cs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	if err := labrun.WaitServiceAccount(ctx, b.cs, namespace, 122, 500*time.Millisecond); err != nil {
		return fmt.Errorf("service account %s/default: %w", namespace, err)
	}
	for _, name := range []string{"a", "b"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "bench-proxy"}},
			Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{
				Name: "server", Image: "sluice-lab/testserver",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
			}}},
		}
		if _, err := b.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range []string{"a", "b"} {
		p, err := labrun.RunningPod(ctx, b.cs, namespace, name, deadline, 500*time.Millisecond)
		if err != nil {
			return fmt.Errorf("%w after 2 minutes", err)
		}
		b.podIP[name] = netip.MustParseAddr(p.Status.PodIP)
	}
	logf("pods: a %s, b %s", b.podIP["a"], b.podIP["b"])
	for _, args := range [][]string{
		{"ip", "route", "replace", c.ServiceCIDR.String(), "dev", "eth0"},
		{"ip", "route", "replace", lab.LabClusterCIDR, "via", node.Addr.String()},
	} {
		if err := host.Sh(args...); err != nil {
			return err
		}
	}
	// More ephemeral ports: fewer reused 4-tuples in the connection runs.
	os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644)
	for _, name := range []string{"a", "b"} {
		if got, err := probe(netip.AddrPortFrom(b.podIP[name], 80), time.Second); err != nil || got != name {
			return fmt.Errorf("pod %s not reachable from the external namespace: %q %v", name, got, err)
		}
	}
	svc, err := b.cs.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: sentinel, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // a lab kept from an earlier run (--keep-lab)
		svc, err = b.cs.CoreV1().Services(namespace).Get(ctx, sentinel, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	b.vip = netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	b.current = "a"
	es := sliceFor(sentinel, 80, []netip.Addr{b.podIP["a"]})
	b.slice, err = b.cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, es, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if old, gerr := b.cs.DiscoveryV1().EndpointSlices(namespace).Get(ctx, es.Name, metav1.GetOptions{}); gerr == nil {
			es.ResourceVersion = old.ResourceVersion
			b.slice, err = b.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, es, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return err
	}
	logf("sentinel %s → pod a", b.vip)
	return nil
}

func sliceFor(svc string, port int32, addrs []netip.Addr) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new(""), Port: new(port), Protocol: new(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)}})
	}
	return es
}

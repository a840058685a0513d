// Package netpolcases holds the upstream Kubernetes NetworkPolicy e2e cases
// (k8s test/e2e/network/netpol/network_policy.go, v1.36) as data: the cluster
// they run against (namespaces x, y, z with pods a, b, c serving ports 80 and
// 81 over TCP, UDP and SCTP), each case's policies and its expected
// reachability tables. It is shared by pkg/policy's unit test, which checks
// the reference model against the tables, and by the lab e2e test, which
// replays the cases with real probes against the agents' nftables rules, so
// both check the same thing.
//
// Upstream's egress policies also allow DNS; there is no DNS in these cases,
// so those rules are left out. Loopback pairs are not in the tables (upstream
// ignores them).
package netpolcases

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fixture: namespaces x, y, z labelled ns=<name> (the API server adds
// kubernetes.io/metadata.name=<name>), pods a, b, c in each labelled
// pod=<name>, each with the container ports ContainerPorts returns.
var (
	Namespaces = []string{"x", "y", "z"}
	PodNames   = []string{"a", "b", "c"}
	Ports      = []int32{80, 81}
	Protocols  = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
)

const (
	// NamespaceLabel and PodLabel are the fixture's own labels (value: the name).
	NamespaceLabel = "ns"
	PodLabel       = "pod"
	// MetadataNameLabel is the label the API server puts on every namespace.
	MetadataNameLabel = "kubernetes.io/metadata.name"
)

// PortName is upstream's container port name: serve-80-tcp, serve-81-udp, …
func PortName(port int32, proto corev1.Protocol) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto)))
}

// ContainerPorts are the fixture pods' container ports: 80 and 81 over TCP,
// UDP and SCTP, named by PortName, in that order (80/TCP, 80/UDP, 80/SCTP,
// 81/TCP, …).
func ContainerPorts() []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, port := range Ports {
		for _, proto := range Protocols {
			out = append(out, corev1.ContainerPort{Name: PortName(port, proto), ContainerPort: port, Protocol: proto})
		}
	}
	return out
}

// NamespaceObjects are the fixture's namespaces with their labels.
func NamespaceObjects() []corev1.Namespace {
	var out []corev1.Namespace
	for _, ns := range Namespaces {
		out = append(out, corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{NamespaceLabel: ns}},
		})
	}
	return out
}

// AllPods lists the fixture's pods as "ns/pod": x/a, x/b, x/c, y/a, …
func AllPods() []string {
	var out []string
	for _, ns := range Namespaces {
		for _, p := range PodNames {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// Truth is an upstream-style reachability table over the fixture pods,
// keyed by {"ns/pod" source, "ns/pod" destination}; loopback pairs are
// absent.
type Truth map[[2]string]bool

// NewTruth is the table with every (non-loopback) pair set to def.
func NewTruth(def bool) Truth {
	t := Truth{}
	for _, from := range AllPods() {
		for _, to := range AllPods() {
			if from != to {
				t[[2]string{from, to}] = def
			}
		}
	}
	return t
}

// peerMatch: "" is every pod, "x" every pod of x, "x/a" one pod.
func peerMatch(pattern, pod string) bool {
	return pattern == "" || pattern == pod || pattern == strings.SplitN(pod, "/", 2)[0]
}

// Expect sets every pair whose source matches from and destination matches to
// ("" every pod, "x" every pod of namespace x, "x/a" one pod).
func (t Truth) Expect(from, to string, v bool) Truth {
	for k := range t {
		if peerMatch(from, k[0]) && peerMatch(to, k[1]) {
			t[k] = v
		}
	}
	return t
}

// ExpectAllIngress sets every pair towards to; ExpectAllEgress every pair from from.
func (t Truth) ExpectAllIngress(to string, v bool) Truth  { return t.Expect("", to, v) }
func (t Truth) ExpectAllEgress(from string, v bool) Truth { return t.Expect(from, "", v) }

// Probe is one reachability table of a case: every pod to every pod on Port/Proto.
type Probe struct {
	Port  int
	Proto corev1.Protocol
	Want  Truth
}

package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Mode is the cluster isolation mode (ClusterNetwork spec.mode).
type Mode string

const (
	ModeSubnet        Mode = "Subnet"
	ModeMultitenant   Mode = "Multitenant"
	ModeNetworkPolicy Mode = "NetworkPolicy"
)

// namespaceNameLabel is set by the API server on every namespace; the model adds it when
// the caller's Namespace objects lack it (hand-built test fixtures), so selectors on it work.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// ContainerPort is one containerPort of a pod, the target of named ports.
type ContainerPort struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol // "" means TCP
}

// Pod is the part of a pod the model needs.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr // zero when the pod has no address yet; ipBlock peers never match it then
	Node      string     // spec.nodeName; "" when unscheduled
	Ports     []ContainerPort
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// PodFromCore converts a corev1.Pod. Ports come from the containers and from restartable
// (sidecar) init containers, which also serve. hostNetwork pods are refused: NetworkPolicy
// does not apply to them and they share the node's address, so callers model them as Node
// endpoints.
func PodFromCore(p *corev1.Pod) (Pod, error) {
	if p.Spec.HostNetwork {
		return Pod{}, fmt.Errorf("pod %s/%s: hostNetwork pods are not modelled as pods; use a Node endpoint", p.Namespace, p.Name)
	}
	out := Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName}
	if p.Status.PodIP != "" {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return Pod{}, fmt.Errorf("pod %s/%s: status.podIP %q: %w", p.Namespace, p.Name, p.Status.PodIP, err)
		}
		out.IP = ip.Unmap()
	}
	add := func(cs []corev1.Container, sidecarOnly bool) {
		for _, c := range cs {
			if sidecarOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, cp := range c.Ports {
				out.Ports = append(out.Ports, ContainerPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
	}
	add(p.Spec.InitContainers, true)
	add(p.Spec.Containers, false)
	return out, nil
}

// Input is everything the model is built from.
type Input struct {
	Mode       Mode // "" means NetworkPolicy, the ClusterNetwork default
	Namespaces []corev1.Namespace
	Pods       []Pod
	Policies   []networkingv1.NetworkPolicy
	// VNIDs maps namespace name to its VNID (Multitenant only). 0 is global.
	VNIDs map[string]uint32
}

// Model answers reachability questions. It is immutable after Compile and safe for
// concurrent use.
type Model struct {
	mode     Mode
	nsLabels map[string]labels.Set
	pods     map[string]*Pod // by namespace/name
	podsByIP map[netip.Addr][]*Pod
	policies map[string][]*compiledPolicy // by namespace, sorted by name
	vnids    map[string]uint32
}

type compiledPolicy struct {
	key       string // namespace/name
	namespace string
	podSel    labels.Selector
	ingress   bool // selects pods for ingress isolation (effective policyTypes)
	egress    bool
	inRules   []compiledRule
	outRules  []compiledRule
}

type compiledRule struct {
	peers []compiledPeer // nil: all peers
	ports []compiledPort // nil: all ports and protocols
}

type compiledPeer struct {
	podSel  labels.Selector // nil: not set
	nsSel   labels.Selector // nil: not set (the policy's own namespace)
	ipBlock *compiledIPBlock
}

type compiledIPBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

type compiledPort struct {
	protocol corev1.Protocol
	port     int32 // 0: every port of protocol
	endPort  int32 // inclusive; == port when not a range
	name     string
}

// Compile validates every policy and builds the model. It fails, listing every problem
// (policy, field path, value), rather than ignore something it cannot represent.
func Compile(in Input) (*Model, error) {
	m := &Model{
		mode:     in.Mode,
		nsLabels: map[string]labels.Set{},
		pods:     map[string]*Pod{},
		podsByIP: map[netip.Addr][]*Pod{},
		policies: map[string][]*compiledPolicy{},
		vnids:    in.VNIDs,
	}
	if m.mode == "" {
		m.mode = ModeNetworkPolicy
	}
	var errs []error
	switch m.mode {
	case ModeSubnet, ModeMultitenant, ModeNetworkPolicy:
	default:
		errs = append(errs, fmt.Errorf("mode %q: must be one of Subnet, Multitenant, NetworkPolicy", in.Mode))
	}
	for _, ns := range in.Namespaces {
		if _, dup := m.nsLabels[ns.Name]; dup {
			errs = append(errs, fmt.Errorf("namespace %q: duplicate", ns.Name))
			continue
		}
		m.nsLabels[ns.Name] = NamespaceLabels(&ns)
	}
	for i := range in.Pods {
		p := in.Pods[i] // copy: the model never aliases caller memory it might mutate
		p.IP = p.IP.Unmap()
		if _, ok := m.nsLabels[p.Namespace]; !ok {
			errs = append(errs, fmt.Errorf("pod %s: namespace %q not in the input", p.Key(), p.Namespace))
			continue
		}
		if _, dup := m.pods[p.Key()]; dup {
			errs = append(errs, fmt.Errorf("pod %s: duplicate", p.Key()))
			continue
		}
		m.pods[p.Key()] = &p
		if p.IP.IsValid() {
			m.podsByIP[p.IP] = append(m.podsByIP[p.IP], &p)
		}
	}
	for i := range in.Policies {
		np := &in.Policies[i]
		if fe := Validate(np); len(fe) > 0 {
			errs = append(errs, &InvalidPolicyError{Policy: np.Namespace + "/" + np.Name, Errs: fe})
			continue
		}
		cp := compilePolicy(np)
		m.policies[np.Namespace] = append(m.policies[np.Namespace], cp)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, ps := range m.policies {
		sort.Slice(ps, func(i, j int) bool { return ps[i].key < ps[j].key })
	}
	return m, nil
}

// NamespaceLabels are a namespace's labels as selectors see them: with
// kubernetes.io/metadata.name, which the API server sets on every namespace
// and which hand-built inputs may lack.
func NamespaceLabels(ns *corev1.Namespace) labels.Set {
	set := labels.Set{}
	for k, v := range ns.Labels {
		set[k] = v
	}
	if _, ok := set[namespaceNameLabel]; !ok {
		set[namespaceNameLabel] = ns.Name
	}
	return set
}

// EffectiveTypes are the directions np isolates: spec.policyTypes when set,
// else the API server's defaulting (Ingress always, Egress iff egress rules
// exist).
func EffectiveTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// MustSelector converts a selector Validate has already accepted.
func MustSelector(ls *metav1.LabelSelector) labels.Selector {
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		panic(fmt.Sprintf("policy: selector accepted by Validate failed to convert: %v", err))
	}
	return s
}

func compilePolicy(np *networkingv1.NetworkPolicy) *compiledPolicy {
	cp := &compiledPolicy{
		key:       np.Namespace + "/" + np.Name,
		namespace: np.Namespace,
		podSel:    MustSelector(&np.Spec.PodSelector),
	}
	cp.ingress, cp.egress = EffectiveTypes(np)
	for _, r := range np.Spec.Ingress {
		cp.inRules = append(cp.inRules, compileRule(r.From, r.Ports))
	}
	for _, r := range np.Spec.Egress {
		cp.outRules = append(cp.outRules, compileRule(r.To, r.Ports))
	}
	return cp
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) compiledRule {
	var r compiledRule
	for _, p := range peers {
		var c compiledPeer
		if p.PodSelector != nil {
			c.podSel = MustSelector(p.PodSelector)
		}
		if p.NamespaceSelector != nil {
			c.nsSel = MustSelector(p.NamespaceSelector)
		}
		if p.IPBlock != nil {
			b := &compiledIPBlock{cidr: netip.MustParsePrefix(p.IPBlock.CIDR).Masked()}
			for _, e := range p.IPBlock.Except {
				b.except = append(b.except, netip.MustParsePrefix(e).Masked())
			}
			c.ipBlock = b
		}
		r.peers = append(r.peers, c)
	}
	for _, p := range ports {
		c := compiledPort{protocol: corev1.ProtocolTCP}
		if p.Protocol != nil {
			c.protocol = *p.Protocol
		}
		if p.Port != nil {
			if p.Port.Type == intstr.String {
				c.name = p.Port.StrVal
			} else {
				c.port, c.endPort = p.Port.IntVal, p.Port.IntVal
				if p.EndPort != nil {
					c.endPort = *p.EndPort
				}
			}
		}
		r.ports = append(r.ports, c)
	}
	return r
}

// Mode is the model's isolation mode.
func (m *Model) Mode() Mode { return m.mode }

// EndpointForIP returns the pod endpoint whose IP is ip, or an external endpoint when no pod
// (or more than one, which is a stale cache) has it. Node addresses are not known to the
// model: callers build Node endpoints themselves.
func (m *Model) EndpointForIP(ip netip.Addr) Endpoint {
	ip = ip.Unmap()
	if ps := m.podsByIP[ip]; len(ps) == 1 {
		return PodEndpoint(ps[0].Namespace, ps[0].Name)
	}
	return ExternalEndpoint(ip)
}

// policyKeys lists keys for reasons.
func policyKeys(ps []*compiledPolicy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.key
	}
	return out
}

func joinOr(s []string, none string) string {
	if len(s) == 0 {
		return none
	}
	return strings.Join(s, ",")
}

package policy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// EndpointKind says what an Endpoint is.
type EndpointKind int

const (
	// EndpointPod is a pod of the model, named by namespace and name.
	EndpointPod EndpointKind = iota + 1
	// EndpointExternal is an address outside the pod network.
	EndpointExternal
	// EndpointNode is a node's own address (host network). It always reaches the pods on
	// that node; elsewhere it is treated like an external address.
	EndpointNode
)

// Endpoint is one end of a connection.
type Endpoint struct {
	Kind      EndpointKind
	Namespace string     // EndpointPod
	Name      string     // EndpointPod
	IP        netip.Addr // EndpointExternal, EndpointNode (a pod's IP comes from the model)
	Node      string     // EndpointNode: the node's name
}

// PodEndpoint names a pod of the model.
func PodEndpoint(namespace, name string) Endpoint {
	return Endpoint{Kind: EndpointPod, Namespace: namespace, Name: name}
}

// ExternalEndpoint is an address outside the pod network.
func ExternalEndpoint(ip netip.Addr) Endpoint { return Endpoint{Kind: EndpointExternal, IP: ip} }

// NodeEndpoint is node name's own address ip.
func NodeEndpoint(name string, ip netip.Addr) Endpoint {
	return Endpoint{Kind: EndpointNode, Node: name, IP: ip}
}

func (e Endpoint) String() string {
	switch e.Kind {
	case EndpointPod:
		return e.Namespace + "/" + e.Name
	case EndpointExternal:
		return "external " + e.IP.String()
	case EndpointNode:
		return "node " + e.Node + " (" + e.IP.String() + ")"
	}
	return fmt.Sprintf("invalid endpoint kind %d", e.Kind)
}

// Query asks whether Src may open a connection to Dst on Port/Protocol. Protocol "" is TCP.
// Port is ignored by rules without ports, so protocols without ports (ICMP) can be asked
// with Port 0; they only ever match rules that list no ports.
type Query struct {
	Src      Endpoint
	Dst      Endpoint
	Port     int
	Protocol corev1.Protocol
}

// Decision is the kind of answer.
type Decision string

const (
	DecisionSubnet        Decision = "Subnet"        // Subnet mode: flat network
	DecisionVNIDMatch     Decision = "VNIDMatch"     // Multitenant: same VNID
	DecisionVNIDGlobal    Decision = "VNIDGlobal"    // Multitenant: one side has VNID 0
	DecisionVNIDMismatch  Decision = "VNIDMismatch"  // Multitenant: denied
	DecisionLoopback      Decision = "Loopback"      // a pod to itself never leaves the pod
	DecisionNetworkPolicy Decision = "NetworkPolicy" // see Egress and Ingress
	DecisionInvalidQuery  Decision = "InvalidQuery"  // unknown pod, bad endpoint: denied
)

// Result is the outcome of one direction in NetworkPolicy mode.
type Result string

const (
	ResultNotIsolated   Result = "NotIsolated"   // no policy selects the pod for this direction
	ResultAllowedByRule Result = "AllowedByRule" // Rule says which
	ResultNoRuleMatches Result = "NoRuleMatches" // isolated, IsolatedBy lists the policies
	ResultNodeLocal     Result = "NodeLocal"     // ingress from the pod's own node
)

// RuleRef names the rule, peer and port that allowed a connection.
type RuleRef struct {
	Policy    string                  // namespace/name
	Direction networkingv1.PolicyType // Ingress or Egress
	Rule      int                     // index in spec.ingress / spec.egress
	Peer      int                     // index in from / to; -1: the rule has no peers (all)
	Port      int                     // index in ports; -1: the rule has no ports (all)
}

func (r RuleRef) String() string {
	dir, peers := "egress", "to"
	if r.Direction == networkingv1.PolicyTypeIngress {
		dir, peers = "ingress", "from"
	}
	base := fmt.Sprintf("spec.%s[%d]", dir, r.Rule)
	peer := base + "." + peers + " (empty: all peers)"
	if r.Peer >= 0 {
		peer = fmt.Sprintf("%s.%s[%d]", base, peers, r.Peer)
	}
	port := base + ".ports (empty: all ports)"
	if r.Port >= 0 {
		port = fmt.Sprintf("%s.ports[%d]", base, r.Port)
	}
	return fmt.Sprintf("%s %s, %s", r.Policy, peer, port)
}

// DirectionVerdict is the answer for one direction at one pod.
type DirectionVerdict struct {
	Direction  networkingv1.PolicyType
	Pod        string // namespace/name of the pod whose policies were evaluated
	Allowed    bool
	Result     Result
	IsolatedBy []string // policies selecting Pod for Direction, sorted; empty when not isolated
	Rule       *RuleRef // the first allowing rule (policies by name, rules, peers, ports in order)
	Reason     string
}

// Verdict is the answer to a Query.
type Verdict struct {
	Allowed  bool
	Decision Decision
	// Egress is set when the source is a pod and Decision is NetworkPolicy; Ingress when the
	// destination is a pod. A nil direction does not restrict.
	Egress  *DirectionVerdict
	Ingress *DirectionVerdict
	Reason  string
}

// Evaluate answers q. It never panics on bad queries: they are denied with
// DecisionInvalidQuery and a reason.
func (m *Model) Evaluate(q Query) Verdict {
	if q.Protocol == "" {
		q.Protocol = corev1.ProtocolTCP
	}
	src, err := m.resolve(q.Src)
	if err != nil {
		return Verdict{Decision: DecisionInvalidQuery, Reason: "source: " + err.Error()}
	}
	dst, err := m.resolve(q.Dst)
	if err != nil {
		return Verdict{Decision: DecisionInvalidQuery, Reason: "destination: " + err.Error()}
	}
	if src.pod != nil && src.pod == dst.pod {
		return Verdict{Allowed: true, Decision: DecisionLoopback, Reason: "a pod reaching itself does not leave the pod"}
	}
	switch m.mode {
	case ModeSubnet:
		return Verdict{Allowed: true, Decision: DecisionSubnet, Reason: "Subnet mode: every pod reaches every pod"}
	case ModeMultitenant:
		return m.evaluateVNID(src, dst)
	}

	v := Verdict{Allowed: true, Decision: DecisionNetworkPolicy}
	var reasons []string
	if src.pod != nil {
		v.Egress = m.direction(networkingv1.PolicyTypeEgress, src.pod, dst, q)
		v.Allowed = v.Allowed && v.Egress.Allowed
		reasons = append(reasons, v.Egress.Reason)
	}
	if dst.pod != nil {
		if q.Src.Kind == EndpointNode && q.Src.Node != "" && q.Src.Node == dst.pod.Node {
			v.Ingress = &DirectionVerdict{
				Direction: networkingv1.PolicyTypeIngress, Pod: dst.pod.Key(), Allowed: true, Result: ResultNodeLocal,
				Reason: fmt.Sprintf("ingress at %s: from its own node %s, always allowed", dst.pod.Key(), q.Src.Node),
			}
		} else {
			v.Ingress = m.direction(networkingv1.PolicyTypeIngress, dst.pod, src, q)
		}
		v.Allowed = v.Allowed && v.Ingress.Allowed
		reasons = append(reasons, v.Ingress.Reason)
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "neither end is a pod: NetworkPolicy does not apply")
	}
	v.Reason = strings.Join(reasons, "; ")
	return v
}

// resolved is an endpoint with its pod (if any) looked up.
type resolved struct {
	ep  Endpoint
	pod *Pod
	ip  netip.Addr
}

func (m *Model) resolve(e Endpoint) (resolved, error) {
	switch e.Kind {
	case EndpointPod:
		p, ok := m.pods[e.Namespace+"/"+e.Name]
		if !ok {
			return resolved{}, fmt.Errorf("pod %s/%s is not in the model", e.Namespace, e.Name)
		}
		return resolved{ep: e, pod: p, ip: p.IP}, nil
	case EndpointExternal, EndpointNode:
		if !e.IP.IsValid() {
			return resolved{}, fmt.Errorf("%s has no IP", e)
		}
		return resolved{ep: e, ip: e.IP.Unmap()}, nil
	}
	return resolved{}, fmt.Errorf("endpoint kind %d is not valid", e.Kind)
}

func (m *Model) vnidOf(r resolved) (uint32, string, error) {
	if r.pod == nil {
		// Nodes and the outside world enter the pod network through the node, which is
		// global (VNID 0) in OpenShift SDN's multitenant mode.
		return 0, r.ep.String(), nil
	}
	id, ok := m.vnids[r.pod.Namespace]
	if !ok {
		return 0, "", fmt.Errorf("namespace %q of pod %s has no VNID", r.pod.Namespace, r.pod.Key())
	}
	return id, fmt.Sprintf("%s (namespace %s, VNID %d)", r.pod.Key(), r.pod.Namespace, id), nil
}

func (m *Model) evaluateVNID(src, dst resolved) Verdict {
	s, sd, err := m.vnidOf(src)
	if err != nil {
		return Verdict{Decision: DecisionVNIDMismatch, Reason: "Multitenant: " + err.Error() + ", denied"}
	}
	d, dd, err := m.vnidOf(dst)
	if err != nil {
		return Verdict{Decision: DecisionVNIDMismatch, Reason: "Multitenant: " + err.Error() + ", denied"}
	}
	switch {
	case src.pod == nil || dst.pod == nil || s == 0 || d == 0:
		return Verdict{Allowed: true, Decision: DecisionVNIDGlobal, Reason: fmt.Sprintf("Multitenant: %s → %s, a global (VNID 0) side reaches and is reached by all", sd, dd)}
	case s == d:
		return Verdict{Allowed: true, Decision: DecisionVNIDMatch, Reason: fmt.Sprintf("Multitenant: %s → %s, same VNID", sd, dd)}
	}
	return Verdict{Decision: DecisionVNIDMismatch, Reason: fmt.Sprintf("Multitenant: VNID mismatch, %s → %s", sd, dd)}
}

// direction evaluates the policies of pod for dir; peer is the other end, and q's port is
// always on the destination (dst pod for named ports is the peer for egress, pod for ingress).
func (m *Model) direction(dir networkingv1.PolicyType, pod *Pod, peer resolved, q Query) *DirectionVerdict {
	dv := &DirectionVerdict{Direction: dir, Pod: pod.Key()}
	name := strings.ToLower(string(dir))
	podLabels := labels.Set(pod.Labels)
	var isolating []*compiledPolicy
	for _, cp := range m.policies[pod.Namespace] {
		if (dir == networkingv1.PolicyTypeIngress && !cp.ingress) || (dir == networkingv1.PolicyTypeEgress && !cp.egress) {
			continue
		}
		if cp.podSel.Matches(podLabels) {
			isolating = append(isolating, cp)
		}
	}
	if len(isolating) == 0 {
		dv.Allowed, dv.Result = true, ResultNotIsolated
		dv.Reason = fmt.Sprintf("%s at %s: not isolated (no policy selects it for %s)", name, pod.Key(), name)
		return dv
	}
	dv.IsolatedBy = policyKeys(isolating)
	dstPod := pod
	if dir == networkingv1.PolicyTypeEgress {
		dstPod = peer.pod // nil for an external or node destination
	}
	for _, cp := range isolating {
		rules := cp.inRules
		if dir == networkingv1.PolicyTypeEgress {
			rules = cp.outRules
		}
		for ri, r := range rules {
			peerIdx := m.matchPeers(cp, r.peers, peer)
			if peerIdx == noMatch {
				continue
			}
			portIdx := matchPorts(r.ports, dstPod, q)
			if portIdx == noMatch {
				continue
			}
			dv.Allowed, dv.Result = true, ResultAllowedByRule
			dv.Rule = &RuleRef{Policy: cp.key, Direction: dir, Rule: ri, Peer: peerIdx, Port: portIdx}
			dv.Reason = fmt.Sprintf("%s at %s: allowed by %s", name, pod.Key(), dv.Rule)
			return dv
		}
	}
	dv.Result = ResultNoRuleMatches
	dv.Reason = fmt.Sprintf("%s at %s: isolated by policies %s for %s, no rule matches", name, pod.Key(), joinOr(dv.IsolatedBy, "-"), name)
	return dv
}

const noMatch = -2

// matchPeers returns the index of the first matching peer, -1 when the rule has no peers
// (all), or noMatch.
func (m *Model) matchPeers(cp *compiledPolicy, peers []compiledPeer, other resolved) int {
	if len(peers) == 0 {
		return -1
	}
	for i, p := range peers {
		if m.matchPeer(cp, p, other) {
			return i
		}
	}
	return noMatch
}

func (m *Model) matchPeer(cp *compiledPolicy, p compiledPeer, other resolved) bool {
	if p.ipBlock != nil {
		// Applied to any address, pod addresses included (see doc.go).
		if !other.ip.IsValid() || !p.ipBlock.cidr.Contains(other.ip) {
			return false
		}
		for _, e := range p.ipBlock.except {
			if e.Contains(other.ip) {
				return false
			}
		}
		return true
	}
	if other.pod == nil {
		return false // selectors only ever select pods
	}
	if p.nsSel == nil {
		if other.pod.Namespace != cp.namespace {
			return false
		}
	} else if !p.nsSel.Matches(m.nsLabels[other.pod.Namespace]) {
		return false
	}
	return p.podSel == nil || p.podSel.Matches(labels.Set(other.pod.Labels))
}

// matchPorts returns the index of the first matching port, -1 when the rule has no ports
// (all), or noMatch. dst is the destination pod (nil when the destination is not a pod),
// against whose containerPorts named ports resolve.
func matchPorts(ports []compiledPort, dst *Pod, q Query) int {
	if len(ports) == 0 {
		return -1
	}
	for i, p := range ports {
		if p.protocol != q.Protocol {
			continue
		}
		switch {
		case p.name != "":
			if dst == nil {
				continue // an external destination has no named ports
			}
			for _, cp := range dst.Ports {
				proto := cp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if cp.Name == p.name && proto == p.protocol && int(cp.Port) == q.Port {
					return i
				}
			}
		case p.port == 0:
			return i
		case q.Port >= int(p.port) && q.Port <= int(p.endPort):
			return i
		}
	}
	return noMatch
}

// Package netpol compiles pod isolation — NetworkPolicy, Multitenant VNIDs, or none in Subnet
// mode — into the node's nftables table `inet sluice`. It is pure: Build turns the policy
// inputs (the same policy.Input the reference model in pkg/policy evaluates) into the desired
// objects of one node, Render / Prune / RenderPartial write them into a knftables
// transaction. The agent owns the informers and the sync loop. See README.md for the table
// contract (chains, hooks, priorities, sets, maps and names).
package netpol

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/policy"
)

// Base chains (the hooks isolation attaches to) and the static chains, maps and sets. They
// exist in every mode, so a mode change is an ordinary re-render.
const (
	ChainForwardEgress  = "np-forward-egress"  // filter forward, priority filter (0)
	ChainForwardIngress = "np-forward-ingress" // filter forward, priority IngressPriority (10)
	ChainInputEgress    = "np-input-egress"    // filter input, priority filter (0)
	ChainEgress         = "np-egress"          // dispatch on the source pod
	ChainIngress        = "np-ingress"         // dispatch on the destination pod
	MapEgressPods       = "np-egress-pods"     // local pod IP : verdict
	MapIngressPods      = "np-ingress-pods"    // local pod IP : verdict
	SetLoopback         = "np-loopback"        // local pod IP . the same IP
	SetTenantGlobal     = "tenant-global"      // Multitenant: VNID 0 pods and node addresses
)

// IngressPriority is the priority of ChainForwardIngress: after ChainForwardEgress (priority
// filter, 0), so that an egress accept is not final and ingress is still checked.
const IngressPriority = knftables.BaseChainPriority("10")

// BaseChains are isolation's chains attached to hooks.
var BaseChains = []dataplane.BaseChain{
	{Name: ChainInputEgress, Type: knftables.FilterType, Hook: knftables.InputHook, Priority: knftables.FilterPriority,
		Does: "egress of local pods to this node (Multitenant and NetworkPolicy modes)"},
	{Name: ChainForwardEgress, Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: knftables.FilterPriority,
		Does: "egress of local pods, after DNAT (sees the endpoint, not the service address)"},
	{Name: ChainForwardIngress, Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: IngressPriority,
		Does: "ingress of local pods, after egress (an egress accept does not end the check)"},
}

// PodIfPattern matches every pod's host-side interface (dataplane.PodIfPrefix).
const PodIfPattern = `"` + dataplane.PodIfPrefix + `*"`

// Prefixes of the per-object chains and sets; Prune owns exactly the names made of one of
// them, an 8-character base32 hash and a dash (np-*) or a decimal VNID (tenant-*).
const (
	prefixPolicyIngress   = "np-in-"
	prefixPolicyEgress    = "np-eg-"
	prefixIsolatedIngress = "np-isolated-in-"
	prefixIsolatedEgress  = "np-isolated-eg-"
	prefixPeers           = "np-peers-"
	prefixCIDR            = "np-cidr-"
	prefixPort            = "np-port-"
	prefixTenant          = "tenant-"
	suffixTenantSet       = "-pods"
)

// Name and comment limits: nftables allows 256-byte names and 128-byte comments.
const (
	maxNameLen     = 200
	maxReadableLen = 100
	maxCommentLen  = 120
)

// State is the desired isolation part of one node's table: every chain, set and map Build
// decided on, in a deterministic order (by name; elements by key). It is a value: Build
// returns a fresh one, and Render only reads it.
type State struct {
	Mode   policy.Mode // never "": Build resolves the NetworkPolicy default
	Chains []Chain     // sorted by name
	Sets   []Set       // sets and verdict maps, sorted by name
}

// Chain is one chain. A base chain has a Hook (its type is always filter).
type Chain struct {
	Name     string
	Comment  string
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Rules    []Rule
}

// Rule is one rule of a chain, in nft syntax.
type Rule struct {
	Rule    string
	Comment string
}

// Set is a named set or, when Map is set, a verdict map (Type : verdict).
type Set struct {
	Name     string
	Type     string // key type, e.g. "ipv4_addr" or "ipv4_addr . inet_proto . inet_service"
	Map      bool
	Interval bool
	Comment  string
	Elements []Element // sorted by key
}

// Element is one set or map element; Value is the verdict of a map element.
type Element struct {
	Key     []string
	Value   string
	Comment string
}

// Build computes the desired isolation objects of node for in. nodeIPs are the addresses of
// the cluster's nodes that are not pods — host addresses and each node's overlay address
// (the VXLAN device's address lies inside the cluster CIDRs): in Multitenant mode they are
// global (VNID 0) sources, like every address outside the cluster CIDRs. Other modes ignore
// them.
//
// Build validates in with policy.Compile and fails on anything the reference model refuses
// (each error names the policy, the field path and the value), so an invalid policy is
// never widened or silently dropped: the caller keeps enforcing its last good State.
func Build(in policy.Input, node string, nodeIPs []netip.Addr) (State, error) {
	if _, err := policy.Compile(in); err != nil {
		return State{}, err
	}
	b := newBuilder(in)
	b.addStatic()
	local := b.localPods(node)
	for _, p := range local {
		b.addElement(SetLoopback, Element{Key: []string{p.IP.String(), p.IP.String()}, Comment: p.Key()})
	}
	switch b.mode {
	case policy.ModeNetworkPolicy:
		b.networkPolicy(local)
	case policy.ModeMultitenant:
		b.multitenant(local, nodeIPs)
	}
	return b.state(), nil
}

type builder struct {
	in       policy.Input
	mode     policy.Mode
	nsLabels map[string]labels.Set
	pods     []*policy.Pod // pods with an IPv4 address no other pod has, by IP
	chains   map[string]*Chain
	sets     map[string]*Set
	policies map[string][]*compiled   // by namespace, sorted by name
	byVNID   map[uint32][]*policy.Pod // Multitenant: b.pods by their namespace's VNID, in b.pods' order
}

// compiled is a policy with its selector and effective policyTypes.
type compiled struct {
	key     string
	np      *networkingv1.NetworkPolicy
	podSel  labels.Selector
	ingress bool
	egress  bool
}

func newBuilder(in policy.Input) *builder {
	b := &builder{
		in:       in,
		mode:     in.Mode,
		nsLabels: map[string]labels.Set{},
		chains:   map[string]*Chain{},
		sets:     map[string]*Set{},
		policies: map[string][]*compiled{},
	}
	if b.mode == "" {
		b.mode = policy.ModeNetworkPolicy
	}
	for i := range in.Namespaces {
		b.nsLabels[in.Namespaces[i].Name] = policy.NamespaceLabels(&in.Namespaces[i])
	}
	// An address held by two pods is a stale cache: like the model's EndpointForIP, it
	// belongs to no pod. It joins no peer set and no dispatch map (a local one is dropped).
	count := map[netip.Addr]int{}
	for i := range in.Pods {
		count[in.Pods[i].IP.Unmap()]++
	}
	for i := range in.Pods {
		p := in.Pods[i]
		p.IP = p.IP.Unmap()
		if p.IP.Is4() && count[p.IP] == 1 {
			b.pods = append(b.pods, &p)
		}
	}
	slices.SortFunc(b.pods, func(x, y *policy.Pod) int { return x.IP.Compare(y.IP) })
	for i := range in.Policies {
		np := &in.Policies[i]
		c := &compiled{key: np.Namespace + "/" + np.Name, np: np, podSel: policy.MustSelector(&np.Spec.PodSelector)}
		c.ingress, c.egress = policy.EffectiveTypes(np)
		b.policies[np.Namespace] = append(b.policies[np.Namespace], c)
	}
	for _, ps := range b.policies {
		slices.SortFunc(ps, func(x, y *compiled) int { return strings.Compare(x.key, y.key) })
	}
	return b
}

func (b *builder) localPods(node string) []*policy.Pod {
	var out []*policy.Pod
	for _, p := range b.pods {
		if p.Node == node {
			out = append(out, p)
		}
	}
	return out
}

// addStatic adds the static objects. The base chains accept return traffic first; the
// isolating modes then let a pod reach itself (a hairpin through a service) and dispatch
// packets from local pod interfaces (egress) and to them (ingress) through the verdict maps.
// An address the maps do not hold on a pod interface is dropped: fail closed.
func (b *builder) addStatic() {
	established := Rule{Rule: "ct state established,related accept"}
	loopback := Rule{Rule: "ip saddr . ip daddr @" + SetLoopback + " accept", Comment: "a pod reaching itself"}
	fwdEg := []Rule{established, {Rule: "ct state invalid drop"}}
	inEg := []Rule{established}
	fwdIn := []Rule{established}
	if b.mode != policy.ModeSubnet {
		egress := Rule{Rule: "iifname " + PodIfPattern + " jump " + ChainEgress}
		fwdEg = append(fwdEg, loopback, egress)
		inEg = append(inEg, egress)
		fwdIn = append(fwdIn, loopback, Rule{Rule: "oifname " + PodIfPattern + " jump " + ChainIngress})
	}
	base := func(name, comment string, rules []Rule) *Chain {
		c := dataplane.Lookup(BaseChains, name)
		return &Chain{Name: name, Hook: c.Hook, Priority: c.Priority, Comment: comment, Rules: rules}
	}
	b.chains[ChainForwardEgress] = base(ChainForwardEgress, "isolation: egress of local pods", fwdEg)
	b.chains[ChainInputEgress] = base(ChainInputEgress, "isolation: egress of local pods to this node", inEg)
	b.chains[ChainForwardIngress] = base(ChainForwardIngress, "isolation: ingress of local pods", fwdIn)
	b.chains[ChainEgress] = &Chain{Name: ChainEgress, Comment: "dispatch on the local source pod", Rules: []Rule{
		{Rule: "ip saddr vmap @" + MapEgressPods},
		{Rule: "counter drop", Comment: "not a known local pod"},
	}}
	b.chains[ChainIngress] = &Chain{Name: ChainIngress, Comment: "dispatch on the local destination pod", Rules: []Rule{
		{Rule: "ip daddr vmap @" + MapIngressPods},
		{Rule: "counter drop", Comment: "not a known local pod"},
	}}
	b.sets[MapEgressPods] = &Set{Name: MapEgressPods, Type: "ipv4_addr", Map: true, Comment: "local pod: egress verdict"}
	b.sets[MapIngressPods] = &Set{Name: MapIngressPods, Type: "ipv4_addr", Map: true, Comment: "local pod: ingress verdict"}
	b.sets[SetLoopback] = &Set{Name: SetLoopback, Type: "ipv4_addr . ipv4_addr", Comment: "local pod . itself"}
	b.sets[SetTenantGlobal] = &Set{Name: SetTenantGlobal, Type: "ipv4_addr", Comment: "Multitenant: VNID 0 pods and node addresses"}
}

// networkPolicy dispatches each local pod, per direction, to accept (not isolated) or to the
// chain of the set of policies isolating it, shared by every pod with the same set.
func (b *builder) networkPolicy(local []*policy.Pod) {
	for _, p := range local {
		for _, ingress := range []bool{true, false} {
			var isolating []*compiled
			for _, c := range b.policies[p.Namespace] {
				if (ingress && c.ingress || !ingress && c.egress) && c.podSel.Matches(labels.Set(p.Labels)) {
					isolating = append(isolating, c)
				}
			}
			verdict := "accept"
			if len(isolating) > 0 {
				verdict = "goto " + b.isolatedChain(isolating, ingress)
			}
			m := MapEgressPods
			if ingress {
				m = MapIngressPods
			}
			b.addElement(m, Element{Key: []string{p.IP.String()}, Value: verdict, Comment: p.Key()})
		}
	}
}

// isolatedChain is the chain for pods isolated by exactly ps in one direction: it jumps to
// each policy's rule chain (any accept is final) and drops what none allows.
func (b *builder) isolatedChain(ps []*compiled, ingress bool) string {
	keys := make([]string, len(ps))
	for i, c := range ps {
		keys[i] = c.key
	}
	prefix, dir := prefixIsolatedEgress, "egress"
	if ingress {
		prefix, dir = prefixIsolatedIngress, "ingress"
	}
	id := strings.Join(keys, ",")
	name := objectName(prefix, dir+"|"+id, keys[0])
	if _, ok := b.chains[name]; ok {
		return name
	}
	ch := &Chain{Name: name, Comment: dir + " isolated by " + id}
	for _, c := range ps {
		if rc := b.policyChain(c, ingress); rc != "" {
			ch.Rules = append(ch.Rules, Rule{Rule: "jump " + rc})
		}
	}
	ch.Rules = append(ch.Rules, Rule{Rule: "counter drop", Comment: "no " + dir + " rule allows"})
	b.chains[name] = ch
	return name
}

// policyChain returns the chain holding c's rules for one direction, or "" when they can
// allow nothing (no rules: the policy only isolates).
func (b *builder) policyChain(c *compiled, ingress bool) string {
	name := policyChainName(c.key, ingress)
	if ch, ok := b.chains[name]; ok {
		if len(ch.Rules) == 0 {
			return ""
		}
		return name
	}
	d := compileDirection(c.np, c.key, ingress)
	for i := range d.sets {
		if _, ok := b.sets[d.sets[i].name]; !ok {
			b.sets[d.sets[i].name] = b.newSet(&d.sets[i])
		}
	}
	// Remembered even when empty, so the next pod isolated by c does not rebuild it; state
	// leaves empty regular chains out.
	b.chains[name] = &Chain{Name: name, Comment: d.comment, Rules: d.rules}
	if len(d.rules) == 0 {
		return ""
	}
	return name
}

// newSet is a per-object set with its elements: every pod of the input that belongs in it.
func (b *builder) newSet(sp *setSpec) *Set {
	s := sp.set()
	if sp.kind == setCIDR {
		s.Elements = sp.cidrElements()
		return s
	}
	for _, p := range b.pods {
		if sp.kind == setPeers {
			nsLabels, known := b.nsLabels[p.Namespace]
			if sp.peerMatches(p, nsLabels, known) {
				s.Elements = append(s.Elements, Element{Key: []string{p.IP.String()}})
			}
		} else {
			s.Elements = append(s.Elements, sp.portElements(p)...)
		}
	}
	return s
}

// direction is one policy's compiled rules for one direction, with the per-object sets
// they refer to. It depends on the policy alone; the sets' elements depend on the pods.
type direction struct {
	comment string
	rules   []Rule
	sets    []setSpec // every set the rules name (and named ports of rules that allow nothing)
}

// policyChainName is the name of the chain of key's rules for one direction.
func policyChainName(key string, ingress bool) string {
	if ingress {
		return objectName(prefixPolicyIngress, "ingress|"+key, key)
	}
	return objectName(prefixPolicyEgress, "egress|"+key, key)
}

// compileDirection compiles np's rules for one direction.
func compileDirection(np *networkingv1.NetworkPolicy, key string, ingress bool) direction {
	d := direction{comment: key + " egress"}
	if ingress {
		d.comment = key + " ingress"
		for i, r := range np.Spec.Ingress {
			d.rules = append(d.rules, d.compileRule(np, r.From, r.Ports, true, fmt.Sprintf("%s ingress[%d]", key, i))...)
		}
	} else {
		for i, r := range np.Spec.Egress {
			d.rules = append(d.rules, d.compileRule(np, r.To, r.Ports, false, fmt.Sprintf("%s egress[%d]", key, i))...)
		}
	}
	return d
}

// compileRule compiles one NetworkPolicy rule: one accept per (peer, port) pair. No peers
// means every peer and no ports every port; a peer that can never match (an IPv6 ipBlock:
// the pod network is IPv4) contributes nothing, so a rule whose peers are all such allows
// nothing.
func (d *direction) compileRule(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, ingress bool, comment string) []Rule {
	addr := "ip daddr"
	if ingress {
		addr = "ip saddr"
	}
	peerExprs := []string{""}
	if len(peers) > 0 {
		peerExprs = nil
		for i := range peers {
			if e, ok := d.peerExpr(np, &peers[i], addr); ok {
				peerExprs = append(peerExprs, e)
			}
		}
	}
	portExprs := []string{""}
	if len(ports) > 0 {
		portExprs = nil
		for _, p := range ports {
			portExprs = append(portExprs, d.portExpr(p))
		}
	}
	var out []Rule
	for _, pe := range peerExprs {
		for _, po := range portExprs {
			out = append(out, Rule{Rule: knftables.Concat(pe, po, "accept"), Comment: comment})
		}
	}
	return out
}

func (d *direction) use(sp setSpec) {
	if !slices.ContainsFunc(d.sets, func(s setSpec) bool { return s.name == sp.name }) {
		d.sets = append(d.sets, sp)
	}
}

// setKind says where a per-object set's elements come from.
type setKind int

const (
	setPeers setKind = iota // pods matching a (namespace, pod) selector pair
	setCIDR                 // an ipBlock, fixed
	setPort                 // pods with a named containerPort
)

// setSpec is a per-object set a rule refers to: its definition and how to fill it.
type setSpec struct {
	name    string
	kind    setKind
	typ     string
	comment string
	// setPeers: pods of namespace (nsSel nil) or of namespaces nsSel matches, that podSel matches.
	namespace string
	nsSel     labels.Selector
	podSel    labels.Selector
	// setCIDR
	prefixes []netip.Prefix
	// setPort
	port  string
	proto corev1.Protocol
	l4    string
}

// set is the set's definition without elements.
func (sp *setSpec) set() *Set {
	return &Set{Name: sp.name, Type: sp.typ, Interval: sp.kind == setCIDR, Comment: sp.comment}
}

func (sp *setSpec) cidrElements() []Element {
	var out []Element
	for _, p := range sp.prefixes {
		out = append(out, Element{Key: []string{p.String()}})
	}
	return out
}

// peerMatches: p belongs in the peer set; nsLabels are its namespace's labels (known: the
// namespace is in the input).
func (sp *setSpec) peerMatches(p *policy.Pod, nsLabels labels.Set, known bool) bool {
	nsOK := p.Namespace == sp.namespace
	if sp.nsSel != nil {
		nsOK = known && sp.nsSel.Matches(nsLabels)
	}
	return nsOK && sp.podSel.Matches(labels.Set(p.Labels))
}

// portElements are p's elements in the named-port set.
func (sp *setSpec) portElements(p *policy.Pod) []Element {
	var out []Element
	for _, cp := range p.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cp.Name == sp.port && cpProto == sp.proto {
			out = append(out, Element{Key: []string{p.IP.String(), sp.l4, strconv.Itoa(int(cp.Port))}})
		}
	}
	return out
}

// peerExpr matches the peer's address (addr is "ip saddr" or "ip daddr") against a named
// set shared by every rule with the same peer.
func (d *direction) peerExpr(np *networkingv1.NetworkPolicy, peer *networkingv1.NetworkPolicyPeer, addr string) (string, bool) {
	if blk := peer.IPBlock; blk != nil {
		cidr := netip.MustParsePrefix(blk.CIDR).Masked()
		if !cidr.Addr().Is4() {
			return "", false
		}
		var except []netip.Prefix
		for _, e := range blk.Except {
			except = append(except, netip.MustParsePrefix(e).Masked())
		}
		slices.SortFunc(except, comparePrefix)
		id := cidr.String()
		for _, e := range except {
			id += " except " + e.String()
		}
		name := objectName(prefixCIDR, id, cidr.String())
		d.use(setSpec{name: name, kind: setCIDR, typ: "ipv4_addr", comment: truncate(id, maxCommentLen), prefixes: subtract(cidr, except)})
		return addr + " @" + name, true
	}
	// Selectors: namespaceSelector alone, podSelector alone (the policy's namespace), or both.
	nsID := "namespace=" + np.Namespace
	var nsSel labels.Selector
	if peer.NamespaceSelector != nil {
		nsSel = policy.MustSelector(peer.NamespaceSelector)
		nsID = "namespaces(" + nsSel.String() + ")"
	}
	var podSel labels.Selector = labels.Everything()
	if peer.PodSelector != nil {
		podSel = policy.MustSelector(peer.PodSelector)
	}
	id := nsID + " pods(" + podSel.String() + ")"
	name := objectName(prefixPeers, id, id)
	d.use(setSpec{name: name, kind: setPeers, typ: "ipv4_addr", comment: truncate(id, maxCommentLen), namespace: np.Namespace, nsSel: nsSel, podSel: podSel})
	return addr + " @" + name, true
}

// portExpr matches one NetworkPolicyPort on the packet's destination. A named port resolves
// per destination pod through a set of (pod address . protocol . port) shared by every rule
// naming the same port and protocol.
func (d *direction) portExpr(p networkingv1.NetworkPolicyPort) string {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	l4 := strings.ToLower(string(proto))
	switch {
	case p.Port == nil:
		return "meta l4proto " + l4
	case p.Port.Type == intstr.Int:
		ports := strconv.Itoa(int(p.Port.IntVal))
		if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
			ports += "-" + strconv.Itoa(int(*p.EndPort))
		}
		return "meta l4proto " + l4 + " th dport " + ports
	}
	name := objectName(prefixPort, p.Port.StrVal+"/"+l4, p.Port.StrVal+"/"+l4)
	d.use(setSpec{name: name, kind: setPort, typ: "ipv4_addr . inet_proto . inet_service", comment: "pods with port " + p.Port.StrVal + "/" + l4,
		port: p.Port.StrVal, proto: proto, l4: l4})
	return "ip daddr . meta l4proto . th dport @" + name
}

// multitenant dispatches each local pod's ingress to its VNID's chain (VNID 0: accept) and
// lets every local pod with a VNID send; pods of namespaces without a VNID are in neither
// map, so they are dropped both ways (the model denies them).
func (b *builder) multitenant(local []*policy.Pod, nodeIPs []netip.Addr) {
	b.byVNID = map[uint32][]*policy.Pod{}
	for _, p := range b.pods {
		if v, ok := b.in.VNIDs[p.Namespace]; ok {
			b.byVNID[v] = append(b.byVNID[v], p)
		}
	}
	for _, p := range b.byVNID[0] {
		b.addElement(SetTenantGlobal, Element{Key: []string{p.IP.String()}})
	}
	for _, a := range nodeIPs {
		if a = a.Unmap(); a.Is4() && !slices.ContainsFunc(b.pods, func(p *policy.Pod) bool { return p.IP == a }) {
			b.addElement(SetTenantGlobal, Element{Key: []string{a.String()}})
		}
	}
	for _, p := range local {
		v, ok := b.in.VNIDs[p.Namespace]
		if !ok {
			continue
		}
		b.addElement(MapEgressPods, Element{Key: []string{p.IP.String()}, Value: "accept", Comment: p.Key()})
		verdict := "accept"
		if v != 0 {
			verdict = "goto " + b.tenantChain(v)
		}
		b.addElement(MapIngressPods, Element{Key: []string{p.IP.String()}, Value: verdict, Comment: p.Key()})
	}
}

// tenantChain admits sources of VNID v, global sources (VNID 0 pods, node addresses, and
// anything outside the cluster CIDRs), and drops the rest.
func (b *builder) tenantChain(v uint32) string {
	name := prefixTenant + strconv.FormatUint(uint64(v), 10)
	if _, ok := b.chains[name]; ok {
		return name
	}
	set := name + suffixTenantSet
	s := &Set{Name: set, Type: "ipv4_addr", Comment: "pods of VNID " + strconv.FormatUint(uint64(v), 10)}
	for _, p := range b.byVNID[v] {
		s.Elements = append(s.Elements, Element{Key: []string{p.IP.String()}})
	}
	b.sets[set] = s
	b.chains[name] = &Chain{Name: name, Comment: "ingress of VNID " + strconv.FormatUint(uint64(v), 10), Rules: []Rule{
		{Rule: "ip saddr @" + set + " accept"},
		{Rule: "ip saddr @" + SetTenantGlobal + " accept"},
		{Rule: "ip saddr != @" + dataplane.SetClusterCIDR + " accept", Comment: "not from the pod network: global"},
		{Rule: "counter drop", Comment: "another VNID, or an unknown pod address"},
	}}
	return name
}

func (b *builder) addElement(set string, e Element) {
	s := b.sets[set]
	s.Elements = append(s.Elements, e)
}

// state freezes the builder: policy chains without rules are left out (nothing refers to
// them), everything is sorted and element duplicates are removed.
func (b *builder) state() State {
	st := State{Mode: b.mode}
	for _, ch := range b.chains {
		if ch.Hook == "" && len(ch.Rules) == 0 {
			continue
		}
		st.Chains = append(st.Chains, *ch)
	}
	for _, s := range b.sets {
		slices.SortFunc(s.Elements, func(x, y Element) int { return strings.Compare(elementKey(x), elementKey(y)) })
		s.Elements = slices.CompactFunc(s.Elements, func(x, y Element) bool { return elementKey(x) == elementKey(y) })
		st.Sets = append(st.Sets, *s)
	}
	slices.SortFunc(st.Chains, func(x, y Chain) int { return strings.Compare(x.Name, y.Name) })
	slices.SortFunc(st.Sets, func(x, y Set) int { return strings.Compare(x.Name, y.Name) })
	return st
}

func elementKey(e Element) string { return strings.Join(e.Key, " . ") }

// objectName is prefix + an 8-character base32 hash of id + "-" + a readable part reduced
// to nftables identifier characters, capped at maxNameLen bytes. The hash keeps names
// distinct when the readable part is cut or sanitised.
func objectName(prefix, id, readable string) string {
	h := sha256.Sum256([]byte(prefix + id))
	var r strings.Builder
	for _, c := range truncate(readable, maxReadableLen) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '/', c == '_', c == '-':
			r.WriteRune(c)
		default:
			r.WriteByte('_')
		}
	}
	return truncate(prefix+base32.StdEncoding.EncodeToString(h[:])[:8]+"-"+r.String(), maxNameLen)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// subtract returns cidr minus the except prefixes as a minimal list of IPv4 prefixes.
func subtract(cidr netip.Prefix, except []netip.Prefix) []netip.Prefix {
	type span struct{ lo, hi uint64 } // inclusive; uint64 so that hi+1 never overflows
	bounds := func(p netip.Prefix) span {
		a := p.Addr().As4()
		lo := uint64(a[0])<<24 | uint64(a[1])<<16 | uint64(a[2])<<8 | uint64(a[3])
		return span{lo, lo + 1<<(32-p.Bits()) - 1}
	}
	spans := []span{bounds(cidr)}
	for _, e := range except {
		x := bounds(e)
		var next []span
		for _, s := range spans {
			if x.hi < s.lo || x.lo > s.hi {
				next = append(next, s)
				continue
			}
			if x.lo > s.lo {
				next = append(next, span{s.lo, x.lo - 1})
			}
			if x.hi < s.hi {
				next = append(next, span{x.hi + 1, s.hi})
			}
		}
		spans = next
	}
	var out []netip.Prefix
	for _, s := range spans {
		for lo := s.lo; lo <= s.hi; {
			size := uint64(1) << 32
			if lo != 0 {
				size = lo & -lo
			}
			for lo+size-1 > s.hi {
				size >>= 1
			}
			bits := 32
			for n := size; n > 1; n >>= 1 {
				bits--
			}
			out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(lo >> 24), byte(lo >> 16), byte(lo >> 8), byte(lo)}), bits))
			lo += size
		}
	}
	return out
}

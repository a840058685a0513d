package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// Base chains (the hooks the proxy attaches to). See README.md.
const (
	ChainNATPrerouting  = "svc-nat-prerouting"
	ChainNATOutput      = "svc-nat-output"
	ChainNATPostrouting = "svc-nat-postrouting"
	ChainFilterInput    = "svc-filter-input"
	ChainFilterForward  = "svc-filter-forward"
	ChainFilterOutput   = "svc-filter-output"
	// Before DNAT, in the prerouting hook: load-balancer source ranges.
	ChainFilterPrerouting = "svc-filter-prerouting"
	// After DNAT (filter priority): whatever still goes to a service
	// address was not a service port.
	ChainFilterForwardPost = "svc-filter-forward-post"
	ChainFilterOutputPost  = "svc-filter-output-post"
)

// Regular chains, maps and sets of the proxy.
const (
	ChainServices         = "services"
	ChainMarkMasq         = "mark-for-masquerade"
	ChainMasquerading     = "masquerading"
	ChainServiceEPCheck   = "service-endpoints-check"
	ChainNodePortEPCheck  = "nodeport-endpoints-check"
	ChainReject           = "reject-chain"
	ChainFirewallCheck    = "firewall-check"
	ChainClusterIPsCheck  = "cluster-ips-check"
	MapServiceIPs         = "service-ips"
	MapServiceNodePorts   = "service-nodeports"
	MapNoEndpointServices = "no-endpoint-services"
	MapNoEndpointNodePort = "no-endpoint-nodeports"
	SetNodePortIPs        = "nodeport-ips"
	// SetClusterIPs holds every allocated cluster IP: traffic to one of them
	// on a port no service serves is rejected, traffic to an unallocated
	// address of the service network dropped.
	SetClusterIPs = "cluster-ips"
	// SetFirewallIPs: load-balancer destination . protocol . port of the
	// ports with loadBalancerSourceRanges; SetFirewallAllow: the same
	// followed by an admitted source range. A new connection to the first
	// whose source the second does not admit is dropped before DNAT.
	SetFirewallIPs   = "firewall-ips"
	SetFirewallAllow = "firewall-allow"
	// MapEndpointsPrefix + protocol (tcp, udp, sctp) names the maps of the
	// shared picking chains: destination . port . index → endpoint . port.
	MapEndpointsPrefix = "service-endpoints-"
)

// MaxSharedPick is the largest endpoint count the shared picking chains
// serve; a service port with more endpoints gets its own chain.
const MaxSharedPick = 32

var protocols = []string{"tcp", "udp", "sctp"}

// Shared picking chains (per protocol and endpoint count N, 1 ≤ N ≤
// MaxSharedPick): pick-<p>-<N> DNATs through the protocol's endpoint map
// with numgen random mod N; pick-masq-<p>-<N> first marks sources outside
// the pod network for masquerade (cluster IPs); pick-ext-<p>-<N> marks
// every source (external destinations, Cluster policy).
func pickChain(kind, l4 string, n int) string {
	if kind == "" {
		return fmt.Sprintf("pick-%s-%d", l4, n)
	}
	return fmt.Sprintf("pick-%s-%s-%d", kind, l4, n)
}

// shared reports whether sp is served by the shared picking chains and the
// endpoint maps instead of chains of its own: no ClientIP affinity (which
// needs a chain per endpoint), Cluster external policy (Local needs to tell
// pods and the node from external clients), and few enough endpoints.
func shared(sp *ServicePort) bool {
	return sp.AffinitySeconds == 0 && !sp.ExternalPolicyLocal &&
		len(sp.Internal()) <= MaxSharedPick && len(sp.External()) <= MaxSharedPick
}

// Prefixes of the per-service-port and per-endpoint objects; Prune owns
// every chain and set whose name starts with one of them.
const (
	prefixService  = "service-"
	prefixLocal    = "local-"
	prefixExternal = "external-"
	prefixEndpoint = "endpoint-"
	prefixAffinity = "affinity-"
)

// MasqMark is the packet-mark bit that asks the masquerading chain to
// source-NAT a service connection. kube-proxy uses 0x4000; Sluice takes
// 0x1000 so a node that still runs kube-proxy cannot confuse the two.
const MasqMark = 0x1000

// maxNameLen keeps names well below nftables' 256-byte limit.
const maxNameLen = 200

// nameBase is kube-proxy's servicePortChainNameBase: an 8-character hash of
// the port's name and protocol (so truncation and the '/' in names never
// collide) followed by a readable "ns/name/proto/port".
func nameBase(n PortName, proto corev1.Protocol) string {
	h := sha256.Sum256([]byte(n.String() + string(proto)))
	s := base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + n.Namespace + "/" + n.Name + "/" + strings.ToLower(string(proto)) + "/" + n.Port
	return truncate(s)
}

func truncate(s string) string {
	if len(s) > maxNameLen {
		return s[:maxNameLen]
	}
	return s
}

func serviceChain(sp *ServicePort) string {
	return truncate(prefixService + nameBase(sp.Name, sp.Protocol))
}
func localChain(sp *ServicePort) string {
	return truncate(prefixLocal + nameBase(sp.Name, sp.Protocol))
}
func externalChain(sp *ServicePort) string {
	return truncate(prefixExternal + nameBase(sp.Name, sp.Protocol))
}

// endpointBase names an endpoint's chain and affinity set; the hash covers
// the endpoint too, so truncating a long service name keeps them distinct.
func endpointBase(sp *ServicePort, e Endpoint) string {
	h := sha256.Sum256([]byte(sp.Name.String() + string(sp.Protocol) + e.String()))
	return truncate(base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + sp.Name.Namespace + "/" + sp.Name.Name + "/" +
		strings.ToLower(string(sp.Protocol)) + "/" + sp.Name.Port + "__" + e.IP.String() + "/" + itoa(e.Port))
}
func endpointChain(sp *ServicePort, e Endpoint) string {
	return truncate(prefixEndpoint + endpointBase(sp, e))
}
func affinitySet(sp *ServicePort, e Endpoint) string {
	return truncate(prefixAffinity + endpointBase(sp, e))
}

func proto(p corev1.Protocol) string { return strings.ToLower(string(p)) }

// Objects are the names of the per-service chains and sets st needs.
func Objects(st State) (chains, sets []string) {
	for i := range st.Services {
		sp := &st.Services[i]
		if shared(sp) {
			continue
		}
		if len(sp.Cluster) > 0 {
			chains = append(chains, serviceChain(sp))
		}
		if len(sp.Local) > 0 {
			chains = append(chains, localChain(sp))
		}
		if hasExternalChain(sp) {
			chains = append(chains, externalChain(sp))
		}
		if sp.AffinitySeconds > 0 {
			for _, e := range reachable(sp) {
				chains = append(chains, endpointChain(sp, e))
				sets = append(sets, affinitySet(sp, e))
			}
		}
	}
	return chains, sets
}

// reachable: the union of the endpoints any chain of sp jumps to.
func reachable(sp *ServicePort) []Endpoint {
	out := slices.Clone(sp.Cluster)
	for _, e := range sp.Local {
		if !slices.ContainsFunc(out, func(x Endpoint) bool { return x.IP == e.IP && x.Port == e.Port }) {
			out = append(out, e)
		}
	}
	return out
}

// hasExternalChain: external destinations exist and some traffic to them
// can be served (local endpoints, or cluster ones for the short-circuits of
// pod and host traffic under Local policy).
func hasExternalChain(sp *ServicePort) bool {
	return sp.ExternallyAccessible() && (len(sp.External()) > 0 || (sp.ExternalPolicyLocal && len(sp.Cluster) > 0))
}

// Render writes the proxy's whole part of the table for st into tx: the
// skeleton is (re)added, every chain and map is flushed and refilled, so the
// result does not depend on what the table held before, except for chains
// and sets of services that are gone: Prune deletes those. Render refers to
// the dataplane's cluster-cidrs set; the caller renders the dataplane
// skeleton (dataplane.Render) first in the same transaction, or has already.
func Render(tx dataplane.Tx, st State) {
	tx.Add(&knftables.Table{})
	renderSkeleton(tx)

	for _, m := range []string{MapServiceIPs, MapServiceNodePorts, MapNoEndpointServices, MapNoEndpointNodePort} {
		tx.Flush(&knftables.Map{Name: m})
	}
	for _, p := range protocols {
		tx.Flush(&knftables.Map{Name: MapEndpointsPrefix + p})
	}
	for _, set := range []string{SetNodePortIPs, SetClusterIPs, SetFirewallIPs, SetFirewallAllow} {
		tx.Flush(&knftables.Set{Name: set})
	}
	for _, ip := range st.NodeIPs {
		tx.Add(&knftables.Element{Set: SetNodePortIPs, Key: []string{ip.String()}})
	}
	vips := map[netip.Addr]bool{}
	for i := range st.Services {
		for _, vip := range st.Services[i].ClusterIPs {
			if !vips[vip] {
				vips[vip] = true
				tx.Add(&knftables.Element{Set: SetClusterIPs, Key: []string{vip.String()}})
			}
		}
	}

	for i := range st.Services {
		renderService(tx, &st.Services[i], st.NodeIPs)
	}
}

// dstnatMinus10 is dstnat - 10, written as a number: older nft binaries
// restrict which hooks accept the named "dstnat" priority.
const dstnatMinus10 = knftables.BaseChainPriority("-110")

// BaseChains are the proxy's chains attached to hooks.
var BaseChains = []dataplane.BaseChain{
	{Name: ChainFilterPrerouting, Type: knftables.FilterType, Hook: knftables.PreroutingHook, Priority: dstnatMinus10,
		Does: "new connections to a load balancer's address: `loadBalancerSourceRanges` (`firewall-check`)"},
	{Name: ChainNATPrerouting, Type: knftables.NATType, Hook: knftables.PreroutingHook, Priority: knftables.DNATPriority,
		Does: "DNAT of service destinations to an endpoint (`services` dispatch)"},
	{Name: ChainFilterInput, Type: knftables.FilterType, Hook: knftables.InputHook, Priority: dstnatMinus10,
		Does: "new connections to node ports and service addresses without endpoints are rejected"},
	{Name: ChainFilterForward, Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: dstnatMinus10,
		Does: "new connections to service destinations without endpoints are rejected"},
	{Name: ChainFilterForwardPost, Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: knftables.FilterPriority,
		Does: "after DNAT: a service address that was not translated is rejected (`cluster-ips-check`)"},
	{Name: ChainFilterOutput, Type: knftables.FilterType, Hook: knftables.OutputHook, Priority: dstnatMinus10,
		Does: "the node's own new connections: source ranges, node ports and services without endpoints"},
	{Name: ChainNATOutput, Type: knftables.NATType, Hook: knftables.OutputHook, Priority: knftables.DNATPriority,
		Does: "DNAT of the node's own connections to services"},
	{Name: ChainFilterOutputPost, Type: knftables.FilterType, Hook: knftables.OutputHook, Priority: knftables.FilterPriority,
		Does: "after DNAT, the node's own connections: an untranslated service address is rejected"},
	{Name: ChainNATPostrouting, Type: knftables.NATType, Hook: knftables.PostroutingHook, Priority: knftables.SNATPriority,
		Does: "masquerade of marked connections (`0x1000`) and of hairpin traffic"},
}

func renderSkeleton(tx dataplane.Tx) {
	base := func(name string, rules ...string) {
		tx.Add(dataplane.Lookup(BaseChains, name).Object())
		tx.Flush(&knftables.Chain{Name: name})
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	chain := func(name string, rules ...string) {
		tx.Add(&knftables.Chain{Name: name})
		tx.Flush(&knftables.Chain{Name: name})
		for _, r := range rules {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	vmap := func(name, typ, comment string) {
		tx.Add(&knftables.Map{Name: name, Type: typ, Comment: knftables.PtrTo(comment)})
	}
	tx.Add(&knftables.Set{Name: SetNodePortIPs, Type: "ipv4_addr", Comment: knftables.PtrTo("node addresses that serve node ports")})
	tx.Add(&knftables.Set{Name: SetClusterIPs, Type: "ipv4_addr", Comment: knftables.PtrTo("allocated cluster IPs")})
	tx.Add(&knftables.Set{Name: SetFirewallIPs, Type: "ipv4_addr . inet_proto . inet_service",
		Comment: knftables.PtrTo("load-balancer destinations with source ranges")})
	tx.Add(&knftables.Set{Name: SetFirewallAllow, Type: "ipv4_addr . inet_proto . inet_service . ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag},
		Comment: knftables.PtrTo("load-balancer destination . admitted source range")})
	vmap(MapServiceIPs, "ipv4_addr . inet_proto . inet_service : verdict", "cluster, external and load-balancer IPs")
	vmap(MapServiceNodePorts, "inet_proto . inet_service : verdict", "node ports")
	vmap(MapNoEndpointServices, "ipv4_addr . inet_proto . inet_service : verdict", "service IPs without usable endpoints")
	vmap(MapNoEndpointNodePort, "inet_proto . inet_service : verdict", "node ports without usable endpoints")

	mark := fmt.Sprintf("0x%x", MasqMark)
	chain(ChainMarkMasq, "meta mark set meta mark or "+mark)

	// The endpoint maps and the shared picking chains. The rules that use
	// a map are added while it is empty (it was just flushed): binding a map
	// to a rule checks every element it holds.
	for _, p := range protocols {
		// Typed by the protocol's own port field (not th dport): nft 1.0.6
		// cannot read back "meta l4proto tcp" followed by a th-keyed map.
		tx.Add(&knftables.Map{Name: MapEndpointsPrefix + p, TypeOf: fmt.Sprintf("ip daddr . %[1]s dport . numgen random mod 2 : ip daddr . %[1]s dport", p),
			Comment: knftables.PtrTo(p + " service destination . port . index → endpoint . port")})
		tx.Flush(&knftables.Map{Name: MapEndpointsPrefix + p})
		for n := 1; n <= MaxSharedPick; n++ {
			chain(pickChain("", p, n), fmt.Sprintf("meta l4proto %[1]s dnat ip to ip daddr . %[1]s dport . numgen random mod %[2]d map @%[3]s", p, n, MapEndpointsPrefix+p))
			chain(pickChain("masq", p, n), "ip saddr != @"+dataplane.SetClusterCIDR+" jump "+ChainMarkMasq, "goto "+pickChain("", p, n))
			chain(pickChain("ext", p, n), "jump "+ChainMarkMasq, "goto "+pickChain("", p, n))
		}
	}
	chain(ChainMasquerading,
		"meta mark & "+mark+" == 0 return",
		"meta mark set meta mark xor "+mark,
		"masquerade fully-random")
	chain(ChainReject, "reject")
	chain(ChainFirewallCheck,
		knftables.Concat("ip daddr . meta l4proto . th dport @"+SetFirewallIPs,
			"ip daddr . meta l4proto . th dport . ip saddr != @"+SetFirewallAllow, "counter drop"))
	chain(ChainClusterIPsCheck,
		"ip daddr @"+SetClusterIPs+" counter reject",
		"ip daddr @"+dataplane.SetServiceCIDR+" counter drop")
	chain(ChainServices,
		knftables.Concat("ip daddr . meta l4proto . th dport vmap", "@"+MapServiceIPs),
		knftables.Concat("ip daddr @"+SetNodePortIPs, "meta l4proto . th dport vmap", "@"+MapServiceNodePorts))
	chain(ChainServiceEPCheck,
		knftables.Concat("ip daddr . meta l4proto . th dport vmap", "@"+MapNoEndpointServices))
	chain(ChainNodePortEPCheck,
		knftables.Concat("ip daddr @"+SetNodePortIPs, "meta l4proto . th dport vmap", "@"+MapNoEndpointNodePort))

	base(ChainFilterInput, "ct state new jump "+ChainNodePortEPCheck, "ct state new jump "+ChainServiceEPCheck)
	base(ChainFilterForward, "ct state new jump "+ChainServiceEPCheck)
	base(ChainFilterOutput, "ct state new jump "+ChainFirewallCheck, "ct state new jump "+ChainNodePortEPCheck, "ct state new jump "+ChainServiceEPCheck)
	base(ChainFilterPrerouting, "ct state new jump "+ChainFirewallCheck)
	base(ChainFilterForwardPost, "ct state new jump "+ChainClusterIPsCheck)
	base(ChainFilterOutputPost, "ct state new jump "+ChainClusterIPsCheck)
	base(ChainNATPrerouting, "jump "+ChainServices)
	base(ChainNATOutput, "jump "+ChainServices)
	// Hairpin: a DNATed packet leaving through the interface of the pod that
	// sent it is that pod reaching itself through a service; it must see the
	// reply come from the service, so it is masqueraded. One set lookup for
	// every service, instead of a rule per endpoint.
	base(ChainNATPostrouting,
		knftables.Concat("ct status dnat oifname . ip saddr @"+dataplane.SetPodIfAddrs, "jump", ChainMarkMasq),
		"jump "+ChainMasquerading)
}

func renderService(tx writer, sp *ServicePort, nodeIPs []netip.Addr) {
	renderFirewall(tx, sp, nodeIPs)
	if shared(sp) {
		renderShared(tx, sp, nodeIPs)
		return
	}
	l4 := proto(sp.Protocol)
	port := itoa(sp.Port)
	comment := knftables.PtrTo(sp.Name.String() + "/" + l4)
	timeout := time.Duration(sp.AffinitySeconds) * time.Second

	// Endpoint chains exist only under ClientIP affinity, where a client
	// must be steered back to the endpoint it had; otherwise the picking
	// chain DNATs through an anonymous numgen map in a single rule.
	if sp.AffinitySeconds > 0 {
		for _, e := range reachable(sp) {
			ch := endpointChain(sp, e)
			set := affinitySet(sp, e)
			tx.Add(&knftables.Chain{Name: ch, Comment: knftables.PtrTo(sp.Name.String() + "/" + l4 + " " + e.String())})
			tx.Flush(&knftables.Chain{Name: ch})
			tx.Add(&knftables.Set{Name: set, Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
			tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("update", "@"+set, "{ ip saddr }")})
			tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("meta l4proto", l4, "dnat ip to", e.String())})
		}
	}

	pick := func(ch string, eps []Endpoint) {
		if sp.AffinitySeconds > 0 {
			for _, e := range eps {
				tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("ip saddr", "@"+affinitySet(sp, e), "goto", endpointChain(sp, e))})
			}
			var vm []string
			for i, e := range eps {
				vm = append(vm, fmt.Sprintf("%d : goto %s", i, endpointChain(sp, e)))
			}
			tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("numgen random mod", len(eps), "vmap {", strings.Join(vm, " , "), "}")})
			return
		}
		if len(eps) == 1 {
			tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("meta l4proto", l4, "dnat ip to", eps[0].String())})
			return
		}
		m := make([]string, len(eps))
		for i, e := range eps {
			m[i] = fmt.Sprintf("%d : %s . %d", i, e.IP, e.Port)
		}
		tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("meta l4proto", l4, "dnat ip to numgen random mod", len(eps), "map {", strings.Join(m, " , "), "}")})
	}
	if len(sp.Cluster) > 0 {
		ch := serviceChain(sp)
		tx.Add(&knftables.Chain{Name: ch, Comment: comment})
		tx.Flush(&knftables.Chain{Name: ch})
		if !sp.InternalPolicyLocal {
			// Traffic to the cluster IP from outside the pod network (the
			// node itself, a routed client) is masqueraded so the reply
			// comes back through this node.
			for _, vip := range sp.ClusterIPs {
				tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("ip daddr", vip.String(), "meta l4proto", l4, "th dport", port,
					"ip saddr != @"+dataplane.SetClusterCIDR, "jump", ChainMarkMasq)})
			}
		}
		pick(ch, sp.Cluster)
	}
	if len(sp.Local) > 0 {
		ch := localChain(sp)
		tx.Add(&knftables.Chain{Name: ch, Comment: comment})
		tx.Flush(&knftables.Chain{Name: ch})
		pick(ch, sp.Local)
	}
	if hasExternalChain(sp) {
		ch := externalChain(sp)
		tx.Add(&knftables.Chain{Name: ch, Comment: comment})
		tx.Flush(&knftables.Chain{Name: ch})
		if !sp.ExternalPolicyLocal {
			tx.Add(&knftables.Rule{Chain: ch, Rule: "jump " + ChainMarkMasq})
			tx.Add(&knftables.Rule{Chain: ch, Rule: "goto " + serviceChain(sp)})
		} else {
			if len(sp.Cluster) > 0 {
				// Pods and the node itself get Cluster behaviour (the KEP's
				// short-circuit): the source is not lost to them, and the
				// node's own traffic is masqueraded like any host traffic.
				tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("ip saddr @"+dataplane.SetClusterCIDR, "goto", serviceChain(sp))})
				tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("fib saddr type local jump", ChainMarkMasq)})
				tx.Add(&knftables.Rule{Chain: ch, Rule: knftables.Concat("fib saddr type local goto", serviceChain(sp))})
			}
			if len(sp.Local) > 0 {
				tx.Add(&knftables.Rule{Chain: ch, Rule: "goto " + localChain(sp)})
			} else {
				// Endpoints elsewhere only: external clients keep their
				// source, so they must not be sent across nodes.
				tx.Add(&knftables.Rule{Chain: ch, Rule: "drop", Comment: knftables.PtrTo("no local endpoints")})
			}
		}
	}

	// No usable endpoint: reject (nothing anywhere) or drop (endpoints
	// exist, just none this policy may use), before DNAT, in the filter
	// chains; the nat chains never see these flows.
	noEP := "goto " + ChainReject
	if sp.HasEndpoints {
		noEP = "drop"
	}
	if internal := sp.Internal(); len(internal) > 0 {
		target := serviceChain(sp)
		if sp.InternalPolicyLocal {
			target = localChain(sp)
		}
		for _, vip := range sp.ClusterIPs {
			tx.Add(&knftables.Element{Map: MapServiceIPs, Key: []string{vip.String(), l4, port}, Value: []string{"goto " + target}, Comment: comment})
		}
	} else {
		for _, vip := range sp.ClusterIPs {
			tx.Add(&knftables.Element{Map: MapNoEndpointServices, Key: []string{vip.String(), l4, port}, Value: []string{noEP}, Comment: comment})
		}
	}
	ext := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
	slices.SortFunc(ext, netip.Addr.Compare)
	ext = slices.Compact(ext)
	if hasExternalChain(sp) {
		for _, ip := range ext {
			tx.Add(&knftables.Element{Map: MapServiceIPs, Key: []string{ip.String(), l4, port}, Value: []string{"goto " + externalChain(sp)}, Comment: comment})
		}
		if sp.NodePort != 0 {
			tx.Add(&knftables.Element{Map: MapServiceNodePorts, Key: []string{l4, itoa(sp.NodePort)}, Value: []string{"goto " + externalChain(sp)}, Comment: comment})
		}
	} else if sp.ExternallyAccessible() {
		for _, ip := range ext {
			tx.Add(&knftables.Element{Map: MapNoEndpointServices, Key: []string{ip.String(), l4, port}, Value: []string{noEP}, Comment: comment})
		}
		if sp.NodePort != 0 {
			tx.Add(&knftables.Element{Map: MapNoEndpointNodePort, Key: []string{l4, itoa(sp.NodePort)}, Value: []string{noEP}, Comment: comment})
		}
	}
}

// renderFirewall writes the source-range elements of a firewalled port: its
// load-balancer destinations, and each with every admitted range. When a
// range admits the node itself, the destination is admitted as a source
// too: a node that holds a load-balancer address locally reaches it with
// that address as source.
func renderFirewall(tx writer, sp *ServicePort, nodeIPs []netip.Addr) {
	if !sp.Firewalled {
		return
	}
	l4 := proto(sp.Protocol)
	port := itoa(sp.Port)
	comment := knftables.PtrTo(sp.Name.String() + "/" + l4)
	fromNode := slices.ContainsFunc(sp.SourceRanges, func(r netip.Prefix) bool { return slices.ContainsFunc(nodeIPs, r.Contains) })
	for _, lb := range sp.LoadBalancerIPs {
		tx.Add(&knftables.Element{Set: SetFirewallIPs, Key: []string{lb.String(), l4, port}, Comment: comment})
		ranges := sp.SourceRanges
		if fromNode && !slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(lb) }) {
			ranges = append(slices.Clone(ranges), netip.PrefixFrom(lb, 32))
		}
		for _, r := range ranges {
			tx.Add(&knftables.Element{Set: SetFirewallAllow, Key: []string{lb.String(), l4, port, r.String()}})
		}
	}
}

// renderShared writes a service port served by the shared picking chains:
// only map elements, no chain of its own. Each destination (cluster IP,
// external or load-balancer IP, node port on each node address) gets the
// port's endpoints as elements dest . port . i of the protocol's endpoint
// map, and a dispatch element pointing at the picking chain for their count.
func renderShared(tx writer, sp *ServicePort, nodeIPs []netip.Addr) {
	l4 := proto(sp.Protocol)
	port := itoa(sp.Port)
	comment := knftables.PtrTo(sp.Name.String() + "/" + l4)
	noEP := "goto " + ChainReject
	if sp.HasEndpoints {
		noEP = "drop"
	}
	endpoints := func(dest netip.Addr, port string, eps []Endpoint) {
		for i, e := range eps {
			tx.Add(&knftables.Element{Map: MapEndpointsPrefix + l4, Key: []string{dest.String(), port, strconv.Itoa(i)},
				Value: []string{e.IP.String(), itoa(e.Port)}})
		}
	}
	if internal := sp.Internal(); len(internal) > 0 {
		target := pickChain("masq", l4, len(internal))
		if sp.InternalPolicyLocal {
			target = pickChain("", l4, len(internal)) // the source stays: no masquerade
		}
		for _, vip := range sp.ClusterIPs {
			tx.Add(&knftables.Element{Map: MapServiceIPs, Key: []string{vip.String(), l4, port}, Value: []string{"goto " + target}, Comment: comment})
			endpoints(vip, port, internal)
		}
	} else {
		for _, vip := range sp.ClusterIPs {
			tx.Add(&knftables.Element{Map: MapNoEndpointServices, Key: []string{vip.String(), l4, port}, Value: []string{noEP}, Comment: comment})
		}
	}
	if !sp.ExternallyAccessible() {
		return
	}
	ext := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
	slices.SortFunc(ext, netip.Addr.Compare)
	ext = slices.Compact(ext)
	eps := sp.External()
	if len(eps) == 0 {
		for _, ip := range ext {
			tx.Add(&knftables.Element{Map: MapNoEndpointServices, Key: []string{ip.String(), l4, port}, Value: []string{noEP}, Comment: comment})
		}
		if sp.NodePort != 0 {
			tx.Add(&knftables.Element{Map: MapNoEndpointNodePort, Key: []string{l4, itoa(sp.NodePort)}, Value: []string{noEP}, Comment: comment})
		}
		return
	}
	target := pickChain("ext", l4, len(eps))
	for _, ip := range ext {
		tx.Add(&knftables.Element{Map: MapServiceIPs, Key: []string{ip.String(), l4, port}, Value: []string{"goto " + target}, Comment: comment})
		endpoints(ip, port, eps)
	}
	if sp.NodePort != 0 {
		tx.Add(&knftables.Element{Map: MapServiceNodePorts, Key: []string{l4, itoa(sp.NodePort)}, Value: []string{"goto " + target}, Comment: comment})
		for _, ip := range nodeIPs {
			endpoints(ip, itoa(sp.NodePort), eps)
		}
	}
}

// owned reports a per-service object: a known prefix followed by the
// 8-character base32 hash and a dash, so static chains such as
// service-endpoints-check never match.
func owned(name string, prefixes ...string) bool {
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || len(rest) < 10 || rest[8] != '-' {
			continue
		}
		if strings.Trim(rest[:8], "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == "" {
			return true
		}
	}
	return false
}

// Prune deletes the per-service chains and sets that exist in the table
// (chains and sets as listed by knftables.Interface.List) but that st no
// longer needs. Run it in the same transaction, after Render: Render has
// already flushed every map and chain that could refer to them.
func Prune(tx dataplane.Tx, chains, sets []string, st State) {
	wc, ws := Objects(st)
	wantChains, wantSets := toSet(wc), toSet(ws)
	for _, c := range chains {
		if owned(c, prefixService, prefixLocal, prefixExternal, prefixEndpoint) && !wantChains[c] {
			tx.Flush(&knftables.Chain{Name: c})
		}
	}
	for _, c := range chains {
		if owned(c, prefixService, prefixLocal, prefixExternal, prefixEndpoint) && !wantChains[c] {
			tx.Delete(&knftables.Chain{Name: c})
		}
	}
	for _, s := range sets {
		if owned(s, prefixAffinity) && !wantSets[s] {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
}

func toSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// staticObjects names the objects Render creates whatever the services:
// the skeleton's chains (the shared picking chains included), sets and maps.
func staticObjects() dataplane.Objects {
	o := dataplane.Objects{
		Chains: []string{ChainNATPrerouting, ChainNATOutput, ChainNATPostrouting,
			ChainFilterInput, ChainFilterForward, ChainFilterOutput,
			ChainServices, ChainMarkMasq, ChainMasquerading,
			ChainServiceEPCheck, ChainNodePortEPCheck, ChainReject,
			ChainFilterPrerouting, ChainFilterForwardPost, ChainFilterOutputPost,
			ChainFirewallCheck, ChainClusterIPsCheck},
		Sets: []string{SetNodePortIPs, SetClusterIPs, SetFirewallIPs, SetFirewallAllow},
		Maps: []string{MapServiceIPs, MapServiceNodePorts, MapNoEndpointServices, MapNoEndpointNodePort},
	}
	for _, p := range protocols {
		o.Maps = append(o.Maps, MapEndpointsPrefix+p)
		for n := 1; n <= MaxSharedPick; n++ {
			o.Chains = append(o.Chains, pickChain("", p, n), pickChain("masq", p, n), pickChain("ext", p, n))
		}
	}
	return o
}

// Teardown deletes every object of the proxy that existing names (the
// table as listed, or what the proxy last committed), for a node that hands
// Services over to another proxy. The pod network's objects and isolation's
// are left alone.
func Teardown(tx dataplane.Tx, existing dataplane.Objects) {
	static := staticObjects()
	isStatic := func(names []string) map[string]bool { return toSet(names) }
	chains, sets, maps := isStatic(static.Chains), isStatic(static.Sets), isStatic(static.Maps)
	// Rules first (they refer to maps and sets), then maps and sets (their
	// elements refer to chains), then the chains.
	var ours []string
	for _, c := range existing.Chains {
		if chains[c] || owned(c, prefixService, prefixLocal, prefixExternal, prefixEndpoint) {
			ours = append(ours, c)
			tx.Flush(&knftables.Chain{Name: c})
		}
	}
	for _, m := range existing.Maps {
		if maps[m] {
			tx.Delete(&knftables.Map{Name: m})
		}
	}
	for _, s := range existing.Sets {
		if sets[s] || owned(s, prefixAffinity) {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
	for _, c := range ours {
		tx.Delete(&knftables.Chain{Name: c})
	}
}

// Package proxy is the pure core of Sluice's service proxy: Build turns
// Services and EndpointSlices into the desired load-balancing state of one
// node, Render writes that state into the node's `inet sluice` table. There
// is no I/O here: informers, sync coalescing and knftables.Interface.Run
// belong to the caller. Semantics follow kube-proxy's nftables mode; see
// README.md for the table contract and where Sluice deliberately differs.
package proxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// DefaultAffinityTimeout is the ClientIP affinity timeout when the Service
// does not set one (corev1.DefaultClientIPServiceAffinitySeconds).
const DefaultAffinityTimeout = 10800

// NodeInfo is the node the state is built for.
type NodeInfo struct {
	Name string
	Zone string // topology.kubernetes.io/zone of the node, "" if unknown
	IPs  []netip.Addr
}

// PortName identifies one port of one Service, as kube-proxy's
// ServicePortName does: "ns/name:port" (":port" omitted for unnamed ports).
type PortName struct {
	Namespace, Name, Port string
}

func (n PortName) String() string {
	if n.Port == "" {
		return n.Namespace + "/" + n.Name
	}
	return n.Namespace + "/" + n.Name + ":" + n.Port
}

// Endpoint is one backend of a service port. The programmed state holds
// one per endpoint and service port (300k at 30k Services), so it is kept
// small: fields ordered without padding, topology hints (rare, read only
// while building) behind a pointer.
type Endpoint struct {
	IP          netip.Addr
	NodeName    string
	Hints       *Hints // nil: none
	Port        uint16
	Ready       bool
	Serving     bool
	Terminating bool
}

// Hints are an endpoint's topology hints: the zones and nodes it is meant
// to serve.
type Hints struct {
	Zones, Nodes []string
}

func (e Endpoint) zoneHints() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Zones
}

func (e Endpoint) nodeHints() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Nodes
}

// Local reports whether the endpoint runs on node.
func (e Endpoint) Local(node string) bool { return e.NodeName != "" && e.NodeName == node }

func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// ServicePort is the desired state of one port of one Service on this node.
type ServicePort struct {
	Name     PortName
	Protocol corev1.Protocol // TCP, UDP or SCTP

	ClusterIPs      []netip.Addr // of the node's address family
	Port            uint16
	NodePort        uint16 // 0 = none
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr // status.loadBalancer.ingress[*].ip, ipMode VIP only

	// Firewalled: the Service restricts the sources of its load-balancer
	// traffic (spec.loadBalancerSourceRanges, else the older
	// service.beta.kubernetes.io/load-balancer-source-ranges annotation).
	// SourceRanges are the IPv4 ones; a firewalled port whose ranges are all
	// of another family or malformed admits no source at all (closed, not
	// open). Node ports, external IPs and cluster IPs are not filtered, as in
	// kube-proxy.
	Firewalled   bool
	SourceRanges []netip.Prefix

	// AffinitySeconds is the ClientIP session affinity timeout; 0 = no affinity.
	AffinitySeconds int32

	ExternalPolicyLocal bool // externalTrafficPolicy Local (NodePort / LoadBalancer only)
	InternalPolicyLocal bool // internalTrafficPolicy Local
	// HealthCheckNodePort is where the agent must answer kube-proxy's
	// /healthz for a Local LoadBalancer: 200 with LocalEndpoints > 0, else 503.
	HealthCheckNodePort uint16

	// Cluster are the endpoints cluster-wide traffic may use (ready ones,
	// topology-filtered; serving+terminating if none is ready); empty when
	// no traffic uses cluster policy.
	Cluster []Endpoint
	// Local are this node's endpoints (ready, else serving+terminating),
	// filled only when some traffic uses Local policy.
	Local []Endpoint
	// HasEndpoints: some usable endpoint exists anywhere in the cluster.
	// Traffic without an endpoint of its policy is rejected when false and
	// dropped when true (kube-proxy: "has no local endpoints").
	HasEndpoints bool
}

// ExternallyAccessible reports whether the port has any external destination.
func (s *ServicePort) ExternallyAccessible() bool {
	return s.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0
}

// Internal are the endpoints traffic to the cluster IPs goes to.
func (s *ServicePort) Internal() []Endpoint {
	if s.InternalPolicyLocal {
		return s.Local
	}
	return s.Cluster
}

// External are the endpoints traffic from outside the cluster to node
// ports, external IPs and load-balancer IPs goes to.
func (s *ServicePort) External() []Endpoint {
	if s.ExternalPolicyLocal {
		return s.Local
	}
	return s.Cluster
}

// State is the desired service-proxy state of one node, sorted and
// deterministic: equal inputs give equal States.
type State struct {
	NodeIPs  []netip.Addr // addresses that serve node ports
	Services []ServicePort
}

// Build computes the desired state for node. Services and slices of other
// namespaces mix freely; headless and ExternalName services, IPv6 addresses
// and non-IPv4 EndpointSlices are ignored (Sluice's pod network is IPv4).
// Malformed objects are reported in the error list and skipped; the rest of
// the state is still built.
func Build(services []*corev1.Service, slices_ []*discoveryv1.EndpointSlice, node NodeInfo) (State, []error) {
	var errs []error
	st := State{}
	for _, ip := range node.IPs {
		if ip.Is4() || ip.Is4In6() {
			st.NodeIPs = append(st.NodeIPs, ip.Unmap())
		}
	}
	slices.SortFunc(st.NodeIPs, netip.Addr.Compare)
	st.NodeIPs = slices.Compact(st.NodeIPs)

	bySvc := map[[2]string][]*discoveryv1.EndpointSlice{}
	for _, es := range slices_ {
		if es == nil || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := [2]string{es.Namespace, name}
		bySvc[k] = append(bySvc[k], es)
	}

	for _, svc := range services {
		if svc == nil {
			continue
		}
		ports, err := buildService(svc, bySvc[[2]string{svc.Namespace, svc.Name}], node)
		errs = append(errs, err...)
		st.Services = append(st.Services, ports...)
	}
	slices.SortFunc(st.Services, comparePorts)
	errs = append(errs, dropConflicts(&st)...)
	return st, errs
}

func comparePorts(a, b ServicePort) int {
	return cmp.Or(cmp.Compare(a.Name.String(), b.Name.String()), cmp.Compare(a.Protocol, b.Protocol))
}

// conflictError reports a destination dropped because another service
// port claims it.
type conflictError struct {
	msg     string
	parties [2]PortName // the port that lost the destination, the one that kept it
}

func (e *conflictError) Error() string { return e.msg }

// dropConflicts removes a destination (address, protocol, port) that two
// service ports claim, keeping the first claim: cluster IPs, then node ports
// (on every node address), then external and load-balancer IPs; within each,
// service order. Two elements with one key would make the whole nftables
// transaction fail, taking every service down for one user's duplicate
// externalIP.
func dropConflicts(st *State) []error {
	type dest struct {
		ip    netip.Addr
		proto corev1.Protocol
		port  uint16
	}
	type claim struct {
		by       PortName
		nodePort bool
	}
	owner := map[dest]claim{}
	nodePorts := map[dest]PortName{}
	var errs []error
	for i := range st.Services {
		sp := &st.Services[i]
		for _, ip := range sp.ClusterIPs {
			owner[dest{ip, sp.Protocol, sp.Port}] = claim{by: sp.Name}
		}
	}
	// Node ports next: they are claimed on every node address, where an
	// external IP that is a node address must not shadow them.
	for i := range st.Services {
		sp := &st.Services[i]
		if sp.NodePort == 0 {
			continue
		}
		d := dest{proto: sp.Protocol, port: sp.NodePort}
		if o, taken := nodePorts[d]; taken {
			errs = append(errs, &conflictError{fmt.Sprintf("service %s: node port %s/%d is already used by %s; ignored", sp.Name, sp.Protocol, sp.NodePort, o),
				[2]PortName{sp.Name, o}})
			sp.NodePort = 0
			continue
		}
		nodePorts[d] = sp.Name
		for _, ip := range st.NodeIPs {
			owner[dest{ip, sp.Protocol, sp.NodePort}] = claim{by: sp.Name, nodePort: true}
		}
	}
	for i := range st.Services {
		sp := &st.Services[i]
		keep := func(kind string, ips []netip.Addr) []netip.Addr {
			var out []netip.Addr
			for _, ip := range ips {
				d := dest{ip, sp.Protocol, sp.Port}
				if o, taken := owner[d]; taken && (o.by != sp.Name || o.nodePort) {
					by := o.by.String()
					if o.nodePort {
						by += " (node port)"
					}
					errs = append(errs, &conflictError{fmt.Sprintf("service %s: %s %s %s/%d is already used by %s; ignored", sp.Name, kind, ip, sp.Protocol, sp.Port, by),
						[2]PortName{sp.Name, o.by}})
					continue
				}
				owner[d] = claim{by: sp.Name}
				out = append(out, ip)
			}
			return out
		}
		sp.ExternalIPs = keep("externalIP", sp.ExternalIPs)
		sp.LoadBalancerIPs = keep("load-balancer IP", sp.LoadBalancerIPs)
	}
	return errs
}

// AnnotationSourceRanges is the annotation older Services use instead of
// spec.loadBalancerSourceRanges (comma-separated CIDRs).
const AnnotationSourceRanges = "service.beta.kubernetes.io/load-balancer-source-ranges"

// sourceRanges returns whether svc restricts its load-balancer sources and
// the IPv4 ranges it admits, sorted and without duplicates.
func sourceRanges(svc *corev1.Service, bad func(string, ...any)) (bool, []netip.Prefix) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false, nil
	}
	field, raw := "spec.loadBalancerSourceRanges", svc.Spec.LoadBalancerSourceRanges
	if len(raw) == 0 {
		field, raw = "annotation "+AnnotationSourceRanges, strings.Split(svc.Annotations[AnnotationSourceRanges], ",")
	}
	var out []netip.Prefix
	given := false
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		given = true
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad("%s: %q is not a CIDR (the range admits nobody)", field, s)
			continue
		}
		if p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return given, slices.Compact(out)
}

func buildService(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, node NodeInfo) ([]ServicePort, []error) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("service %s/%s: "+format, append([]any{svc.Namespace, svc.Name}, a...)...))
	}
	clusterIPs := svc.Spec.ClusterIPs
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs = []string{svc.Spec.ClusterIP}
	}
	if len(clusterIPs) == 0 || clusterIPs[0] == corev1.ClusterIPNone {
		return nil, nil // headless (or not yet allocated): nothing to proxy
	}
	var vips []netip.Addr
	for _, s := range clusterIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			bad("clusterIP %q: %w", s, err)
			continue
		}
		if ip.Unmap().Is4() {
			vips = append(vips, ip.Unmap())
		}
	}
	if len(vips) == 0 {
		return nil, errs // no IPv4 cluster IP: another family's service
	}
	parseV4 := func(what string, ss []string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			if s == "" {
				continue
			}
			ip, err := netip.ParseAddr(s)
			if err != nil {
				bad("%s %q: %w", what, s, err)
				continue
			}
			if ip = ip.Unmap(); ip.Is4() {
				out = append(out, ip)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return slices.Compact(out)
	}
	externalIPs := parseV4("externalIP", svc.Spec.ExternalIPs)
	var lbIPs []netip.Addr
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var ss []string
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy: the load balancer delivers to the node with
			// the node's address as destination; nothing to capture.
			if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
				continue
			}
			ss = append(ss, ing.IP)
		}
		lbIPs = parseV4("load-balancer ingress IP", ss)
	}
	firewalled, ranges := sourceRanges(svc, bad)
	var affinity int32
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = DefaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			affinity = *c.ClientIP.TimeoutSeconds
		}
	}
	// As apiservice.ExternalPolicyLocal: only NodePort and LoadBalancer
	// services have an external policy; externalIPs of a ClusterIP service
	// use Cluster policy.
	extLocal := (svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer) &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	intLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	var hcPort uint16
	if extLocal && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.HealthCheckNodePort > 0 && svc.Spec.HealthCheckNodePort < 65536 {
		hcPort = uint16(svc.Spec.HealthCheckNodePort)
	}

	var out []ServicePort
	for _, p := range svc.Spec.Ports {
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		case "":
			p.Protocol = corev1.ProtocolTCP
		default:
			bad("port %q: unsupported protocol %q", p.Name, p.Protocol)
			continue
		}
		if p.Port <= 0 || p.Port > 65535 {
			bad("port %q: invalid port %d", p.Name, p.Port)
			continue
		}
		sp := ServicePort{
			Name:                PortName{svc.Namespace, svc.Name, p.Name},
			Protocol:            p.Protocol,
			ClusterIPs:          vips,
			Port:                uint16(p.Port),
			ExternalIPs:         externalIPs,
			LoadBalancerIPs:     lbIPs,
			Firewalled:          firewalled && len(lbIPs) > 0,
			SourceRanges:        ranges,
			AffinitySeconds:     affinity,
			ExternalPolicyLocal: extLocal,
			InternalPolicyLocal: intLocal,
			HealthCheckNodePort: hcPort,
		}
		if (svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer) && p.NodePort > 0 && p.NodePort < 65536 {
			sp.NodePort = uint16(p.NodePort)
		}
		categorize(&sp, endpointsFor(eps, p.Name, p.Protocol), svc, node)
		out = append(out, sp)
	}
	return out, errs
}

// endpointsFor collects the endpoints of one service port from all of the
// service's slices, matched by port name and protocol (named targetPorts are
// already resolved into each slice's ports). An endpoint listed by several
// slices counts once; a ready copy wins over a not-ready one, else the copy
// from the slice whose name sorts first.
func endpointsFor(eps []*discoveryv1.EndpointSlice, portName string, proto corev1.Protocol) []Endpoint {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	seen := map[netip.AddrPort]int{}
	var out []Endpoint
	for _, es := range eps {
		var port int32 = -1
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			pp := corev1.ProtocolTCP
			if p.Protocol != nil {
				pp = *p.Protocol
			}
			if name == portName && pp == proto && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, e := range es.Endpoints {
			// nil ready means unknown and is read as ready; nil serving
			// takes ready's value; nil terminating is false (API docs).
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := ready
			if e.Conditions.Serving != nil {
				serving = *e.Conditions.Serving
			}
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Unmap().Is4() {
					continue
				}
				ep := Endpoint{IP: ip.Unmap(), Port: uint16(port), Ready: ready, Serving: serving, Terminating: terminating}
				if e.NodeName != nil {
					ep.NodeName = *e.NodeName
				}
				if e.Hints != nil && len(e.Hints.ForZones)+len(e.Hints.ForNodes) > 0 {
					ep.Hints = &Hints{}
					for _, z := range e.Hints.ForZones {
						ep.Hints.Zones = append(ep.Hints.Zones, z.Name)
					}
					for _, n := range e.Hints.ForNodes {
						ep.Hints.Nodes = append(ep.Hints.Nodes, n.Name)
					}
				}
				key := netip.AddrPortFrom(ep.IP, ep.Port)
				if i, dup := seen[key]; dup {
					if ep.Ready && !out[i].Ready {
						out[i] = ep
					}
					continue
				}
				seen[key] = len(out)
				out = append(out, ep)
			}
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		return netip.AddrPortFrom(a.IP, a.Port).Compare(netip.AddrPortFrom(b.IP, b.Port))
	})
	return out
}

// categorize fills Cluster, Local and HasEndpoints like kube-proxy's
// CategorizeEndpoints (pkg/proxy/topology.go).
func categorize(sp *ServicePort, eps []Endpoint, svc *corev1.Service, node NodeInfo) {
	usesCluster := !sp.InternalPolicyLocal || (sp.ExternallyAccessible() && !sp.ExternalPolicyLocal)
	usesLocal := sp.InternalPolicyLocal || (sp.ExternallyAccessible() && sp.ExternalPolicyLocal)

	if usesCluster {
		avail := topologyFilter(svc, eps, node)
		sp.Cluster = filter(eps, func(e Endpoint) bool { return e.Ready && avail(e) })
		if len(sp.Cluster) == 0 {
			// Nothing ready anywhere: fall back to endpoints that still
			// serve while terminating, so connections drain gracefully.
			sp.Cluster = filter(eps, func(e Endpoint) bool { return e.Serving && e.Terminating && avail(e) })
		}
		sp.HasEndpoints = len(sp.Cluster) > 0
	}
	if !usesLocal {
		return
	}
	var localReady, localST bool
	for _, e := range eps {
		switch {
		case e.Ready:
			sp.HasEndpoints = true
			localReady = localReady || e.Local(node.Name)
		case e.Serving && e.Terminating:
			sp.HasEndpoints = true
			localST = localST || e.Local(node.Name)
		}
	}
	switch {
	case localReady:
		sp.Local = filter(eps, func(e Endpoint) bool { return e.Local(node.Name) && e.Ready })
	case localST:
		sp.Local = filter(eps, func(e Endpoint) bool { return e.Local(node.Name) && e.Serving && e.Terminating })
	}
}

// topologyFilter returns which endpoints cluster-wide traffic from this node
// may use under the service's traffic distribution, as kube-proxy's
// topologyModeFromHints: hints are used only if every ready endpoint carries
// zone hints and at least one is for this node's zone; otherwise all
// endpoints are available. PreferSameNode uses node hints first when one
// names this node.
func topologyFilter(svc *corev1.Service, eps []Endpoint, node NodeInfo) func(Endpoint) bool {
	all := func(Endpoint) bool { return true }
	td := ""
	if svc.Spec.TrafficDistribution != nil {
		td = *svc.Spec.TrafficDistribution
	}
	mode := svc.Annotations[corev1.AnnotationTopologyMode]
	if mode == "" {
		mode = svc.Annotations[corev1.DeprecatedAnnotationTopologyAwareHints]
	}
	switch {
	case td == corev1.ServiceTrafficDistributionPreferClose, td == corev1.ServiceTrafficDistributionPreferSameZone,
		td == corev1.ServiceTrafficDistributionPreferSameNode:
	case mode == "Auto" || mode == "auto":
	default:
		return all
	}
	if td == corev1.ServiceTrafficDistributionPreferSameNode && node.Name != "" {
		forNode := func(e Endpoint) bool { return slices.Contains(e.nodeHints(), node.Name) }
		hasAll, hasMine := true, false
		for _, e := range eps {
			if e.Ready {
				hasAll = hasAll && len(e.nodeHints()) > 0
				hasMine = hasMine || forNode(e)
			}
		}
		if hasAll && hasMine {
			return forNode
		}
	}
	if node.Zone == "" {
		return all
	}
	forZone := func(e Endpoint) bool { return slices.Contains(e.zoneHints(), node.Zone) }
	hasMine := false
	for _, e := range eps {
		if !e.Ready {
			continue
		}
		if len(e.zoneHints()) == 0 {
			return all
		}
		hasMine = hasMine || forZone(e)
	}
	if !hasMine {
		return all
	}
	return forZone
}

// filter is the endpoints keep accepts, in a slice of exactly their number
// (it stays in the programmed state).
func filter(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	n := 0
	for _, e := range eps {
		if keep(e) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]Endpoint, 0, n)
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func itoa[T ~int32 | ~uint16 | int](v T) string { return strconv.Itoa(int(v)) }

// HealthChecks returns, per health-check node port of a Local LoadBalancer
// service, the number of distinct ready endpoint addresses on this node: the
// health server answers 200 when it is positive and 503 otherwise, so load
// balancers steer away from nodes without endpoints and from nodes whose
// endpoints are only terminating (kube-proxy's LocalReadyEndpoints).
func HealthChecks(st State) map[uint16]int {
	out := map[uint16]int{}
	seen := map[uint16]map[netip.Addr]bool{}
	for _, sp := range st.Services {
		if sp.HealthCheckNodePort == 0 {
			continue
		}
		hc := sp.HealthCheckNodePort
		if seen[hc] == nil {
			seen[hc] = map[netip.Addr]bool{}
			out[hc] = 0
		}
		for _, e := range sp.Local {
			if e.Ready && !seen[hc][e.IP] {
				seen[hc][e.IP] = true
				out[hc]++
			}
		}
	}
	return out
}

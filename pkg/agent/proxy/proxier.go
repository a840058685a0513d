package proxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// IndexByService is the EndpointSlice informer index the Proxier reads
// slices through: "namespace/service-name" from the kubernetes.io/service-name
// label. Register SliceIndexers on the informer before it starts.
const IndexByService = "sluice-service"

// SliceIndexers indexes EndpointSlices by the Service they belong to.
func SliceIndexers() cache.Indexers {
	return cache.Indexers{IndexByService: func(obj any) ([]string, error) {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			return nil, nil
		}
		return []string{es.Namespace + "/" + name}, nil
	}}
}

// Conntrack clears connection-tracking entries that would otherwise keep
// UDP flows pinned to an endpoint that is gone, or to a service that had
// no endpoint (kube-proxy does the same; TCP needs none of it, since a
// removed endpoint's connections end on their own).
type Conntrack interface {
	// ClearUDP deletes UDP entries DNATed to one of endpoints, and UDP
	// entries whose original destination is one of destinations.
	ClearUDP(endpoints, destinations []netip.AddrPort) error
}

// Proxier keeps the proxy's part of the node's table in step with the
// cluster's Services and EndpointSlices. Informer handlers call
// ServiceChanged / SliceChanged; Run coalesces the changes and programs
// them. The first sync, the sync after any failure and a change of the
// node's addresses are full syncs (Build + Render + Prune in one
// transaction); every other sync is partial: only the services that
// changed are rebuilt and only their chains and map elements are in the
// transaction (RenderPartial), so the cost of a change does not grow with
// the number of services.
type Proxier struct {
	Services  corelisters.ServiceLister
	Slices    cache.Indexer // EndpointSlices, with SliceIndexers
	Conntrack Conntrack     // nil: no conntrack clearing (tests)
	// Health receives, after every successful sync, the number of ready
	// local endpoints per health-check node port (see HealthChecks).
	Health func(map[uint16]int)
	Log    logr.Logger
	// Request asks the table owner for a sync.
	Request func()

	mu       sync.Mutex
	node     NodeInfo
	dirty    map[types.NamespacedName]bool
	needFull bool // the node changed: the next contribution is full

	// What the table holds (used by the owner's sync loop only): the
	// last committed state per service.
	programmed map[types.NamespacedName][]ServicePort
	nodeIPs    []netip.Addr
	owners     map[destination]types.NamespacedName
	// conflicted are the services on either side of a destination the last
	// full Build gave to one of them: a change to one of them is resolved by
	// a full Build, which orders the claims; other changes stay partial.
	conflicted map[types.NamespacedName]bool
	syncs      Stats

	// pendingSince is when the oldest change not yet programmed arrived
	// (zero: none); lastSynced when a sync last succeeded. /healthz.
	pendingSince time.Time
	lastSynced   time.Time
	created      time.Time
}

// HealthTimeout: a change still not programmed after this long makes the
// proxy unhealthy (kube-proxy's /healthz uses twice its sync period).
const HealthTimeout = 60 * time.Second

// SyncHealth reports whether every change is programmed or has waited less
// than HealthTimeout at now, and when a sync last succeeded.
func (p *Proxier) SyncHealth(now time.Time) (healthy bool, lastSynced time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pendingSince.IsZero() || now.Sub(p.pendingSince) < HealthTimeout, p.lastSynced
}

// pending records that something waits to be programmed; p.mu held.
func (p *Proxier) pending(t time.Time) {
	if p.pendingSince.IsZero() || t.Before(p.pendingSince) {
		p.pendingSince = t
	}
}

// Stats counts syncs, for logs and tests.
type Stats struct {
	Full, Partial, Failed int
	LastDuration          time.Duration
}

type destination struct {
	ip    netip.Addr // invalid for node ports
	proto corev1.Protocol
	port  uint16
}

// NewProxier returns a proxier for node that starts with a full sync.
// request asks the table owner for a sync.
func NewProxier(services corelisters.ServiceLister, slicesIdx cache.Indexer, node NodeInfo, log logr.Logger, request func()) *Proxier {
	return &Proxier{Services: services, Slices: slicesIdx, Log: log, node: node, Request: request,
		dirty: map[types.NamespacedName]bool{}, needFull: true, pendingSince: time.Now(), created: time.Now()}
}

// Name is "service proxy".
func (p *Proxier) Name() string { return "service proxy" }

// BaseChains declares the proxy's hooks.
func (p *Proxier) BaseChains() []dataplane.BaseChain { return BaseChains }

// ServiceChanged marks a service for the next sync.
func (p *Proxier) ServiceChanged(namespace, name string) {
	p.mark(types.NamespacedName{Namespace: namespace, Name: name})
}

// SliceChanged marks the service an EndpointSlice belongs to.
func (p *Proxier) SliceChanged(es *discoveryv1.EndpointSlice) {
	if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
		p.mark(types.NamespacedName{Namespace: es.Namespace, Name: name})
	}
}

// SetNode changes the node's addresses or zone; the next sync is full.
func (p *Proxier) SetNode(n NodeInfo) {
	p.mu.Lock()
	changed := n.Name != p.node.Name || n.Zone != p.node.Zone || !slices.Equal(n.IPs, p.node.IPs)
	if changed {
		p.node, p.needFull = n, true
		p.pending(time.Now())
	}
	p.mu.Unlock()
	if changed {
		p.Request()
	}
}

func (p *Proxier) mark(k types.NamespacedName) {
	p.mu.Lock()
	p.dirty[k] = true
	p.pending(time.Now())
	p.mu.Unlock()
	p.Request()
}

// Stats returns the sync counters.
func (p *Proxier) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncs
}

// Contribute renders everything marked since the last commit: the dirty
// services only (RenderPartial), or the whole part pruned against existing
// when full, when the node changed, or when a change cannot be applied on
// its own (a conflict between services).
func (p *Proxier) Contribute(_ context.Context, tx dataplane.Tx, full bool, existing func() (dataplane.Objects, error)) (func(bool), error) {
	p.mu.Lock()
	dirty := p.dirty
	full = full || p.needFull
	if !full && len(dirty) == 0 {
		p.mu.Unlock()
		return nil, nil
	}
	p.dirty = map[types.NamespacedName]bool{}
	node := p.node
	waiting := p.pendingSince
	p.pendingSince = time.Time{}
	p.mu.Unlock()

	start := time.Now()
	var apply func()
	var err error
	if !full {
		full, apply, err = p.partial(tx, dirty, node)
	}
	if full && err == nil {
		apply, err = p.full(tx, node, existing)
	}
	undo := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for k := range dirty {
			p.dirty[k] = true
		}
		p.needFull = p.needFull || full
		p.syncs.Failed++
		if waiting.IsZero() {
			waiting = start
		}
		p.pending(waiting)
	}
	if err != nil {
		undo()
		return nil, err
	}
	return func(ok bool) {
		if !ok {
			undo()
			return
		}
		apply()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.syncs.LastDuration = time.Since(start)
		p.lastSynced = time.Now()
		if full {
			if p.syncs.Full == 0 {
				p.Log.Info("Services programmed", "services", len(p.programmed), "took", time.Since(p.created).Round(time.Millisecond))
			}
			p.needFull = false
			p.syncs.Full++
		} else {
			p.syncs.Partial++
		}
	}, nil
}

// Owned names every object of the proxy's committed state: its static
// chains, sets and maps once it has programmed anything, and the chains and
// sets of its services.
func (p *Proxier) Owned() dataplane.Objects {
	if p.programmed == nil {
		return dataplane.Objects{}
	}
	o := staticObjects()
	chains, sets := Objects(p.programmedState())
	o.Chains = append(o.Chains, chains...)
	o.Sets = append(o.Sets, sets...)
	return o
}

// full rebuilds everything from the listers and renders the proxy's whole
// part, pruned against existing; apply records it as programmed.
func (p *Proxier) full(tx dataplane.Tx, node NodeInfo, existing func() (dataplane.Objects, error)) (apply func(), err error) {
	svcs, err := p.Services.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var eps []*discoveryv1.EndpointSlice
	for _, o := range p.Slices.List() {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, es)
		}
	}
	st, errs := Build(svcs, eps, node)
	conflicted := map[types.NamespacedName]bool{}
	for _, e := range errs {
		var c *conflictError
		if errors.As(e, &c) {
			for _, n := range c.parties {
				conflicted[types.NamespacedName{Namespace: n.Namespace, Name: n.Name}] = true
			}
		}
		p.Log.Info("Service ignored in part", "err", e)
	}
	ex, err := existing()
	if err != nil {
		return nil, err
	}
	Render(tx, st)
	Prune(tx, ex.Chains, ex.Sets, st)

	return func() {
		old := p.programmed
		p.programmed = map[types.NamespacedName][]ServicePort{}
		p.owners = map[destination]types.NamespacedName{}
		for _, sp := range st.Services {
			k := types.NamespacedName{Namespace: sp.Name.Namespace, Name: sp.Name.Name}
			p.programmed[k] = append(p.programmed[k], sp)
			for _, d := range destinations(&sp) {
				p.owners[d] = k
			}
		}
		p.nodeIPs = st.NodeIPs
		p.conflicted = conflicted
		if old != nil {
			var stale, dests []netip.AddrPort
			for k, ports := range p.programmed {
				s, d := udpChanges(old[k], ports, st.NodeIPs)
				stale, dests = append(stale, s...), append(dests, d...)
			}
			for k, ports := range old {
				if _, ok := p.programmed[k]; !ok {
					s, _ := udpChanges(ports, nil, st.NodeIPs)
					stale = append(stale, s...)
				}
			}
			p.clearConntrack(stale, dests)
		}
		if p.Health != nil {
			p.Health(HealthChecks(st))
		}
	}, nil
}

// partial renders only the dirty services. It reports needFull, having
// rendered nothing, when the change cannot be applied on its own: a service
// in a recorded conflict, or a destination another service owns (conflicts
// are resolved by a full Build, which orders claims).
func (p *Proxier) partial(tx dataplane.Tx, dirty map[types.NamespacedName]bool, node NodeInfo) (needFull bool, apply func(), err error) {
	next := map[types.NamespacedName][]ServicePort{}
	var prev, cur State
	prev.NodeIPs, cur.NodeIPs = p.nodeIPs, p.nodeIPs
	health := false
	for k := range dirty {
		if p.conflicted[k] {
			return true, nil, nil
		}
		ports, err := p.buildOne(k, node)
		if err != nil {
			return false, nil, err
		}
		for _, sp := range ports {
			for _, d := range destinations(&sp) {
				if o, taken := p.owners[d]; taken && o != k {
					return true, nil, nil
				}
			}
		}
		next[k] = ports
		prev.Services = append(prev.Services, p.programmed[k]...)
		cur.Services = append(cur.Services, ports...)
		health = health || hasHealthCheck(p.programmed[k]) || hasHealthCheck(ports)
	}
	RenderPartial(tx, prev, cur)

	return false, func() {
		var stale, dests []netip.AddrPort
		for k, ports := range next {
			s, d := udpChanges(p.programmed[k], ports, p.nodeIPs)
			stale, dests = append(stale, s...), append(dests, d...)
			for _, sp := range p.programmed[k] {
				for _, d := range destinations(&sp) {
					delete(p.owners, d)
				}
			}
			if len(ports) == 0 {
				delete(p.programmed, k)
			} else {
				p.programmed[k] = ports
			}
			for _, sp := range ports {
				for _, d := range destinations(&sp) {
					p.owners[d] = k
				}
			}
		}
		p.clearConntrack(stale, dests)
		if health && p.Health != nil {
			p.Health(HealthChecks(p.programmedState()))
		}
	}, nil
}

// programmedState is the programmed state as one State (unsorted; used for
// Objects and HealthChecks, which do not depend on order). O(services):
// partial syncs call it only when a health-checked service changed.
func (p *Proxier) programmedState() State {
	st := State{NodeIPs: p.nodeIPs}
	for _, ports := range p.programmed {
		st.Services = append(st.Services, ports...)
	}
	return st
}

// buildOne builds the ports of one service from the listers; nil when the
// service is gone or has nothing to proxy.
func (p *Proxier) buildOne(k types.NamespacedName, node NodeInfo) ([]ServicePort, error) {
	svc, err := p.Services.Services(k.Namespace).Get(k.Name)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	objs, err := p.Slices.ByIndex(IndexByService, k.String())
	if err != nil {
		return nil, err
	}
	var eps []*discoveryv1.EndpointSlice
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok && es.AddressType == discoveryv1.AddressTypeIPv4 {
			eps = append(eps, es)
		}
	}
	ports, errs := buildService(svc, eps, node)
	for _, e := range errs {
		p.Log.Info("Service ignored in part", "err", e)
	}
	sortPorts(ports)
	return ports, nil
}

func hasHealthCheck(ports []ServicePort) bool {
	return slices.ContainsFunc(ports, func(sp ServicePort) bool { return sp.HealthCheckNodePort != 0 })
}

// destinations are what a service port claims in the dispatch maps.
func destinations(sp *ServicePort) []destination {
	var out []destination
	for _, ips := range [][]netip.Addr{sp.ClusterIPs, sp.ExternalIPs, sp.LoadBalancerIPs} {
		for _, ip := range ips {
			out = append(out, destination{ip, sp.Protocol, sp.Port})
		}
	}
	if sp.NodePort != 0 {
		out = append(out, destination{proto: sp.Protocol, port: sp.NodePort})
	}
	return out
}

// udpChanges: for UDP ports, the endpoints no longer used (stale: their
// conntrack entries must go so flows move on) and, for ports that had no
// endpoint and now have one, their destinations (entries created while
// the traffic was rejected would keep it rejected).
func udpChanges(old, cur []ServicePort, nodeIPs []netip.Addr) (stale, dests []netip.AddrPort) {
	byKey := func(ports []ServicePort) map[string]*ServicePort {
		m := map[string]*ServicePort{}
		for i := range ports {
			if ports[i].Protocol == corev1.ProtocolUDP {
				m[ports[i].Name.Port] = &ports[i]
			}
		}
		return m
	}
	o, n := byKey(old), byKey(cur)
	for name, op := range o {
		keep := map[netip.AddrPort]bool{}
		if np := n[name]; np != nil {
			for _, e := range reachable(np) {
				keep[netip.AddrPortFrom(e.IP, e.Port)] = true
			}
		}
		for _, e := range reachable(op) {
			if ap := netip.AddrPortFrom(e.IP, e.Port); !keep[ap] {
				stale = append(stale, ap)
			}
		}
	}
	for name, np := range n {
		op := o[name]
		if len(reachable(np)) == 0 || (op != nil && len(reachable(op)) > 0) {
			continue
		}
		for _, d := range destinations(np) {
			if d.ip.IsValid() {
				dests = append(dests, netip.AddrPortFrom(d.ip, d.port))
				continue
			}
			for _, ip := range nodeIPs { // a node port, on every node address
				dests = append(dests, netip.AddrPortFrom(ip, d.port))
			}
		}
	}
	return stale, dests
}

func (p *Proxier) clearConntrack(stale, dests []netip.AddrPort) {
	if p.Conntrack == nil || len(stale)+len(dests) == 0 {
		return
	}
	if err := p.Conntrack.ClearUDP(stale, dests); err != nil {
		p.Log.Error(err, "Clearing UDP conntrack entries failed", "endpoints", len(stale), "destinations", len(dests))
	}
}

func sortPorts(ports []ServicePort) {
	slices.SortFunc(ports, comparePorts)
}

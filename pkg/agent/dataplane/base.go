// Package dataplane owns the node's nftables table: the Owner is its one
// writer, collecting the contributions of every feature (the pod network's
// Base, the service proxy, isolation) into one transaction per sync; Base
// and Render are the skeleton the others refer to; Hooks lists every base
// chain's hook and priority. Rendering is pure; the only side effect is
// knftables.Interface.Run. See README.md for the table's contract.
package dataplane

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"
)

// Table is the agent's nftables table (family inet).
const Table = "sluice"

// Chain and set names: the contract other components and operators rely on.
const (
	ChainAntiSpoof = "pod-antispoof"
	ChainMasq      = "pod-masquerade"
	SetClusterCIDR = "cluster-cidrs"
	SetServiceCIDR = "service-cidrs"
	SetPodIfAddrs  = "pod-ifaddrs"
)

// PodIfPrefix starts the name of every pod's host-side interface.
const PodIfPrefix = "slp"

// Pod is one local pod as the dataplane sees it: its host-side interface and
// its address.
type Pod struct {
	Iface string
	IP    netip.Addr
	Owner string // namespace/name; not part of the table, for the layers above
}

// State is the desired dataplane of a node.
type State struct {
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	Pods         []Pod
}

// Base is the pod network's part of the table, the skeleton every other
// feature refers to: the table itself, the cluster-cidrs, service-cidrs and
// pod-ifaddrs sets, anti-spoofing and masquerade. It is a Feature; the pod
// network admits and forgets pods through it (PodAdded, PodRemoved) and the
// agent gives it the cluster's networks (SetNetworks). A change of networks
// re-renders the whole part; pods come and go as set elements.
type Base struct {
	mu      sync.Mutex
	cidrs   State          // ClusterCIDRs and ServiceCIDRs
	pods    map[string]Pod // by interface
	changes Changes
	netGen  uint64 // generation of the last change of networks

	// Used by the owner's sync loop only.
	inTable map[string]Pod // what the table holds, valid after a commit
}

// NewBase returns the base with no pods and no networks.
func NewBase() *Base { return &Base{pods: map[string]Pod{}} }

// Name is "pod network".
func (b *Base) Name() string { return "pod network" }

// SetNetworks sets the cluster and service networks.
func (b *Base) SetNetworks(cluster, service []netip.Prefix) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Equal(cluster, b.cidrs.ClusterCIDRs) && slices.Equal(service, b.cidrs.ServiceCIDRs) {
		return
	}
	b.cidrs.ClusterCIDRs, b.cidrs.ServiceCIDRs = slices.Clone(cluster), slices.Clone(service)
	b.netGen = b.changes.Bump()
}

// PodAdded admits p's address on its interface at the next sync.
func (b *Base) PodAdded(p Pod) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pods[p.Iface] = p
	b.changes.Bump()
}

// PodRemoved forgets the pod on iface at the next sync.
func (b *Base) PodRemoved(iface string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.pods[iface]; ok {
		delete(b.pods, iface)
		b.changes.Bump()
	}
}

// Contribute renders everything when full or when the networks changed,
// else adds and deletes the pods' elements that changed.
func (b *Base) Contribute(_ context.Context, tx Tx, full bool, _ func() (Objects, error)) (func(bool), error) {
	b.mu.Lock()
	gen, pending := b.changes.Pending()
	if !full && !pending {
		b.mu.Unlock()
		return nil, nil
	}
	full = full || !b.changes.Programmed(b.netGen)
	st := clone(b.cidrs)
	pods := maps.Clone(b.pods)
	b.mu.Unlock()

	if full {
		st.Pods = slices.Collect(maps.Values(pods))
		slices.SortFunc(st.Pods, func(x, y Pod) int { return strings.Compare(x.Iface, y.Iface) })
		Render(tx, st)
	} else {
		for iface, p := range b.inTable {
			if q, ok := pods[iface]; !ok || q.IP != p.IP {
				tx.Delete(podElement(p))
			}
		}
		for iface, p := range pods {
			if q, ok := b.inTable[iface]; !ok || q.IP != p.IP {
				tx.Add(podElement(p))
			}
		}
	}
	return func(ok bool) {
		if !ok {
			return
		}
		b.inTable = pods
		b.mu.Lock()
		b.changes.Commit(gen)
		b.mu.Unlock()
	}, nil
}

// BaseChains are the base's chains attached to hooks.
var BaseChains = []BaseChain{
	{Name: ChainAntiSpoof, Type: knftables.FilterType, Hook: knftables.PreroutingHook, Priority: knftables.RawPriority,
		Does: "anti-spoofing, before conntrack: a packet from a pod's interface (`slp*`) must carry that pod's address (`@pod-ifaddrs`); IPv6 from pods is dropped"},
	{Name: ChainMasq, Type: knftables.NATType, Hook: knftables.PostroutingHook, Priority: knftables.SNATPriority,
		Does: "pods' traffic to anything outside the cluster and service networks leaves with the node's address"},
}

// BaseChains declares the base's hooks.
func (b *Base) BaseChains() []BaseChain { return BaseChains }

// Owned: the base's objects are never pruned (only an uninstall deletes
// the table).
func (b *Base) Owned() Objects { return Objects{} }

// Render writes the whole table for s into tx: the skeleton is (re)created,
// chains and sets are flushed and refilled, so the result does not depend on
// what the kernel held before.
func Render(tx Tx, s State) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("sluice: pod network, isolation, services, egress")})

	for _, set := range []struct {
		name, comment string
		cidrs         []netip.Prefix
	}{
		{SetClusterCIDR, "the cluster's pod networks", s.ClusterCIDRs},
		{SetServiceCIDR, "the service network", s.ServiceCIDRs},
	} {
		tx.Add(&knftables.Set{Name: set.name, Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}, Comment: knftables.PtrTo(set.comment)})
		tx.Flush(&knftables.Set{Name: set.name})
		for _, c := range set.cidrs {
			if c.Addr().Is4() {
				tx.Add(&knftables.Element{Set: set.name, Key: []string{c.Masked().String()}})
			}
		}
	}
	tx.Add(&knftables.Set{Name: SetPodIfAddrs, Type: "ifname . ipv4_addr", Comment: knftables.PtrTo("local pods: host-side interface . address")})
	tx.Flush(&knftables.Set{Name: SetPodIfAddrs})
	for _, p := range s.Pods {
		tx.Add(podElement(p))
	}

	// Anti-spoofing, before conntrack: a packet from a pod's interface must
	// carry that pod's address. An interface the set does not know yet (a pod
	// mid-ADD) can send nothing: fail closed.
	tx.Add(Lookup(BaseChains, ChainAntiSpoof).Object())
	tx.Flush(&knftables.Chain{Name: ChainAntiSpoof})
	tx.Add(&knftables.Rule{Chain: ChainAntiSpoof, Rule: knftables.Concat(
		"iifname", `"`+PodIfPrefix+`*"`, "meta nfproto ipv4", "iifname . ip saddr", "!=", "@"+SetPodIfAddrs, "counter drop")})
	tx.Add(&knftables.Rule{Chain: ChainAntiSpoof, Rule: knftables.Concat(
		"iifname", `"`+PodIfPrefix+`*"`, "meta nfproto ipv6", "counter drop")})

	// Masquerade pods' traffic to anything outside the cluster and service
	// networks to the node's address.
	tx.Add(Lookup(BaseChains, ChainMasq).Object())
	tx.Flush(&knftables.Chain{Name: ChainMasq})
	tx.Add(&knftables.Rule{Chain: ChainMasq, Rule: knftables.Concat(
		"ip saddr", "@"+SetClusterCIDR, "ip daddr", "!=", "@"+SetClusterCIDR, "ip daddr", "!=", "@"+SetServiceCIDR, "counter masquerade")})
}

func podElement(p Pod) *knftables.Element {
	return &knftables.Element{Set: SetPodIfAddrs, Key: []string{p.Iface, p.IP.String()}}
}

func clone(s State) State {
	return State{
		ClusterCIDRs: slices.Clone(s.ClusterCIDRs),
		ServiceCIDRs: slices.Clone(s.ServiceCIDRs),
		Pods:         slices.Clone(s.Pods),
	}
}

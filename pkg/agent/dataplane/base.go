// Package dataplane turns the desired state of one node into its nftables
// table and keeps the two in sync. Rendering is pure; the only side effect
// is knftables.Interface.Run, one transaction per sync. See README.md for the
// table's contract.
package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
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

// Dataplane owns the node's table.
type Dataplane struct {
	nft knftables.Interface

	mu       sync.Mutex
	state    State
	needFull bool
}

// New returns a Dataplane that needs a full sync first.
func New(nft knftables.Interface) *Dataplane { return &Dataplane{nft: nft, needFull: true} }

// Sync replaces the desired state and programs all of it in one transaction.
func (d *Dataplane) Sync(ctx context.Context, s State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = clone(s)
	return d.fullSync(ctx)
}

// AddPod admits a pod's address on its interface. It returns only once the
// element is in the kernel, so a CNI ADD that waits for it never lets the
// pod send before anti-spoofing knows it.
func (d *Dataplane) AddPod(ctx context.Context, p Pod) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state.Pods = slices.DeleteFunc(d.state.Pods, func(x Pod) bool { return x.Iface == p.Iface })
	d.state.Pods = append(d.state.Pods, p)
	if d.needFull {
		return d.fullSync(ctx)
	}
	tx := d.nft.NewTransaction()
	tx.Add(podElement(p))
	return d.run(ctx, tx)
}

// RemovePod forgets a pod's interface.
func (d *Dataplane) RemovePod(ctx context.Context, iface string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var gone []Pod
	d.state.Pods = slices.DeleteFunc(d.state.Pods, func(x Pod) bool {
		if x.Iface == iface {
			gone = append(gone, x)
			return true
		}
		return false
	})
	if d.needFull {
		return d.fullSync(ctx)
	}
	if len(gone) == 0 {
		return nil
	}
	tx := d.nft.NewTransaction()
	for _, p := range gone {
		tx.Delete(podElement(p))
	}
	return d.run(ctx, tx)
}

func (d *Dataplane) fullSync(ctx context.Context) error {
	tx := d.nft.NewTransaction()
	Render(tx, d.state)
	return d.run(ctx, tx)
}

// run executes tx; any failure makes the next change a full sync.
func (d *Dataplane) run(ctx context.Context, tx *knftables.Transaction) error {
	success := false
	defer func() { d.needFull = !success }()
	if err := d.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables sync: %w", err)
	}
	success = true
	return nil
}

// Render writes the whole table for s into tx: the skeleton is (re)created,
// chains and sets are flushed and refilled, so the result does not depend on
// what the kernel held before.
func Render(tx *knftables.Transaction, s State) {
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
	tx.Add(&knftables.Chain{Name: ChainAntiSpoof, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.RawPriority)})
	tx.Flush(&knftables.Chain{Name: ChainAntiSpoof})
	tx.Add(&knftables.Rule{Chain: ChainAntiSpoof, Rule: knftables.Concat(
		"iifname", `"`+PodIfPrefix+`*"`, "meta nfproto ipv4", "iifname . ip saddr", "!=", "@"+SetPodIfAddrs, "counter drop")})
	tx.Add(&knftables.Rule{Chain: ChainAntiSpoof, Rule: knftables.Concat(
		"iifname", `"`+PodIfPrefix+`*"`, "meta nfproto ipv6", "counter drop")})

	// Masquerade pods' traffic to anything outside the cluster and service
	// networks to the node's address.
	tx.Add(&knftables.Chain{Name: ChainMasq, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
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

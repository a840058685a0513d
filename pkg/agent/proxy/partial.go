package proxy

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// RenderPartial writes into tx only what changed from prev (which must be
// exactly what the table holds, i.e. the last state a successful sync
// programmed) to next: chains and map elements of added, changed and
// removed service ports. Unchanged service ports are not touched, so their
// affinity entries and the rest of the table survive. When the node's
// addresses changed it falls back to a full Render plus Prune. After it,
// the table equals a fresh full render of next (see the tests); any failed
// transaction must be followed by a full sync (Render + Prune from the
// listed table), never by another partial one.
func RenderPartial(tx dataplane.Tx, prev, next State) {
	if !slices.Equal(prev.NodeIPs, next.NodeIPs) {
		Render(tx, next)
		chains, sets := Objects(prev)
		Prune(tx, chains, sets, next)
		return
	}
	key := func(sp *ServicePort) string { return sp.Name.String() + "/" + string(sp.Protocol) }
	old := map[string]*ServicePort{}
	for i := range prev.Services {
		old[key(&prev.Services[i])] = &prev.Services[i]
	}
	seen := map[string]bool{}
	// Cluster IPs are shared by the ports of a service: one that a touched
	// port no longer has is deleted only if no port of next still has it.
	// The Proxier passes only the dirty services as prev and next, always
	// with all their ports; that suffices because the API server gives a
	// cluster IP to one Service only.
	var goneVIPs []netip.Addr
	addVIPs := func(sp *ServicePort) {
		for _, vip := range sp.ClusterIPs {
			tx.Add(&knftables.Element{Set: SetClusterIPs, Key: []string{vip.String()}})
		}
	}
	for i := range next.Services {
		sp := &next.Services[i]
		k := key(sp)
		seen[k] = true
		o := old[k]
		if o != nil && reflect.DeepEqual(o, sp) {
			continue
		}
		addVIPs(sp)
		if o == nil {
			renderService(tx, sp, next.NodeIPs)
			continue
		}
		for _, vip := range o.ClusterIPs {
			if !slices.Contains(sp.ClusterIPs, vip) {
				goneVIPs = append(goneVIPs, vip)
			}
		}
		oldChains, oldSets := Objects(State{Services: []ServicePort{*o}})
		newChains, newSets := Objects(State{Services: []ServicePort{*sp}})
		// Elements that are the same before and after stay: most changes
		// move endpoints only, so the dispatch element in service-ips (a
		// verdict, which makes the kernel re-check the chains it can reach)
		// is not rewritten.
		rec := &recorder{}
		renderService(rec, sp, next.NodeIPs)
		same := map[string]bool{}
		for _, e := range rec.elements() {
			same[elementID(e)] = true
		}
		kept := map[string]bool{}
		for _, e := range elements(o, prev.NodeIPs) {
			if id := elementID(e); same[id] {
				kept[id] = true
			} else {
				tx.Delete(e)
			}
		}
		for _, c := range oldChains {
			tx.Flush(&knftables.Chain{Name: c})
		}
		for _, s := range oldSets {
			// A set whose timeout changed is recreated; others keep the
			// clients they have learnt.
			if o.AffinitySeconds != sp.AffinitySeconds || !slices.Contains(newSets, s) {
				tx.Delete(&knftables.Set{Name: s})
			}
		}
		rec.replay(tx, kept)
		for _, c := range oldChains {
			if !slices.Contains(newChains, c) {
				tx.Delete(&knftables.Chain{Name: c})
			}
		}
	}
	for i := range prev.Services {
		o := &prev.Services[i]
		if seen[key(o)] {
			continue
		}
		goneVIPs = append(goneVIPs, o.ClusterIPs...)
		chains, sets := Objects(State{Services: []ServicePort{*o}})
		for _, e := range elements(o, prev.NodeIPs) {
			tx.Delete(e)
		}
		for _, c := range chains {
			tx.Flush(&knftables.Chain{Name: c})
		}
		for _, c := range chains {
			tx.Delete(&knftables.Chain{Name: c})
		}
		for _, s := range sets {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
	if len(goneVIPs) > 0 {
		slices.SortFunc(goneVIPs, netip.Addr.Compare)
		used := map[netip.Addr]bool{}
		for i := range next.Services {
			for _, vip := range next.Services[i].ClusterIPs {
				used[vip] = true
			}
		}
		for _, vip := range slices.Compact(goneVIPs) {
			if !used[vip] {
				tx.Delete(&knftables.Element{Set: SetClusterIPs, Key: []string{vip.String()}})
			}
		}
	}
}

// elements are the map elements (and source-range set elements)
// renderService writes for sp.
func elements(sp *ServicePort, nodeIPs []netip.Addr) []*knftables.Element {
	rec := &recorder{}
	renderService(rec, sp, nodeIPs)
	var out []*knftables.Element
	for _, e := range rec.elements() {
		if e.Map != "" || e.Set == SetFirewallIPs || e.Set == SetFirewallAllow {
			out = append(out, e)
		}
	}
	return out
}

// writer is the part of dataplane.Tx renderService uses.
type writer interface {
	Add(knftables.Object)
	Flush(knftables.Object)
}

var _ writer = &knftables.Transaction{}

// recorder keeps what renderService writes, in order, to filter and replay.
type recorder struct{ ops []recorded }

type recorded struct {
	flush bool
	obj   knftables.Object
}

func (r *recorder) Add(o knftables.Object) { r.ops = append(r.ops, recorded{obj: o}) }

func (r *recorder) Flush(o knftables.Object) { r.ops = append(r.ops, recorded{flush: true, obj: o}) }

// elements are the added elements, in order.
func (r *recorder) elements() []*knftables.Element {
	var out []*knftables.Element
	for _, op := range r.ops {
		if e, ok := op.obj.(*knftables.Element); ok && !op.flush {
			out = append(out, e)
		}
	}
	return out
}

// replay writes the recorded operations into tx, except the elements
// whose elementID is in skip (they are in the table already).
func (r *recorder) replay(tx writer, skip map[string]bool) {
	for _, op := range r.ops {
		switch e, isElem := op.obj.(*knftables.Element); {
		case op.flush:
			tx.Flush(op.obj)
		case isElem && skip[elementID(e)]:
		default:
			tx.Add(op.obj)
		}
	}
}

// elementID identifies an element with its container, key, value and
// comment: equal IDs are interchangeable in the table.
func elementID(e *knftables.Element) string {
	c := ""
	if e.Comment != nil {
		c = *e.Comment
	}
	return strings.Join([]string{e.Set, e.Map, strings.Join(e.Key, " . "), strings.Join(e.Value, " . "), c}, "\x00")
}

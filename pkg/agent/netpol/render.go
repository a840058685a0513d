package netpol

import (
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// Render writes the whole isolation part of the table for st into tx: every chain, set and
// map st holds is added, flushed and refilled, so the result does not depend on what the
// table held before, except for per-object chains and sets st no longer has, which Prune
// deletes. Rules refer to the dataplane's cluster-cidrs set: render the dataplane skeleton
// (dataplane.Render) first in the same transaction, or have done so.
func Render(tx dataplane.Tx, st State) {
	tx.Add(&knftables.Table{})
	for i := range st.Sets {
		addSet(tx, &st.Sets[i])
		flushSet(tx, &st.Sets[i])
	}
	for i := range st.Chains {
		tx.Add(chainObject(&st.Chains[i]))
		tx.Flush(&knftables.Chain{Name: st.Chains[i].Name})
	}
	// Elements after the chains: map elements jump to them.
	for i := range st.Sets {
		for _, e := range st.Sets[i].Elements {
			tx.Add(elementObject(&st.Sets[i], e))
		}
	}
	for i := range st.Chains {
		addRules(tx, &st.Chains[i])
	}
}

// Objects lists the per-object chains and sets of st: the ones Prune may delete.
func Objects(st State) (chains, sets []string) {
	for _, c := range st.Chains {
		if ownedChain(c.Name) {
			chains = append(chains, c.Name)
		}
	}
	for _, s := range st.Sets {
		if ownedSet(s.Name) {
			sets = append(sets, s.Name)
		}
	}
	return chains, sets
}

// Prune deletes the per-object chains and sets that exist in the table (chains and sets as
// knftables.Interface.List returned them) but st does not have. Run it in the same
// transaction, after Render, which has flushed every chain and map that could refer to them.
// Static objects and other components' objects (dataplane, service proxy) are never touched.
func Prune(tx dataplane.Tx, chains, sets []string, st State) {
	wantChains, wantSets := Objects(st)
	var stale []string
	for _, c := range chains {
		if ownedChain(c) && !slices.Contains(wantChains, c) {
			stale = append(stale, c)
			tx.Flush(&knftables.Chain{Name: c})
		}
	}
	for _, c := range stale {
		tx.Delete(&knftables.Chain{Name: c})
	}
	for _, s := range sets {
		if ownedSet(s) && !slices.Contains(wantSets, s) {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
}

// RenderPartial writes into tx only what changed from prev (exactly what the table holds:
// the last State a successful sync programmed) to next: new objects are added, chains whose
// rules changed are flushed and refilled, set and map elements are added and deleted one by
// one, objects next lacks are deleted. Unchanged objects are not in the transaction. If an
// object kept its name but changed its definition (type, flags, hook, priority, comment),
// it falls back to Render + Prune. Afterwards the table equals a fresh Render of next. Any
// failed transaction must be followed by a full sync (Render + Prune from the listed
// table), never by another partial one.
func RenderPartial(tx dataplane.Tx, prev, next State) {
	oldChains := map[string]*Chain{}
	for i := range prev.Chains {
		oldChains[prev.Chains[i].Name] = &prev.Chains[i]
	}
	oldSets := map[string]*Set{}
	for i := range prev.Sets {
		oldSets[prev.Sets[i].Name] = &prev.Sets[i]
	}
	for i := range next.Chains {
		c := &next.Chains[i]
		if o := oldChains[c.Name]; o != nil && (o.Comment != c.Comment || o.Hook != c.Hook || o.Priority != c.Priority) {
			fullSync(tx, prev, next)
			return
		}
	}
	for i := range next.Sets {
		s := &next.Sets[i]
		if o := oldSets[s.Name]; o != nil && (o.Type != s.Type || o.Map != s.Map || o.Interval != s.Interval || o.Comment != s.Comment) {
			fullSync(tx, prev, next)
			return
		}
	}

	// New sets and chains first, so that rules and map elements can refer to them.
	for i := range next.Sets {
		if oldSets[next.Sets[i].Name] == nil {
			addSet(tx, &next.Sets[i])
		}
	}
	for i := range next.Chains {
		if oldChains[next.Chains[i].Name] == nil {
			tx.Add(chainObject(&next.Chains[i]))
		}
	}
	// Elements: deletions first, so an element whose verdict changed is re-added.
	for i := range next.Sets {
		s := &next.Sets[i]
		var old []Element
		if o := oldSets[s.Name]; o != nil {
			old = o.Elements
		}
		// Compared through maps: sets hold every pod of a peer, so a
		// pairwise comparison would be quadratic in the cluster's pods.
		had, has := elementIndex(old), elementIndex(s.Elements)
		for _, e := range old {
			if !has[elementID(e)] {
				tx.Delete(elementObject(s, e))
			}
		}
		for _, e := range s.Elements {
			if !had[elementID(e)] {
				tx.Add(elementObject(s, e))
			}
		}
	}
	for i := range next.Chains {
		c := &next.Chains[i]
		o := oldChains[c.Name]
		switch {
		case o == nil:
			addRules(tx, c)
		case !slices.Equal(o.Rules, c.Rules):
			tx.Flush(&knftables.Chain{Name: c.Name})
			addRules(tx, c)
		}
	}
	// Objects next lacks: nothing refers to them any more (their referrers were rewritten
	// above or are deleted with them; elements pointing at them were deleted).
	var goneChains, goneSets []string
	for name := range oldChains {
		if !slices.ContainsFunc(next.Chains, func(c Chain) bool { return c.Name == name }) {
			goneChains = append(goneChains, name)
		}
	}
	for name := range oldSets {
		if !slices.ContainsFunc(next.Sets, func(s Set) bool { return s.Name == name }) {
			goneSets = append(goneSets, name)
		}
	}
	slices.Sort(goneChains)
	slices.Sort(goneSets)
	for _, c := range goneChains {
		tx.Flush(&knftables.Chain{Name: c})
	}
	for _, c := range goneChains {
		tx.Delete(&knftables.Chain{Name: c})
	}
	for _, s := range goneSets {
		if oldSets[s].Map {
			tx.Delete(&knftables.Map{Name: s})
		} else {
			tx.Delete(&knftables.Set{Name: s})
		}
	}
}

// elementID identifies an element with its value and comment: a change of
// either is a delete and an add.
func elementID(e Element) string {
	return strings.Join(e.Key, " . ") + "\x00" + e.Value + "\x00" + e.Comment
}

func elementIndex(es []Element) map[string]bool {
	m := make(map[string]bool, len(es))
	for _, e := range es {
		m[elementID(e)] = true
	}
	return m
}

func fullSync(tx dataplane.Tx, prev, next State) {
	Render(tx, next)
	chains, sets := Objects(prev)
	Prune(tx, chains, sets, next)
}

func chainObject(c *Chain) *knftables.Chain {
	ch := &knftables.Chain{Name: c.Name}
	if c.Comment != "" {
		ch.Comment = knftables.PtrTo(truncate(c.Comment, maxCommentLen))
	}
	if c.Hook != "" {
		ch.Type = knftables.PtrTo(knftables.FilterType)
		ch.Hook = knftables.PtrTo(c.Hook)
		ch.Priority = knftables.PtrTo(c.Priority)
	}
	return ch
}

func addRules(tx dataplane.Tx, c *Chain) {
	for _, r := range c.Rules {
		rule := &knftables.Rule{Chain: c.Name, Rule: r.Rule}
		if r.Comment != "" {
			rule.Comment = knftables.PtrTo(truncate(r.Comment, maxCommentLen))
		}
		tx.Add(rule)
	}
}

func addSet(tx dataplane.Tx, s *Set) {
	var comment *string
	if s.Comment != "" {
		comment = knftables.PtrTo(truncate(s.Comment, maxCommentLen))
	}
	if s.Map {
		tx.Add(&knftables.Map{Name: s.Name, Type: s.Type + " : verdict", Comment: comment})
		return
	}
	set := &knftables.Set{Name: s.Name, Type: s.Type, Comment: comment}
	if s.Interval {
		set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
	}
	tx.Add(set)
}

func flushSet(tx dataplane.Tx, s *Set) {
	if s.Map {
		tx.Flush(&knftables.Map{Name: s.Name})
	} else {
		tx.Flush(&knftables.Set{Name: s.Name})
	}
}

func elementObject(s *Set, e Element) *knftables.Element {
	el := &knftables.Element{Key: e.Key}
	if s.Map {
		el.Map, el.Value = s.Name, []string{e.Value}
	} else {
		el.Set = s.Name
	}
	if e.Comment != "" {
		el.Comment = knftables.PtrTo(truncate(e.Comment, maxCommentLen))
	}
	return el
}

// ownedChain: a per-object chain name (see the prefixes in state.go).
func ownedChain(name string) bool {
	return hashed(name, prefixPolicyIngress, prefixPolicyEgress, prefixIsolatedIngress, prefixIsolatedEgress) ||
		vnidName(name, "")
}

// ownedSet: a per-object set name.
func ownedSet(name string) bool {
	return hashed(name, prefixPeers, prefixCIDR, prefixPort) || vnidName(name, suffixTenantSet)
}

// hashed: one of prefixes, then the 8-character base32 hash and a dash.
func hashed(name string, prefixes ...string) bool {
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(name, p)
		if ok && len(rest) >= 9 && rest[8] == '-' && strings.Trim(rest[:8], "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == "" {
			return true
		}
	}
	return false
}

// vnidName: "tenant-" + a decimal VNID + suffix.
func vnidName(name, suffix string) bool {
	rest, ok := strings.CutPrefix(name, prefixTenant)
	if !ok {
		return false
	}
	rest, ok = strings.CutSuffix(rest, suffix)
	return ok && rest != "" && strings.Trim(rest, "0123456789") == ""
}

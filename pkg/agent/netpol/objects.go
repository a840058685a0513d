package netpol

import (
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// objects is the desired isolation part of one node's table held as indexed, mutable
// objects, together with what changed since the last commit: for every chain, set and
// element touched since, its committed value. The Compiler changes it only through put and
// del, so a partial render needs no comparison of whole States: it writes exactly the
// touched objects whose committed and desired values differ.
type objects struct {
	chains map[string]*Chain // never changed in place: put replaces
	sets   map[string]*liveSet

	// Since the last commit: the committed value of each touched object (nil: absent).
	chainWas map[string]*Chain
	setWas   map[string]*Set // definition only (Elements nil)
	elemWas  map[string]map[string]*Element
}

// liveSet is a set's definition (Elements unused) and its elements by key.
type liveSet struct {
	def   Set
	elems map[string]Element
}

func newObjects() objects {
	return objects{chains: map[string]*Chain{}, sets: map[string]*liveSet{},
		chainWas: map[string]*Chain{}, setWas: map[string]*Set{}, elemWas: map[string]map[string]*Element{}}
}

func (o *objects) touchChain(name string) {
	if _, ok := o.chainWas[name]; !ok {
		o.chainWas[name] = o.chains[name]
	}
}

func (o *objects) putChain(c *Chain) {
	o.touchChain(c.Name)
	o.chains[c.Name] = c
}

func (o *objects) delChain(name string) {
	if _, ok := o.chains[name]; !ok {
		return
	}
	o.touchChain(name)
	delete(o.chains, name)
}

func (o *objects) touchSet(name string) {
	if _, ok := o.setWas[name]; !ok {
		if s := o.sets[name]; s != nil {
			def := s.def
			o.setWas[name] = &def
		} else {
			o.setWas[name] = nil
		}
	}
}

// putSet adds the set (without elements) or, when it exists, keeps its elements.
func (o *objects) putSet(def *Set) {
	o.touchSet(def.Name)
	d := *def
	d.Elements = nil
	if s := o.sets[def.Name]; s != nil {
		s.def = d
		return
	}
	o.sets[def.Name] = &liveSet{def: d, elems: map[string]Element{}}
}

// delSet deletes the set and its elements (each recorded, in case the set comes back
// before the next commit).
func (o *objects) delSet(name string) {
	s := o.sets[name]
	if s == nil {
		return
	}
	o.touchSet(name)
	for k := range s.elems {
		o.delElem(name, k)
	}
	delete(o.sets, name)
}

func (o *objects) touchElem(set, key string) {
	was := o.elemWas[set]
	if was == nil {
		was = map[string]*Element{}
		o.elemWas[set] = was
	}
	if _, ok := was[key]; ok {
		return
	}
	if e, ok := o.sets[set].elems[key]; ok {
		was[key] = &e
	} else {
		was[key] = nil
	}
}

// putElem adds or replaces an element of an existing set.
func (o *objects) putElem(set string, e Element) {
	k := elementKey(e)
	if old, ok := o.sets[set].elems[k]; ok && elementID(old) == elementID(e) {
		return
	}
	o.touchElem(set, k)
	o.sets[set].elems[k] = e
}

func (o *objects) delElem(set, key string) {
	s := o.sets[set]
	if s == nil {
		return
	}
	if _, ok := s.elems[key]; !ok {
		return
	}
	o.touchElem(set, key)
	delete(s.elems, key)
}

// commit forgets the committed values: the table now holds the desired objects.
func (o *objects) commit() {
	clear(o.chainWas)
	clear(o.setWas)
	clear(o.elemWas)
}

// state is the desired objects as a State (as Build returns it).
func (o *objects) state() State {
	st := State{}
	for _, c := range o.chains {
		st.Chains = append(st.Chains, *c)
	}
	for _, s := range o.sets {
		set := s.def
		for _, e := range s.elems {
			set.Elements = append(set.Elements, e)
		}
		slices.SortFunc(set.Elements, func(x, y Element) int { return strings.Compare(elementKey(x), elementKey(y)) })
		st.Sets = append(st.Sets, set)
	}
	slices.SortFunc(st.Chains, func(x, y Chain) int { return strings.Compare(x.Name, y.Name) })
	slices.SortFunc(st.Sets, func(x, y Set) int { return strings.Compare(x.Name, y.Name) })
	return st
}

// committedObjects lists the per-object chains and sets the table holds after the last
// commit (Objects of the committed State).
func (o *objects) committedObjects() (chains, sets []string) {
	for name, c := range o.chains {
		if was, touched := o.chainWas[name]; (!touched || was != nil) && c != nil && ownedChain(name) {
			chains = append(chains, name)
		}
	}
	for name, was := range o.chainWas {
		if _, now := o.chains[name]; !now && was != nil && ownedChain(name) {
			chains = append(chains, name)
		}
	}
	for name := range o.sets {
		if was, touched := o.setWas[name]; (!touched || was != nil) && ownedSet(name) {
			sets = append(sets, name)
		}
	}
	for name, was := range o.setWas {
		if _, now := o.sets[name]; !now && was != nil && ownedSet(name) {
			sets = append(sets, name)
		}
	}
	slices.Sort(chains)
	slices.Sort(sets)
	return chains, sets
}

// render writes into tx what changed since the last commit, in RenderPartial's order: new
// sets and chains, element deletions, element additions, rules of new and changed chains,
// then the chains and sets that went. It returns false, writing nothing, when an object
// kept its name but changed its definition: that needs a full render.
func (o *objects) render(tx dataplane.Tx) bool {
	for name, was := range o.setWas {
		if now := o.sets[name]; was != nil && now != nil && !sameSetDef(was, &now.def) {
			return false
		}
	}
	for name, was := range o.chainWas {
		if now := o.chains[name]; was != nil && now != nil && !sameChainDef(was, now) {
			return false
		}
	}
	setNames := sortedKeys(o.setWas)
	chainNames := sortedKeys(o.chainWas)
	for _, name := range setNames {
		if now := o.sets[name]; o.setWas[name] == nil && now != nil {
			def := now.def
			addSet(tx, &def)
		}
	}
	for _, name := range chainNames {
		if now := o.chains[name]; o.chainWas[name] == nil && now != nil {
			tx.Add(chainObject(now))
		}
	}
	elemSets := sortedKeys(o.elemWas)
	keys := make(map[string][]string, len(elemSets))
	for _, name := range elemSets {
		keys[name] = sortedKeys(o.elemWas[name])
	}
	// Deletions first, so an element whose verdict changed is re-added.
	for _, name := range elemSets {
		now := o.sets[name]
		if now == nil {
			continue // the set goes, with its elements
		}
		for _, k := range keys[name] {
			old := o.elemWas[name][k]
			if cur, ok := now.elems[k]; old != nil && (!ok || elementID(cur) != elementID(*old)) {
				tx.Delete(elementObject(&now.def, *old))
			}
		}
	}
	for _, name := range elemSets {
		now := o.sets[name]
		if now == nil {
			continue
		}
		for _, k := range keys[name] {
			old := o.elemWas[name][k]
			if cur, ok := now.elems[k]; ok && (old == nil || elementID(cur) != elementID(*old)) {
				tx.Add(elementObject(&now.def, cur))
			}
		}
	}
	var goneChains []string
	for _, name := range chainNames {
		was, now := o.chainWas[name], o.chains[name]
		switch {
		case now == nil:
			if was != nil {
				goneChains = append(goneChains, name)
			}
		case was == nil:
			addRules(tx, now)
		case !slices.Equal(was.Rules, now.Rules):
			tx.Flush(&knftables.Chain{Name: name})
			addRules(tx, now)
		}
	}
	// Nothing refers to the objects that went: their referrers were rewritten above or go
	// with them, and elements pointing at them were deleted.
	for _, name := range goneChains {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, name := range goneChains {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range setNames {
		if was := o.setWas[name]; was != nil && o.sets[name] == nil {
			if was.Map {
				tx.Delete(&knftables.Map{Name: name})
			} else {
				tx.Delete(&knftables.Set{Name: name})
			}
		}
	}
	return true
}

func sameSetDef(x, y *Set) bool {
	return x.Type == y.Type && x.Map == y.Map && x.Interval == y.Interval && x.Comment == y.Comment
}

func sameChainDef(x, y *Chain) bool {
	return x.Comment == y.Comment && x.Hook == y.Hook && x.Priority == y.Priority
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

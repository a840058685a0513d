package subnet

import (
	"math"
	"net/netip"
	"slices"
)

// Index is a set of named allocations (the subnets HostSubnets hold, or that a controller has
// just handed out) kept in a binary trie of prefixes, so that the questions the controller
// asks for every node cost O(address bits) instead of a pass over every allocation:
//
//   - Next: the free host subnet the Allocator's Next would return for the same allocations;
//   - Used: the Allocator's Used for them;
//   - Overlapping: the names whose subnet overlaps a network (its ancestors on the path from
//     the root, then the subtree below it).
//
// Every trie node inside a pool down to the pool's host-subnet length knows whether it is full
// (no free host subnet below it) and how many host subnets below it are blocked, updated along
// the path of each change. Allocations of another family or outside the pools are kept for
// Overlapping and block nothing, as with the Allocator. An Index is not safe for concurrent use.
type Index struct {
	pools  []Pool
	byName map[string]netip.Prefix
	roots  [2]*node // IPv4, IPv6
}

// node is one prefix of the trie; it exists while an allocation lies at or below it.
type node struct {
	prefix netip.Prefix
	parent *node
	child  [2]*node
	names  []string // allocations of exactly this prefix
	sub    int      // allocations at or below this node
	// Inside a pool, at most as long as its host subnets: full when no host subnet below is
	// free; blocked is how many are not (saturated at math.MaxInt64).
	full    bool
	blocked int64
}

// NewIndex is an empty index over the allocator's pools.
func (a *Allocator) NewIndex() *Index { return NewIndex(a.pools) }

// NewIndex is an empty index over pools (none: it answers Overlapping only).
func NewIndex(pools []Pool) *Index {
	return &Index{pools: slices.Clone(pools), byName: map[string]netip.Prefix{}}
}

// Pools are the index's pools.
func (ix *Index) Pools() []Pool { return slices.Clone(ix.pools) }

// Len is the number of allocations.
func (ix *Index) Len() int { return len(ix.byName) }

// Get is name's allocation.
func (ix *Index) Get(name string) (netip.Prefix, bool) {
	p, ok := ix.byName[name]
	return p, ok
}

// Each calls fn for every allocation, in no particular order.
func (ix *Index) Each(fn func(name string, p netip.Prefix)) {
	for name, p := range ix.byName {
		fn(name, p)
	}
}

// Set records that name holds p (masked), replacing what name held. An invalid p removes name.
func (ix *Index) Set(name string, p netip.Prefix) {
	if old, ok := ix.byName[name]; ok {
		if p.IsValid() && old == p.Masked() {
			return
		}
		ix.remove(name, old)
	}
	if !p.IsValid() {
		return
	}
	p = p.Masked()
	ix.byName[name] = p
	n := ix.path(p, true)
	n.names = append(n.names, name)
	ix.update(n)
}

// Delete forgets name's allocation.
func (ix *Index) Delete(name string) {
	if old, ok := ix.byName[name]; ok {
		ix.remove(name, old)
	}
}

func (ix *Index) remove(name string, p netip.Prefix) {
	delete(ix.byName, name)
	n := ix.path(p, false)
	if n == nil {
		return
	}
	if i := slices.Index(n.names, name); i >= 0 {
		n.names = slices.Delete(n.names, i, i+1)
	}
	ix.update(n)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// bit is bit i (0 the most significant) of a.
func bit(a netip.Addr, i int) int {
	b := a.As16()
	if a.Is4() {
		i += 96
	}
	return int(b[i/8]>>(7-i%8)) & 1
}

// path walks from the root to p's node, creating missing nodes when create is set (else nil
// when one is missing).
func (ix *Index) path(p netip.Prefix, create bool) *node {
	root := &ix.roots[family(p.Addr())]
	if *root == nil {
		if !create {
			return nil
		}
		*root = &node{prefix: netip.PrefixFrom(p.Addr(), 0).Masked()}
	}
	n := *root
	for d := 0; d < p.Bits(); d++ {
		b := bit(p.Addr(), d)
		if n.child[b] == nil {
			if !create {
				return nil
			}
			n.child[b] = &node{prefix: netip.PrefixFrom(p.Addr(), d+1).Masked(), parent: n}
		}
		n = n.child[b]
	}
	return n
}

// poolOf is the pool containing prefix q, if any.
func (ix *Index) poolOf(q netip.Prefix) (Pool, bool) {
	for _, p := range ix.pools {
		if p.CIDR.Bits() <= q.Bits() && p.CIDR.Contains(q.Addr()) {
			return p, true
		}
	}
	return Pool{}, false
}

// update recomputes n and its ancestors after a change at n, and prunes empty nodes.
func (ix *Index) update(n *node) {
	for ; n != nil; n = n.parent {
		n.sub = len(n.names)
		for _, c := range n.child {
			if c != nil {
				n.sub += c.sub
			}
		}
		if n.sub == 0 {
			if n.parent == nil {
				ix.roots[family(n.prefix.Addr())] = nil
			} else {
				n.parent.child[bit(n.prefix.Addr(), n.prefix.Bits()-1)] = nil
			}
			continue
		}
		n.full, n.blocked = false, 0
		p, ok := ix.poolOf(n.prefix)
		if !ok || n.prefix.Bits() > p.SubnetBits() {
			continue
		}
		switch {
		case len(n.names) > 0 || n.prefix.Bits() == p.SubnetBits():
			// Held itself, or a host subnet with something inside it.
			n.full, n.blocked = true, capacity(p, n.prefix.Bits())
		default:
			n.full = n.child[0] != nil && n.child[0].full && n.child[1] != nil && n.child[1].full
			for _, c := range n.child {
				if c != nil {
					n.blocked = satAdd(n.blocked, c.blocked)
				}
			}
		}
	}
}

// capacity is how many host subnets of p a prefix of bits bits holds, saturated.
func capacity(p Pool, bits int) int64 {
	if e := p.SubnetBits() - bits; e < 63 {
		return 1 << e
	}
	return math.MaxInt64
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// poolNode is the node of pool p's CIDR (nil when nothing lies in the pool), and whether an
// allocation holding a network around the pool blocks all of it.
func (ix *Index) poolNode(p Pool) (n *node, covered bool) {
	n = ix.roots[family(p.CIDR.Addr())]
	for d := 0; n != nil; d++ {
		if len(n.names) > 0 && d < p.CIDR.Bits() {
			return nil, true
		}
		if d == p.CIDR.Bits() {
			return n, false
		}
		n = n.child[bit(p.CIDR.Addr(), d)]
	}
	return nil, false
}

// Next is the free host subnet with the lowest address in the first pool that has one, as the
// Allocator's Next for the index's allocations; an *ExhaustedError when there is none.
func (ix *Index) Next() (netip.Prefix, error) {
	for _, p := range ix.pools {
		n, covered := ix.poolNode(p)
		if covered || n != nil && n.full {
			continue
		}
		if n == nil {
			return netip.PrefixFrom(p.CIDR.Addr(), p.SubnetBits()), nil
		}
		// n is not full: one of its children is absent (all free) or not full.
		for {
			d := n.prefix.Bits()
			var next *node
			for b := range 2 {
				c := n.child[b]
				if c == nil {
					a := n.prefix.Addr()
					if b == 1 {
						a = setBit(a, d)
					}
					return netip.PrefixFrom(a, p.SubnetBits()), nil
				}
				if !c.full {
					next = c
					break
				}
			}
			n = next
		}
	}
	return netip.Prefix{}, &ExhaustedError{Pools: slices.Clone(ix.pools), Capacity: (&Allocator{pools: ix.pools}).Capacity()}
}

// setBit is a with bit i (0 the most significant) set.
func setBit(a netip.Addr, i int) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[i/8] |= 1 << (7 - i%8)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	b[i/8] |= 1 << (7 - i%8)
	return netip.AddrFrom16(b)
}

// Used is the Allocator's Used for the index's allocations: how many of the pools' host
// subnets overlap one of them, saturated at math.MaxInt64.
func (ix *Index) Used() int64 {
	var total int64
	for _, p := range ix.pools {
		n, covered := ix.poolNode(p)
		switch {
		case covered:
			total = satAdd(total, p.Count())
		case n != nil:
			total = satAdd(total, n.blocked)
		}
	}
	return total
}

// Overlapping are the names whose allocation overlaps p, sorted.
func (ix *Index) Overlapping(p netip.Prefix) []string {
	if !p.IsValid() {
		return nil
	}
	p = p.Masked()
	var out []string
	n := ix.roots[family(p.Addr())]
	for d := 0; n != nil; d++ {
		if d == p.Bits() {
			collect(n, &out)
			break
		}
		out = append(out, n.names...)
		n = n.child[bit(p.Addr(), d)]
	}
	slices.Sort(out)
	return out
}

// collect appends the names at and below n.
func collect(n *node, out *[]string) {
	*out = append(*out, n.names...)
	for _, c := range n.child {
		if c != nil {
			collect(c, out)
		}
	}
}

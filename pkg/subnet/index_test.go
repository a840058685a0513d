package subnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// indexModel is the Index's contract spelled out the slow way: the Allocator's answers for
// the list of every allocation, and a pass over all of them for Overlapping.
type indexModel map[string]netip.Prefix

func (m indexModel) list() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

func (m indexModel) overlapping(p netip.Prefix) []string {
	var out []string
	for name, q := range m {
		if q.Overlaps(p) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// checkIndex compares every answer of the index with the model's.
func checkIndex(t *testing.T, step string, a *Allocator, ix *Index, m indexModel, probes []netip.Prefix) {
	t.Helper()
	list := m.list()
	want, wantErr := a.Next(list)
	got, gotErr := ix.Next()
	if got != want || (wantErr == nil) != (gotErr == nil) {
		t.Fatalf("%s: Next = %v, %v; the allocator says %v, %v (allocations %v)", step, got, gotErr, want, wantErr, list)
	}
	if wantErr != nil && (!errors.Is(gotErr, ErrExhausted) || gotErr.Error() != wantErr.Error()) {
		t.Fatalf("%s: Next error %q, want %q", step, gotErr, wantErr)
	}
	if got, want := ix.Used(), a.Used(list); got != want {
		t.Fatalf("%s: Used = %d, want %d (allocations %v)", step, got, want, list)
	}
	if ix.Len() != len(m) {
		t.Fatalf("%s: Len = %d, want %d", step, ix.Len(), len(m))
	}
	for _, p := range probes {
		if got, want := ix.Overlapping(p), m.overlapping(p); !slices.Equal(got, want) {
			t.Fatalf("%s: Overlapping(%v) = %v, want %v", step, p, got, want)
		}
	}
}

// randomPrefix is a prefix near the pools: mostly of their host subnet size, some larger or
// smaller, some outside them, some of the other family.
func randomPrefix(r *rand.Rand, pools []Pool) netip.Prefix {
	p := pools[r.IntN(len(pools))]
	bits := p.SubnetBits()
	switch r.IntN(10) {
	case 0:
		bits = p.CIDR.Bits() - 1 - r.IntN(3) // around the pool
	case 1, 2:
		bits = p.SubnetBits() - 1 - r.IntN(3) // an older, larger host subnet
	case 3:
		bits = p.SubnetBits() + 1 + r.IntN(3) // smaller
	}
	bits = max(0, min(bits, p.CIDR.Addr().BitLen()))
	a := p.CIDR.Addr().As16()
	// Random bits below the pool's prefix, within a few host subnets of its start, so that
	// allocations collide and nest.
	span := uint64(r.IntN(24))
	if r.IntN(20) == 0 {
		span = r.Uint64() // anywhere, also outside the pool
	}
	hostBits := p.CIDR.Addr().BitLen() - p.SubnetBits()
	off := p.CIDR.Addr().BitLen() - hostBits // bit position of the host subnet index's last bit
	v := span
	for i := off - 1; i >= 0 && v > 0; i-- {
		if v&1 == 1 {
			pos := i
			if p.CIDR.Addr().Is4() {
				pos += 96
			}
			a[pos/8] ^= 1 << (7 - pos%8)
		}
		v >>= 1
	}
	addr := netip.AddrFrom16(a)
	if p.CIDR.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, bits).Masked()
}

// TestIndexMatchesAllocator applies random sequences of allocations and releases (of every
// size, nested, duplicated, outside the pools) to an Index and checks each answer against the
// Allocator given the whole list.
func TestIndexMatchesAllocator(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
	}{
		{"IPv4 one pool", []entry{{CIDR: "10.128.0.0/22", HostSubnetLength: 6}}},
		{"IPv4 two pools", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 5}, {CIDR: "10.1.0.0/23", HostSubnetLength: 6}}},
		{"IPv6", []entry{{CIDR: "fd00:10::/60", HostSubnetLength: 64}}},
		{"IPv6 huge", []entry{{CIDR: "fd00::/8", HostSubnetLength: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.entries, "172.30.0.0/16")
			if err != nil {
				a, err = New(tc.entries, "fd00:ffff::/112")
			}
			if err != nil {
				t.Fatal(err)
			}
			pools := a.Pools()
			r := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			for seq := range 30 {
				ix := a.NewIndex()
				m := indexModel{}
				var probes []netip.Prefix
				for range 8 {
					probes = append(probes, randomPrefix(r, pools))
				}
				for _, p := range pools {
					probes = append(probes, p.CIDR)
				}
				for step := range 60 {
					name := fmt.Sprintf("n%d", r.IntN(12))
					switch op := r.IntN(10); {
					case op < 2:
						ix.Delete(name)
						delete(m, name)
					case op < 5:
						// What a controller does: take the next free one.
						p, err := ix.Next()
						if err != nil {
							continue
						}
						ix.Set(name, p)
						m[name] = p
					default:
						p := randomPrefix(r, pools)
						ix.Set(name, p)
						m[name] = p
					}
					checkIndex(t, fmt.Sprintf("sequence %d step %d", seq, step), a, ix, m, probes)
				}
			}
		})
	}
}

// TestIndexManyNodes allocates 5,000 host subnets one after another as the controller does
// (Next, then Set), frees some and allocates again: every subnet is handed out once, in
// address order, and freed ones first.
func TestIndexManyNodes(t *testing.T) {
	a, err := New([]entry{{CIDR: "10.64.0.0/10", HostSubnetLength: 9}}, "172.30.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	ix := a.NewIndex()
	const n = 5000
	seen := map[netip.Prefix]string{}
	for i := range n {
		p, err := ix.Next()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("node%05d", i)
		if o, dup := seen[p]; dup {
			t.Fatalf("%s got %v, already %s's", name, p, o)
		}
		seen[p] = name
		ix.Set(name, p)
	}
	// In address order: /23s from 10.64.0.0.
	if p, _ := ix.Get("node04999"); p != netip.MustParsePrefix("10.103.14.0/23") {
		t.Errorf("node04999 has %v, want 10.103.14.0/23 (the 5000th /23 of 10.64.0.0/10)", p)
	}
	if got := ix.Used(); got != n {
		t.Errorf("Used = %d, want %d", got, n)
	}
	// Free three; they come back lowest first, then allocation goes on after the last.
	for _, name := range []string{"node03000", "node00007", "node04000"} {
		ix.Delete(name)
	}
	var got []string
	for i := range 4 {
		p, err := ix.Next()
		if err != nil {
			t.Fatal(err)
		}
		ix.Set(fmt.Sprintf("again%d", i), p)
		got = append(got, p.String())
	}
	want := []string{"10.64.14.0/23", "10.87.112.0/23", "10.95.64.0/23", "10.103.16.0/23"}
	if !slices.Equal(got, want) {
		t.Errorf("after freeing: %v, want %v", got, want)
	}
	if l := ix.Overlapping(netip.MustParsePrefix("10.64.0.0/22")); !slices.Equal(l, []string{"node00000", "node00001"}) {
		t.Errorf("Overlapping(10.64.0.0/22) = %v", l)
	}
	if l := ix.Overlapping(netip.MustParsePrefix("10.64.2.128/25")); !slices.Equal(l, []string{"node00001"}) {
		t.Errorf("Overlapping(10.64.2.128/25) = %v", l)
	}
}

// TestIndexExhaustion fills a pool: the error names it, as the Allocator's does.
func TestIndexExhaustion(t *testing.T) {
	a, err := New([]entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 7}}, "172.30.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	ix := a.NewIndex()
	for i := range 2 {
		p, err := ix.Next()
		if err != nil {
			t.Fatal(err)
		}
		ix.Set(fmt.Sprint(i), p)
	}
	_, err = ix.Next()
	if !errors.Is(err, ErrExhausted) || err.Error() != "no free host subnet: all 2 host subnets of the cluster networks 10.0.0.0/24 (/25 host subnets) are allocated" {
		t.Errorf("Next on a full pool: %v", err)
	}
	ix.Set("0", netip.Prefix{}) // an invalid prefix removes
	if p, err := ix.Next(); err != nil || p != netip.MustParsePrefix("10.0.0.0/25") {
		t.Errorf("after removing 0: %v, %v", p, err)
	}
}

// BenchmarkIndexAllocate5000 is the controller's allocation path at 5,000 nodes: Next and Set
// per node, from empty.
func BenchmarkIndexAllocate5000(b *testing.B) {
	a, err := New([]entry{{CIDR: "10.64.0.0/10", HostSubnetLength: 9}}, "172.30.0.0/16")
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("node%05d", i)
	}
	for b.Loop() {
		ix := a.NewIndex()
		for _, name := range names {
			p, err := ix.Next()
			if err != nil {
				b.Fatal(err)
			}
			ix.Set(name, p)
		}
	}
}

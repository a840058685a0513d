package subnet

import (
	"cmp"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

// ErrExhausted is what Next returns (wrapped in an *ExhaustedError) when every host subnet
// of every pool is taken.
var ErrExhausted = errors.New("no free host subnet")

// ExhaustedError says which pools are full.
type ExhaustedError struct {
	Pools    []Pool
	Capacity int64
}

func (e *ExhaustedError) Error() string {
	cidrs := make([]string, len(e.Pools))
	for i, p := range e.Pools {
		cidrs[i] = p.String()
	}
	return fmt.Sprintf("%v: all %d host subnets of the cluster networks %s are allocated", ErrExhausted, e.Capacity, strings.Join(cidrs, ", "))
}

// Is makes errors.Is(err, ErrExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// Allocator hands out host subnets from a list of pools. It holds no allocation state: every
// call is given the subnets in use, so that the HostSubnets in the API stay the only record
// and two calls with the same input give the same answer.
type Allocator struct {
	pools []Pool
}

// New validates a ClusterNetwork's address fields (see Parse) and returns an allocator for
// its cluster networks. The error is a fielderr.List naming each bad field.
func New(entries []sluicev1alpha1.ClusterNetworkEntry, serviceNetwork string) (*Allocator, error) {
	pools, err := Parse(entries, serviceNetwork)
	if err != nil {
		return nil, err
	}
	return &Allocator{pools: pools}, nil
}

// Pools are the allocator's cluster networks, in order.
func (a *Allocator) Pools() []Pool { return slices.Clone(a.pools) }

// Capacity is the number of host subnets in all pools, saturated at math.MaxInt64.
func (a *Allocator) Capacity() int64 {
	total := new(big.Int)
	for _, p := range a.pools {
		total.Add(total, pow2(HostBits(p.CIDR)-p.HostSubnetLength))
	}
	return saturate(total)
}

// Contains reports whether s lies inside one of the pools.
func (a *Allocator) Contains(s netip.Prefix) bool {
	for _, p := range a.pools {
		if p.CIDR.Bits() <= s.Bits() && p.CIDR.Overlaps(s) {
			return true
		}
	}
	return false
}

// Used is how many of the pools' host subnets overlap one of the allocated subnets. With
// allocations of the pool's own size that is the number of allocations inside the pools; an
// allocation of another size (made before hostSubnetLength changed) counts for every host
// subnet it touches. Allocations outside the pools count for nothing. Saturated at
// math.MaxInt64.
func (a *Allocator) Used(allocated []netip.Prefix) int64 {
	total := new(big.Int)
	for _, p := range a.pools {
		size := pow2(p.HostSubnetLength)
		for _, iv := range blockedIntervals(p, allocated) {
			n := new(big.Int).Sub(iv.end, iv.start)
			total.Add(total, n.Quo(n, size))
		}
	}
	return saturate(total)
}

// Free is Capacity − Used.
func (a *Allocator) Free(allocated []netip.Prefix) int64 {
	return a.Capacity() - a.Used(allocated)
}

// Next returns the free host subnet with the lowest address in the first pool that has one.
// Allocated subnets may be of any size and family; those of another family or outside the
// pools are ignored. When nothing is free the error is an *ExhaustedError.
func (a *Allocator) Next(allocated []netip.Prefix) (netip.Prefix, error) {
	for _, p := range a.pools {
		if s, ok := nextInPool(p, allocated); ok {
			return s, nil
		}
	}
	return netip.Prefix{}, &ExhaustedError{Pools: a.Pools(), Capacity: a.Capacity()}
}

// interval is a half-open range of addresses [start, end).
type interval struct{ start, end *big.Int }

// blockedIntervals are the parts of pool p that allocated subnets make unusable, widened to
// whole host subnets, sorted and merged.
func blockedIntervals(p Pool, allocated []netip.Prefix) []interval {
	first, last := bounds(p.CIDR)
	end := new(big.Int).Add(last, big1)
	size := pow2(p.HostSubnetLength)
	var ivs []interval
	for _, s := range allocated {
		if !s.IsValid() || !s.Overlaps(p.CIDR) {
			continue
		}
		sf, sl := bounds(s)
		start := alignDown(maxInt(sf, first), size)
		stop := alignUp(new(big.Int).Add(minInt(sl, last), big1), size)
		if stop.Cmp(end) > 0 {
			stop = end
		}
		ivs = append(ivs, interval{start, stop})
	}
	slices.SortFunc(ivs, func(x, y interval) int {
		return cmp.Or(x.start.Cmp(y.start), x.end.Cmp(y.end))
	})
	merged := ivs[:0]
	for _, iv := range ivs {
		if n := len(merged); n > 0 && iv.start.Cmp(merged[n-1].end) <= 0 {
			if iv.end.Cmp(merged[n-1].end) > 0 {
				merged[n-1].end = iv.end
			}
			continue
		}
		merged = append(merged, iv)
	}
	return merged
}

// nextInPool is the lowest host subnet of p that no blocked interval covers.
func nextInPool(p Pool, allocated []netip.Prefix) (netip.Prefix, bool) {
	first, last := bounds(p.CIDR)
	cursor := first
	for _, iv := range blockedIntervals(p, allocated) {
		if iv.start.Cmp(cursor) > 0 {
			break // the host subnet at cursor ends before this interval starts (both are aligned)
		}
		cursor = iv.end
	}
	if cursor.Cmp(last) > 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(intAddr(cursor, p.CIDR.Addr().Is4()), p.SubnetBits()), true
}

func alignDown(x, size *big.Int) *big.Int {
	q := new(big.Int).Quo(x, size)
	return q.Mul(q, size)
}

func alignUp(x, size *big.Int) *big.Int {
	q := new(big.Int).Add(x, size)
	q.Sub(q, big1)
	q.Quo(q, size)
	return q.Mul(q, size)
}

func maxInt(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

func minInt(a, b *big.Int) *big.Int {
	if a.Cmp(b) <= 0 {
		return a
	}
	return b
}

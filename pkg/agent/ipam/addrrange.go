package ipam

import (
	"fmt"
	"math"
	"net/netip"
)

// addrRange is the part of a subnet handed out to pods, and the order in
// which it is searched. It does no I/O.
//
//	IPv4 10.128.1.0/24: .0 network, .1 gateway (the node), .2–.254 pods, .255 broadcast
//	IPv6 fd00:1::/64:   ::0 subnet-router anycast, ::1 gateway, ::2–last pods
type addrRange struct {
	subnet      netip.Prefix // masked
	gateway     netip.Addr
	first, last netip.Addr // pods, inclusive
	size        uint64     // number of pod addresses, saturated at MaxUint64
}

func newRange(subnet netip.Prefix) (addrRange, error) {
	if !subnet.IsValid() {
		return addrRange{}, fmt.Errorf("invalid subnet %v", subnet)
	}
	subnet = subnet.Masked()
	network := subnet.Addr()
	end := lastAddr(subnet)
	hostBits := network.BitLen() - subnet.Bits()
	r := addrRange{subnet: subnet, gateway: network.Next(), first: network.Next().Next(), last: end}
	reserved := uint64(2) // network, gateway
	if network.Is4() {
		r.last = end.Prev() // broadcast
		reserved = 3
	}
	// Network, gateway and (IPv4) broadcast, plus at least one pod.
	if hostBits < 2 {
		return addrRange{}, fmt.Errorf("subnet %s is too small: no address left for pods after the network, gateway and broadcast addresses", subnet)
	}
	if hostBits >= 64 {
		r.size = math.MaxUint64
	} else {
		r.size = uint64(1)<<hostBits - reserved
	}
	return r, nil
}

// contains says whether a is one of the pod addresses.
func (r addrRange) contains(a netip.Addr) bool {
	return a.BitLen() == r.first.BitLen() && !a.Less(r.first) && !r.last.Less(a)
}

// next is the pod address after a, wrapping from last to first.
func (r addrRange) next(a netip.Addr) netip.Addr {
	if !r.contains(a) || a == r.last {
		return r.first
	}
	return a.Next()
}

// nextFree returns the first address after `after` (round robin: the search
// starts where the previous allocation stopped, so a just-freed address is
// handed out again only when all others are taken) for which used is false.
// inUse is how many pod addresses are taken; it bounds the search. ok is
// false when the range is full.
func (r addrRange) nextFree(after netip.Addr, inUse uint64, used func(netip.Addr) bool) (addr netip.Addr, ok bool) {
	if inUse >= r.size {
		return netip.Addr{}, false
	}
	a := after
	if !r.contains(a) {
		a = r.last // so that the first candidate is r.first
	}
	// Fewer than size addresses are used, so at most inUse+1 steps find a
	// free one; the bound only guards against a wrong inUse.
	for steps := uint64(0); steps <= inUse && steps < r.size; steps++ {
		a = r.next(a)
		if !used(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// lastAddr is the highest address of p (IPv4 broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	start := 0
	if p.Addr().Is4() {
		start = 96
	}
	for i := start + p.Bits(); i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

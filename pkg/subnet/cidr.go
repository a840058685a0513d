package subnet

import (
	"fmt"
	"math/big"
	"net/netip"
)

// ParseCIDR parses a network in CIDR notation strictly: the address must be the network's
// (no host bits set) and an IPv4 network must be written as IPv4, not IPv4-mapped IPv6. Its
// errors are one line that shows the value; callers put the field's path in front.
func ParseCIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, fmt.Errorf(`"" is not a CIDR; want one such as 10.128.0.0/14`)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 network; write the IPv4 network", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set; the network is %s", s, m)
	}
	return p, nil
}

// Family is "IPv4" or "IPv6".
func Family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// HostBits is the number of host bits of a network: 18 for a /14 in IPv4.
func HostBits(p netip.Prefix) int { return p.Addr().BitLen() - p.Bits() }

// Overlap is the common part of two networks, which either nest or are disjoint: the
// smaller one, or false when they are disjoint.
func Overlap(a, b netip.Prefix) (netip.Prefix, bool) {
	if !a.Overlaps(b) {
		return netip.Prefix{}, false
	}
	if b.Bits() > a.Bits() {
		return b, true
	}
	return a, true
}

// The allocator does its address arithmetic on big integers so that IPv4 and IPv6 share
// one code path and nothing overflows at the top of the IPv6 space.

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func intAddr(n *big.Int, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		n.FillBytes(b[:])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	n.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

// bounds is the first and last address of p as integers.
func bounds(p netip.Prefix) (first, last *big.Int) {
	first = addrInt(p.Masked().Addr())
	last = new(big.Int).Add(first, pow2(HostBits(p)))
	last.Sub(last, big1)
	return first, last
}

var big1 = big.NewInt(1)

func pow2(n int) *big.Int { return new(big.Int).Lsh(big1, uint(n)) }

// saturate returns n as an int64, or math.MaxInt64 when it does not fit (IPv6 counts).
func saturate(n *big.Int) int64 {
	if n.IsInt64() {
		return n.Int64()
	}
	return 1<<63 - 1
}

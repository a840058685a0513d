package nfttrace

import (
	"net/netip"
	"slices"
	"strconv"
)

// What both tracers read the same way.

// hasPrefix: w starts with the words p.
func hasPrefix(w []string, p ...string) bool {
	return len(w) >= len(p) && slices.Equal(w[:len(p)], p)
}

// fieldValue is the packet's value of a rule's match field, as nft writes
// set elements; false for a field the tracers do not model.
func fieldValue(f string, src, dst netip.Addr, proto string, port int) (string, bool) {
	switch f {
	case "ip saddr":
		return src.String(), true
	case "ip daddr":
		return dst.String(), true
	case "meta l4proto":
		return proto, true
	case "th dport":
		return strconv.Itoa(port), true
	}
	return "", false
}

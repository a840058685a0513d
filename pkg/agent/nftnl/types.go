package nftnl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"golang.org/x/sys/unix"
)

// dtype is one nft data type as the kernel stores it: nft's type number
// (folded into a set's key type for concatenations), the value's size and
// its byte order.
type dtype struct {
	name  string
	magic uint32
	size  int
	host  bool // host byte order (integers, marks); else network order
}

var (
	tIPv4    = dtype{"ipv4_addr", 7, 4, false}
	tProto   = dtype{"inet_proto", 12, 1, false}
	tService = dtype{"inet_service", 13, 2, false}
	tIfname  = dtype{"ifname", 41, 16, false}
	tMark    = dtype{"mark", 19, 4, true}
	tInteger = dtype{"integer", 4, 4, true}
	tVerdict = dtype{"verdict", 1, 0, false}
)

var byName = map[string]dtype{}

func init() {
	for _, t := range []dtype{tIPv4, tProto, tService, tIfname, tMark, tInteger, tVerdict} {
		byName[t.name] = t
	}
}

// padded is the size a value takes in a concatenation: registers are
// 4 bytes wide, every field starts on one.
func (t dtype) padded() int { return (t.size + 3) &^ 3 }

// words is the number of 4-byte registers a value of t occupies.
func (t dtype) words() int { return t.padded() / 4 }

// parse encodes one value of t (not a range).
func (t dtype) parse(s string) ([]byte, error) {
	s = strings.Trim(s, `"`)
	b := make([]byte, t.size)
	switch t.magic {
	case tIPv4.magic:
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", s)
		}
		a4 := a.As4()
		copy(b, a4[:])
	case tProto.magic:
		p, ok := protocols[s]
		if !ok {
			n, err := strconv.ParseUint(s, 10, 8)
			if err != nil {
				return nil, fmt.Errorf("%q is not a protocol", s)
			}
			p = byte(n)
		}
		b[0] = p
	case tService.magic:
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%q is not a port", s)
		}
		binary.BigEndian.PutUint16(b, uint16(n))
	case tIfname.magic:
		if len(s) >= t.size {
			return nil, fmt.Errorf("interface name %q is too long", s)
		}
		copy(b, s)
	case tMark.magic, tInteger.magic:
		n, err := strconv.ParseUint(s, 0, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a %s", s, t.name)
		}
		copy(b, binaryutil.NativeEndian.PutUint32(uint32(n)))
	default:
		return nil, fmt.Errorf("values of type %s are not supported", t.name)
	}
	return b, nil
}

// parseRange encodes a value of t that may be a range ("80-90") or, for
// addresses, a prefix: the first and the last value it covers.
func (t dtype) parseRange(s string) (first, last []byte, err error) {
	s = strings.Trim(s, `"`)
	switch {
	case t.magic == tIPv4.magic && strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, nil, fmt.Errorf("%q is not an IPv4 prefix", s)
		}
		p = p.Masked()
		a := p.Addr().As4()
		n := binary.BigEndian.Uint32(a[:])
		if p.Bits() < 32 {
			n |= 1<<(32-p.Bits()) - 1
		}
		last = binary.BigEndian.AppendUint32(nil, n)
		return a[:], last, nil
	case strings.Contains(s, "-") && t.magic != tIfname.magic:
		lo, hi, _ := strings.Cut(s, "-")
		if first, err = t.parse(lo); err != nil {
			return nil, nil, err
		}
		if last, err = t.parse(hi); err != nil {
			return nil, nil, err
		}
		return first, last, nil
	}
	first, err = t.parse(s)
	return first, first, err
}

var protocols = map[string]byte{"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}

// typ is a set's key or a map's data: one type or a concatenation.
type typ []dtype

// size is the length of a value of the type, fields padded.
func (t typ) size() int {
	if len(t) == 1 {
		return t[0].size
	}
	n := 0
	for _, f := range t {
		n += f.padded()
	}
	return n
}

// magic folds the field types the way nft does, 6 bits each.
func (t typ) magic() uint32 {
	var m uint32
	for _, f := range t {
		m = m<<nftables.SetConcatTypeBits | f.magic
	}
	return m
}

func (t typ) isVerdict() bool { return len(t) == 1 && t[0].magic == tVerdict.magic }

func (t typ) String() string {
	names := make([]string, len(t))
	for i, f := range t {
		names[i] = f.name
	}
	return strings.Join(names, " . ")
}

// parseType reads "ipv4_addr . inet_service".
func parseType(s string) (typ, error) {
	var t typ
	for _, f := range strings.Split(s, ".") {
		d, ok := byName[strings.TrimSpace(f)]
		if !ok {
			return nil, fmt.Errorf("type %q is not supported", strings.TrimSpace(f))
		}
		t = append(t, d)
	}
	return t, nil
}

// parseTypeOf reads the expressions of a "typeof" declaration
// ("ip daddr . tcp dport . numgen random mod 2"): the types they load, and
// their description as nft stores it with the set.
func parseTypeOf(s string) (typ, []typeofExpr, error) {
	var t typ
	var es []typeofExpr
	for _, f := range strings.Split(s, " . ") {
		toks := strings.Fields(f)
		sel, n, err := selector(toks)
		if err != nil {
			return nil, nil, fmt.Errorf("typeof %q: %w", s, err)
		}
		if n != len(toks) {
			return nil, nil, fmt.Errorf("typeof %q: %q is not one expression", s, f)
		}
		var e typeofExpr
		if sel.numgen {
			mod, _ := strconv.ParseUint(toks[3], 10, 32) // checked by selector
			e = typeofExpr{kind: exprNumgen, props: []uint32{unix.NFT_NG_RANDOM, uint32(mod), 0}}
		} else if ids, ok := payloadIDs[strings.Join(toks, " ")]; ok {
			e = typeofExpr{kind: exprPayload, props: ids[:]}
		} else {
			return nil, nil, fmt.Errorf("typeof %q: %q is not supported", s, f)
		}
		t = append(t, sel.t)
		es = append(es, e)
	}
	return t, es, nil
}

// encode packs one value per field of t (each padded to 4 bytes in a
// concatenation); with ranges, the first and last values.
func (t typ) encode(fields []string, ranges bool) (key, keyEnd []byte, err error) {
	if len(fields) == 1 && len(t) > 1 {
		fields = strings.Split(fields[0], " . ")
	}
	if len(fields) != len(t) {
		return nil, nil, fmt.Errorf("%q has %d fields, type %s has %d", strings.Join(fields, " . "), len(fields), t, len(t))
	}
	for i, f := range t {
		var lo, hi []byte
		if ranges {
			lo, hi, err = f.parseRange(strings.TrimSpace(fields[i]))
		} else {
			lo, err = f.parse(strings.TrimSpace(fields[i]))
			hi = lo
		}
		if err != nil {
			return nil, nil, err
		}
		if len(t) > 1 {
			lo = pad(lo)
			hi = pad(hi)
		}
		key = append(key, lo...)
		keyEnd = append(keyEnd, hi...)
	}
	return key, keyEnd, nil
}

func pad(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

package nftnl

import (
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// The kernel comparison (test/integration TestNetlinkMatchesNFT) holds the
// compiler to nft's bytecode for everything the features write; these check
// the parts that do not need a kernel.

func sets(name string) (SetInfo, bool) {
	switch name {
	case "ips":
		return SetInfo{Key: typ{tIPv4}}, true
	case "fw":
		return SetInfo{Key: typ{tIPv4, tProto, tService, tIPv4}, Interval: true}, true
	case "ep":
		return SetInfo{Key: typ{tIPv4, tService, tInteger}, Data: typ{tIPv4, tService}, Map: true}, true
	}
	return SetInfo{}, false
}

func TestCompileImpliedMatchesOncePerRule(t *testing.T) {
	exprs, _, err := compileRule("ip saddr @ips ip daddr != @ips tcp dport 80 accept", sets)
	if err != nil {
		t.Fatal(err)
	}
	var nfproto, l4 int
	for _, e := range exprs {
		if m, ok := e.(*expr.Meta); ok {
			switch m.Key {
			case expr.MetaKeyNFPROTO:
				nfproto++
			case expr.MetaKeyL4PROTO:
				l4++
			}
		}
	}
	if nfproto != 1 || l4 != 1 {
		t.Errorf("meta nfproto loaded %d times, l4proto %d times; want each once", nfproto, l4)
	}
	if v, ok := exprs[len(exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictAccept {
		t.Errorf("last expression %#v, want accept", exprs[len(exprs)-1])
	}
}

func TestCompileConcatenationRegisters(t *testing.T) {
	exprs, _, err := compileRule("ip daddr . meta l4proto . th dport . ip saddr != @fw counter drop", sets)
	if err != nil {
		t.Fatal(err)
	}
	var regs []uint32
	for _, e := range exprs[2:] { // after the implied nfproto match
		switch x := e.(type) {
		case *expr.Payload:
			regs = append(regs, x.DestRegister)
		case *expr.Meta:
			regs = append(regs, x.Register)
		}
	}
	// Fields at words 0, 1, 2, 3: NFT_REG_1, then the 4-byte registers.
	want := []uint32{unix.NFT_REG_1, unix.NFT_REG32_01, unix.NFT_REG32_02, unix.NFT_REG32_03}
	if len(regs) != len(want) {
		t.Fatalf("registers %v, want %v", regs, want)
	}
	for i := range want {
		if regs[i] != want[i] {
			t.Errorf("field %d in register %d, want %d", i, regs[i], want[i])
		}
	}
}

func TestCompileInlineMapDeclaresAnonymousSet(t *testing.T) {
	exprs, anon, err := compileRule("meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.0.0.1 . 80 , 1 : 10.0.0.2 . 8080 }", sets)
	if err != nil {
		t.Fatal(err)
	}
	if len(anon) != 1 || len(anon[0].elems) != 2 || !anon[0].set.anonymous || anon[0].set.id == 0 {
		t.Fatalf("anonymous sets %+v, want one constant map with two elements and an ID", anon)
	}
	var lookup *expr.Lookup
	for _, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok {
			lookup = l
		}
	}
	if lookup == nil || lookup.SetID != anon[0].set.id {
		t.Errorf("the rule's lookup %+v does not refer to the map by its ID %d", lookup, anon[0].set.id)
	}
	if got := anon[0].elems[1].val; string(got) != string([]byte{10, 0, 0, 2, 0x1f, 0x90, 0, 0}) {
		t.Errorf("element 1 value %x, want 0a000002 1f900000 (address, port padded)", got)
	}
}

func TestCompileRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, rule := range []string{
		"ip6 saddr ::1 accept",         // not a selector the features use
		"ip saddr @nosuchset accept",   // an unknown set
		"tcp flags syn accept",         // an unsupported field
		"meta l4proto tcp th dport x",  // a bad port
		"ip saddr 10.0.0.300 accept",   // a bad address
		"dnat ip to ip daddr map @ips", // a map of the wrong type
		"numgen random mod 2 vmap { 0 : goto a , 1 }",
	} {
		_, _, err := compileRule(rule, sets)
		if err == nil {
			t.Errorf("%q compiled; want an error", rule)
			continue
		}
		if !strings.Contains(err.Error(), rule) {
			t.Errorf("%q: error %q does not name the rule", rule, err)
		}
	}
}

func TestEncodeIntervalElements(t *testing.T) {
	// A prefix in a plain interval set: its first address, and the one
	// after its last as an end element.
	els, err := encodeElement(SetInfo{Key: typ{tIPv4}, Interval: true}, elem("10.128.0.0/14"), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 2 || string(els[0].key) != "\x0a\x80\x00\x00" || string(els[1].key) != "\x0a\x84\x00\x00" || !els[1].end {
		t.Errorf("10.128.0.0/14 → %+v", els)
	}
	// A range reaching the top has no end element.
	if els, _ := encodeElement(SetInfo{Key: typ{tIPv4}, Interval: true}, elem("0.0.0.0/0"), false); len(els) != 1 {
		t.Errorf("0.0.0.0/0 → %d elements, want 1", len(els))
	}
	// Over a concatenation: key and key end, fields padded.
	els, err = encodeElement(SetInfo{Key: typ{tIPv4, tProto, tService, tIPv4}, Interval: true}, elem("198.51.100.20", "tcp", "80", "203.0.113.0/24"), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 1 || len(els[0].key) != 16 || els[0].key[15] != 0 || els[0].keyEnd[15] != 255 {
		t.Errorf("firewall element → %+v", els)
	}
}

func elem(key ...string) *knftables.Element { return &knftables.Element{Key: key} }

package nftnl

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// This file compiles the rule text the features write (knftables.Rule.Rule)
// into the kernel's expressions, the bytecode nft itself would send for the
// same text: the same loads, registers, implied protocol matches and set
// lookups, so that `nft list` shows the rule as it was written and the
// packet path is the one the features' tracers model. Only the grammar the
// features use is understood; anything else is an error that names the rule,
// never a guess.

// nfproto is nft's nf_proto type (meta nfproto).
var tNfproto = dtype{"nf_proto", 2, 1, true}

// tFibAddr is the result of fib ... type.
var tFibAddr = dtype{"fib_addrtype", 38, 4, true}

// tFlags4 stands for ct state and ct status: 32-bit flag words.
var tFlags4 = dtype{"ct_flags", 28, 4, true}

type depKind int

const (
	depNone depKind = iota
	depIPv4         // meta nfproto ipv4
	depL4           // meta l4proto <proto>
)

// sel is one value a rule reads from the packet or its metadata.
type sel struct {
	t      dtype
	load   func(reg uint32) []expr.Any
	dep    depKind
	proto  byte              // for depL4
	flags  map[string]uint32 // for flag types (ct state, ct status)
	names  map[string]uint32 // symbolic values (fib address types)
	numgen bool
}

var ctState = map[string]uint32{"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
var ctStatus = map[string]uint32{"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16, "dnat": 32, "dying": 512}

// selector reads one selector at the start of toks; n is the number of
// tokens it took.
func selector(toks []string) (s sel, n int, err error) {
	if len(toks) == 0 {
		return sel{}, 0, fmt.Errorf("missing expression")
	}
	at := func(i int) string {
		if i < len(toks) {
			return toks[i]
		}
		return ""
	}
	payload := func(base expr.PayloadBase, off, size uint32) func(uint32) []expr.Any {
		return func(reg uint32) []expr.Any {
			return []expr.Any{&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: base, Offset: off, Len: size}}
		}
	}
	meta := func(k expr.MetaKey) func(uint32) []expr.Any {
		return func(reg uint32) []expr.Any { return []expr.Any{&expr.Meta{Key: k, Register: reg}} }
	}
	switch at(0) {
	case "ip":
		switch at(1) {
		case "saddr":
			return sel{t: tIPv4, load: payload(expr.PayloadBaseNetworkHeader, 12, 4), dep: depIPv4}, 2, nil
		case "daddr":
			return sel{t: tIPv4, load: payload(expr.PayloadBaseNetworkHeader, 16, 4), dep: depIPv4}, 2, nil
		}
	case "th", "tcp", "udp", "sctp":
		var off uint32
		switch at(1) {
		case "sport":
		case "dport":
			off = 2
		default:
			return sel{}, 0, fmt.Errorf("%s %s is not supported", at(0), at(1))
		}
		s := sel{t: tService, load: payload(expr.PayloadBaseTransportHeader, off, 2)}
		if at(0) != "th" {
			s.dep, s.proto = depL4, protocols[at(0)]
		}
		return s, 2, nil
	case "meta":
		switch at(1) {
		case "l4proto":
			return sel{t: tProto, load: meta(expr.MetaKeyL4PROTO)}, 2, nil
		case "nfproto":
			return sel{t: tNfproto, load: meta(expr.MetaKeyNFPROTO), names: map[string]uint32{"ipv4": unix.NFPROTO_IPV4, "ipv6": unix.NFPROTO_IPV6}}, 2, nil
		case "mark":
			return sel{t: tMark, load: meta(expr.MetaKeyMARK)}, 2, nil
		}
	case "iifname":
		return sel{t: tIfname, load: meta(expr.MetaKeyIIFNAME)}, 1, nil
	case "oifname":
		return sel{t: tIfname, load: meta(expr.MetaKeyOIFNAME)}, 1, nil
	case "ct":
		var key expr.CtKey
		var flags map[string]uint32
		switch at(1) {
		case "state":
			key, flags = expr.CtKeySTATE, ctState
		case "status":
			key, flags = expr.CtKeySTATUS, ctStatus
		default:
			return sel{}, 0, fmt.Errorf("ct %s is not supported", at(1))
		}
		return sel{t: tFlags4, flags: flags, load: func(reg uint32) []expr.Any {
			return []expr.Any{&expr.Ct{Key: key, Register: reg}}
		}}, 2, nil
	case "fib":
		if at(1) == "saddr" && at(2) == "type" {
			return sel{t: tFibAddr, names: map[string]uint32{"unicast": unix.RTN_UNICAST, "local": unix.RTN_LOCAL}, load: func(reg uint32) []expr.Any {
				return []expr.Any{&expr.Fib{Register: reg, FlagSADDR: true, ResultADDRTYPE: true}}
			}}, 3, nil
		}
	case "numgen":
		if at(1) == "random" && at(2) == "mod" {
			mod, err := strconv.ParseUint(at(3), 10, 32)
			if err != nil || mod == 0 {
				return sel{}, 0, fmt.Errorf("numgen modulus %q", at(3))
			}
			return sel{t: tInteger, numgen: true, load: func(reg uint32) []expr.Any {
				return []expr.Any{&expr.Numgen{Register: reg, Modulus: uint32(mod), Type: unix.NFT_NG_RANDOM}}
			}}, 4, nil
		}
	}
	return sel{}, 0, fmt.Errorf("expression %q is not supported", strings.Join(toks[:min(len(toks), 3)], " "))
}

// reg converts a register offset in 4-byte words (0 is the start of
// NFT_REG_1) to the number nft sends: the 16-byte register where the offset
// starts one, else the 4-byte register.
func reg(words int) uint32 {
	if words%4 == 0 {
		return uint32(unix.NFT_REG_1 + words/4)
	}
	return uint32(unix.NFT_REG32_00 + words)
}

// SetInfo is what compiling needs to know about a named set or map.
type SetInfo struct {
	Key, Data typ
	Interval  bool
	Map       bool
}

// compiler turns one rule's text into expressions.
type compiler struct {
	toks    []string
	pos     int
	out     []expr.Any
	anon    []anonSet
	sets    func(name string) (SetInfo, bool)
	haveIP4 bool
	haveL4  map[byte]bool
}

// anonSet is an anonymous set or map a rule declares inline; it is added
// in the same batch just before the rule.
type anonSet struct {
	set   *setSpec
	elems []element
}

// compileRule compiles text; sets describes the named sets it may refer to.
func compileRule(text string, sets func(string) (SetInfo, bool)) ([]expr.Any, []anonSet, error) {
	c := &compiler{toks: tokenize(text), sets: sets, haveL4: map[byte]bool{}}
	for c.pos < len(c.toks) {
		if err := c.statement(); err != nil {
			return nil, nil, fmt.Errorf("rule %q: %w", text, err)
		}
	}
	return c.out, c.anon, nil
}

// tokenize splits on blanks and around braces and commas, keeping quoted
// strings whole.
func tokenize(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case quoted:
			cur.WriteRune(r)
		case r == ' ' || r == '\t':
			flush()
		case r == '{' || r == '}':
			flush()
			out = append(out, string(r))
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

func (c *compiler) peek(i int) string {
	if c.pos+i < len(c.toks) {
		return c.toks[c.pos+i]
	}
	return ""
}

func (c *compiler) next() string {
	t := c.peek(0)
	c.pos++
	return t
}

func (c *compiler) emit(e ...expr.Any) { c.out = append(c.out, e...) }

// need emits the implied match s depends on, once per rule.
func (c *compiler) need(s sel) {
	switch s.dep {
	case depIPv4:
		if !c.haveIP4 {
			c.emit(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
			c.haveIP4 = true
		}
	case depL4:
		if !c.haveL4[s.proto] {
			c.emit(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{s.proto}})
			c.haveL4[s.proto] = true
		}
	}
}

func (c *compiler) statement() error {
	switch t := c.peek(0); t {
	case "counter":
		c.next()
		c.emit(&expr.Counter{})
		return nil
	case "accept", "drop", "return":
		c.next()
		kind := map[string]expr.VerdictKind{"accept": expr.VerdictAccept, "drop": expr.VerdictDrop, "return": expr.VerdictReturn}[t]
		c.emit(&expr.Verdict{Kind: kind})
		return nil
	case "jump", "goto":
		c.next()
		chain := c.next()
		if chain == "" {
			return fmt.Errorf("%s without a chain", t)
		}
		kind := expr.VerdictJump
		if t == "goto" {
			kind = expr.VerdictGoto
		}
		c.emit(&expr.Verdict{Kind: kind, Chain: chain})
		return nil
	case "reject":
		c.next()
		if c.haveIP4 {
			// The rule matched IPv4 already: nft rejects with ICMP.
			c.emit(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}) // port unreachable
		} else {
			c.emit(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
		}
		return nil
	case "masquerade":
		c.next()
		m := &expr.Masq{}
		if c.peek(0) == "fully-random" {
			c.next()
			m.FullyRandom = true
		}
		c.emit(m)
		return nil
	case "dnat":
		return c.dnat()
	case "update":
		return c.update()
	case "meta":
		if c.peek(1) == "mark" && c.peek(2) == "set" {
			return c.markSet()
		}
	}
	return c.relational()
}

// lhs reads a selector or a concatenation of selectors and loads them into
// consecutive registers from NFT_REG_1; it returns the fields read.
func (c *compiler) lhs() ([]sel, error) {
	var sels []sel
	for {
		s, n, err := selector(c.toks[c.pos:])
		if err != nil {
			return nil, err
		}
		c.pos += n
		sels = append(sels, s)
		if c.peek(0) != "." {
			break
		}
		c.next()
	}
	for _, s := range sels {
		c.need(s)
	}
	return sels, nil
}

// load puts sels in consecutive registers. For a lookup in a set of
// ranges over a concatenation (ranged), nft converts each sub-word integer
// field to network order in place, right after its load; so does load.
func (c *compiler) load(sels []sel, ranged bool) {
	w := 0
	for _, s := range sels {
		r := reg(w)
		c.emit(s.load(r)...)
		if ranged && s.t.magic == tProto.magic {
			c.emit(&expr.Byteorder{SourceRegister: r, DestRegister: r, Op: expr.ByteorderHton, Len: 1, Size: 2})
		}
		w += s.t.words()
	}
}

func fieldTypes(sels []sel) typ {
	t := make(typ, len(sels))
	for i, s := range sels {
		t[i] = s.t
	}
	return t
}

// relational compiles "LHS [!=|==] RHS" and "LHS vmap ...".
func (c *compiler) relational() error {
	sels, err := c.lhs()
	if err != nil {
		return err
	}
	op := expr.CmpOpEq
	switch c.peek(0) {
	case "!=":
		op = expr.CmpOpNeq
		c.next()
	case "==":
		c.next()
	case "vmap":
		c.next()
		c.load(sels, false)
		return c.lookup(sels, false, true)
	case "&":
		// "meta mark & MASK == VALUE"
		if len(sels) != 1 {
			return fmt.Errorf("a mask on a concatenation")
		}
		c.next()
		mask, err := sels[0].t.parse(c.next())
		if err != nil {
			return err
		}
		switch c.next() {
		case "==":
		case "!=":
			op = expr.CmpOpNeq
		default:
			return fmt.Errorf("want == or != after a mask")
		}
		v, err := sels[0].t.parse(c.next())
		if err != nil {
			return err
		}
		c.load(sels, false)
		c.emit(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))},
			&expr.Cmp{Op: op, Register: 1, Data: v})
		return nil
	}
	if name, ok := strings.CutPrefix(c.peek(0), "@"); ok {
		info, _ := c.sets(name) // lookup reports an unknown set
		c.load(sels, info.Interval && len(info.Key) > 1)
		return c.lookup(sels, op == expr.CmpOpNeq, false)
	}
	if len(sels) != 1 {
		return fmt.Errorf("a concatenation compared with a value")
	}
	s := sels[0]
	v := c.next()
	if v == "" {
		return fmt.Errorf("missing value")
	}
	switch {
	case s.flags != nil:
		var bits uint32
		for _, f := range strings.Split(v, ",") {
			b, ok := s.flags[f]
			if !ok {
				return fmt.Errorf("unknown flag %q", f)
			}
			bits |= b
		}
		c.load(sels, false)
		mask := binaryutil.NativeEndian.PutUint32(bits)
		c.emit(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
		cmp := expr.CmpOpNeq
		if op == expr.CmpOpNeq {
			cmp = expr.CmpOpEq
		}
		c.emit(&expr.Cmp{Op: cmp, Register: 1, Data: make([]byte, 4)})
		return nil
	case s.names != nil:
		n, ok := s.names[v]
		if !ok {
			return fmt.Errorf("unknown value %q", v)
		}
		b := binaryutil.NativeEndian.PutUint32(n)[:s.t.size]
		c.load(sels, false)
		c.emit(&expr.Cmp{Op: op, Register: 1, Data: b})
		if s.t.magic == tNfproto.magic && n == unix.NFPROTO_IPV4 && op == expr.CmpOpEq {
			c.haveIP4 = true
		}
		return nil
	case s.t.magic == tIfname.magic && strings.HasSuffix(strings.Trim(v, `"`), "*"):
		prefix := strings.TrimSuffix(strings.Trim(v, `"`), "*")
		c.load(sels, false)
		c.emit(&expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)})
		return nil
	case s.t.magic == tService.magic && strings.Contains(v, "-"):
		lo, hi, err := s.t.parseRange(v)
		if err != nil {
			return err
		}
		c.load(sels, false)
		if op == expr.CmpOpNeq {
			c.emit(&expr.Range{Op: expr.CmpOpNeq, Register: 1, FromData: lo, ToData: hi})
			return nil
		}
		c.emit(&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: lo}, &expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: hi})
		return nil
	}
	b, err := s.t.parse(v)
	if err != nil {
		return err
	}
	c.load(sels, false)
	c.emit(&expr.Cmp{Op: op, Register: 1, Data: b})
	if s.t.magic == tProto.magic && op == expr.CmpOpEq {
		c.haveL4[b[0]] = true
	}
	return nil
}

// lookup compiles "@set" (membership) or, with verdict, a verdict map:
// "@map" or an inline "{ k : verdict , ... }".
func (c *compiler) lookup(sels []sel, invert, verdict bool) error {
	l := &expr.Lookup{SourceRegister: 1, Invert: invert}
	if verdict {
		l.DestRegister, l.IsDestRegSet = unix.NFT_REG_VERDICT, true
	}
	if c.peek(0) == "{" {
		if !verdict {
			return fmt.Errorf("inline sets are supported only as verdict maps")
		}
		set, err := c.inlineMap(fieldTypes(sels), typ{tVerdict})
		if err != nil {
			return err
		}
		l.SetName, l.SetID = set.name, set.id
		c.emit(l)
		return nil
	}
	name := strings.TrimPrefix(c.next(), "@")
	if name == "" {
		return fmt.Errorf("missing set name")
	}
	if _, ok := c.sets(name); !ok {
		return fmt.Errorf("set %q is not known", name)
	}
	l.SetName = name
	c.emit(l)
	return nil
}

var anonIDs = func() *atomic.Uint32 {
	var n atomic.Uint32
	n.Store(1 << 30)
	return &n
}()

// inlineMap reads "{ k : v , ... }" into an anonymous constant map.
func (c *compiler) inlineMap(key, data typ) (*setSpec, error) {
	if c.next() != "{" {
		return nil, fmt.Errorf("want {")
	}
	// The rule's lookup finds the set by its ID within the batch; IDs are
	// ours (far above the library's counter for named sets).
	set := &setSpec{anonymous: true, constant: true, isMap: true, name: "__map%d", id: anonIDs.Add(1), key: key, data: data}
	var elems []element
	var entry []string
	add := func() error {
		k, v, ok := strings.Cut(strings.Join(entry, " "), " : ")
		if !ok {
			return fmt.Errorf("map entry %q has no ':'", strings.Join(entry, " "))
		}
		kb, _, err := key.encode([]string{strings.TrimSpace(k)}, false)
		if err != nil {
			return err
		}
		el := element{key: kb}
		if data.isVerdict() {
			vd, err := parseVerdict(strings.TrimSpace(v))
			if err != nil {
				return err
			}
			el.verdict = vd
		} else {
			vb, _, err := data.encode([]string{strings.TrimSpace(v)}, false)
			if err != nil {
				return err
			}
			el.val = vb
		}
		elems = append(elems, el)
		entry = nil
		return nil
	}
	for {
		t := c.next()
		switch {
		case t == "":
			return nil, fmt.Errorf("unterminated {")
		case t == "}":
			if len(entry) > 0 {
				if err := add(); err != nil {
					return nil, err
				}
			}
			set.elements = len(elems)
			c.anon = append(c.anon, anonSet{set: set, elems: elems})
			return set, nil
		case t == ",":
			if err := add(); err != nil {
				return nil, err
			}
		default:
			entry = append(entry, t)
		}
	}
}

func parseVerdict(s string) (*expr.Verdict, error) {
	f := strings.Fields(s)
	switch {
	case len(f) == 1 && f[0] == "accept":
		return &expr.Verdict{Kind: expr.VerdictAccept}, nil
	case len(f) == 1 && f[0] == "drop":
		return &expr.Verdict{Kind: expr.VerdictDrop}, nil
	case len(f) == 1 && f[0] == "return":
		return &expr.Verdict{Kind: expr.VerdictReturn}, nil
	case len(f) == 2 && f[0] == "jump":
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: f[1]}, nil
	case len(f) == 2 && f[0] == "goto":
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: f[1]}, nil
	}
	return nil, fmt.Errorf("verdict %q is not supported", s)
}

// dnat compiles the three forms the proxy writes:
//
//	dnat ip to ADDR[:PORT]
//	dnat ip to numgen random mod N map { i : ADDR . PORT , ... }
//	dnat ip to SEL . SEL . numgen random mod N map @MAP
func (c *compiler) dnat() error {
	c.next()
	if c.next() != "ip" || c.next() != "to" {
		return fmt.Errorf("want dnat ip to")
	}
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4}
	if _, _, err := selector(c.toks[c.pos:]); err != nil {
		// A literal destination.
		addr, port, hasPort := strings.Cut(c.next(), ":")
		a, err := tIPv4.parse(addr)
		if err != nil {
			return err
		}
		c.emit(&expr.Immediate{Register: 1, Data: a})
		nat.RegAddrMin = 1
		if hasPort {
			p, err := tService.parse(port)
			if err != nil {
				return err
			}
			c.emit(&expr.Immediate{Register: 2, Data: p})
			nat.RegProtoMin, nat.Specified = 2, true
		}
		c.emit(nat)
		return nil
	}
	sels, err := c.lhs()
	if err != nil {
		return err
	}
	if c.next() != "map" {
		return fmt.Errorf("want map after the dnat key")
	}
	c.load(sels, false)
	data := typ{tIPv4, tService}
	l := &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true}
	if c.peek(0) == "{" {
		set, err := c.inlineMap(fieldTypes(sels), data)
		if err != nil {
			return err
		}
		l.SetName, l.SetID = set.name, set.id
	} else {
		name := strings.TrimPrefix(c.next(), "@")
		info, ok := c.sets(name)
		if !ok {
			return fmt.Errorf("map %q is not known", name)
		}
		if !info.Map || info.Data.String() != data.String() {
			return fmt.Errorf("map %q does not map to %s", name, data)
		}
		l.SetName = name
	}
	c.emit(l)
	nat.RegAddrMin, nat.RegProtoMin = 1, reg(tIPv4.words())
	c.emit(nat)
	return nil
}

// update compiles "update @SET { SEL }".
func (c *compiler) update() error {
	c.next()
	name := strings.TrimPrefix(c.next(), "@")
	if name == "" || c.next() != "{" {
		return fmt.Errorf("want update @set { key }")
	}
	sels, err := c.lhs()
	if err != nil {
		return err
	}
	if c.next() != "}" {
		return fmt.Errorf("want } after the update key")
	}
	c.load(sels, false)
	c.emit(&expr.Dynset{SrcRegKey: 1, SetName: name, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE)})
	return nil
}

// markSet compiles "meta mark set meta mark or|xor VALUE".
func (c *compiler) markSet() error {
	c.pos += 3
	if c.next() != "meta" || c.next() != "mark" {
		return fmt.Errorf("want meta mark set meta mark or|xor VALUE")
	}
	op := c.next()
	v, err := tMark.parse(c.next())
	if err != nil {
		return err
	}
	n := binaryutil.NativeEndian.Uint32(v)
	var mask, xor uint32
	switch op {
	case "or":
		mask, xor = ^n, n
	case "xor":
		mask, xor = 0xffffffff, n
	default:
		return fmt.Errorf("meta mark set: %q is not supported", op)
	}
	c.emit(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	return nil
}

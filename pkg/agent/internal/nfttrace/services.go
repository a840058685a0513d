package nfttrace

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// The service proxy's names the Services tracer starts from (pkg/agent/proxy
// has constants of the same names; its tests check that they agree).
const (
	ChainFilterPrerouting  = "svc-filter-prerouting"
	ChainFilterInput       = "svc-filter-input"
	ChainFilterForward     = "svc-filter-forward"
	ChainFilterOutput      = "svc-filter-output"
	ChainFilterForwardPost = "svc-filter-forward-post"
	ChainFilterOutputPost  = "svc-filter-output-post"
	ChainNATPrerouting     = "svc-nat-prerouting"
	ChainNATOutput         = "svc-nat-output"
	ChainNATPostrouting    = "svc-nat-postrouting"
	SetNodePortIPs         = "nodeport-ips"
	// PrefixAffinity starts the name of every ClientIP-affinity set: the
	// tracer keeps their contents itself (Services.Affinity), as the kernel
	// fills them while packets pass.
	PrefixAffinity = "affinity-"
)

// ServicePacket is the first packet of a new connection, for Services.
type ServicePacket struct {
	Src, Dst string
	Proto    string // tcp, udp, sctp
	Port     int
}

// Services walks a packet through the proxy's part of a rendered table, as
// the kernel would: filter (dstnat-10) → nat dstnat → nat srcnat. numgen
// branches are all explored; affinity sets remember sources across traces.
type Services struct {
	// Affinity is what each affinity set has learnt (set name → sources);
	// a test may delete an entry as if it had timed out.
	Affinity map[string][]netip.Addr

	t   testing.TB
	tbl *knftables.FakeTable
}

// tctx is one branch of a trace: the packet and what has happened to it.
type tctx struct {
	src, dst netip.Addr
	proto    string
	port     int
	mark     bool
	done     bool
	verdict  string // drop, reject, accept, or dnat A:P
	masq     bool
}

// NewServices returns a tracer over f's table as it is now.
func NewServices(t testing.TB, f *knftables.Fake) *Services {
	return &Services{t: t, tbl: f.Table, Affinity: map[string][]netip.Addr{}}
}

// Trace returns every possible outcome, sorted: "reject", "drop",
// "accept" (not a service), or "dnat A:P" with " masq" when source-NATed.
// Stages: the pre-DNAT filter chains (prerouting, then forward or input;
// output for the node's own packets), nat dstnat, the post-DNAT filter
// chains (which see the translated destination), nat srcnat.
func (tr *Services) Trace(p ServicePacket) []string {
	c := tctx{src: netip.MustParseAddr(p.Src), dst: netip.MustParseAddr(p.Dst), proto: p.Proto, port: p.Port}
	local := tr.inSet(SetNodePortIPs, c.src)
	pre := []string{ChainFilterPrerouting, ChainFilterForward}
	nat, post := ChainNATPrerouting, ChainFilterForwardPost
	switch {
	case local:
		pre, nat, post = []string{ChainFilterOutput}, ChainNATOutput, ChainFilterOutputPost
	case tr.inSet(SetNodePortIPs, c.dst):
		pre, post = []string{ChainFilterPrerouting, ChainFilterInput}, ""
	}
	var out []string
	// filter runs chain on each context: stopped ones go to out, the rest
	// (accepted or fallen through) continue.
	filter := func(chain string, cs []tctx, view func(tctx) tctx) []tctx {
		var cont []tctx
		for _, c := range cs {
			for _, f := range tr.run(chain, view(c)) {
				if f.done && f.verdict != "accept" {
					out = append(out, f.verdict)
				} else {
					cont = append(cont, c)
				}
			}
		}
		return cont
	}
	same := func(c tctx) tctx { return c }
	cs := []tctx{c}
	for _, chain := range pre {
		cs = filter(chain, cs, same)
	}
	var natted []tctx
	for _, f := range cs {
		for _, n := range tr.run(nat, f) {
			if n.done && (n.verdict == "drop" || n.verdict == "reject") {
				out = append(out, n.verdict)
				continue
			}
			n.done = false
			natted = append(natted, n)
		}
	}
	if post != "" {
		natted = filter(post, natted, func(c tctx) tctx {
			if ap, err := netip.ParseAddrPort(strings.TrimPrefix(c.verdict, "dnat ")); err == nil {
				c.dst, c.port = ap.Addr(), int(ap.Port())
			}
			c.verdict = ""
			return c
		})
	}
	for _, n := range natted {
		res := n.verdict
		if res == "" {
			res = "accept"
		}
		for _, post := range tr.run(ChainNATPostrouting, n) {
			r := res
			if post.masq {
				r += " masq"
			}
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (tr *Services) run(chain string, c tctx) []tctx {
	ch := tr.tbl.Chains[chain]
	if ch == nil {
		tr.t.Fatalf("no chain %q", chain)
	}
	return tr.rules(ch.Rules, 0, c)
}

func (tr *Services) rules(rs []*knftables.Rule, i int, c tctx) []tctx {
	if i == len(rs) {
		return []tctx{c}
	}
	next := func(c tctx) []tctx { return tr.rules(rs, i+1, c) }
	w := strings.Fields(rs[i].Rule)
	// conditions
	for len(w) > 0 {
		var ok, cond bool
		switch {
		case hasPrefix(w, "ct", "state", "new"):
			ok, cond, w = true, true, w[3:]
		case hasPrefix(w, "ct", "status", "dnat"):
			ok, cond, w = strings.HasPrefix(c.verdict, "dnat "), true, w[3:]
		case hasPrefix(w, "oifname", ".", "ip", "saddr") && len(w) >= 5 && strings.HasPrefix(w[4], "@"):
			// The packet leaves through the interface of the pod that owns
			// its source address: after DNAT, that pod is the destination.
			dst := c.dst
			if ap, err := netip.ParseAddrPort(strings.TrimPrefix(c.verdict, "dnat ")); err == nil {
				dst = ap.Addr()
			}
			ok, cond, w = dst == c.src && tr.inPairSet(w[4][1:], c.src), true, w[5:]
		case hasPrefix(w, "fib", "saddr", "type", "local"):
			ok, cond, w = tr.inSet(SetNodePortIPs, c.src), true, w[4:]
		case hasPrefix(w, "meta", "mark", "&") && len(w) >= 6 && w[4] == "==":
			ok, cond, w = c.mark == (w[5] != "0"), true, w[6:]
		case isConcatLookup(w):
			var n int
			ok, n = tr.concatLookup(w, c)
			cond, w = true, w[n:]
		case (w[0] == "ip") && len(w) >= 3 && (w[1] == "saddr" || w[1] == "daddr") && w[2] != ".":
			a := c.src
			if w[1] == "daddr" {
				a = c.dst
			}
			neg := w[2] == "!="
			v := w[2]
			n := 3
			if neg {
				v, n = w[3], 4
			}
			if strings.HasPrefix(v, "@") {
				ok = tr.inSet(v[1:], a)
			} else {
				ok = a == netip.MustParseAddr(v)
			}
			ok, cond, w = ok != neg, true, w[n:]
		case hasPrefix(w, "meta", "l4proto") && len(w) >= 3 && w[2] != ".":
			ok, cond, w = c.proto == w[2], true, w[3:]
		case hasPrefix(w, "th", "dport"):
			ok, cond, w = strconv.Itoa(c.port) == w[2], true, w[3:]
		}
		if !cond {
			break
		}
		if !ok {
			return next(c)
		}
	}
	// statements ("counter" only counts)
	if len(w) > 1 && w[0] == "counter" {
		w = w[1:]
	}
	switch {
	case len(w) == 0:
		return next(c)
	case hasPrefix(w, "jump") || hasPrefix(w, "goto"):
		return tr.verdict(w[0]+" "+w[1], c, next)
	case len(w) == 1 && (w[0] == "drop" || w[0] == "reject"):
		c.done, c.verdict = true, w[0]
		return []tctx{c}
	case len(w) == 1 && w[0] == "return":
		return []tctx{c}
	case hasPrefix(w, "meta", "mark", "set", "meta", "mark", "or"):
		c.mark = true
		return next(c)
	case hasPrefix(w, "meta", "mark", "set", "meta", "mark", "xor"):
		c.mark = false
		return next(c)
	case hasPrefix(w, "masquerade"):
		c.masq = true
		return []tctx{c}
	case hasPrefix(w, "update") && strings.Join(w[2:], " ") == "{ ip saddr }":
		s := strings.TrimPrefix(w[1], "@")
		if !slices.Contains(tr.Affinity[s], c.src) {
			tr.Affinity[s] = append(tr.Affinity[s], c.src)
		}
		return next(c)
	case hasPrefix(w, "dnat", "ip", "to", "ip", "daddr", ".") && len(w) == 15 && w[6] == c.proto && hasPrefix(w[7:], "dport", ".", "numgen", "random", "mod") && w[13] == "map":
		// dnat ip to ip daddr . <proto> dport . numgen random mod N map @service-endpoints-<proto>
		n, _ := strconv.Atoi(w[12])
		m := tr.tbl.Maps[strings.TrimPrefix(w[14], "@")]
		if m == nil {
			tr.t.Fatalf("tracer: no map %s", w[14])
		}
		var out []tctx
		for k := range n {
			e := m.FindElement(c.dst.String(), strconv.Itoa(c.port), strconv.Itoa(k))
			if e == nil {
				tr.t.Fatalf("tracer: %s has no element %s . %d . %d (rule %q)", w[14], c.dst, c.port, k, rs[i].Rule)
			}
			d := c
			d.done, d.verdict = true, "dnat "+e.Value[0]+":"+e.Value[1]
			out = append(out, d)
		}
		return out
	case hasPrefix(w, "dnat", "ip", "to", "numgen", "random", "mod") && w[7] == "map":
		// dnat ip to numgen random mod N map { 0 : A . P , 1 : … }
		body := strings.Join(w[9:len(w)-1], " ")
		var out []tctx
		for _, e := range strings.Split(body, " , ") {
			kv := strings.SplitN(e, " : ", 2)
			ap := strings.SplitN(kv[1], " . ", 2)
			if len(ap) != 2 {
				tr.t.Fatalf("tracer: cannot read map element %q in %q", e, rs[i].Rule)
			}
			d := c
			d.done, d.verdict = true, "dnat "+ap[0]+":"+ap[1]
			out = append(out, d)
		}
		if n, _ := strconv.Atoi(w[6]); n != len(out) {
			tr.t.Fatalf("tracer: numgen mod %d over %d elements in %q", n, len(out), rs[i].Rule)
		}
		return out
	case hasPrefix(w, "dnat", "ip", "to") && len(w) == 4:
		c.done, c.verdict = true, "dnat "+w[3]
		return []tctx{c}
	case hasPrefix(w, "numgen", "random", "mod") && w[4] == "vmap":
		body := strings.Join(w[6:len(w)-1], " ")
		var out []tctx
		for _, e := range strings.Split(body, " , ") {
			kv := strings.SplitN(e, " : ", 2)
			out = append(out, tr.verdict(kv[1], c, next)...)
		}
		return out
	case strings.Contains(strings.Join(w, " "), "vmap @"):
		var key []string
		for _, k := range strings.Split(strings.Join(w[:len(w)-2], " "), " . ") {
			switch k {
			case "ip daddr":
				key = append(key, c.dst.String())
			case "meta l4proto":
				key = append(key, c.proto)
			case "th dport":
				key = append(key, strconv.Itoa(c.port))
			default:
				tr.t.Fatalf("tracer: unknown key %q in %q", k, rs[i].Rule)
			}
		}
		m := tr.tbl.Maps[strings.TrimPrefix(w[len(w)-1], "@")]
		if e := m.FindElement(key...); e != nil {
			return tr.verdict(e.Value[0], c, next)
		}
		return next(c)
	}
	tr.t.Fatalf("tracer: cannot read rule %q", rs[i].Rule)
	return nil
}

func (tr *Services) verdict(v string, c tctx, next func(tctx) []tctx) []tctx {
	w := strings.Fields(v)
	switch w[0] {
	case "goto":
		return tr.run(w[1], c)
	case "jump":
		var out []tctx
		for _, r := range tr.run(w[1], c) {
			if r.done {
				out = append(out, r)
			} else {
				out = append(out, next(r)...)
			}
		}
		return out
	case "drop", "reject", "accept":
		c.done, c.verdict = true, w[0]
		return []tctx{c}
	}
	tr.t.Fatalf("tracer: unknown verdict %q", v)
	return nil
}

func (tr *Services) inSet(name string, a netip.Addr) bool {
	if strings.HasPrefix(name, PrefixAffinity) {
		return slices.Contains(tr.Affinity[name], a)
	}
	for _, e := range tr.set(name).Elements {
		k := e.Key[0]
		if p, err := netip.ParsePrefix(k); err == nil {
			if p.Contains(a) {
				return true
			}
		} else if netip.MustParseAddr(k) == a {
			return true
		}
	}
	return false
}

// set is the table's set name; the test fails when there is none.
func (tr *Services) set(name string) *knftables.FakeSet {
	s := tr.tbl.Sets[name]
	if s == nil {
		tr.t.Fatalf("tracer: no set %q", name)
	}
	return s
}

// inPairSet: a is the address half of some element of an
// "ifname . ipv4_addr" set (the tracer does not model interfaces).
func (tr *Services) inPairSet(name string, a netip.Addr) bool {
	for _, e := range tr.set(name).Elements {
		if len(e.Key) == 2 && netip.MustParseAddr(e.Key[1]) == a {
			return true
		}
	}
	return false
}

// concatFields reads "f1 . f2 . …" at the start of w (fields: ip saddr,
// ip daddr, meta l4proto, th dport) and returns the fields and the words used.
func concatFields(w []string) ([]string, int) {
	var fields []string
	i := 0
	for i+1 < len(w) {
		f := w[i] + " " + w[i+1]
		switch f {
		case "ip saddr", "ip daddr", "meta l4proto", "th dport":
		default:
			return fields, i
		}
		fields = append(fields, f)
		i += 2
		if i < len(w) && w[i] == "." {
			i++
			continue
		}
		break
	}
	return fields, i
}

// isConcatLookup: "f1 . f2 … [!=] @set" (not a vmap).
func isConcatLookup(w []string) bool {
	fields, n := concatFields(w)
	if len(fields) < 2 || n >= len(w) {
		return false
	}
	return strings.HasPrefix(w[n], "@") || (w[n] == "!=" && n+1 < len(w) && strings.HasPrefix(w[n+1], "@"))
}

// concatLookup evaluates a concatenated set lookup; elements may hold
// prefixes (interval sets) where the packet has an address.
func (tr *Services) concatLookup(w []string, c tctx) (bool, int) {
	fields, n := concatFields(w)
	neg := w[n] == "!="
	if neg {
		n++
	}
	name := strings.TrimPrefix(w[n], "@")
	set := tr.set(name)
	val := func(f string) string {
		v, _ := fieldValue(f, c.src, c.dst, c.proto, c.port) // concatFields read only known fields
		return v
	}
	found := false
	for _, e := range set.Elements {
		if len(e.Key) != len(fields) {
			tr.t.Fatalf("tracer: element %v of %s does not match %v", e.Key, name, fields)
		}
		match := true
		for i, f := range fields {
			k, v := e.Key[i], val(f)
			if p, err := netip.ParsePrefix(k); err == nil && (f == "ip saddr" || f == "ip daddr") {
				match = match && p.Contains(netip.MustParseAddr(v))
			} else {
				match = match && k == v
			}
		}
		if match {
			found = true
			break
		}
	}
	return found != neg, n + 1
}

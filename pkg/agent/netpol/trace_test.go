package netpol

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// pkt is the first packet of a new connection as one node's filter hooks see it.
type pkt struct {
	hook     knftables.BaseChainHook // forward, input or output
	src, dst netip.Addr
	proto    string // tcp, udp, sctp, icmp
	port     int    // 0 for icmp
	fromPod  bool   // iifname is a pod's host-side interface (slp*)
	toPod    bool   // oifname is one (forward only)
}

// tracer walks packets through the base chains of one hook of a rendered knftables.Fake in
// priority order, as the kernel does: accept ends a base chain and the next one runs, drop
// is final, falling off a base chain is its policy (accept). It reads exactly the rule
// shapes this package renders and fails the test on anything else, so a rule it cannot read
// is a rule nobody checked.
type tracer struct {
	t      testing.TB
	tbl    *knftables.FakeTable
	fields map[*knftables.Rule][]string
}

func newTracer(t testing.TB, f *knftables.Fake) *tracer {
	t.Helper()
	tbl := f.Table
	if tbl == nil {
		t.Fatal("tracer: the fake has no table")
	}
	return &tracer{t: t, tbl: tbl, fields: map[*knftables.Rule][]string{}}
}

// trace returns whether p passes the node, and the rules that decided (for messages).
func (tr *tracer) trace(p pkt) (bool, []string) {
	type base struct {
		name string
		prio int
	}
	var bases []base
	for name, ch := range tr.tbl.Chains {
		if ch.Hook == nil || *ch.Hook != p.hook {
			continue
		}
		if ch.Type == nil || *ch.Type != knftables.FilterType {
			tr.t.Fatalf("tracer: base chain %q at hook %s is not a filter chain", name, p.hook)
		}
		bases = append(bases, base{name, priority(tr.t, *ch.Priority)})
	}
	slices.SortFunc(bases, func(x, y base) int { return x.prio - y.prio })
	var path []string
	for _, b := range bases {
		v := tr.run(b.name, p, &path)
		if v == "drop" {
			return false, path
		}
	}
	return true, path
}

func priority(t testing.TB, p knftables.BaseChainPriority) int {
	switch p {
	case knftables.FilterPriority:
		return 0
	}
	n, err := strconv.Atoi(string(p))
	if err != nil {
		t.Fatalf("tracer: priority %q", p)
	}
	return n
}

// run executes a chain: "accept" or "drop" when a rule decided, "" when the chain ran out
// (a base chain's policy, or a return to the chain that jumped here).
func (tr *tracer) run(chain string, p pkt, path *[]string) string {
	ch := tr.tbl.Chains[chain]
	if ch == nil {
		tr.t.Fatalf("tracer: no chain %q", chain)
	}
	for _, r := range ch.Rules {
		w, ok := tr.fields[r]
		if !ok {
			w = strings.Fields(r.Rule)
			tr.fields[r] = w
		}
		if v, decided := tr.rule(chain, r.Rule, w, p, path); decided {
			return v
		}
	}
	return ""
}

// rule evaluates one rule; decided is false when the packet goes on to the next rule.
func (tr *tracer) rule(chain, text string, w []string, p pkt, path *[]string) (verdict string, decided bool) {
	fail := func(why string) { tr.t.Fatalf("tracer: %s in chain %s rule %q", why, chain, text) }
	for len(w) > 0 {
		var ok bool
		switch {
		case hasPrefix(w, "ct", "state") && len(w) > 2:
			if w[2] != "established,related" && w[2] != "invalid" {
				fail("unknown ct state")
			}
			ok, w = false, w[3:] // every traced packet opens a new connection
		case (w[0] == "iifname" || w[0] == "oifname") && len(w) > 1:
			if w[1] != PodIfPattern {
				fail("unknown interface pattern")
			}
			ok = p.fromPod
			if w[0] == "oifname" {
				ok = p.toPod
			}
			w = w[2:]
		case hasPrefix(w, "meta", "l4proto") && len(w) > 2 && w[2] != ".":
			ok, w = p.proto == w[2], w[3:]
		case hasPrefix(w, "th", "dport") && len(w) > 2 && w[2] != ".":
			if p.proto != "tcp" && p.proto != "udp" && p.proto != "sctp" {
				fail("th dport without a port protocol before it")
			}
			lo, hi, isRange := strings.Cut(w[2], "-")
			if !isRange {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				fail("bad port")
			}
			ok, w = p.port >= l && p.port <= h, w[3:]
		case w[0] == "ip" || w[0] == "meta" || w[0] == "th":
			// A key (one field or a concatenation), then a lookup, a negated lookup or a vmap.
			var key []string
			for {
				if len(w) < 2 {
					fail("truncated key")
				}
				key = append(key, tr.field(w[0]+" "+w[1], p, fail))
				w = w[2:]
				if len(w) == 0 || w[0] != "." {
					break
				}
				w = w[1:]
			}
			switch {
			case len(w) >= 2 && w[0] == "vmap" && strings.HasPrefix(w[1], "@") && len(w) == 2:
				m := tr.tbl.Maps[w[1][1:]]
				if m == nil {
					fail("no map " + w[1])
				}
				e := m.FindElement(key...)
				if e == nil {
					return "", false
				}
				*path = append(*path, chain+": "+text+" → "+e.Value[0])
				return tr.verdict(e.Value[0], p, path, fail)
			case len(w) >= 1 && strings.HasPrefix(w[0], "@"):
				ok, w = tr.inSet(w[0][1:], key, fail), w[1:]
			case len(w) >= 2 && w[0] == "!=" && strings.HasPrefix(w[1], "@"):
				ok, w = !tr.inSet(w[1][1:], key, fail), w[2:]
			default:
				fail("unknown match")
			}
		default:
			// Statements.
			if w[0] == "counter" {
				w = w[1:]
				continue
			}
			if len(w) == 1 && (w[0] == "accept" || w[0] == "drop") ||
				len(w) == 2 && (w[0] == "jump" || w[0] == "goto") {
				*path = append(*path, chain+": "+text)
				return tr.verdict(strings.Join(w, " "), p, path, fail)
			}
			fail("unknown statement")
		}
		if !ok {
			return "", false
		}
	}
	fail("rule without a statement")
	return "", false
}

// verdict applies accept, drop, jump C (C's decision, else go on) or goto C (C's decision,
// else return to whoever jumped to the current chain).
func (tr *tracer) verdict(v string, p pkt, path *[]string, fail func(string)) (string, bool) {
	w := strings.Fields(v)
	switch {
	case len(w) == 1 && (w[0] == "accept" || w[0] == "drop"):
		return w[0], true
	case len(w) == 2 && w[0] == "jump":
		if r := tr.run(w[1], p, path); r != "" {
			return r, true
		}
		return "", false
	case len(w) == 2 && w[0] == "goto":
		r := tr.run(w[1], p, path)
		return r, true // "" ends the current chain too: back to the jump that led here
	}
	fail("unknown verdict " + v)
	return "", false
}

func (tr *tracer) field(f string, p pkt, fail func(string)) string {
	switch f {
	case "ip saddr":
		return p.src.String()
	case "ip daddr":
		return p.dst.String()
	case "meta l4proto":
		return p.proto
	case "th dport":
		return strconv.Itoa(p.port)
	}
	fail("unknown field " + f)
	return ""
}

// inSet looks key up in a named set (interval sets: prefixes containing the address).
func (tr *tracer) inSet(name string, key []string, fail func(string)) bool {
	s := tr.tbl.Sets[name]
	if s == nil {
		fail("no set " + name)
	}
	if !slices.Contains(s.Flags, knftables.IntervalFlag) {
		return s.FindElement(key...) != nil
	}
	if len(key) != 1 {
		fail("interval lookup with a concatenated key")
	}
	a := netip.MustParseAddr(key[0])
	for _, e := range s.Elements {
		if netip.MustParsePrefix(e.Key[0]).Contains(a) {
			return true
		}
	}
	return false
}

func hasPrefix(w []string, p ...string) bool {
	return len(w) >= len(p) && slices.Equal(w[:len(p)], p)
}

package nfttrace

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// Isolation's names (pkg/agent/netpol's tests check them against its own).
const (
	// IsolationChainPrefix starts the name of every base chain isolation
	// renders: the Isolation tracer walks only those, so that the proxy's
	// and the pod network's base chains at the same hooks are not its
	// business (their tracer, or none, reads them).
	IsolationChainPrefix = "np-"
	// PodIfPattern matches every pod's host-side interface (netpol.PodIfPattern).
	PodIfPattern = `"slp*"`
)

// IsolationPacket is the first packet of a new connection as one node's
// filter hooks see it.
type IsolationPacket struct {
	Hook     knftables.BaseChainHook // forward, input or output
	Src, Dst netip.Addr
	Proto    string // tcp, udp, sctp, icmp
	Port     int    // 0 for icmp
	FromPod  bool   // iifname is a pod's host-side interface (slp*)
	ToPod    bool   // oifname is one (forward only)
}

// Isolation walks packets through isolation's base chains (np-*) of one hook
// of a rendered knftables.Fake in priority order, as the kernel does: accept
// ends a base chain and the next one runs, drop is final, falling off a base
// chain is its policy (accept).
type Isolation struct {
	t      testing.TB
	tbl    *knftables.FakeTable
	fields map[*knftables.Rule][]string
}

// NewIsolation returns a tracer over f's table as it is now.
func NewIsolation(t testing.TB, f *knftables.Fake) *Isolation {
	t.Helper()
	tbl := f.Table
	if tbl == nil {
		t.Fatal("tracer: the fake has no table")
	}
	return &Isolation{t: t, tbl: tbl, fields: map[*knftables.Rule][]string{}}
}

// Trace returns whether isolation lets p pass the node, and the rules that
// decided (for messages).
func (tr *Isolation) Trace(p IsolationPacket) (bool, []string) {
	type base struct {
		name string
		prio int
	}
	var bases []base
	for name, ch := range tr.tbl.Chains {
		if ch.Hook == nil || *ch.Hook != p.Hook || !strings.HasPrefix(name, IsolationChainPrefix) {
			continue
		}
		if ch.Type == nil || *ch.Type != knftables.FilterType {
			tr.t.Fatalf("tracer: base chain %q at hook %s is not a filter chain", name, p.Hook)
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
func (tr *Isolation) run(chain string, p IsolationPacket, path *[]string) string {
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
func (tr *Isolation) rule(chain, text string, w []string, p IsolationPacket, path *[]string) (verdict string, decided bool) {
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
			ok = p.FromPod
			if w[0] == "oifname" {
				ok = p.ToPod
			}
			w = w[2:]
		case hasPrefix(w, "meta", "l4proto") && len(w) > 2 && w[2] != ".":
			ok, w = p.Proto == w[2], w[3:]
		case hasPrefix(w, "th", "dport") && len(w) > 2 && w[2] != ".":
			if p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp" {
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
			ok, w = p.Port >= l && p.Port <= h, w[3:]
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
func (tr *Isolation) verdict(v string, p IsolationPacket, path *[]string, fail func(string)) (string, bool) {
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

func (tr *Isolation) field(f string, p IsolationPacket, fail func(string)) string {
	if v, ok := fieldValue(f, p.Src, p.Dst, p.Proto, p.Port); ok {
		return v
	}
	fail("unknown field " + f)
	return ""
}

// inSet looks key up in a named set (interval sets: prefixes containing the address).
func (tr *Isolation) inSet(name string, key []string, fail func(string)) bool {
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

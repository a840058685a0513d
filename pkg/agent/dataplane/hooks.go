package dataplane

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// BaseChain is a chain attached to a netfilter hook. Features declare
// theirs (Feature.BaseChains) and render them from the declaration, so the
// order in which the features see a packet lives in code, in one place per
// feature; the Owner refuses two features claiming one name, Hooks lists
// them all in kernel order, and a test checks the rendered table and the
// README against that list.
type BaseChain struct {
	Name     string
	Type     knftables.BaseChainType
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Does     string // one line for the table's contract
}

// Object is the knftables chain of c.
func (c BaseChain) Object() *knftables.Chain {
	return &knftables.Chain{Name: c.Name, Type: knftables.PtrTo(c.Type), Hook: knftables.PtrTo(c.Hook), Priority: knftables.PtrTo(c.Priority)}
}

// Lookup finds name among cs; it panics when it is missing, since a
// feature rendering a base chain it did not declare is a programming error.
func Lookup(cs []BaseChain, name string) BaseChain {
	i := slices.IndexFunc(cs, func(c BaseChain) bool { return c.Name == name })
	if i < 0 {
		panic(fmt.Sprintf("base chain %q is not declared", name))
	}
	return cs[i]
}

// priorities are nft's named priorities for the inet family (nft(8)).
var priorities = map[knftables.BaseChainPriority]int{
	knftables.RawPriority: -300, knftables.ManglePriority: -150, knftables.DNATPriority: -100,
	knftables.FilterPriority: 0, knftables.SecurityPriority: 50, knftables.SNATPriority: 100,
}

// PriorityValue is p as a number.
func PriorityValue(p knftables.BaseChainPriority) (int, error) {
	if v, ok := priorities[p]; ok {
		return v, nil
	}
	s := string(p)
	for name, v := range priorities { // "dstnat - 10"
		if rest, ok := strings.CutPrefix(s, string(name)); ok {
			n, err := strconv.Atoi(strings.ReplaceAll(rest, " ", ""))
			if err == nil {
				return v + n, nil
			}
		}
	}
	return strconv.Atoi(s)
}

// hookOrder is the order in which a packet meets the hooks: arriving
// (prerouting, then input or forward), leaving (output, postrouting).
var hookOrder = []knftables.BaseChainHook{knftables.PreroutingHook, knftables.InputHook, knftables.ForwardHook,
	knftables.OutputHook, knftables.PostroutingHook}

// Hook is a declared base chain and the feature that owns it.
type Hook struct {
	Feature string
	BaseChain
}

// Hooks lists every registered feature's base chains by hook, then
// priority, then name.
func (o *Owner) Hooks() []Hook {
	var hs []Hook
	for _, m := range o.features {
		for _, c := range m.f.BaseChains() {
			hs = append(hs, Hook{m.f.Name(), c})
		}
	}
	slices.SortFunc(hs, func(a, b Hook) int {
		if d := slices.Index(hookOrder, a.Hook) - slices.Index(hookOrder, b.Hook); d != 0 {
			return d
		}
		pa, _ := PriorityValue(a.Priority)
		pb, _ := PriorityValue(b.Priority)
		if pa != pb {
			return pa - pb
		}
		return strings.Compare(a.Name, b.Name)
	})
	return hs
}

// HooksMarkdown is Hooks as the README's table.
func (o *Owner) HooksMarkdown() string {
	var b strings.Builder
	b.WriteString("| hook | priority | chain | type | feature | what it does |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, h := range o.Hooks() {
		p, _ := PriorityValue(h.Priority)
		fmt.Fprintf(&b, "| %s | %d | `%s` | %s | %s | %s |\n", h.Hook, p, h.Name, h.Type, h.Feature, h.Does)
	}
	return b.String()
}

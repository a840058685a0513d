package labrun

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TableCount is what a node's table holds for isolation (np-* and
// tenant-* objects).
type TableCount struct{ Chains, Rules, Elements int }

// IsolationCount reads node's isolation objects from the kernel (`nft -j
// list table inet sluice` inside the node).
func (l Lab) IsolationCount(node string) (TableCount, error) {
	out, err := l.Command("exec", "node/"+node, "--", "nft", "-j", "list", "table", "inet", "sluice").CombinedOutput()
	if err != nil {
		return TableCount{}, fmt.Errorf("%v: %s", err, out)
	}
	return countIsolation(out)
}

func countIsolation(out []byte) (TableCount, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return TableCount{}, err
	}
	ours := func(name string) bool { return strings.HasPrefix(name, "np-") || strings.HasPrefix(name, "tenant-") }
	var c TableCount
	for _, o := range doc.Nftables {
		for kind, raw := range o {
			var v struct {
				Name  string            `json:"name"`
				Chain string            `json:"chain"`
				Elem  []json.RawMessage `json:"elem"`
			}
			json.Unmarshal(raw, &v)
			switch kind {
			case "chain":
				if ours(v.Name) {
					c.Chains++
				}
			case "rule":
				if ours(v.Chain) {
					c.Rules++
				}
			case "set", "map":
				if ours(v.Name) {
					c.Elements += len(v.Elem)
				}
			}
		}
	}
	return c, nil
}

// Settle waits until node's isolation objects read the same `stable` times
// in a row, every interval, for at most limit; it returns the last count.
func (l Lab) Settle(node string, stable int, every, limit time.Duration) (TableCount, error) {
	var last TableCount
	same := 0
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(every) {
		c, err := l.IsolationCount(node)
		if err != nil {
			return c, err
		}
		if c == last && c.Elements > 0 {
			same++
			if same == stable {
				return c, nil
			}
		} else {
			same = 0
		}
		last = c
	}
	return last, fmt.Errorf("%s's isolation table did not settle within %s", node, limit)
}

package vnid

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  uint32
		used []uint32
		want uint32 // 0: exhausted
	}{
		{"empty", 0, nil, 1},
		{"global is not free", 0, []uint32{0}, 1},
		{"after the held ones", 0, []uint32{1, 2, 3}, 4},
		{"the lowest hole", 0, []uint32{1, 3, 4}, 2},
		{"unordered with duplicates", 0, []uint32{4, 2, 1, 2, 0, 1}, 3},
		{"out of range ignored", 3, []uint32{1, 100, Max}, 2},
		{"full", 3, []uint32{3, 1, 2}, 0},
		{"full with extras", 3, []uint32{0, 1, 2, 3, 4, 5}, 0},
		{"the last one", 3, []uint32{1, 2}, 3},
		{"full range", 0, []uint32{Max}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New(tc.max)
			got, err := a.Next(tc.used)
			if tc.want == 0 {
				if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "all netIDs 1 to ") {
					t.Fatalf("Next(%v) = %d, %v; want exhausted", tc.used, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Next(%v) = %d, %v; want %d", tc.used, got, err, tc.want)
			}
		})
	}
}

func TestNewAndValid(t *testing.T) {
	for max, want := range map[uint32]uint32{0: Max, 3: 3, Max: Max, Max + 1: Max, 1<<32 - 1: Max} {
		if got := New(max).Max(); got != want {
			t.Errorf("New(%d).Max() = %d, want %d", max, got, want)
		}
	}
	a := New(3)
	for id, want := range map[uint32]bool{Global: true, 1: true, 3: true, 4: false, Max + 1: false} {
		if got := a.Valid(id); got != want {
			t.Errorf("Valid(%d) = %v", id, got)
		}
	}
	if New(0).Valid(Max+1) || !New(0).Valid(Max) {
		t.Error("the full range is not 0 to 2^24 − 1")
	}
}

func TestIsolate(t *testing.T) {
	a := New(4)
	for _, tc := range []struct {
		name    string
		current uint32
		shared  bool
		used    []uint32
		want    uint32 // 0: exhausted
	}{
		{"alone: kept", 2, false, []uint32{1, 2}, 2},
		{"shared: moves", 1, true, []uint32{1, 1, 2}, 3},
		{"global: gets one", Global, false, []uint32{0, 1}, 2},
		{"invalid: replaced", 9, false, []uint32{1, 9}, 2},
		{"alone with nothing free: kept", 4, false, []uint32{1, 2, 3, 4}, 4},
		{"shared with nothing free", 1, true, []uint32{1, 1, 2, 3, 4}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Isolate(tc.current, tc.shared, tc.used)
			if tc.want == 0 {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("Isolate = %d, %v; want exhausted", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Isolate = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestDuplicates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	claim := func(name string, id uint32, allocated bool, age int) Claim {
		return Claim{Name: name, ID: id, Allocated: allocated, Created: t0.Add(time.Duration(age) * time.Second)}
	}
	for _, tc := range []struct {
		name   string
		claims []Claim
		keeper string // "": nothing to settle
		movers string
	}{
		{"alone", []Claim{claim("a", 5, true, 0)}, "", ""},
		{"the older keeps", []Claim{claim("y", 5, true, 1), claim("x", 5, true, 0)}, "x", "y"},
		{"same second: the name decides", []Claim{claim("q", 5, true, 0), claim("p", 5, true, 0)}, "p", "q"},
		{"a join is no duplicate", []Claim{claim("p", 5, true, 1), claim("q", 5, false, 0)}, "", ""},
		{"joins take no part", []Claim{claim("j", 5, false, 0), claim("b", 5, true, 2), claim("a", 5, true, 1)}, "a", "b"},
		{"three", []Claim{claim("c", 5, true, 2), claim("b", 5, true, 1), claim("a", 5, true, 3)}, "b", "c a"},
		{"global is shared", []Claim{claim("a", Global, true, 0), claim("b", Global, true, 1)}, "", ""},
		{"another VNID is ignored", []Claim{claim("a", 5, true, 1), claim("b", 6, true, 0)}, "", ""},
		{"none", nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keeper, movers, ok := Duplicates(tc.claims)
			if tc.keeper == "" {
				if ok {
					t.Fatalf("Duplicates = %s, %v; want nothing to settle", keeper.Name, movers)
				}
				return
			}
			var names []string
			for _, m := range movers {
				names = append(names, m.Name)
			}
			if !ok || keeper.Name != tc.keeper || strings.Join(names, " ") != tc.movers {
				t.Fatalf("Duplicates = %s, %v, %v; want %s keeps, %s move", keeper.Name, names, ok, tc.keeper, tc.movers)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for s, ok := range map[string]bool{"0": true, "1": true, "16777215": true, "16777216": false, "-1": false, "x": false, "": false, " 1": false} {
		id, err := Parse(s)
		if (err == nil) != ok {
			t.Errorf("Parse(%q) = %d, %v", s, id, err)
		}
		if ok && Format(id) != s {
			t.Errorf("Format(Parse(%q)) = %q", s, Format(id))
		}
	}
}

// TestNeverTwice runs random histories of allocations, isolations, joins, global changes and
// deletions against a small range and checks after every step what the controller relies
// on: Next hands out the lowest VNID nobody holds — never Global, never above the maximum,
// never one that is held — and reports exhaustion exactly when all are held.
func TestNeverTwice(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		a := New(uint32(1 + r.IntN(12)))
		held := map[string]uint32{} // namespace → VNID, as the NetNamespaces would say
		used := func() []uint32 {
			var ids []uint32
			for _, id := range held {
				ids = append(ids, id)
			}
			return ids
		}
		sharers := func(name string) bool {
			for n, id := range held {
				if n != name && id == held[name] {
					return true
				}
			}
			return false
		}
		names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"}
		for step := range 300 {
			name := names[r.IntN(len(names))]
			_, exists := held[name]
			before := used()
			switch op := r.IntN(6); {
			case !exists && op < 3: // a new namespace
				id, err := a.Next(before)
				checkNext(t, a, before, id, err, seed, step)
				if err == nil {
					held[name] = id
				}
			case exists && op == 0: // deleted
				delete(held, name)
			case exists && op == 1: // made global
				held[name] = Global
			case exists && op == 2 && len(held) > 1: // joins another
				for n, id := range held {
					if n != name {
						held[name] = id
						break
					}
				}
			case exists: // isolated
				id, err := a.Isolate(held[name], sharers(name), before)
				if err != nil {
					checkNext(t, a, before, id, err, seed, step)
					continue
				}
				if id != held[name] {
					checkNext(t, a, before, id, nil, seed, step)
				} else if id == Global || sharers(name) {
					t.Fatalf("seed %d step %d: isolating %s kept the shared or global VNID %d", seed, step, name, id)
				}
				held[name] = id
				if sharers(name) {
					t.Fatalf("seed %d step %d: %s is not alone on %d after isolation: %v", seed, step, name, id, held)
				}
			}
		}
	}
}

// checkNext checks one answer of Next against a brute-force search of the VNIDs.
func checkNext(t *testing.T, a *Allocator, used []uint32, id uint32, err error, seed uint64, step int) {
	t.Helper()
	inUse := map[uint32]bool{}
	for _, u := range used {
		inUse[u] = true
	}
	var want uint32
	for v := uint32(1); v <= a.Max(); v++ {
		if !inUse[v] {
			want = v
			break
		}
	}
	switch {
	case want == 0 && !errors.Is(err, ErrExhausted):
		t.Fatalf("seed %d step %d: Next(%v) = %d, %v; every VNID 1 to %d is held", seed, step, used, id, err, a.Max())
	case want != 0 && (err != nil || id != want):
		t.Fatalf("seed %d step %d: Next(%v) = %d, %v; want the lowest free VNID %d", seed, step, used, id, err, want)
	case err == nil && (id == Global || id > a.Max() || inUse[id]):
		t.Fatalf("seed %d step %d: Next(%v) handed out %d", seed, step, used, id)
	}
}

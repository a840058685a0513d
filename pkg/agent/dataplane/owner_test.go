package dataplane

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/knftables"
)

// toy is a feature that owns one chain per name it holds; a change adds or
// deletes chains (partial), full re-adds them all and prunes toy-* chains.
type toy struct {
	prefix string
	mu     sync.Mutex
	want   map[string]bool
	gen    uint64
	done   uint64
	err    error // Contribute fails with it

	inTable   map[string]bool
	fulls     int
	contribs  int
	listedLen int // chains existing() named at the last full
}

func newToy(prefix string) *toy {
	return &toy{prefix: prefix, want: map[string]bool{}, inTable: map[string]bool{}, gen: 1}
}

func (f *toy) Name() string { return f.prefix }

func (f *toy) set(names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want = map[string]bool{}
	for _, n := range names {
		f.want[f.prefix+n] = true
	}
	f.gen++
}

func (f *toy) Contribute(_ context.Context, tx Tx, full bool, existing func() (Objects, error)) (func(bool), error) {
	f.mu.Lock()
	gen, want, err := f.gen, f.want, f.err
	f.want = copyMap(want)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !full && gen == f.done {
		return nil, nil
	}
	f.contribs++
	if full {
		f.fulls++
		ex, err := existing()
		if err != nil {
			return nil, err
		}
		f.listedLen = len(ex.Chains)
		tx.Add(&knftables.Table{})
		for n := range want {
			tx.Add(&knftables.Chain{Name: n})
		}
		for _, n := range ex.Chains {
			if strings.HasPrefix(n, f.prefix) && !want[n] {
				tx.Delete(&knftables.Chain{Name: n})
			}
		}
	} else {
		for n := range want {
			if !f.inTable[n] {
				tx.Add(&knftables.Chain{Name: n})
			}
		}
		for n := range f.inTable {
			if !want[n] {
				tx.Delete(&knftables.Chain{Name: n})
			}
		}
	}
	return func(ok bool) {
		if ok {
			f.inTable = want
			f.done = gen
		}
	}, nil
}

func (f *toy) Owned() Objects {
	var o Objects
	for n := range f.inTable {
		o.Chains = append(o.Chains, n)
	}
	return o
}

func copyMap(m map[string]bool) map[string]bool {
	c := make(map[string]bool, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func startOwner(t *testing.T, nft knftables.Interface, fs ...Feature) *Owner {
	t.Helper()
	o := NewOwner(nft, logr.Discard())
	o.Loop().RetryAfter = time.Hour // tests drive retries with Sync
	for _, f := range fs {
		o.Register(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go o.Run(ctx)
	return o
}

func chains(t *testing.T, f *knftables.Fake) string {
	t.Helper()
	var names []string
	for n := range f.Table.Chains {
		names = append(names, n)
	}
	slicesSort(names)
	return strings.Join(names, ",")
}

// Several features' changes go into one transaction; a feature with nothing
// to do adds nothing.
func TestOwnerOneTransactionPerSync(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	nft := &failing{Interface: fake}
	a, b := newToy("a-"), newToy("b-")
	a.set("1")
	b.set("1")
	o := startOwner(t, nft, NewBase(), a, b)
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.runs != 1 || chains(t, fake) != "a-1,b-1,pod-antispoof,pod-masquerade" {
		t.Fatalf("first sync: %d transactions, chains %s", nft.runs, chains(t, fake))
	}
	a.set("1", "2")
	b.set("2")
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.runs != 2 || chains(t, fake) != "a-1,a-2,b-2,pod-antispoof,pod-masquerade" {
		t.Fatalf("second sync: %d transactions, chains %s", nft.runs, chains(t, fake))
	}
	if last := nft.last(); strings.Contains(last, "pod-ifaddrs") || !strings.Contains(last, "delete chain inet sluice b-1") {
		t.Errorf("partial transaction carries the wrong work:\n%s", last)
	}
	// Nothing changed: no transaction at all.
	if err := o.Sync(ctx); err != nil || nft.runs != 2 {
		t.Errorf("idle sync: err %v, %d transactions", err, nft.runs)
	}
}

// A failed shared transaction changes nothing and is reported to the
// waiters; the next attempt gives each feature its own transaction, so the
// one the kernel refuses does not hold back the others; once all succeed
// they share again. Every feature in the failed transaction renders in full
// next time.
func TestOwnerIsolatesAFailingFeature(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	nft := &failing{Interface: fake}
	a, b := newToy("a-"), newToy("b-")
	o := startOwner(t, nft, a, b)
	a.set("1")
	b.set("1")
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	nft.set(func(tx string) bool { return strings.Contains(tx, "b-bad") })
	a.set("1", "2")
	b.set("1", "bad")
	if err := o.Sync(ctx); err == nil || !strings.Contains(err.Error(), "[a- b-]") {
		t.Fatalf("shared failure reported as %v", err)
	}
	if chains(t, fake) != "a-1,b-1" {
		t.Fatalf("a failed transaction changed the table: %s", chains(t, fake))
	}
	// Alone, a succeeds (in full) and b fails again.
	runs := nft.runs
	err := o.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "[b-]") || strings.Contains(err.Error(), "a-") {
		t.Fatalf("isolated attempt reported %v", err)
	}
	if nft.runs != runs+2 || chains(t, fake) != "a-1,a-2,b-1" || a.fulls != 2 {
		t.Fatalf("isolated attempt: %d transactions, chains %s, a full syncs %d", nft.runs-runs, chains(t, fake), a.fulls)
	}
	// b's input is fixed: both share one transaction again afterwards.
	b.set("2")
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if chains(t, fake) != "a-1,a-2,b-2" {
		t.Fatalf("after recovery: %s", chains(t, fake))
	}
	a.set("3")
	b.set("3")
	runs = nft.runs
	if err := o.Sync(ctx); err != nil || nft.runs != runs+1 {
		t.Fatalf("features did not share a transaction again: err %v, %d transactions", err, nft.runs-runs)
	}
}

// A feature that cannot contribute (its inputs failed) is left out; the
// others' work still reaches the kernel; the error reaches the waiter.
func TestOwnerContributionErrorSparesOthers(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	a, b := newToy("a-"), newToy("b-")
	o := startOwner(t, fake, a, b)
	b.mu.Lock()
	b.err = errors.New("ClusterNetwork: not found")
	b.mu.Unlock()
	a.set("1")
	b.set("1")
	err := o.Sync(ctx)
	if err == nil || !strings.Contains(err.Error(), "b-: ClusterNetwork") {
		t.Fatalf("contribution error reported as %v", err)
	}
	if chains(t, fake) != "a-1" {
		t.Fatalf("chains %s, want a's alone", chains(t, fake))
	}
	b.mu.Lock()
	b.err = nil
	b.mu.Unlock()
	if err := o.Sync(ctx); err != nil || chains(t, fake) != "a-1,b-1" {
		t.Fatalf("after the input recovered: %v, %s", err, chains(t, fake))
	}
}

// The table is listed once after a start, for each feature's first full
// render; afterwards a feature prunes against what it committed. Leftovers
// of a previous agent are deleted.
func TestOwnerListsOncePerStart(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: "a-old"})
	tx.Add(&knftables.Chain{Name: "other"})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	lists := &countingList{Interface: fake}
	a := newToy("a-")
	a.set("1")
	o := startOwner(t, lists, a)
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if chains(t, fake) != "a-1,other" || lists.n != 3 {
		t.Fatalf("after the first sync: chains %s, %d lists (want 3: chains, sets, maps)", chains(t, fake), lists.n)
	}
	// A forced full sync (after a failure) does not list again.
	lists.fail = true
	a.set("2")
	if err := o.Sync(ctx); err == nil {
		t.Fatal("injected failure not reported")
	}
	lists.fail = false
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if chains(t, fake) != "a-2,other" || lists.n != 3 || a.listedLen != 1 {
		t.Fatalf("after a full resync: chains %s, %d lists, pruned against %d chains", chains(t, fake), lists.n, a.listedLen)
	}
}

type countingList struct {
	knftables.Interface
	n    int
	fail bool
}

func (c *countingList) List(ctx context.Context, kind string) ([]string, error) {
	c.n++
	return c.Interface.List(ctx, kind)
}

func (c *countingList) Run(ctx context.Context, tx *knftables.Transaction) error {
	if c.fail {
		return errors.New("injected")
	}
	return c.Interface.Run(ctx, tx)
}

// Sync waits for a sync that started after it was called: a change recorded
// before Sync is in the table when it returns; a context that ends first
// is an error.
func TestOwnerSyncWaitsForItsChange(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	gate := &gated{Interface: fake, open: make(chan struct{})}
	a := newToy("a-")
	o := startOwner(t, gate, a)
	a.set("1")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := o.Sync(ctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with the kernel blocked returned %v", err)
	}
	close(gate.open)
	if err := o.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if chains(t, fake) != "a-1" {
		t.Fatalf("chains %s after Sync returned", chains(t, fake))
	}
}

type gated struct {
	knftables.Interface
	open chan struct{}
}

func (g *gated) Run(ctx context.Context, tx *knftables.Transaction) error {
	<-g.open
	return g.Interface.Run(ctx, tx)
}

// Every FullResyncPeriod every feature re-asserts its whole part.
func TestOwnerFullResync(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	a := newToy("a-")
	a.set("1")
	o := NewOwner(fake, logr.Discard())
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	o.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	o.Register(a)
	c, cancel := context.WithCancel(ctx)
	defer cancel()
	go o.Run(c)
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a.set("2")
	if err := o.Sync(ctx); err != nil || a.fulls != 1 {
		t.Fatalf("a change within the hour: %v, %d full", err, a.fulls)
	}
	mu.Lock()
	now = now.Add(FullResyncPeriod)
	mu.Unlock()
	if err := o.Sync(ctx); err != nil || a.fulls != 2 {
		t.Fatalf("after an hour: %v, %d full renders, want 2", err, a.fulls)
	}
}

func (f *toy) BaseChains() []BaseChain { return nil }

package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/loop"
)

// Objects names chains, sets and maps of the table.
type Objects struct{ Chains, Sets, Maps []string }

// Feature is one writer of the table: the pod network, the service proxy,
// isolation. The Owner calls it from its sync loop only, one call at a time.
type Feature interface {
	// Name names the feature in logs and errors.
	Name() string
	// Contribute adds the feature's pending changes to tx. With full it
	// renders its whole part of the table and deletes what it owns among
	// existing and no longer needs (existing: what the table holds, listed
	// once after a start, afterwards what the features last committed).
	// Without full it renders only what changed since its last commit.
	// It returns nil when it has nothing to add, else a function the Owner
	// calls with the outcome once the transaction has run: a feature
	// changes what it believes the table holds only when ok.
	Contribute(ctx context.Context, tx Tx, full bool, existing func() (Objects, error)) (commit func(ok bool), err error)
	// Owned names every chain, set and map the feature's last committed
	// state put in the table (what a later full sync may have to delete).
	Owned() Objects
	// BaseChains declares the feature's chains attached to hooks.
	BaseChains() []BaseChain
}

// FullResyncPeriod is how often every feature re-asserts its whole part even
// when nothing failed: at 30k services a full sync costs seconds of CPU, so
// it is rare (kube-proxy's nftables mode uses the same hour).
const FullResyncPeriod = time.Hour

// Owner is the table's one writer. Features register with it and ask for
// syncs; each sync collects every feature's contribution into one
// transaction. A feature renders in full on the first sync, after any failed
// transaction it was part of, and every FullResyncPeriod; otherwise its
// changes are partial. For its first full render after a start a feature
// prunes against the table as listed (once, for all features); afterwards
// against what it last committed (a failed transaction changes nothing, so
// the two agree). When a transaction carrying several features' work fails,
// the next attempt gives each feature a transaction of its own, so that one
// feature whose rules the kernel refuses cannot hold back the others; once
// every feature has succeeded alone they share transactions again.
type Owner struct {
	nft      Backend
	loop     *loop.Loop
	features []*member
	now      func() time.Time

	// Used by the sync loop only.
	listed   *Objects // the table as listed after the start
	isolated bool     // the last shared transaction failed: one per feature
	lastFull time.Time

	mu        sync.Mutex
	requested uint64 // bumped by every Sync call
	attempted uint64 // requested when the last finished sync started
	lastErr   error  // of that sync
	done      *sync.Cond
	stats     Stats
}

type member struct {
	f        Feature
	needFull bool
	pruned   bool // has rendered in full since the start: prune against Owned
}

// Stats counts the Owner's syncs and transactions.
type Stats struct {
	Syncs, Failed, Transactions, Full int
	LastDuration                      time.Duration
}

// NewOwner returns the owner of nft's table programmed through knftables
// (the nft binary, or its fake in tests). Register the features, then Run.
func NewOwner(nft knftables.Interface, log logr.Logger) *Owner {
	return NewOwnerOn(FromKnftables(nft), log)
}

// NewOwnerOn returns the owner of the table b programs.
func NewOwnerOn(b Backend, log logr.Logger) *Owner {
	o := &Owner{nft: b, now: time.Now}
	o.done = sync.NewCond(&o.mu)
	o.loop = loop.New("table", o.sync, log)
	return o
}

// Register adds a feature before Run; features contribute in registration
// order, so register first the one whose sets the others refer to (the pod
// network).
func (o *Owner) Register(f Feature) {
	for _, c := range f.BaseChains() {
		for _, m := range o.features {
			if slices.ContainsFunc(m.f.BaseChains(), func(x BaseChain) bool { return x.Name == c.Name }) {
				panic(fmt.Sprintf("base chain %q: declared by %s and %s", c.Name, m.f.Name(), f.Name()))
			}
		}
	}
	o.features = append(o.features, &member{f: f, needFull: true})
}

// Loop is the owner's sync loop (its clock and retry pause, for tests).
func (o *Owner) Loop() *loop.Loop { return o.loop }

// Run syncs on every request until ctx ends.
func (o *Owner) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, o.wake)
	defer stop()
	o.loop.Run(ctx)
}

func (o *Owner) wake() {
	o.mu.Lock()
	o.done.Broadcast()
	o.mu.Unlock()
}

// Request asks for a sync without waiting for it (informer handlers).
func (o *Owner) Request() { o.loop.Request() }

// Sync returns once a sync that started after the call has finished: nil
// when it succeeded, else its error. A feature that records a change and
// then calls Sync knows the change is in the kernel when Sync returns nil
// (a CNI ADD waits for its pod's rules this way).
func (o *Owner) Sync(ctx context.Context) error {
	o.mu.Lock()
	o.requested++
	want := o.requested
	o.mu.Unlock()
	o.loop.Request()

	stop := context.AfterFunc(ctx, o.wake)
	defer stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.attempted < want {
		if ctx.Err() != nil {
			return fmt.Errorf("table not programmed: %w", ctx.Err())
		}
		o.done.Wait()
	}
	return o.lastErr
}

// SyncNow runs one sync in the calling goroutine, for callers that do not
// Run the owner: a test or tool that must program the table from a thread
// inside a network namespace. Never call it while Run runs.
func (o *Owner) SyncNow(ctx context.Context) error { return o.sync(ctx) }

// Stats returns the counters.
func (o *Owner) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stats
}

func (o *Owner) sync(ctx context.Context) error {
	o.mu.Lock()
	gen := o.requested
	o.mu.Unlock()
	start := o.now()
	if start.Sub(o.lastFull) >= FullResyncPeriod {
		for _, m := range o.features {
			m.needFull = true
		}
		o.lastFull = start
	}
	var err error
	if o.isolated {
		var errs []error
		for _, m := range o.features {
			errs = append(errs, o.run(ctx, []*member{m}))
		}
		err = errors.Join(errs...)
		o.isolated = err != nil
	} else {
		err = o.run(ctx, o.features)
	}
	o.mu.Lock()
	o.attempted, o.lastErr = gen, err
	o.stats.Syncs++
	o.stats.LastDuration = o.now().Sub(start)
	if err != nil {
		o.stats.Failed++
	}
	o.done.Broadcast()
	o.mu.Unlock()
	return err
}

type contribution struct {
	m      *member
	full   bool
	commit func(bool)
}

// run puts the contributions of ms into one transaction and runs it. A
// feature that cannot contribute (its inputs failed) is left out and its
// error returned; the others' contributions are collected again without it,
// since the transaction may hold half of its part.
func (o *Owner) run(ctx context.Context, ms []*member) error {
	var errs []error
	skip := map[*member]bool{}
	var tx Batch
	var done []contribution
collect:
	tx, done = o.nft.NewBatch(), nil
	for _, m := range ms {
		if skip[m] {
			continue
		}
		full := m.needFull
		commit, err := m.f.Contribute(ctx, tx, full, o.existing(ctx, m))
		if err != nil {
			for _, c := range done {
				c.commit(false)
			}
			errs = append(errs, fmt.Errorf("%s: %w", m.f.Name(), err))
			skip[m] = true
			goto collect
		}
		if commit != nil {
			done = append(done, contribution{m, full, commit})
		}
	}
	if len(done) == 0 {
		return errors.Join(errs...)
	}
	var err error
	if tx.Len() > 0 {
		err = tx.Run(ctx)
		o.mu.Lock()
		o.stats.Transactions++
		o.mu.Unlock()
	}
	var names []string
	for _, c := range done {
		c.commit(err == nil)
		names = append(names, c.m.f.Name())
		if err != nil {
			c.m.needFull = true
			continue
		}
		if c.full {
			c.m.needFull, c.m.pruned = false, true
			o.mu.Lock()
			o.stats.Full++
			o.mu.Unlock()
		}
	}
	if err != nil {
		if len(done) > 1 {
			o.isolated = true
		}
		errs = append(errs, fmt.Errorf("nftables transaction of %v: %w", names, err))
	}
	return errors.Join(errs...)
}

// existing returns what m prunes against: the listed table until m has
// rendered in full once, then what m last committed.
func (o *Owner) existing(ctx context.Context, m *member) func() (Objects, error) {
	return func() (Objects, error) {
		if m.pruned {
			return m.f.Owned(), nil
		}
		if o.listed == nil {
			l, err := o.list(ctx)
			if err != nil {
				return Objects{}, err
			}
			o.listed = &l
		}
		return *o.listed, nil
	}
}

// list reads the names of the table's chains, sets and maps; a table that
// does not exist yet holds none.
func (o *Owner) list(ctx context.Context) (Objects, error) {
	var l Objects
	for _, x := range []struct {
		kind string
		into *[]string
	}{{"chains", &l.Chains}, {"sets", &l.Sets}, {"maps", &l.Maps}} {
		names, err := o.nft.List(ctx, x.kind)
		if err != nil && !knftables.IsNotFound(err) {
			return Objects{}, fmt.Errorf("list the table's %s: %w", x.kind, err)
		}
		*x.into = names
	}
	return l, nil
}

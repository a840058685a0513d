package loop

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// fakeClock fires a timer only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	timers map[time.Duration][]chan time.Time
	made   chan time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{timers: map[time.Duration][]chan time.Time{}, made: make(chan time.Duration, 100)}
}

func (c *fakeClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.timers[d] = append(c.timers[d], ch)
	c.mu.Unlock()
	c.made <- d
	return ch, func() bool { return true }
}

// fire fires the newest timer of duration d.
func (c *fakeClock) fire(t *testing.T, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.timers[d]
	if len(ts) == 0 {
		t.Fatalf("no %v timer", d)
	}
	ts[len(ts)-1] <- time.Time{}
}

type recorder struct {
	calls chan int
	mu    sync.Mutex
	fail  int // the next fail calls fail
	n     int
}

func (r *recorder) sync(context.Context) error {
	r.mu.Lock()
	r.n++
	n, fail := r.n, r.fail > 0
	if fail {
		r.fail--
	}
	r.mu.Unlock()
	r.calls <- n
	if fail {
		return errors.New("kernel said no")
	}
	return nil
}

func waitCall(t *testing.T, r *recorder, want int) {
	t.Helper()
	select {
	case n := <-r.calls:
		if n != want {
			t.Fatalf("sync #%d, want #%d", n, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("sync #%d did not happen", want)
	}
}

func noCall(t *testing.T, r *recorder) {
	t.Helper()
	select {
	case n := <-r.calls:
		t.Fatalf("unexpected sync #%d", n)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestRequestsCoalesceAndFailuresRetry(t *testing.T) {
	r := &recorder{calls: make(chan int, 10)}
	clock := newFakeClock()
	l := New("test", r.sync, logr.Discard())
	l.Clock = clock
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.mu.Lock()
	r.fail = 1
	r.mu.Unlock()
	go l.Run(ctx)

	waitCall(t, r, 1) // the first sync runs unasked, and fails
	if d := <-clock.made; d != time.Second {
		t.Fatalf("retry timer %v, want 1s", d)
	}
	noCall(t, r) // no retry before the timer
	clock.fire(t, time.Second)
	waitCall(t, r, 2)

	// Requests while idle: each one syncs; a burst while a sync is pending
	// costs one more sync at most.
	l.Request()
	waitCall(t, r, 3)
	for range 10 {
		l.Request()
	}
	waitCall(t, r, 4)
	select {
	case n := <-r.calls:
		if n != 5 {
			t.Fatalf("sync #%d", n)
		}
	case <-time.After(50 * time.Millisecond):
	}
	noCall(t, r)
}

func TestPeriodResyncs(t *testing.T) {
	r := &recorder{calls: make(chan int, 10)}
	clock := newFakeClock()
	l := New("test", r.sync, logr.Discard())
	l.Clock, l.Period = clock, 30*time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	waitCall(t, r, 1)
	<-clock.made // the period timer after the first sync
	<-clock.made
	noCall(t, r)
	clock.fire(t, 30*time.Second)
	waitCall(t, r, 2)
}

func TestCancelledSyncIsNotRetried(t *testing.T) {
	clock := newFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	l := New("test", func(ctx context.Context) error { cancel(); return ctx.Err() }, logr.Discard())
	l.Clock = clock
	go func() { l.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	select {
	case d := <-clock.made:
		t.Fatalf("a %v timer was started for a cancelled sync", d)
	default:
	}
}

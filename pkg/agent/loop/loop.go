// Package loop is the one sync loop the agent's parts share: requests are
// coalesced (a storm of changes costs one sync), a failed sync is retried
// after a pause, and an optional period re-runs the sync even when nothing
// asked for it (level-based resync). The clock is injectable so that the
// loop's timing can be tested without sleeping.
package loop

import (
	"context"
	"time"

	"github.com/go-logr/logr"
)

// Clock is the part of time the loop uses.
type Clock interface {
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

// NewTimer returns a channel that fires after d and its stop function.
func (RealClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// Loop runs Sync whenever requested.
type Loop struct {
	// Name names the loop in logs.
	Name string
	// Sync does the work; an error schedules a retry after RetryAfter.
	Sync func(ctx context.Context) error
	// RetryAfter is the pause before a failed sync is retried (default 1 s).
	RetryAfter time.Duration
	// Period, when set, runs Sync this long after the last run even without
	// a request.
	Period time.Duration
	Log    logr.Logger
	Clock  Clock // nil: RealClock

	kick chan struct{}
}

// New returns a loop that calls sync.
func New(name string, sync func(context.Context) error, log logr.Logger) *Loop {
	return &Loop{Name: name, Sync: sync, Log: log, kick: make(chan struct{}, 1)}
}

// Request asks for a sync; requests made while one is pending merge into it.
func (l *Loop) Request() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run syncs once, then on every request, retry and period, until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	clock := l.Clock
	if clock == nil {
		clock = RealClock{}
	}
	retryAfter := l.RetryAfter
	if retryAfter == 0 {
		retryAfter = time.Second
	}
	l.Request()
	var retry <-chan time.Time
	stopRetry := func() bool { return false }
	for {
		var period <-chan time.Time
		stopPeriod := func() bool { return false }
		if l.Period > 0 {
			period, stopPeriod = clock.NewTimer(l.Period)
		}
		select {
		case <-ctx.Done():
			stopRetry()
			stopPeriod()
			return
		case <-l.kick:
		case <-retry:
			retry = nil
		case <-period:
		}
		stopPeriod()
		if err := l.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return // shutting down: a cancelled sync is not a failure
			}
			l.Log.Error(err, "Sync failed; retrying", "loop", l.Name, "after", retryAfter)
			if retry == nil {
				retry, stopRetry = clock.NewTimer(retryAfter)
			}
		}
	}
}

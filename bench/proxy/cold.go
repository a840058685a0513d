// This file holds the cold-programming measurement: start of the proxy
// process → the sentinel ClusterIP answers.

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
)

// coldStarts starts the proxy --reps times (--big-reps above 10000
// Services) on an empty ruleset and records each start's time to live and
// CPU seconds in r. It returns the last process, left running, or nil with
// r.err set if a start failed.
func (b *bench) coldStarts(p proxyKind, size int, r *result) *proxyProc {
	reps := *repsF
	if size > 10000 {
		reps = *bigRepsF
	}
	reps = max(reps, 1)
	var pp *proxyProc
	for rep := range reps {
		b.flush()
		var t0 time.Time
		var err error
		pp, t0, err = b.startProxy(p, size, rep)
		if err != nil {
			r.err = err.Error()
			return nil
		}
		live, err := b.waitLive(pp, t0)
		if err != nil {
			r.err = fmt.Sprintf("cold start %d: %v (log %s)", rep, err, pp.logPath)
			logf("%s at %d: %s", p.label, size, r.err)
			b.stopProxy()
			b.flush()
			return nil
		}
		r.cold = append(r.cold, live)
		r.coldCPU = append(r.coldCPU, host.CPUSeconds(pp.cmd.Process.Pid))
		logf("%s at %d Services: cold start %d live after %s (CPU %.2f s)", p.label, size, rep, live.Round(time.Millisecond), r.coldCPU[rep])
		if rep < reps-1 {
			b.stopProxy()
		}
	}
	return pp
}

// waitLive starts a connection attempt to the sentinel every 10 ms (each
// with its own short timeout) until one is answered; it returns the time
// from t0 to that answer.
func (b *bench) waitLive(pp *proxyProc, t0 time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(b.ctx, *coldTimeout)
	defer cancel()
	got := make(chan time.Time, 1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case t := <-got:
			cancel()
			return t.Sub(t0), nil
		case <-pp.done:
			return 0, errors.New("the proxy exited")
		case <-ctx.Done():
			return 0, fmt.Errorf("not live after %s", *coldTimeout)
		case <-tick.C:
			wg.Go(func() {
				if _, err := probe(b.vip, 300*time.Millisecond); err == nil {
					select {
					case got <- time.Now():
					default:
					}
				}
			})
		}
	}
}

// This file holds the change-latency measurement: one EndpointSlice update
// → a new connection answered by the pod it now points at.

package main

import (
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/bench/internal/stats"
)

// changes measures up to --changes EndpointSlice changes, --change-gap
// apart, within --change-budget, into r. A change not live within 30 s is
// counted as a miss, and the series goes on only once the proxy has caught
// up with it (else the next change, back to the pod that still answers,
// would look live at once); any other failure ends the series.
func (b *bench) changes(p proxyKind, size int, r *result) {
	if b.pending != "" {
		// A miss of the previous proxy: this one's cold start programmed the
		// slice as it is.
		b.current, b.pending = b.pending, ""
	}
	deadline := time.Now().Add(*changeBudF)
	for i := 0; i < *changesF && time.Now().Before(deadline) && b.ctx.Err() == nil; i++ {
		d, err := b.change()
		if err != nil {
			r.changeMiss++
			logf("%s at %d: change %d: %v", p.label, size, i, err)
			if errors.Is(err, errNotLive) && b.catchUp() == nil {
				continue
			}
			break
		}
		r.changes = append(r.changes, d)
		time.Sleep(*changeGapF)
	}
	if len(r.changes) > 0 {
		logf("%s at %d Services: %d changes, p50 %s p99 %s", p.label, size, len(r.changes), stats.NearestRank(r.changes, 50).Round(100*time.Microsecond), stats.NearestRank(r.changes, 99).Round(100*time.Microsecond))
	}
}

var errNotLive = errors.New("not live")

// change points the sentinel's slice at the other pod and waits until new
// connections are answered by it: two probes in a row, so that one lucky
// answer from a half-programmed proxy does not count. The probes are paced
// (--probe-interval) so that they do not take the CPU the proxy needs.
func (b *bench) change() (time.Duration, error) {
	pointed := b.current // where the slice points now
	if b.pending != "" {
		pointed = b.pending
	}
	target := "b"
	if pointed == "b" {
		target = "a"
	}
	es := b.slice.DeepCopy()
	es.Endpoints[0].Addresses = []string{b.podIP[target].String()}
	t0 := time.Now()
	upd, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Update(b.ctx, es, metav1.UpdateOptions{})
	if err != nil {
		return 0, err
	}
	b.slice, b.pending = upd, target
	if live, err := b.waitAnswer(target, t0.Add(30*time.Second)); err != nil {
		return 0, err
	} else if !live.IsZero() {
		b.current, b.pending = target, ""
		return live.Sub(t0), nil
	}
	return 0, fmt.Errorf("%w: pod %s not answering after 30 s", errNotLive, target)
}

// catchUp waits up to two minutes for the proxy to serve the last, missed
// change, so that the next change starts from a state the proxy has.
func (b *bench) catchUp() error {
	live, err := b.waitAnswer(b.pending, time.Now().Add(2*time.Minute))
	if err != nil {
		return err
	}
	if live.IsZero() {
		return fmt.Errorf("pod %s still not answering after 2 more minutes", b.pending)
	}
	b.current, b.pending = b.pending, ""
	return nil
}

// waitAnswer probes the sentinel every --probe-interval until two probes in
// a row are answered by target, and returns when the first of them was
// sent; zero when the deadline passed first.
func (b *bench) waitAnswer(target string, deadline time.Time) (time.Time, error) {
	var first time.Time
	for next := time.Now(); time.Now().Before(deadline); next = next.Add(*probeEveryF) {
		time.Sleep(time.Until(next))
		sent := time.Now()
		name, err := probe(b.vip, 200*time.Millisecond)
		switch {
		case err == nil && name == target && !first.IsZero():
			return first, nil
		case err == nil && name == target:
			first = sent
		default:
			first = time.Time{}
		}
		if b.ctx.Err() != nil {
			return time.Time{}, b.ctx.Err()
		}
	}
	return time.Time{}, nil
}

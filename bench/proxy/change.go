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
// counted and skipped; any other failure ends the series.
func (b *bench) changes(p proxyKind, size int, r *result) {
	deadline := time.Now().Add(*changeBudF)
	for i := 0; i < *changesF && time.Now().Before(deadline) && b.ctx.Err() == nil; i++ {
		d, err := b.change()
		if err != nil {
			r.changeMiss++
			logf("%s at %d: change %d: %v", p.label, size, i, err)
			if errors.Is(err, errNotLive) {
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

// change points the sentinel's slice at the other pod and waits until a new
// connection is answered by it.
func (b *bench) change() (time.Duration, error) {
	target := "b"
	if b.current == "b" {
		target = "a"
	}
	es := b.slice.DeepCopy()
	es.Endpoints[0].Addresses = []string{b.podIP[target].String()}
	t0 := time.Now()
	upd, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Update(b.ctx, es, metav1.UpdateOptions{})
	if err != nil {
		return 0, err
	}
	b.slice, b.current = upd, target
	deadline := t0.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if name, err := probe(b.vip, 200*time.Millisecond); err == nil && name == target {
			return time.Since(t0), nil
		}
		if b.ctx.Err() != nil {
			return 0, b.ctx.Err()
		}
	}
	return 0, fmt.Errorf("%w: pod %s not answering after 30 s", errNotLive, target)
}

package workers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// A failing key is retried until it succeeds; Run returns when ctx ends.
func TestLoopRetriesAndStops(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
	var mu sync.Mutex
	calls := map[string]int{}
	done := make(chan struct{})
	l := &Loop[string]{
		Queue:      q,
		Synced:     []cache.InformerSynced{func() bool { return true }},
		EnqueueAll: func() { q.Add("a"); q.Add("b") },
		Sync: func(_ context.Context, k string) error {
			mu.Lock()
			defer mu.Unlock()
			calls[k]++
			if k == "b" && calls[k] < 3 {
				return errors.New("not yet")
			}
			if calls["a"] >= 1 && calls["b"] == 3 {
				close(done)
			}
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx, 2) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("keys not reconciled: %v", calls)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if calls["a"] != 1 || calls["b"] != 3 {
		t.Errorf("calls %v, want a once and b three times", calls)
	}
	if q.NumRequeues("b") != 0 {
		t.Errorf("b still has %d requeues after success", q.NumRequeues("b"))
	}
}

// Package workers is the worker loop Sluice's controllers share: wait for
// the informer caches, queue everything once, then reconcile queue keys on
// N workers until the context ends, retrying failed keys with the queue's
// rate limiter (sample-controller style, level-based). Informer events are
// unwrapped with pkg/informer.
package workers

import (
	"context"
	"fmt"
	"sync"
	"time"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Loop reconciles the keys of one queue.
type Loop[K comparable] struct {
	Queue  workqueue.TypedRateLimitingInterface[K]
	Synced []cache.InformerSynced
	// EnqueueAll queues every key once the caches are synced, whatever the
	// order in which handlers were registered and informers started.
	EnqueueAll func()
	// Sync reconciles one key; an error requeues it rate-limited.
	Sync func(ctx context.Context, key K) error
}

// Run blocks until ctx ends, then shuts the queue down and waits for the
// workers.
func (l *Loop[K]) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer l.Queue.ShutDown()
	logger := klog.FromContext(ctx)

	logger.Info("Waiting for informer caches to sync")
	if !cache.WaitForNamedCacheSyncWithContext(ctx, l.Synced...) {
		return fmt.Errorf("caches did not sync")
	}
	l.EnqueueAll()

	logger.Info("Starting workers", "count", workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for l.ProcessNext(ctx) {
				}
			}, time.Second)
		})
	}
	<-ctx.Done()
	logger.Info("Shutting down workers")
	l.Queue.ShutDown()
	wg.Wait()
	return nil
}

// ProcessNext reconciles one key; false once the queue is shut down.
func (l *Loop[K]) ProcessNext(ctx context.Context) bool {
	k, shutdown := l.Queue.Get()
	if shutdown {
		return false
	}
	defer l.Queue.Done(k)
	if err := l.Sync(ctx, k); err != nil {
		klog.FromContext(ctx).Error(err, "Reconcile failed; retrying", "key", k)
		l.Queue.AddRateLimited(k)
		return true
	}
	l.Queue.Forget(k)
	return true
}

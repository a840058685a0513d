// This file measures the API watch fan-out: every simulated Node's address
// changes (written as a kubelet writes its status), the controller follows
// each with a HostSubnet update, and W agent-like watchers — each the
// agent's HostSubnet and ClusterNetwork informers on a connection of its own
// — receive every update.

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
)

type fanoutResult struct {
	watchersSync time.Duration // W watchers started → all caches synced (N HostSubnets each)
	writes       time.Duration // first → last Node status write done
	ctrlWatch    time.Duration // first write → the controller's informer delivered the Nth node event
	ctrlUpdates  time.Duration // first write → the Nth HostSubnet hostIP change reached the bench
	watchers     []time.Duration
	n, w         int
}

// watcher is one agent's HostSubnet and ClusterNetwork informers, counting
// HostSubnet updates.
type watcher struct {
	updates atomic.Int64
	last    atomic.Int64 // UnixNano of the latest update
}

func (b *bench) fanout(ctx context.Context, n, w, gen int) (fanoutResult, error) {
	r := fanoutResult{n: n, w: w}
	if b.ctrl == nil {
		return r, errors.New("fan-out needs the controller running")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws := make([]*watcher, w)
	var synced []cache.InformerSynced
	var factories []sluiceinformers.SharedInformerFactory
	defer func() {
		cancel()
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	t0 := time.Now()
	for i := range ws {
		ws[i] = &watcher{}
		rc := rest.CopyConfig(b.rest) // own transport (Dial set): own connection
		rc.UserAgent = fmt.Sprintf("sluice-agent/bench-scale-watcher-%d", i)
		cs, err := versioned.NewForConfig(rc)
		if err != nil {
			return r, err
		}
		f := sluiceinformers.NewSharedInformerFactory(cs, 0)
		factories = append(factories, f)
		hs, cn := f.Sluice().V1alpha1().HostSubnets().Informer(), f.Sluice().V1alpha1().ClusterNetworks().Informer()
		wt := ws[i]
		hs.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, _ any) {
			wt.updates.Add(1)
			wt.last.Store(time.Now().UnixNano())
		}})
		cn.AddEventHandler(cache.ResourceEventHandlerFuncs{})
		synced = append(synced, hs.HasSynced, cn.HasSynced)
		f.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return r, errors.New("watchers' caches did not sync")
	}
	r.watchersSync = time.Since(t0)

	// The controller's node events before the writes; the writes.
	ctrlBase := b.ctrl.nodeEvents.Load()
	start := time.Now()
	err := labrun.Parallel(ctx, 16, 0, n, func(i int) error {
		return b.setNodeIP(ctx, simName(i), nodeIP(blockSim, gen, i))
	})
	if err != nil {
		return r, err
	}
	r.writes = time.Since(start)
	// Every HostSubnet follows its node.
	var lastChange time.Time
	if _, err := b.obs.wait(ctx, 5*time.Minute, func(o *observer) bool {
		lastChange = time.Time{}
		for i := range n {
			s, ok := o.subnets[simName(i)]
			if !ok || s.hostIP != nodeIP(blockSim, gen, i).String() {
				return false
			}
			if s.changed.After(lastChange) {
				lastChange = s.changed
			}
		}
		return true
	}); err != nil {
		return r, fmt.Errorf("HostSubnets following their nodes: %w", err)
	}
	r.ctrlUpdates = lastChange.Sub(start)
	if got := b.ctrl.nodeEvents.Load() - ctrlBase; got < int64(n) {
		return r, fmt.Errorf("the controller's node informer delivered %d events, want at least %d", got, n)
	}
	r.ctrlWatch = time.Unix(0, b.ctrl.lastNodeEvent.Load()).Sub(start)
	// Every watcher gets every update.
	deadline := time.Now().Add(5 * time.Minute)
	for _, wt := range ws {
		for wt.updates.Load() < int64(n) {
			if time.Now().After(deadline) {
				return r, fmt.Errorf("a watcher got %d of %d updates", wt.updates.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.watchers = append(r.watchers, time.Unix(0, wt.last.Load()).Sub(start))
	}
	slices.Sort(r.watchers)
	return r, nil
}

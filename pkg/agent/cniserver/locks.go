package cniserver

import (
	"context"
	"sync"
)

// keyedLock serialises calls per key (container ID) while letting different
// keys proceed in parallel. An entry lives only while someone holds or waits
// for it, so the map does not grow with the containers ever seen.
type keyedLock struct {
	mu      sync.Mutex
	entries map[string]*lockEntry
}

type lockEntry struct {
	ch   chan struct{} // holds a token while the key is locked
	refs int           // holders + waiters
}

func newKeyedLock() *keyedLock {
	return &keyedLock{entries: map[string]*lockEntry{}}
}

// lock waits for key, or for ctx to end. On success the caller must call the
// returned unlock exactly once.
func (k *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	e := k.entries[key]
	if e == nil {
		e = &lockEntry{ch: make(chan struct{}, 1)}
		k.entries[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			k.release(key, e)
		}, nil
	case <-ctx.Done():
		k.release(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyedLock) release(key string, e *lockEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.entries, key)
	}
}

// size is the number of live entries (for tests).
func (k *keyedLock) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries)
}

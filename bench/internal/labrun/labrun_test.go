package labrun

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParallelEachOnce(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	err := Parallel(context.Background(), 4, 3, 103, func(i int) error {
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 100 {
		t.Fatalf("%d indices run, want 100", len(seen))
	}
	for i := 3; i < 103; i++ {
		if seen[i] != 1 {
			t.Errorf("index %d run %d times", i, seen[i])
		}
	}
}

func TestParallelEmptyRange(t *testing.T) {
	if err := Parallel(context.Background(), 16, 5, 5, func(int) error { t.Error("called"); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestParallelStopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int64
	err := Parallel(context.Background(), 1, 0, 1000, func(i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if calls.Load() != 11 {
		t.Errorf("%d calls, want 11 (one worker stops after the failure)", calls.Load())
	}
}

func TestParallelCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Parallel(ctx, 4, 0, 10, func(int) error { t.Error("called"); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(5, time.Millisecond, func() bool { n++; return n == 3 }) || n != 3 {
		t.Errorf("Poll: n = %d, want success on the third call", n)
	}
	n = 0
	start := time.Now()
	if Poll(3, 10*time.Millisecond, func() bool { n++; return false }) || n != 3 {
		t.Errorf("Poll: n = %d, want 3 failed calls", n)
	}
	if d := time.Since(start); d >= 30*time.Millisecond {
		t.Errorf("Poll slept after the last try: %v", d)
	}
	if Poll(0, time.Millisecond, func() bool { t.Error("called"); return true }) {
		t.Errorf("Poll with no tries succeeded")
	}
}

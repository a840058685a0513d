package labrun

import (
	"context"
	"sync"
)

// Parallel runs f(i) for every i in [from, to) on the given number of
// workers, which is how the benchmarks load thousands of API objects within
// the client's rate limit. After the first error, or once ctx is done, no
// new i is started; it returns the first error, else ctx's.
func Parallel(ctx context.Context, workers, from, to int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		next  = from
		first error
		wg    sync.WaitGroup
	)
	claim := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		i := next
		next++
		return i, i < to && first == nil && ctx.Err() == nil
	}
	for range workers {
		wg.Go(func() {
			for {
				i, ok := claim()
				if !ok {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

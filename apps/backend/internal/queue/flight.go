package queue

import (
	"context"
	"sync"
)

// flight is one run of a call whose result every caller that arrives
// while it runs shares: N requests needing the same answer cost one call.
type flight[T any] struct {
	done chan struct{}
	once sync.Once
	val  T
	err  error
}

func newFlight[T any]() *flight[T] { return &flight[T]{done: make(chan struct{})} }

// finish stores the result and wakes the waiters; later calls do nothing.
func (f *flight[T]) finish(val T, err error) {
	f.once.Do(func() {
		f.val, f.err = val, err
		close(f.done)
	})
}

func (f *flight[T]) finished() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// wait returns the result, or ctx's error if ctx ends first.
func (f *flight[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

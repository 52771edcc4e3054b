// Package daemon holds what the three daemons' Run methods share.
package daemon

import (
	"context"
	"sync"
)

// Background runs helper goroutines (HTTP server, tickers) beside a
// daemon's event loop.
type Background struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// Start runs each fn in its own goroutine with a context that ends when
// ctx does or Stop is called.
func Start(ctx context.Context, fns ...func(context.Context) error) *Background {
	c, cancel := context.WithCancel(ctx)
	b := &Background{cancel: cancel}
	for _, fn := range fns {
		b.wg.Add(1)
		go func(fn func(context.Context) error) {
			defer b.wg.Done()
			if err := fn(c); err != nil {
				b.mu.Lock()
				if b.err == nil {
					b.err = err
				}
				b.mu.Unlock()
			}
		}(fn)
	}
	return b
}

// Stop ends the goroutines, waits for them and returns the first error.
func (b *Background) Stop() error {
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

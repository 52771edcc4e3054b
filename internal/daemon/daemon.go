// Package daemon holds what the three daemons' Run methods share.
package daemon

import (
	"context"
	"fmt"
	"sync"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
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

// Resources closes what a daemon opened, newest first, so a failed New
// and a finished Run release the same things the same way.
type Resources struct {
	closers []func()
}

// Add registers fn to run at Close.
func (r *Resources) Add(fn func()) { r.closers = append(r.closers, fn) }

// Close runs the registered closers in reverse order, once.
func (r *Resources) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// ZMQ makes the daemon's own context; Close terminates it after every
// socket added later is closed.
func (r *Resources) ZMQ() (*zmq.Context, error) {
	c, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("zmq context: %w", err)
	}
	r.Add(func() { _ = c.Term() })
	return c, nil
}

// State takes the state dir (if any) and, unless noPersist, opens its
// store file. existed says the store was found, i.e. recovery mode.
func (r *Resources) State(dir, component string, noPersist bool, file, format string, buckets []string,
	d store.Durability, log *logrus.Entry) (*statedir.Dir, *store.Store, bool, error) {
	if dir == "" {
		return nil, nil, false, nil
	}
	sd, err := statedir.Open(dir, component)
	if err != nil {
		return nil, nil, false, err
	}
	r.Add(func() { sd.Close() })
	if noPersist || file == "" {
		return sd, nil, false, nil
	}
	st, existed, err := store.Open(sd.File(file), format, buckets, d)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", component, err)
	}
	r.Add(func() {
		if err := st.Close(); err != nil {
			log.WithError(err).Error("closing the store")
		}
	})
	return sd, st, existed, nil
}

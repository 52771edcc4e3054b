// Package daemon holds what the three daemons' Run methods share.
package daemon

import (
	"context"
	"errors"
	"fmt"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/internal/statedir"
)

// ErrDone is returned by a part whose work is over (a drained manager): the
// group stops all parts and Run returns nil.
var ErrDone = errors.New("done")

// Group runs the parts of a daemon (its event loop, its HTTP server,
// helper goroutines). The first part to return, with an error or not,
// stops the others, and Run returns its error: a daemon whose HTTP server
// died must not go on silently (github.com/oklog/run's rule).
type Group struct {
	parts []part
}

type part struct {
	name string
	run  func(context.Context) error
}

// Add registers a part; run must return once its context ends.
func (g *Group) Add(name string, run func(context.Context) error) {
	g.parts = append(g.parts, part{name: name, run: run})
}

// Run starts every part and waits for all of them. It returns the first
// part's error; a part that ends by itself before ctx does is an error
// too, and one that ends because another stopped is not.
func (g *Group) Run(ctx context.Context) error {
	c, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, len(g.parts))
	for _, p := range g.parts {
		go func(p part) { done <- result{p.name, p.run(c)} }(p)
	}
	first := <-done
	stoppedFirst := c.Err() == nil
	cancel()
	for range g.parts[1:] {
		<-done
	}
	switch {
	case errors.Is(first.err, ErrDone):
		return nil
	case first.err != nil:
		return fmt.Errorf("%s: %w", first.name, first.err)
	case stoppedFirst && ctx.Err() == nil:
		return fmt.Errorf("%s stopped unexpectedly", first.name)
	}
	return nil
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

// StateDir takes (creates and locks) the daemon's state directory, if
// dir is set, and releases it at Close. The daemons open their stores
// themselves.
func (r *Resources) StateDir(dir, component string) (*statedir.Dir, error) {
	if dir == "" {
		return nil, nil
	}
	sd, err := statedir.Open(dir, component)
	if err != nil {
		return nil, err
	}
	r.Add(func() { sd.Close() })
	return sd, nil
}

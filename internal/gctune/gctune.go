// Package gctune sets a daemon's garbage-collector policy: a high GC
// target while the heap is small, so GC costs little CPU per task, and a
// soft memory limit that makes the GC work harder before the process
// grows past a size an operator expects. Above that size the limit follows
// the live heap (1.75 times it), so a heap that has to be large
// does not make the GC run without pause.
package gctune

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Percent is the GC target below the limit (Go's default is 100).
const Percent = 400

// Policy is what Start applied, for the start-up log.
type Policy struct {
	Percent int   // -1 when GOGC from the environment rules
	Base    int64 // soft limit in bytes; 0 when GOMEMLIMIT rules
}

// Start applies the policy to this process and, until ctx ends, raises
// the soft limit to 1.75 times the live heap when that is above base. GOGC or
// GOMEMLIMIT in the environment take precedence, as Go documents.
func Start(ctx context.Context, base int64) Policy {
	p := Policy{Percent: -1}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(Percent)
		p.Percent = Percent
	}
	if os.Getenv("GOMEMLIMIT") != "" || base <= 0 {
		return p
	}
	p.Base = base
	debug.SetMemoryLimit(base)
	go follow(ctx, base)
	return p
}

func follow(ctx context.Context, base int64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := base
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		want := Limit(base, int64(sample[0].Value.Uint64()))
		if want != last {
			debug.SetMemoryLimit(want)
			last = want
		}
	}
}

// Limit is the soft limit for a live heap: base, or 1.75 times the live
// heap when that is more, rounded up to 16 MiB so it changes seldom.
func Limit(base, live int64) int64 {
	const step = 16 << 20
	// Lower, a large live heap makes the GC run so often that the cost
	// per task grows with it (a forwarder with 1M tasks: 6.8 us a task at
	// 1.5, 5.3 at 1.75); higher, its peak passes 400 MB (2: 343-409 MB).
	want := live + live*3/4
	if want <= base {
		return base
	}
	return (want + step - 1) / step * step
}

package taskstore

import (
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPebbleTaskLife is what the forwarder's store does for each
// no-op task: added in a submit's batch, then stored ended. It reports
// CPU per task over all goroutines (flushes and compactions included),
// which the wall clock hides on a busy machine.
func BenchmarkPebbleTaskLife(b *testing.B) {
	s, _, err := Open(Config{URL: "pebble", Dir: b.TempDir(), Durability: store.SurviveProcessCrash})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 5000
	spec := []byte(`{"kind":"noop"}`)
	result := []byte(`{"exit_code":0}`)
	b.ResetTimer()
	cpu0 := cpuNow()
	var seq uint64
	for n := 0; n < b.N; n += batch {
		ts := make([]*Task, min(batch, b.N-n))
		now := time.Now().UnixNano()
		for i := range ts {
			seq++
			t := &Task{Seq: seq, Endpoint: "bench", Owner: "alice", Kind: "noop", Spec: spec, State: messages.StateReceived, Attempts: 1, CreatedAt: now}
			t.ID[0], t.ID[1], t.ID[2] = byte(seq), byte(seq>>8), byte(seq>>16)
			ts[i] = t
		}
		if err := s.Add(ts); err != nil {
			b.Fatal(err)
		}
		for _, t := range ts {
			t.State, t.Result, t.CompletedAt, t.UpdatedAt, t.Writes = messages.StateSuccess, result, now, now, 2
		}
		done := make(chan error, 1)
		s.Complete(ts, func(err error) { done <- err })
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNow()-cpu0)/1e3/float64(b.N), "cpu-us/task")
}

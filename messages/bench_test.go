package messages

import (
	"runtime"
	"testing"
)

const benchItems = 1000

var noopPayload = []byte(`{"kind":"noop"}`)

// roundTrip packs and unpacks m b.N times and reports per-item figures.
func roundTrip(b *testing.B, m Message, items int) {
	b.Helper()
	frames, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	size := 0
	for _, f := range frames {
		size += len(f)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		frames, err := m.Pack()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Unpack(frames); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	n := float64(b.N) * float64(items)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/task")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/task")
}

func benchIDs() []TaskID {
	ids := make([]TaskID, benchItems)
	for k := range ids {
		ids[k] = TaskID{byte(k >> 8), byte(k), 0x4d, 0x2e, 0x8f, 0x90, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 1, 2, 3, 4}
	}
	return ids
}

func BenchmarkTaskBatchRoundTrip(b *testing.B) {
	tasks := make([]Task, benchItems)
	for k, id := range benchIDs() {
		tasks[k] = Task{ID: id, Attempt: 1, Payload: noopPayload}
	}
	roundTrip(b, &TaskBatch{Tasks: tasks}, benchItems)
}

// Owned tasks: two users' tasks interleaved in runs, as a batch of
// several submissions holds them.
func BenchmarkTaskBatchRoundTripOwned(b *testing.B) {
	tasks := make([]Task, benchItems)
	for k, id := range benchIDs() {
		tasks[k] = Task{ID: id, Attempt: 1, Payload: noopPayload, Owner: [2]string{"alice", "bob"}[k/100%2]}
	}
	roundTrip(b, &TaskBatch{Tasks: tasks}, benchItems)
}

func BenchmarkResultBatchRoundTrip(b *testing.B) {
	results := make([]Result, benchItems)
	for k, id := range benchIDs() {
		results[k] = Result{ID: id, Attempt: 1, Code: Success, Started: 1700000000000000000,
			Finished: 1700000000004000000, Payload: []byte(`{"exit_code":0}`)}
	}
	roundTrip(b, &ResultBatch{Results: results}, benchItems)
}

func BenchmarkStatusReportRoundTrip(b *testing.B) {
	deltas := make([]Delta, benchItems)
	for k, id := range benchIDs() {
		deltas[k] = Delta{ID: id, Code: Running, Attempt: 1, At: 1700000000000000000 + int64(k)}
	}
	roundTrip(b, &EPStatusReport{Deltas: deltas, Managers: 2, Workers: 8, IdleWorkers: 3,
		Queued: 12, Outstanding: 1000, ServingState: NonePaused}, benchItems)
}

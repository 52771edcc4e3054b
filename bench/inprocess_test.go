package bench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The benchmarks here run the daemons inside the test process so the Go
// profiler sees them:
//
//	go test -run '^$' -bench NoopPipeline -cpuprofile cpu.out ./bench
//	go tool pprof -top -focus 'switchyard/interchange' bench.test cpu.out
//
// and so the live heap per queued task can be read exactly after a
// forced GC, without the GC slack that RSS includes.

type daemons struct {
	fw     *forwarder.Forwarder
	ix     *interchange.Interchange
	cancel context.CancelFunc
	done   chan error
	n      int
}

func (d *daemons) run(fn func(context.Context) error, ctx context.Context) {
	d.n++
	go func() { d.done <- fn(ctx) }()
}

func (d *daemons) stop(tb testing.TB) {
	d.cancel()
	for i := 0; i < d.n; i++ {
		if err := <-d.done; err != nil {
			tb.Error(err)
		}
	}
}

// startInProcess runs a forwarder, an interchange and managers managers
// (workers 8, prefetch 2000) in this process.
func startInProcess(tb testing.TB, persist bool, managers int) *daemons {
	tb.Helper()
	const iv = time.Second
	d := &daemons{done: make(chan error, 2+managers)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	fo := forwarder.Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: !persist, HeartbeatInterval: iv, Log: quiet()}
	iopts := interchange.Options{EndpointID: "inproc", ListenManagers: "tcp://127.0.0.1:*", ListenHTTP: "127.0.0.1:0",
		NoPersist: !persist, HeartbeatInterval: iv, Log: quiet(), Pressure: servingstate.Thresholds{PauseQueued: 10000000}}
	if persist {
		fo.StateDir, iopts.StateDir = tb.TempDir(), tb.TempDir()
	}
	var err error
	if d.fw, err = forwarder.New(fo); err != nil {
		tb.Fatal(err)
	}
	d.run(d.fw.Run, ctx)
	iopts.Forwarder = d.fw.ZMQAddr()
	if iopts.Credentials, err = d.fw.CreateEndpoint("inproc", false); err != nil {
		d.stop(tb)
		tb.Fatal(err)
	}
	if d.ix, err = interchange.New(iopts); err != nil {
		d.stop(tb)
		tb.Fatal(err)
	}
	d.run(d.ix.Run, ctx)
	for i := 0; i < managers; i++ {
		mg, err := manager.New(manager.Options{Interchange: d.ix.ManagersAddr(), ManagerID: fmt.Sprintf("m%d", i), Workers: 8,
			Prefetch: 2000, HeartbeatInterval: iv, Log: quiet(), Credentials: d.ix.ManagerCredentials(), AllowRoot: true})
		if err != nil {
			d.stop(tb)
			tb.Fatal(err)
		}
		d.run(mg.Run, ctx)
	}
	a := newAPI("http://"+d.fw.HTTPAddr(), d.fw.AdminToken(), newHTTPClient())
	err = pollUntil(ctx, 30*time.Second, 10*time.Millisecond, func() error {
		v, err := a.Endpoint(ctx, "inproc", false)
		if err != nil {
			return err
		}
		if !v.Connected || v.Managers < managers {
			return fmt.Errorf("connected=%v managers=%d", v.Connected, v.Managers)
		}
		return nil
	})
	if err != nil {
		d.stop(tb)
		tb.Fatal(err)
	}
	return d
}

// BenchmarkNoopPipeline pushes b.N no-op tasks through forwarder,
// interchange and one manager over the HTTP API, as switchyard bench does.
func BenchmarkNoopPipeline(b *testing.B) {
	for _, persist := range []bool{true, false} {
		b.Run(fmt.Sprintf("persist=%v", persist), func(b *testing.B) {
			d := startInProcess(b, persist, 1)
			defer d.stop(b)
			a := newAPI("http://"+d.fw.HTTPAddr(), d.fw.AdminToken(), newHTTPClient())
			ctx := context.Background()
			if _, err := runThroughput(ctx, a, "inproc", 1000, 1000, 1); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			res, err := runThroughput(ctx, a, "inproc", max(b.N, 1), 5000, 4)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.TasksPerSec, "tasks/s")
		})
	}
}

// heapInUse is the live heap after two forced collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

const heapTasks = 200000

// BenchmarkInterchangeHeapPerQueuedTask queues tasks at an interchange
// with no managers, fed by a fake forwarder (a ROUTER in the test), and
// reports the interchange's live heap per queued task.
func BenchmarkInterchangeHeapPerQueuedTask(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run(fmt.Sprintf("persist=%v", persist), func(b *testing.B) {
			for range b.N {
				b.ReportMetric(interchangeHeapPerTask(b, persist), "B/task")
			}
		})
	}
}

func interchangeHeapPerTask(b *testing.B, persist bool) float64 {
	zctx, err := zmq.NewContext()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = zctx.Term() }()
	fwd, addr, err := zsock.NewRouter(zctx, "tcp://127.0.0.1:*")
	if err != nil {
		b.Fatal(err)
	}
	defer zsock.Close(fwd)
	iopts := interchange.Options{EndpointID: "heap", Forwarder: addr, ListenManagers: "tcp://127.0.0.1:*", ListenHTTP: "127.0.0.1:0",
		NoPersist: !persist, HeartbeatInterval: time.Second, HeartbeatThreshold: time.Minute, Log: quiet(),
		Pressure: servingstate.Thresholds{PauseQueued: 10 * heapTasks}, Insecure: true}
	if persist {
		iopts.StateDir = b.TempDir()
	}
	ix, err := interchange.New(iopts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	recv := func() messages.Message {
		p := zmq.NewPoller()
		p.Add(fwd, zmq.POLLIN)
		if polled, err := p.Poll(10 * time.Second); err != nil || len(polled) == 0 {
			b.Fatalf("nothing from the interchange: %v", err)
		}
		frames, _, err := zsock.Recv(fwd)
		if err != nil {
			b.Fatal(err)
		}
		m, err := messages.Unpack(frames[1:])
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	send := func(m messages.Message) {
		frames, err := m.Pack()
		if err != nil {
			b.Fatal(err)
		}
		for {
			err := zsock.Send(fwd, []byte("heap"), frames)
			if err == nil {
				return
			}
			if err != zsock.ErrWouldBlock {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for recv().Type() != messages.TypeRegistration {
	}
	send(&messages.Heartbeat{})
	hc := &http.Client{Timeout: 5 * time.Second}
	before := heapInUse()
	const batch = 1000
	payload := []byte(`{"kind":"noop"}`)
	acked := 0
	for off := 0; off < heapTasks; off += batch {
		tasks := make([]messages.Task, batch)
		for i := range tasks {
			n := off + i
			tasks[i] = messages.Task{ID: messages.TaskID{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 0x4d, 7}, Attempt: 1, Payload: payload}
		}
		send(&messages.TaskBatch{Tasks: tasks})
		// Keep at most a few batches in flight, as the forwarder does.
		for off/batch-acked > 8 {
			if a, ok := recv().(*messages.Ack); ok {
				acked += len(a.IDs) / batch
			}
		}
	}
	for acked < heapTasks/batch {
		if a, ok := recv().(*messages.Ack); ok {
			acked += len(a.IDs) / batch
		}
	}
	err = pollUntil(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := ixStatusOf(ctx, hc, "http://"+ix.HTTPAddr(), ix.AdminToken())
		if err != nil {
			return err
		}
		if st.Queued != heapTasks {
			return fmt.Errorf("%d queued", st.Queued)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// Let a status report drain the delta buffer, then count.
	time.Sleep(1500 * time.Millisecond)
	after := heapInUse()
	return (float64(after) - float64(before)) / heapTasks
}

// BenchmarkForwarderHeapPerHeldTask submits tasks to a forwarder whose
// endpoint is not connected and reports its live heap per task.
func BenchmarkForwarderHeapPerHeldTask(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run(fmt.Sprintf("persist=%v", persist), func(b *testing.B) {
			for range b.N {
				fo := forwarder.Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: !persist,
					HeartbeatInterval: time.Second, Log: quiet()}
				if persist {
					fo.StateDir = b.TempDir()
				}
				fw, err := forwarder.New(fo)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- fw.Run(ctx) }()
				if _, err := fw.CreateEndpoint("heap", false); err != nil {
					b.Fatal(err)
				}
				hc := newHTTPClient()
				a := newAPI("http://"+fw.HTTPAddr(), fw.AdminToken(), hc)
				before := heapInUse()
				body := noopBody(5000)
				for n := 0; n < heapTasks; n += 5000 {
					if _, err := a.SubmitBody(ctx, "heap", body); err != nil {
						b.Fatal(err)
					}
				}
				hc.CloseIdleConnections()
				time.Sleep(500 * time.Millisecond)
				after := heapInUse()
				b.ReportMetric((float64(after)-float64(before))/heapTasks, "B/task")
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}
		})
	}
}

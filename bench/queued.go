package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// MemPerTask is one process's memory growth per queued task.
type MemPerTask struct {
	// Bytes per task from the growth of the resident set (VmRSS), its
	// anonymous part (RssAnon: heap and stacks, not the mapped store
	// file), and the Go heap in use (go_memstats_heap_inuse_bytes).
	RSSPerTask     float64 `json:"rss_bytes_per_task"`
	AnonPerTask    float64 `json:"anon_bytes_per_task,omitempty"`
	HeapPerTask    float64 `json:"heap_inuse_bytes_per_task"`
	RSSBefore      uint64  `json:"rss_before_bytes"`
	RSSAfter       uint64  `json:"rss_after_bytes"`
	HWM            uint64  `json:"peak_rss_bytes,omitempty"`
	HeapBefore     float64 `json:"heap_inuse_before_bytes"`
	HeapAfter      float64 `json:"heap_inuse_after_bytes"`
	FileRSSAfter   uint64  `json:"file_rss_after_bytes,omitempty"`
	MemorySource   string  `json:"memory_source"`
	GoroutineAfter float64 `json:"goroutines_after"`
}

// QueuedResult is Q tasks queued at an interchange with no managers.
type QueuedResult struct {
	Tasks          int        `json:"tasks"`
	SubmitSeconds  float64    `json:"submit_seconds"`
	QueueSeconds   float64    `json:"queue_seconds"`
	Interchange    MemPerTask `json:"interchange"`
	Forwarder      MemPerTask `json:"forwarder"`
	QueuedObserved int        `json:"queued_observed"`
}

type memSnap struct {
	rss, anon, file, hwm uint64
	heap, goroutines     float64
}

func readMem(ctx context.Context, hc *http.Client, pid int, metricsURL string) (memSnap, string, error) {
	var s memSnap
	m, err := Scrape(ctx, hc, metricsURL)
	if err != nil {
		return s, "", err
	}
	s.heap = m.Sum("go_memstats_heap_inuse_bytes")
	s.goroutines = m.Sum("go_goroutines")
	if pid > 0 {
		p, err := ReadProc(pid)
		if err != nil {
			return s, "", err
		}
		s.rss, s.anon, s.file, s.hwm = p.RSS, p.RSSAnon, p.RSSFile, p.HWM
		return s, "/proc/PID/status and /metrics", nil
	}
	s.rss = uint64(m.Sum("process_resident_memory_bytes"))
	return s, "/metrics", nil
}

func perTask(before, after memSnap, q int, src string) MemPerTask {
	d := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(q) }
	out := MemPerTask{RSSPerTask: d(before.rss, after.rss), HeapPerTask: (after.heap - before.heap) / float64(q),
		RSSBefore: before.rss, RSSAfter: after.rss, HWM: after.hwm, HeapBefore: before.heap, HeapAfter: after.heap,
		FileRSSAfter: after.file, MemorySource: src, GoroutineAfter: after.goroutines}
	if after.anon > 0 {
		out.AnonPerTask = d(before.anon, after.anon)
	}
	return out
}

// runQueued submits q tasks to an endpoint without managers and reports
// how much memory the forwarder and the interchange grow per queued task.
func runQueued(ctx context.Context, e *Endpoint, a *api, q, batch, submitters int, interval time.Duration, progress func(string, ...any)) (QueuedResult, error) {
	res := QueuedResult{Tasks: q}
	if e.InterchangeHTTP == "" {
		return res, fmt.Errorf("--queued needs the interchange's admin HTTP (--interchange-http)")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	ixPID, fwPID := 0, 0
	if p := e.Proc("interchange"); p != nil {
		ixPID = p.PID
	}
	if p := e.Proc("forwarder"); p != nil {
		fwPID = p.PID
	}
	st0, err := e.ixStatus(ctx, hc)
	if err != nil {
		return res, err
	}
	if st0.Managers > 0 {
		return res, fmt.Errorf("the interchange has %d managers; --queued needs an endpoint without managers", st0.Managers)
	}
	ixBefore, src, err := readMem(ctx, hc, ixPID, e.InterchangeHTTP+"/metrics")
	if err != nil {
		return res, err
	}
	fwBefore, fsrc, err := readMem(ctx, hc, fwPID, e.API+"/metrics")
	if err != nil {
		return res, err
	}
	batch = min(max(batch, 1), q)
	nb := (q + batch - 1) / batch
	full := noopBody(batch)
	var last []byte
	if r := q % batch; r != 0 {
		last = noopBody(r)
	}
	work := make(chan int, nb)
	for i := 0; i < nb; i++ {
		work <- i
	}
	close(work)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var subErr error
	var wg sync.WaitGroup
	start := time.Now()
	for s := 0; s < max(submitters, 1); s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				body := full
				if i == nb-1 && last != nil {
					body = last
				}
				if _, err := a.SubmitBody(ctx, e.ID, body); err != nil {
					once.Do(func() { subErr = fmt.Errorf("submit batch %d: %w", i, err); cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if subErr != nil {
		return res, subErr
	}
	res.SubmitSeconds = time.Since(start).Seconds()
	progress("%d tasks accepted in %.1fs; waiting for the interchange to queue them", q, res.SubmitSeconds)
	want := st0.Queued + q
	err = pollUntil(ctx, 10*time.Minute, 200*time.Millisecond, func() error {
		if err := e.Alive(); err != nil {
			return &fatalError{err}
		}
		st, err := e.ixStatus(ctx, hc)
		if err != nil {
			return err
		}
		res.QueuedObserved = st.Queued
		if st.Queued < want {
			return fmt.Errorf("interchange has %d queued, want %d", st.Queued, want)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.QueueSeconds = time.Since(start).Seconds()
	// Let the store writers and status reports finish.
	settle := max(3*time.Second, 3*interval)
	progress("%d tasks queued after %.1fs; settling for %s", q, res.QueueSeconds, settle)
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	ixAfter, _, err := readMem(ctx, hc, ixPID, e.InterchangeHTTP+"/metrics")
	if err != nil {
		return res, err
	}
	fwAfter, _, err := readMem(ctx, hc, fwPID, e.API+"/metrics")
	if err != nil {
		return res, err
	}
	res.Interchange = perTask(ixBefore, ixAfter, q, src)
	res.Forwarder = perTask(fwBefore, fwAfter, q, fsrc)
	return res, nil
}

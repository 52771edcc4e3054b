package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
)

// ThroughputResult is N no-op tasks submitted in batches.
type ThroughputResult struct {
	Tasks      int `json:"tasks"`
	Batch      int `json:"batch"`
	Submitters int `json:"submitters"`
	// Seconds from the first submit until every task was seen terminal.
	Seconds     float64 `json:"seconds"`
	TasksPerSec float64 `json:"tasks_per_second"`
	// SubmitSeconds until the last POST was answered (tasks accepted and
	// stored by the forwarder).
	SubmitSeconds  float64 `json:"submit_seconds"`
	AcceptedPerSec float64 `json:"accepted_per_second"`
	Failed         int     `json:"failed"`
	// EndedRequests is how many GET /v1/tasks/ended calls followed the
	// tasks to their end.
	EndedRequests   int     `json:"ended_requests"`
	FirstFailure    string  `json:"first_failure,omitempty"`
	BenchCPUSeconds float64 `json:"bench_client_cpu_seconds"`
	// AllCPUMicrosPerTk is the CPU of every daemon and the bench client
	// over the run, per task.
	AllCPUMicrosPerTk float64 `json:"all_cpu_us_per_task,omitempty"`
}

// endedPage is the most ends one GET /v1/tasks/ended returns.
const endedPage = 100000

// runThroughput submits n no-op tasks in batches from several goroutines
// and follows them until all are terminal, as a user's client does: with
// GET /v1/tasks/ended after a cursor taken before the first submit, so
// each end is read once and polling stays a small part of the load.
func runThroughput(ctx context.Context, a *api, ep string, n, batch, submitters int) (ThroughputResult, error) {
	res := ThroughputResult{Tasks: n, Batch: batch, Submitters: submitters}
	if n <= 0 {
		return res, nil
	}
	batch = min(max(batch, 1), n)
	submitters = max(submitters, 1)
	nb := (n + batch - 1) / batch
	full := noopBody(batch)
	var last []byte
	if r := n % batch; r != 0 {
		last = noopBody(r)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan int, nb)
	for i := 0; i < nb; i++ {
		work <- i
	}
	close(work)
	accepted := make(chan []string, nb)
	var subErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { subErr = err; cancel() })
	}
	cpu0 := selfCPU()
	start := time.Now()
	first, err := a.Ended(ctx, "", 0, 0)
	if err != nil {
		return res, fmt.Errorf("ended cursor: %w", err)
	}
	var wg sync.WaitGroup
	for s := 0; s < submitters; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				body := full
				if i == nb-1 && last != nil {
					body = last
				}
				ids, err := a.SubmitBody(ctx, ep, body)
				if err != nil {
					fail(fmt.Errorf("submit batch %d: %w", i, err))
					return
				}
				accepted <- ids
			}
		}()
	}
	var submitEnd time.Time
	go func() {
		wg.Wait()
		submitEnd = time.Now()
		close(accepted)
	}()
	// Ends can be reported before the POST that made the task answers.
	mine := make(map[string]bool, n)
	early := map[string]string{}
	done := 0
	end1 := func(id, state string) {
		done++
		if state != "success" {
			res.Failed++
			if res.FirstFailure == "" {
				res.FirstFailure = fmt.Sprintf("task %s ended %s", id, state)
				if t, err := a.Task(ctx, id); err == nil {
					res.FirstFailure += ": " + t.Error
				}
			}
		}
	}
	cursor := first.Cursor
	for open := true; done < n && ctx.Err() == nil; {
		for drained := false; open && !drained; {
			select {
			case ids, ok := <-accepted:
				if !ok {
					open = false
					break
				}
				for _, id := range ids {
					if st, ok := early[id]; ok {
						delete(early, id)
						end1(id, st)
					} else {
						mine[id] = true
					}
				}
			default:
				drained = true
			}
		}
		page, err := a.Ended(ctx, cursor, 200*time.Millisecond, endedPage)
		res.EndedRequests++
		if err != nil {
			fail(fmt.Errorf("ended: %w", err))
			break
		}
		if page.Reset {
			fail(fmt.Errorf("ended: the forwarder lost our cursor (restarted, or more than its journal ended meanwhile)"))
			break
		}
		for _, t := range page.Tasks {
			if mine[t.TaskID] {
				delete(mine, t.TaskID)
				end1(t.TaskID, t.State)
			} else {
				early[t.TaskID] = t.State
			}
		}
		cursor = page.Cursor
	}
	end := time.Now()
	if subErr != nil {
		return res, subErr
	}
	if done != n {
		return res, fmt.Errorf("only %d of %d tasks seen terminal: %v", done, n, ctx.Err())
	}
	res.BenchCPUSeconds = (selfCPU() - cpu0).Seconds()
	res.Seconds = end.Sub(start).Seconds()
	res.TasksPerSec = float64(n) / res.Seconds
	res.SubmitSeconds = submitEnd.Sub(start).Seconds()
	res.AcceptedPerSec = float64(n) / res.SubmitSeconds
	return res, nil
}

// LatencyResult is round trips of single tasks, one after another.
type LatencyResult struct {
	Tasks int `json:"tasks"`
	// Round trip: POST one task, then GET it with ?wait=10s until it is
	// terminal. Milliseconds.
	MedianMS float64 `json:"median_ms"`
	P99MS    float64 `json:"p99_ms"`
	MinMS    float64 `json:"min_ms"`
	MaxMS    float64 `json:"max_ms"`
	// The POST alone (accepted and stored).
	SubmitMedianMS float64 `json:"submit_median_ms"`
	SubmitP99MS    float64 `json:"submit_p99_ms"`
	Failed         int     `json:"failed"`
}

func runLatency(ctx context.Context, a *api, ep string, m int) (LatencyResult, error) {
	res := LatencyResult{Tasks: m}
	if m <= 0 {
		return res, nil
	}
	body := noopBody(1)
	rtt := make([]time.Duration, 0, m)
	sub := make([]time.Duration, 0, m)
	for i := 0; i < m; i++ {
		t0 := time.Now()
		ids, err := a.SubmitBody(ctx, ep, body)
		if err != nil {
			return res, fmt.Errorf("round trip %d: %w", i, err)
		}
		t1 := time.Now()
		var st client.Task
		for {
			if st, err = a.Wait(ctx, ids[0], 10*time.Second); err != nil {
				return res, fmt.Errorf("round trip %d: %w", i, err)
			}
			if client.Terminal(st.State) {
				break
			}
		}
		rtt = append(rtt, time.Since(t0))
		sub = append(sub, t1.Sub(t0))
		if st.State != "success" {
			res.Failed++
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	sortD(rtt)
	sortD(sub)
	res.MedianMS, res.P99MS = ms(quantile(rtt, 0.5)), ms(quantile(rtt, 0.99))
	res.MinMS, res.MaxMS = ms(rtt[0]), ms(rtt[len(rtt)-1])
	res.SubmitMedianMS, res.SubmitP99MS = ms(quantile(sub, 0.5)), ms(quantile(sub, 0.99))
	return res, nil
}

func sortD(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// quantile is the nearest-rank quantile of sorted values.
func quantile[T any](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	k := int(float64(len(sorted))*q+0.999999999) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

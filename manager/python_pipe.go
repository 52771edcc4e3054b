package manager

import (
	"bufio"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// A worker of protocol 4 or later may be sent calls before it answers the
// ones it has (docs/worker-protocol.md): up to aheadMost, and only as many
// as its recent calls say will start within aheadWithin, so a long call
// never waits behind another. Calls with a timeout are never sent ahead
// (their clock starts when they start).
const (
	aheadMost   = 16
	aheadWithin = 2 * time.Millisecond
	// aheadBytes bounds the calls in a worker's pipe beyond the first,
	// well under a pipe's 64 KiB: a write of calls then never blocks, so
	// the manager cannot be stuck writing while the worker is stuck
	// writing answers the manager is not reading.
	aheadBytes = 32 << 10
	// pipeProtocol is the first worker protocol that takes calls ahead.
	pipeProtocol = 4
)

// ahead is how many calls w may hold, counting the one it runs.
func (w *pyWorker) ahead() int {
	if w.protocol < pipeProtocol || w.avg <= 0 {
		return 1
	}
	return int(min(max(aheadWithin/w.avg, 1), aheadMost))
}

// took folds one call's time into w's running average (weight 1/8).
func (w *pyWorker) took(d time.Duration) {
	if w.avg <= 0 {
		w.avg = d
		return
	}
	w.avg += (d - w.avg) / 8
}

// pyJob is a claimed python task and its decoded call.
type pyJob struct {
	t       *mtask
	payload []byte
}

// pySent is a call written to a worker and not yet answered.
type pySent struct {
	pyJob
	id   uint64
	at   int64       // when it was written (ns)
	stop func() bool // ends its cancel watch, if it has one
}

// pyEligible: a task that may be sent ahead to a worker of owner.
func pyEligible(t *mtask, owner string) (pyJob, bool) {
	if t.task.Owner != owner || t.ctx.Err() != nil {
		return pyJob{}, false
	}
	spec, err := taskspec.Decode(t.task.Payload)
	if err != nil || spec.Kind != taskspec.KindPython || spec.Timeout != "" {
		return pyJob{}, false
	}
	return pyJob{t: t, payload: spec.Payload}, true
}

// runCalls runs first, a claimed python task without a timeout, and more
// of its owner's such tasks taken from work while they come without
// waiting, on one worker with several calls in its pipe. Answers read
// together are posted to the loop together. It returns a task it took
// from work but could not add (unclaimed), for the caller to run.
func (mg *Manager) runCalls(work <-chan *mtask, first pyJob) (next *mtask) {
	p := mg.py
	todo := []pyJob{first}
	for len(todo) > 0 {
		j := todo[0]
		w, err := p.get(j.t.ctx, j.t.task.Owner)
		if err != nil {
			r := messages.Result{ID: j.t.task.ID, Attempt: j.t.task.Attempt, Started: time.Now().UnixNano()}
			if j.t.ctx.Err() != nil {
				r.Code, r.Error = stopped(j.t.ctx, 0)
			} else {
				r.Code, r.Error = messages.Failed, err.Error()
			}
			r.Finished = r.Started
			j.t.cancel(nil)
			mg.mbox.Post(event{kind: evFinished, t: j.t, result: r})
			todo = todo[1:]
			continue
		}
		todo, next = mg.pipeline(w, work, todo, next)
	}
	return next
}

// pipeline keeps w's pipe filled from todo, then from work, until both
// run dry (w goes back to the pool) or w is lost: then the calls it had
// not started are returned in todo, to go to another worker.
func (mg *Manager) pipeline(w *pyWorker, work <-chan *mtask, todo []pyJob, next *mtask) ([]pyJob, *mtask) {
	p := mg.py
	owner := w.owner
	buf := make([]pySent, 0, aheadMost)
	sent := buf
	var evs []event
	closed := false // work is closed: the manager is stopping
	inPipe := 0     // bytes of the calls in sent
	lastAt := int64(0)
	for {
		// Fill the pipe: one write for all the calls added.
		limit := w.ahead()
		if len(sent) == 0 || cap(sent)-len(sent) < limit {
			sent = append(buf[:0], sent...) // back to the start of buf
		}
		w.scratch = w.scratch[:0]
		nStart := len(evs)
		for len(sent) < limit {
			var j pyJob
			if len(todo) > 0 {
				j, todo = todo[0], todo[1:]
			} else if next != nil || closed || !mg.gate.isOpen() {
				break
			} else {
				var t *mtask
				open := true
				select {
				case t, open = <-work:
				default:
				}
				if t == nil {
					closed = !open
					break
				}
				var ok bool
				if j, ok = pyEligible(t, owner); !ok {
					next = t
					break
				}
				if !t.claim.CompareAndSwap(0, 1) {
					continue // cancelled before it started; the loop reported it
				}
			}
			if j.t.ctx.Err() != nil {
				at := time.Now().UnixNano()
				r := messages.Result{ID: j.t.task.ID, Attempt: j.t.task.Attempt, Started: at, Finished: at}
				r.Code, r.Error = stopped(j.t.ctx, 0)
				j.t.cancel(nil)
				evs = append(evs, event{kind: evFinished, t: j.t, result: r})
				continue
			}
			size := frameHeaderLen + callIDLen + len(j.payload)
			if len(sent) > 0 && inPipe+size > aheadBytes {
				todo = append([]pyJob{j}, todo...) // for when the pipe has room
				break
			}
			inPipe += size
			s := pySent{pyJob: j, id: rand.Uint64(), at: time.Now().UnixNano()}
			if len(sent) == 0 {
				w.head.Store(s.id)
			}
			t := j.t
			t.startedAt.Store(s.at)
			evs = append(evs, event{kind: evStarted, t: t, at: s.at})
			w.scratch = appendCall(w.scratch, s.id, j.payload)
			sent = append(sent, s)
		}
		if len(evs) > nStart {
			// Starts need not wake the loop; finished tasks below do.
			mg.mbox.PostLazy(evs[nStart:]...)
			evs = evs[:nStart]
		}
		if len(w.scratch) > 0 {
			if _, err := w.in.Write(w.scratch); err != nil {
				// It closed its calls pipe (or died): what it answered
				// is still read below, then the end of its pipe.
				w.kill()
			}
		}
		if cap(w.scratch) > 256<<10 {
			w.scratch = nil
		}
		if len(evs) > 0 {
			mg.mbox.Post(evs...)
			clear(evs)
			evs = evs[:0]
		}
		if len(sent) == 0 {
			p.put(w)
			return todo, next
		}
		// Read answers while they come without waiting.
		for {
			if sent[0].stop == nil && !frameBuffered(w.out) {
				// Only a call whose answer we wait for needs a cancel
				// watch (one per wait, not one per call): a cancel kills
				// the worker while this call is the one it runs.
				id := sent[0].id
				sent[0].stop = context.AfterFunc(sent[0].t.ctx, func() {
					if w.head.Load() == id {
						w.kill()
					}
				})
			}
			s := sent[0]
			kind, body, err := readFrame(w.out, callIDLen+p.maxResult+maxSummaryBytes+maxTextBytes+64)
			if err == nil && (kind == frameReturn || kind == frameException) {
				body, err = answerOf(body, s.id)
			}
			if s.stop != nil {
				s.stop()
			}
			now := time.Now().UnixNano()
			r := messages.Result{ID: s.t.task.ID, Attempt: s.t.task.Attempt, Started: max(s.at, lastAt), Finished: now}
			ok := p.settle(s.t.ctx, w, kind, body, err, 0, &r)
			s.t.cancel(nil)
			evs = append(evs, event{kind: evFinished, t: s.t, result: r})
			inPipe -= frameHeaderLen + callIDLen + len(s.payload)
			sent[0] = pySent{}
			sent = sent[1:]
			if !ok {
				// w is gone; the calls after s never started.
				for _, s := range sent {
					if s.stop != nil {
						s.stop()
					}
					todo = append(todo, s.pyJob)
				}
				mg.mbox.Post(evs...)
				return todo, next
			}
			w.took(time.Duration(now - r.Started))
			lastAt = now
			if len(sent) > 0 {
				w.head.Store(sent[0].id)
				if sent[0].t.ctx.Err() != nil {
					w.kill() // cancelled while it waited its turn
				}
			}
			if len(sent) == 0 || w.out.Buffered() == 0 {
				break
			}
		}
		mg.mbox.Post(evs...)
		clear(evs)
		evs = evs[:0]
	}
}

// frameBuffered reports whether a whole frame can be read from r
// without a system call.
func frameBuffered(r *bufio.Reader) bool {
	if r.Buffered() < frameHeaderLen {
		return false // Peek would read
	}
	h, _ := r.Peek(frameHeaderLen)
	return r.Buffered()-frameHeaderLen >= int(binary.BigEndian.Uint32(h))
}

// appendCall appends a call frame: its id, then the payload.
func appendCall(b []byte, id uint64, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(callIDLen+len(payload)))
	b = append(b, frameCall)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, payload...)
}

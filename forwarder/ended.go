package forwarder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The ended journal lets a client follow many tasks for the cost of the
// ones that end: GET /v1/tasks/ended?after=CURSOR answers which tasks ended
// since the cursor, instead of the client asking again about every task
// still running. It is a ring in memory; a cursor that fell off it, or
// that a previous run of the forwarder gave out, gets "reset": the client
// then reads its tasks once with POST /v1/tasks/status and goes on from
// the new cursor.

// Paging of GET /v1/tasks/ended.
const (
	DefaultEndedLimit = 10000
	MaxEndedLimit     = 100000
	// journalSize is how many ends the ring remembers: at 100,000 tasks/s
	// about 2.6 s of them, 24 bytes each.
	journalSize = 1 << 18
)

// endedEntry holds no pointers, so the GC never scans the ring.
type endedEntry struct {
	id    messages.TaskID
	owner uint32 // index into taskTable.owners
	state uint8  // index into taskstore.EndStates
}

// journal is guarded by the task table's lock.
type journal struct {
	epoch string // names this run, so an old run's cursor is refused
	ring  []endedEntry
	next  uint64 // ends ever recorded; entry n is at ring[n%len(ring)]
	// changed is closed and replaced when an end is recorded while
	// someone waits for one.
	changed chan struct{}
	waiting bool
}

func newJournal(size int) *journal {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &journal{epoch: hex.EncodeToString(b[:]), ring: make([]endedEntry, size), changed: make(chan struct{})}
}

func (j *journal) record(e *entry) {
	j.ring[j.next%uint64(len(j.ring))] = endedEntry{id: e.ID, owner: e.owner, state: taskstore.EndCode(e.State)}
	j.next++
	if j.waiting {
		close(j.changed)
		j.changed = make(chan struct{})
		j.waiting = false
	}
}

func (j *journal) cursor(n uint64) string { return j.epoch + "-" + strconv.FormatUint(n, 10) }

// parseCursor returns the position of an "EPOCH-N" cursor of this run, or
// ok=false for one from another run or from the future; the task table's
// lock is held.
func (j *journal) parseCursor(s string) (uint64, bool, error) {
	epoch, num, found := strings.Cut(s, "-")
	n, err := strconv.ParseUint(num, 10, 64)
	if !found || err != nil || epoch == "" {
		return 0, false, fmt.Errorf("invalid cursor %q: pass back the cursor of an earlier answer, or leave it out to start now", s)
	}
	return n, epoch == j.epoch && n <= j.next, nil
}

// EndedView is one task of GET /v1/tasks/ended.
type EndedView struct {
	TaskID messages.TaskID    `json:"task_id"`
	State  messages.TaskState `json:"state"`
}

// EndedPage is the answer of GET /v1/tasks/ended.
type EndedPage struct {
	Cursor string      `json:"cursor"`
	Tasks  []EndedView `json:"tasks"`
	// More: more ends follow; ask again at once.
	More bool `json:"more"`
	// Reset: the cursor was from another run or fell off the journal;
	// ends before Cursor must be read with POST /v1/tasks/status.
	Reset bool `json:"reset,omitempty"`
}

// ended reads up to limit ends after position from that owner sees
// (every owner's for an admin), waiting up to wait for the first.
func (tt *taskTable) ended(ctx context.Context, from uint64, valid bool, owner string, admin bool, limit int, wait time.Duration) EndedPage {
	j := tt.journal
	var timer <-chan time.Time
	for {
		tt.mu.Lock()
		// Owners are never forgotten, so an index once found stays valid.
		who, known := tt.owners.Lookup(owner)
		var page EndedPage
		size := uint64(len(j.ring))
		if !valid || from+size < j.next {
			page.Reset, from, valid = true, j.next, true
		}
		page.Tasks = make([]EndedView, 0, min(uint64(limit), j.next-from))
		n := from
		for ; n < j.next && len(page.Tasks) < limit; n++ {
			e := &j.ring[n%size]
			if admin || (known && e.owner == who) {
				page.Tasks = append(page.Tasks, EndedView{TaskID: e.id, State: taskstore.EndStates[e.state]})
			}
		}
		page.More = n < j.next
		page.Cursor = j.cursor(n)
		if len(page.Tasks) > 0 || page.Reset || page.More || wait <= 0 {
			tt.mu.Unlock()
			return page
		}
		from = n
		j.waiting = true
		ch := j.changed
		tt.mu.Unlock()
		if timer == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
			return page
		case <-ctx.Done():
			return page
		}
	}
}

// handleEnded answers GET /v1/tasks/ended: the caller's tasks (an admin's:
// everyone's) that ended after ?after=CURSOR, oldest first.
func (f *Forwarder) handleEnded(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "after", "limit", "wait":
		default:
			f.fail(w, http.StatusBadRequest, "unknown parameter %q; GET /v1/tasks/ended takes after, limit and wait", k)
			return
		}
	}
	limit := DefaultEndedLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxEndedLimit {
			f.fail(w, http.StatusBadRequest, "invalid limit %q: a number from 1 to %d", s, MaxEndedLimit)
			return
		}
		limit = n
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			f.fail(w, http.StatusBadRequest, "invalid wait %q: use a Go duration like 10s (at most %s)", s, MaxWait)
			return
		}
		wait = min(d, MaxWait)
	}
	if f.shared != nil {
		page, err := f.shared.ended(r.Context(), q.Get("after"), user(r), limit, wait)
		var bad *errStatus
		if errors.As(err, &bad) {
			f.fail(w, bad.status, "%s", bad.msg)
			return
		}
		if err != nil {
			f.fail(w, http.StatusServiceUnavailable, "cannot read the journal of ended tasks from the database: %v", err)
			return
		}
		writeRaw(w, http.StatusOK, page.appendJSON(nil))
		return
	}
	var from uint64
	valid := true
	if s := q.Get("after"); s != "" {
		var err error
		// The journal is guarded by the task table's lock.
		f.tasks.mu.RLock()
		from, valid, err = f.tasks.journal.parseCursor(s)
		f.tasks.mu.RUnlock()
		if err != nil {
			f.fail(w, http.StatusBadRequest, "%v", err)
			return
		}
	} else {
		// No cursor: start now, with nothing to report yet.
		f.tasks.mu.RLock()
		from = f.tasks.journal.next
		f.tasks.mu.RUnlock()
		wait = 0
	}
	who := user(r)
	page := f.tasks.ended(r.Context(), from, valid, who.User, who.Admin, limit, wait)
	writeRaw(w, http.StatusOK, page.appendJSON(nil))
}

// CensusView is the answer of POST /v1/tasks/census: of the ids asked
// about, those that ended (with their state), those unknown to the caller,
// and how many have not ended.
type CensusView struct {
	Ended   []EndedView `json:"ended"`
	Unknown []string    `json:"unknown"`
	Pending int         `json:"pending"`
}

// handleCensus answers POST /v1/tasks/census {"task_ids": [...]}: a
// status call whose answer is small while most tasks run, for clients that
// follow many tasks (with GET /v1/tasks/ended for the rest).
func (f *Forwarder) handleCensus(w http.ResponseWriter, r *http.Request) {
	ids, ok := f.readIDs(w, r)
	if !ok {
		return
	}
	v := CensusView{Ended: []EndedView{}, Unknown: []string{}}
	who := user(r)
	f.tasks.census(ids, func(id messages.TaskID, owner string, st messages.TaskState, known bool) {
		switch {
		case !known || !(who.Admin || (who.User != "" && who.User == owner)):
			v.Unknown = append(v.Unknown, id.String())
		case st.Terminal():
			v.Ended = append(v.Ended, EndedView{TaskID: id, State: st})
		default:
			v.Pending++
		}
	})
	writeRaw(w, http.StatusOK, v.appendJSON(nil))
}

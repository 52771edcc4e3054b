package forwarder

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// A client that lost the answer to a submit cannot know whether its tasks
// were accepted; sent again with the same Idempotency-Key (per user and
// endpoint), the request answers the ids of the first instead of creating
// the tasks twice. Keys are kept in memory for idemTTL: a forwarder that
// restarts between storing and answering forgets them.

const (
	idemTTL      = time.Hour
	idemMaxKeys  = 200_000
	idemMaxKeyLn = 200
)

var errIdemMismatch = errors.New("this Idempotency-Key was used for other tasks")

type idemEntry struct {
	key  string
	sum  [32]byte
	at   time.Time
	done chan struct{}
	ids  []messages.TaskID // once done; nil when the first attempt failed
}

type idempotency struct {
	mu    sync.Mutex
	m     map[string]*idemEntry
	order []*idemEntry // by at, for expiry
}

func newIdempotency() *idempotency { return &idempotency{m: map[string]*idemEntry{}} }

// validIdemKey checks a client's key.
func validIdemKey(k string) error {
	if len(k) > idemMaxKeyLn {
		return fmt.Errorf("Idempotency-Key of %d bytes; at most %d", len(k), idemMaxKeyLn)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return errors.New("Idempotency-Key must be printable ASCII without spaces (a UUID, say)")
		}
	}
	return nil
}

// hashTasks sums a request's tasks, so a key sent again with other tasks
// is refused instead of answered with the wrong ids.
func hashTasks(raw []json.RawMessage) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, t := range raw {
		l := len(t)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(t)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// begin claims key for a request of tasks summing to sum. replay is the
// ids of an earlier request with the same key and tasks; otherwise the
// caller owns the returned entry and must finish it.
func (d *idempotency) begin(ctx context.Context, key string, sum [32]byte) (e *idemEntry, replay []messages.TaskID, err error) {
	for {
		now := time.Now()
		d.mu.Lock()
		d.expire(now)
		e, ok := d.m[key]
		if !ok {
			e = &idemEntry{key: key, sum: sum, at: now, done: make(chan struct{})}
			d.m[key] = e
			d.order = append(d.order, e)
			d.mu.Unlock()
			return e, nil, nil
		}
		d.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if e.ids == nil {
			continue // that attempt failed and let go of the key
		}
		if e.sum != sum {
			return nil, nil, errIdemMismatch
		}
		return nil, e.ids, nil
	}
}

// finish records the outcome of e's request: ids when accepted, nil when
// not (the key is then free for a retry).
func (d *idempotency) finish(e *idemEntry, ids []messages.TaskID) {
	d.mu.Lock()
	if ids == nil && d.m[e.key] == e {
		delete(d.m, e.key)
	}
	e.ids = ids
	d.mu.Unlock()
	close(e.done)
}

// expire drops keys past their time or past the cap; d.mu is held.
func (d *idempotency) expire(now time.Time) {
	n := 0
	for n < len(d.order) && (now.Sub(d.order[n].at) > idemTTL || len(d.order)-n > idemMaxKeys) {
		if e := d.order[n]; d.m[e.key] == e {
			select {
			case <-e.done:
				delete(d.m, e.key)
			default:
				// Still under way: kept until it ends.
				d.order = append(d.order, e)
			}
		}
		n++
	}
	if n > 0 {
		d.order = append(d.order[:0], d.order[n:]...)
	}
}

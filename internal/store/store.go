// Package store is the embedded durable store (bbolt) with group commit:
// writers hand in batches of operations, one goroutine commits whatever
// has accumulated in one transaction, then calls each batch's callback.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Op is one put, or a delete when Value is nil.
type Op struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// ErrForeign means the file is not a store of this kind.
var ErrForeign = errors.New("not a switchyard state file of this kind")

// Store is one bbolt file with a group-commit writer.
type Store struct {
	// dbMu guards db against Compact swapping it under a reader.
	dbMu    sync.RWMutex
	db      *bolt.DB
	dur     Durability
	path    string
	buckets []string

	// commitMu is held by whoever commits: the writer goroutine or a
	// WriteSync caller that found no commit running.
	commitMu sync.Mutex
	mu       sync.Mutex
	pending  map[string]Op // bucket+key -> last op
	order    []string
	cbs      []func(error)
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	err      error // sticky while commits fail
	commits  uint64
	ops      uint64
	onCommit func(ops int, d time.Duration, err error)
}

const metaBucket = "meta"

// Durability says what a commit survives.
type Durability int

const (
	// SurviveProcessCrash writes each commit to the OS before callbacks
	// run: a killed process loses nothing; a host crash may lose the last
	// commits. No fsync, so commits take microseconds.
	SurviveProcessCrash Durability = iota
	// SurviveHostCrash also fsyncs each commit (milliseconds on most
	// disks; group commit shares one fsync among many writes).
	SurviveHostCrash
)

// Open opens or creates path for the given format name and buckets. A file
// written by something else is refused with ErrForeign.
func Open(path, format string, buckets []string, d Durability) (*Store, bool, error) {
	_, statErr := os.Stat(path)
	existed := statErr == nil
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, NoSync: d != SurviveHostCrash})
	if err != nil {
		if existed {
			return nil, false, fmt.Errorf("open %s: %w (the file may be corrupt or not a switchyard state file; move it aside to start empty)", path, err)
		}
		return nil, false, fmt.Errorf("open %s: %w", path, err)
	}
	// bbolt keeps the mode of a file that already existed.
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, false, fmt.Errorf("make %s private (mode 0600): %w", path, err)
	}
	fresh := false
	err = db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(metaBucket))
		if mb == nil {
			if existed && hasBuckets(tx) {
				return fmt.Errorf("%w: %s has no switchyard metadata", ErrForeign, path)
			}
			fresh = true
			var err error
			if mb, err = tx.CreateBucket([]byte(metaBucket)); err != nil {
				return err
			}
			if err := mb.Put([]byte("format"), []byte(format)); err != nil {
				return err
			}
		}
		if got := mb.Get([]byte("format")); !bytes.Equal(got, []byte(format)) {
			return fmt.Errorf("%w: %s holds %q, want %q", ErrForeign, path, got, format)
		}
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, false, err
	}
	s := &Store{db: db, dur: d, path: path, buckets: buckets, pending: make(map[string]Op),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go s.writer()
	return s, !fresh, nil
}

func hasBuckets(tx *bolt.Tx) bool {
	found := false
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		found = true
		return nil
	})
	return found
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// OnCommit sets a hook for metrics; set it before the first write.
func (s *Store) OnCommit(fn func(ops int, d time.Duration, err error)) { s.onCommit = fn }

// Err is the last commit failure, or nil once commits succeed again.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Write queues ops; cb (may be nil) runs on the writer goroutine once they
// are durable, or with the error if the commit failed. Failed ops stay
// queued and are retried.
func (s *Store) Write(ops []Op, cb func(error)) {
	s.mu.Lock()
	for _, op := range ops {
		k := op.Bucket + "\x00" + string(op.Key)
		if _, ok := s.pending[k]; !ok {
			s.order = append(s.order, k)
		}
		s.pending[k] = op
	}
	if cb != nil {
		s.cbs = append(s.cbs, cb)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// WriteSync queues ops and waits until they are durable. When no commit
// is running the caller commits itself, with whatever else is queued, and
// saves two goroutine hand-offs; otherwise the running commit's successor
// takes its ops along.
func (s *Store) WriteSync(ops []Op) error {
	ch := make(chan error, 1)
	s.Write(ops, func(err error) { ch <- err })
	if s.commitMu.TryLock() {
		_ = s.commit()
		s.commitMu.Unlock()
		s.kickIfPending()
	}
	return <-ch
}

// kickIfPending wakes the writer for ops queued during a commit.
func (s *Store) kickIfPending() {
	s.mu.Lock()
	pending := len(s.order) > 0 || len(s.cbs) > 0
	s.mu.Unlock()
	if pending {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *Store) writer() {
	defer close(s.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-s.quit:
			s.commitMu.Lock()
			s.commit()
			s.commitMu.Unlock()
			return
		case <-s.wake:
		case <-retry.C:
		}
		s.commitMu.Lock()
		err := s.commit()
		s.commitMu.Unlock()
		if err != nil {
			retry.Reset(time.Second)
		}
	}
}

func (s *Store) commit() error {
	s.mu.Lock()
	if len(s.order) == 0 && len(s.cbs) == 0 {
		s.mu.Unlock()
		return nil
	}
	pending, order, cbs := s.pending, s.order, s.cbs
	s.pending, s.order, s.cbs = make(map[string]Op, len(pending)), nil, nil
	s.mu.Unlock()

	start := time.Now()
	s.dbMu.RLock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range order {
			op := pending[k]
			b := tx.Bucket([]byte(op.Bucket))
			if b == nil {
				return fmt.Errorf("no bucket %q", op.Bucket)
			}
			var err error
			if op.Value == nil {
				err = b.Delete(op.Key)
			} else {
				err = b.Put(op.Key, op.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	s.dbMu.RUnlock()
	if s.onCommit != nil {
		s.onCommit(len(order), time.Since(start), err)
	}
	s.mu.Lock()
	if err != nil {
		err = fmt.Errorf("store %s: %w", s.path, err)
		s.err = err
		// Keep the ops, under anything written since.
		for _, k := range order {
			if _, newer := s.pending[k]; !newer {
				s.pending[k] = pending[k]
				s.order = append(s.order, k)
			}
		}
	} else {
		s.err = nil
		s.commits++
		s.ops += uint64(len(order))
	}
	s.mu.Unlock()
	for _, cb := range cbs {
		cb(err)
	}
	return err
}

// Stats returns commits and ops written so far.
func (s *Store) Stats() (commits, ops uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits, s.ops
}

// ForEach reads every key of a bucket in key order.
func (s *Store) ForEach(bucket string, fn func(k, v []byte) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return fmt.Errorf("no bucket %q", bucket)
		}
		return b.ForEach(fn)
	})
}

// Get calls fn with the value of each key of bucket, nil for a missing
// one, in one read transaction. fn must not keep v after it returns.
func (s *Store) Get(bucket string, keys [][]byte, fn func(i int, v []byte) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return fmt.Errorf("no bucket %q", bucket)
		}
		for i, k := range keys {
			if err := fn(i, b.Get(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// errStop ends a Scan early without an error.
var errStop = errors.New("stop")

// Scan reads the keys of bucket from the first one at or after from, in
// key order, while fn returns true.
func (s *Store) Scan(bucket string, from []byte, fn func(k, v []byte) (bool, error)) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return fmt.Errorf("no bucket %q", bucket)
		}
		c := b.Cursor()
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			more, err := fn(k, v)
			if err != nil {
				return err
			}
			if !more {
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// Compact rewrites the file with only its live records and replaces the
// old one, so deleted records (pruned tasks' arguments and results) no
// longer sit in free pages of the file. It commits what is queued first.
func (s *Store) Compact() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.commit(); err != nil {
		return err
	}
	tmp := s.path + ".compact"
	_ = os.Remove(tmp)
	opts := &bolt.Options{Timeout: time.Second, NoFreelistSync: true, NoSync: s.dur != SurviveHostCrash}
	dst, err := bolt.Open(tmp, 0o600, opts)
	if err != nil {
		return fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.dbMu.RLock()
	err = bolt.Compact(dst, s.db, 64<<20)
	s.dbMu.RUnlock()
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("compact %s: close: %w", s.path, err)
	}
	renameErr := os.Rename(tmp, s.path)
	db, err := bolt.Open(s.path, 0o600, opts)
	if err != nil {
		// Nothing can be written without a file; commits will fail loudly.
		return fmt.Errorf("compact %s: reopen: %w", s.path, err)
	}
	s.db = db
	if renameErr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", s.path, renameErr)
	}
	return nil
}

// Close commits what is queued and closes the file.
func (s *Store) Close() error {
	select {
	case <-s.quit:
		return nil
	default:
	}
	close(s.quit)
	<-s.done
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	return s.db.Close()
}

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sirupsen/logrus"
)

// DB is a daemon's state on Pebble: buckets are one-byte key prefixes
// (their order is part of the format), writes are queued and committed
// together as one Pebble batch (group commit), and Pebble compacts in
// the background.
//
// Every commit asks Pebble for a synced WAL write. Without --fsync the
// WAL's fsync is skipped (noSyncWAL): the record has reached the OS when
// the callback runs, as with the old log, so a killed process loses
// nothing. Pebble's NoSync would leave it in a buffer of the process.
//
// Pebble treats a failed WAL write as fatal (it panics), so a DB refuses
// writes before the disk is full: while the file system has less than
// DiskReserve free, commits fail with ErrDiskFull and nothing is kept for
// a retry but what Write queued (bounded by what the callers hold in
// memory anyway); reads go on, and writes succeed again once space
// returns.
type DB struct {
	dir     string
	dur     Durability
	bidx    map[string]byte
	db      *pebble.DB
	log     *logrus.Entry
	reserve int64

	// commitMu is held by whoever commits: the writer goroutine, or a
	// WriteSync caller that found no commit running.
	commitMu sync.Mutex
	mu       sync.Mutex
	// batch holds ops until they are committed, a Pebble batch per
	// bucket (indexed by its key byte): see commit.
	batch []*pebble.Batch
	// syncBatch holds WriteSync's ops, dropped if their commit fails.
	syncBatch []*pebble.Batch
	nops      int
	puts      int // of nops, how many are not deletes
	cbs       []func(error)
	err       error     // the last commit's failure
	kept      bool      // ops of a failed commit wait for a retry
	checked   time.Time // when Err last looked at the free space
	onCommit  func(ops int, d time.Duration, err error)
	wake      chan struct{}
	quit      chan struct{}
	done      chan struct{}
	closed    bool
}

// ErrDiskFull means the file system of a store is (nearly) full.
var ErrDiskFull = errors.New("disk full")

// ErrDamaged means a store's files fail their checksums or are cut short.
var ErrDamaged = errors.New("the store is damaged")

// DiskReserve is the free space below which a DB refuses writes: room
// for Pebble's flushes (two memtables), compactions and a new WAL. Tests
// lower it.
var DiskReserve int64 = 128 << 20

// MemTableSize is Pebble's memtable size: Pebble's 4 MiB default flushed
// and compacted so often that a task cost 60-90% more CPU; at 64 MiB a
// task's add and end (the interchange's put and delete) mostly meet in
// one memtable and the older one never reaches a table. 128 MiB only
// puts off a flush in a short run (the same CPU per task over two
// million, BenchmarkPebbleTaskLife) for 64 MiB more memory a memtable
// (two while one flushes). Tests on a small file system lower it.
var MemTableSize uint64 = 64 << 20

// l0Tables is how many overlapping tables L0 may hold before Pebble
// compacts them down (its default is 4). Task keys rise, so tables
// barely overlap and merging them early rewrites the same data again:
// over two million tasks the store costs 1.35 us of CPU a task at 20
// against 1.75 (BenchmarkPebbleTaskLife); reads (rare
// here: recovery and listings of pruned tasks) merge more tables.
const l0Tables = 20

// TableSize caps a table at every level (Pebble doubles it per level by
// default, to 128 MiB at the last): a damaged table costs a repair at most
// this much. Tests lower it.
var TableSize int64 = 8 << 20

// DBOptions say how a DB is opened.
type DBOptions struct {
	Durability Durability
	Log        *logrus.Entry
	// ReadOnly opens without writing anything (check, migration).
	ReadOnly bool
}

// OpenDB opens or creates the Pebble store in dir with buckets. existed
// says it held a store already. Damage is reported as ErrDamaged naming
// the file Pebble found it in; nothing is changed then.
func OpenDB(dir string, buckets []string, o DBOptions) (*DB, bool, error) {
	if len(buckets) > 255 {
		return nil, false, errors.New("store: at most 255 buckets")
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	d := &DB{dir: dir, dur: o.Durability, bidx: map[string]byte{}, log: o.Log, reserve: DiskReserve,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	for i, b := range buckets {
		d.bidx[b] = byte(i + 1) // 0 is never a bucket
	}
	d.batch = make([]*pebble.Batch, len(buckets)+1)
	d.syncBatch = make([]*pebble.Batch, len(buckets)+1)
	ms, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	existed := len(ms) > 0
	var err error
	if o.ReadOnly && !existed {
		return nil, false, fmt.Errorf("open %s: no store there", dir)
	}
	if !o.ReadOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, false, err
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, false, fmt.Errorf("make %s private (mode 0700): %w", dir, err)
		}
	}
	if d.db, err = pebble.Open(dir, d.options(o.ReadOnly)); err != nil {
		return nil, false, Damage(dir, err)
	}
	if !o.ReadOnly {
		go d.writer()
	} else {
		close(d.done)
	}
	return d, existed, nil
}

func (d *DB) options(readOnly bool) *pebble.Options {
	o := &pebble.Options{
		FS:                 noSyncWAL{FS: vfs.Default, sync: d.dur == SurviveHostCrash},
		ReadOnly:           readOnly,
		MemTableSize:       MemTableSize,
		Logger:             pebbleLogger{d.log},
		FormatMajorVersion: pebble.FormatNewest,
		MaxOpenFiles:       256,
		BytesPerSync:       512 << 10,
		Cleaner:            deleteCleaner{},
		// Pebble's default stops the process; the caller reports the
		// error (which names the file) instead.
		EventListener: &pebble.EventListener{DataCorruption: func(info pebble.DataCorruptionInfo) {
			d.log.WithField("file", info.Path).Errorf("store damaged: %v", info.Details)
		}},
	}
	for i := range o.TargetFileSizes {
		o.TargetFileSizes[i] = TableSize
	}
	o.L0CompactionThreshold = l0Tables
	o.L0StopWritesThreshold = 3 * l0Tables
	return o
}

// Damage turns a Pebble error that says the files are damaged into
// ErrDamaged naming dir (Pebble's message names the file and offset).
func Damage(dir string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pebble.ErrCorruption) || strings.Contains(err.Error(), "corrupt") || strings.Contains(err.Error(), "checksum") || strings.Contains(err.Error(), "size mismatch") {
		// Pebble's message may carry a line of its own plumbing.
		msg := strings.ReplaceAll(err.Error(), "\n<corruption detail carrier>", "")
		return fmt.Errorf("%w: %s: %s (nothing was changed; run `switchyard store check --state-dir %s`)", ErrDamaged, dir, msg, filepath.Dir(dir))
	}
	return fmt.Errorf("store %s: %w", dir, err)
}

// Path is the store's directory.
func (d *DB) Path() string { return d.dir }

// OnCommit sets a hook for metrics; set it before the first write.
func (d *DB) OnCommit(fn func(ops int, d time.Duration, err error)) { d.onCommit = fn }

func (d *DB) key(bucket string, k []byte) []byte {
	b, ok := d.bidx[bucket]
	if !ok {
		panic(fmt.Sprintf("store: no bucket %q", bucket))
	}
	return append([]byte{b}, k...)
}

// Write queues ops; cb (may be nil) runs once they are committed, or with
// the error if the commit failed. Failed ops stay queued and go with the
// next commits until one succeeds (a commit also waits for them), so a
// later callback never confirms a write that was lost.
func (d *DB) Write(ops []Op, cb func(error)) { d.queue(ops, cb, false) }

func (d *DB) queue(ops []Op, cb func(error), once bool) {
	d.mu.Lock()
	bs := d.batch
	if once {
		bs = d.syncBatch
	}
	for _, op := range ops {
		k, ok := d.bidx[op.Bucket]
		if !ok {
			d.mu.Unlock()
			panic(fmt.Sprintf("store: no bucket %q", op.Bucket))
		}
		b := bs[k]
		if b == nil {
			b = d.db.NewBatch()
			bs[k] = b
		}
		var w *pebble.DeferredBatchOp
		switch {
		case op.Value != nil:
			d.puts++
			w = b.SetDeferred(1+len(op.Key), len(op.Value))
			copy(w.Value, op.Value)
		case op.SetOnce:
			w = b.SingleDeleteDeferred(1 + len(op.Key))
		default:
			w = b.DeleteDeferred(1 + len(op.Key))
		}
		w.Key[0] = k
		copy(w.Key[1:], op.Key)
		w.Finish()
	}
	d.nops += len(ops)
	if cb != nil {
		d.cbs = append(d.cbs, cb)
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// WriteSync queues ops and waits until they are committed; if that
// fails they are dropped (the caller is told). When no commit is running
// the caller commits itself, with whatever else is queued, and saves two
// goroutine hand-offs.
func (d *DB) WriteSync(ops []Op) error {
	ch := make(chan error, 1)
	d.queue(ops, func(err error) { ch <- err }, true)
	if d.commitMu.TryLock() {
		d.commit()
		d.commitMu.Unlock()
	}
	return <-ch
}

func (d *DB) writer() {
	defer close(d.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-d.quit:
			d.commitMu.Lock()
			d.commit()
			d.commitMu.Unlock()
			return
		case <-d.wake:
		case <-retry.C:
		}
		d.commitMu.Lock()
		err := d.commit()
		d.commitMu.Unlock()
		if err != nil {
			retry.Reset(time.Second)
		}
	}
}

// commit writes what is queued as one Pebble batch, bucket by bucket.
// Pebble inserts a batch's keys into its memtable one by one, and an
// insert just after the one before skips the search from the top: a
// bucket's puts (new tasks and results, at rising keys) then cost far
// less than when they alternate with other buckets' keys. The order of
// ops on one key (always in one bucket) is kept, WriteSync's after the
// others as before.
func (d *DB) commit() error {
	type kept struct {
		k byte
		b *pebble.Batch
	}
	d.mu.Lock()
	nops, puts, cbs := d.nops, d.puts, d.cbs
	var all *pebble.Batch
	var keep []kept // a failed commit's ops, not WriteSync's
	for k, b := range d.batch {
		once := d.syncBatch[k]
		d.batch[k], d.syncBatch[k] = nil, nil
		if b == nil && once == nil {
			continue
		}
		if all == nil {
			all = d.db.NewBatch()
		}
		if b != nil {
			_ = all.Apply(b, nil)
			keep = append(keep, kept{byte(k), b})
		}
		if once != nil {
			_ = all.Apply(once, nil)
			_ = once.Close()
		}
	}
	d.nops, d.puts, d.cbs = 0, 0, nil
	d.mu.Unlock()
	if all == nil && len(cbs) == 0 {
		return nil
	}
	start := time.Now()
	var err error
	if all != nil {
		// Deletes only free space: they pass while the disk is full.
		if puts > 0 || !hasRoom(d.dir, 1<<20) {
			err = d.room(int64(all.Len()))
		}
		if err == nil {
			err = d.db.Apply(all, pebble.Sync)
		}
		_ = all.Close()
	}
	if err != nil && !errors.Is(err, ErrDiskFull) {
		err = Damage(d.dir, err)
	}
	if d.onCommit != nil {
		d.onCommit(nops, time.Since(start), err)
	}
	d.mu.Lock()
	d.err = err
	d.kept = err != nil && len(keep) > 0
	if d.kept {
		// Kept for the next commit, before anything queued meanwhile.
		for _, x := range keep {
			if later := d.batch[x.k]; later != nil {
				_ = x.b.Apply(later, nil)
				_ = later.Close()
			}
			d.batch[x.k] = x.b
		}
		d.puts += puts // an upper bound is enough
	}
	d.mu.Unlock()
	if err == nil {
		for _, x := range keep {
			_ = x.b.Close()
		}
	}
	for _, cb := range cbs {
		cb(err)
	}
	return err
}

// room fails with ErrDiskFull when writing n bytes would leave less than
// the reserve free.
func (d *DB) room(n int64) error {
	free, err := freeSpace(d.dir)
	if err != nil || free-n >= d.reserve {
		return nil
	}
	return fmt.Errorf("store %s: %w: %d MiB free, below the %d MiB kept for the store's own work; new writes are refused until space returns",
		d.dir, ErrDiskFull, free>>20, d.reserve>>20)
}

func hasRoom(dir string, n int64) bool {
	free, err := freeSpace(dir)
	return err != nil || free >= n
}

func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Err is why writes fail now, or nil. After a disk-full failure it looks
// at the free space again (at most every 100ms), so new work is accepted
// as soon as space returns.
func (d *DB) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("store " + d.dir + " is closed")
	}
	if d.err == nil || !errors.Is(d.err, ErrDiskFull) {
		return d.err
	}
	if now := time.Now(); now.Sub(d.checked) >= 100*time.Millisecond {
		d.checked = now
		if err := d.room(0); err == nil {
			d.err = nil
		} else {
			d.err = err
		}
	}
	return d.err
}

// Retrying says ops of a failed commit wait to be written again: an
// acknowledgement resting on them must wait for a commit too.
func (d *DB) Retrying() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kept
}

// Get calls fn with the value of each key of bucket, nil for a missing
// one; fn may keep v.
func (d *DB) Get(bucket string, keys [][]byte, fn func(i int, v []byte) error) error {
	for i, k := range keys {
		v, c, err := d.db.Get(d.key(bucket, k))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			v = nil
		case err != nil:
			return Damage(d.dir, err)
		default:
			v = bytes.Clone(v)
			c.Close()
		}
		if err := fn(i, v); err != nil {
			return err
		}
	}
	return nil
}

// Scan reads the keys of bucket from the first one at or after from, in
// key order, while fn returns true. fn must not keep k or v.
func (d *DB) Scan(bucket string, from []byte, fn func(k, v []byte) (bool, error)) error {
	lo := d.key(bucket, from)
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{lo[0] + 1}})
	if err != nil {
		return Damage(d.dir, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return Damage(d.dir, err)
		}
		more, err := fn(it.Key()[1:], v)
		if err != nil || !more {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return Damage(d.dir, err)
	}
	return nil
}

// ForEach reads every key of a bucket in key order.
func (d *DB) ForEach(bucket string, fn func(k, v []byte) error) error {
	return d.Scan(bucket, nil, func(k, v []byte) (bool, error) { return true, fn(k, v) })
}

// Forget makes the keys of bucket in [from, to) leave the disk: the WAL
// that may hold them is flushed and the span compacted, so the values
// are gone from every file once Pebble deletes the old ones. The deletes
// themselves must be written before. It runs beside writers.
func (d *DB) Forget(bucket string, from, to []byte) error {
	// Each flush starts a new WAL, taking an old one Pebble kept for
	// reuse (ReuseForWrite deletes it); one more than Pebble keeps.
	// A flush that fails for want of space is retried until it succeeds.
	if err := d.room(0); err != nil {
		return err
	}
	for range 4 {
		if err := d.db.Flush(); err != nil {
			return Damage(d.dir, err)
		}
	}
	lo, hi := d.key(bucket, from), d.key(bucket, to)
	if to == nil {
		hi = []byte{hi[0] + 1}
	}
	if err := d.db.Compact(context.Background(), lo, hi, true); err != nil {
		return Damage(d.dir, err)
	}
	return nil
}

// Close commits what is queued and closes the store.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	select {
	case <-d.done:
		return d.db.Close() // read-only
	default:
		close(d.quit)
		<-d.done
	}
	// Everything into checksummed tables of known length: a WAL cut
	// short reads as a torn write, indistinguishable from a crash. Not on
	// a full disk: Pebble retries a failed flush until it succeeds, and
	// the WAL holds it all anyway.
	var err error
	if d.room(0) == nil {
		err = d.db.Flush()
	}
	if cerr := d.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// noSyncWAL skips the fsync of WAL files unless sync: their writes still
// reach the OS before a commit returns, which a process crash survives.
type noSyncWAL struct {
	vfs.FS
	sync bool
}

// wrap makes new files private (the store holds task arguments) and
// wraps WAL files.
func (fs noSyncWAL) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err == nil {
		if err = os.Chmod(name, 0o600); err != nil {
			f.Close()
		}
	}
	if err != nil || fs.sync || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return noSyncFile{f}, nil
}

func (fs noSyncWAL) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	return fs.wrap(name, f, err)
}

// ReuseForWrite starts a new file: a reused WAL would keep what it held
// (pruned tasks, say) readable past its new end.
func (fs noSyncWAL) ReuseForWrite(old, name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if err := fs.FS.Remove(old); err != nil {
		return nil, err
	}
	return fs.Create(name, cat)
}

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error                { return nil }
func (noSyncFile) SyncData() error            { return nil }
func (noSyncFile) SyncTo(int64) (bool, error) { return true, nil }

// deleteCleaner deletes obsolete files, WALs too: by default Pebble
// keeps a few for reuse, with what they held readable until overwritten,
// which would keep pruned tasks on disk. The ArchiveCleaner inside only
// tells Pebble not to recycle (the shallower DeleteCleaner does the work).
type deleteCleaner struct {
	pebble.DeleteCleaner
	noRecycle
}

type noRecycle struct{ pebble.ArchiveCleaner }

// pebbleLogger sends Pebble's messages to the daemon's log. Pebble calls
// Fatalf for what it cannot go on from; that stops the daemon, loudly.
type pebbleLogger struct{ log *logrus.Entry }

func (l pebbleLogger) Infof(format string, args ...any)  { l.log.Debugf("pebble: "+format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Warnf("pebble: "+format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Errorf("pebble: "+format, args...)
	panic(fmt.Sprintf("pebble: "+format, args...))
}

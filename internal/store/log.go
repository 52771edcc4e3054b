package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Log is an append-only store for a daemon that holds its live state in
// memory anyway and reads the store only when it starts (the
// interchange). A commit is one write(2) of the records queued since the
// last one, with no B-tree to update; a restart replays the file. When
// the file has grown by more than it held after the last compaction (and
// by at least CompactAfter), the writer rewrites it with only the live
// records.
//
// The file: a header line "switchyard-log 1 FORMAT\n", then records of
// uvarint(len(body)) body crc32c(body); a body is op (1 put, 2 delete),
// bucket index, uvarint(len(key)), key, value. A record cut short or with
// a bad checksum ends the log: it was being written when the process or
// host stopped, so nobody was told it was stored.
type Log struct {
	path    string
	format  string
	dur     Durability
	buckets []string
	bidx    map[string]byte

	mu       sync.Mutex
	buf      []byte
	nops     int
	cbs      []func(error)
	err      error
	commits  uint64
	ops      uint64
	onCommit func(ops int, d time.Duration, err error)
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}

	// Owned by the writer (and Open before it starts).
	f    *os.File
	size int64 // bytes of whole records in f
	base int64 // size after the last compaction
	// live is what Open found, for ForEach; dropped at the first commit.
	live map[string][]byte
	// Dropped is how many bytes of a torn last record Open cut off.
	Dropped int64
}

// CompactAfter is the least growth, in bytes, that makes a Log compact.
var CompactAfter int64 = 64 << 20

const (
	logMagic   = "switchyard-log 1 "
	opPut      = 1
	opDelete   = 2
	maxLogBody = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenLog opens or creates the log at path for format and buckets (their
// order is part of the format). A file of another format is refused with
// ErrForeign.
func OpenLog(path, format string, buckets []string, d Durability) (*Log, bool, error) {
	if len(buckets) > 255 {
		return nil, false, errors.New("store: at most 255 buckets")
	}
	l := &Log{path: path, format: format, dur: d, buckets: buckets, bidx: map[string]byte{},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), live: map[string][]byte{}}
	for i, b := range buckets {
		l.bidx[b] = byte(i)
	}
	data, err := os.ReadFile(path)
	existed := err == nil
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := l.create(); err != nil {
			return nil, false, err
		}
	case err != nil:
		return nil, false, fmt.Errorf("open %s: %w", path, err)
	default:
		if err := l.load(data); err != nil {
			return nil, false, err
		}
	}
	go l.writer()
	return l, existed, nil
}

func (l *Log) header() []byte { return []byte(logMagic + l.format + "\n") }

func (l *Log) create() error {
	f, err := writeFileSync(l.path, l.header())
	if err != nil {
		return err
	}
	l.f, l.size, l.base = f, int64(len(l.header())), int64(len(l.header()))
	return nil
}

// writeFileSync writes a new file at path (through a temporary name, so a
// crash leaves the old one or the new one) and returns it open.
func writeFileSync(path string, data []byte) (*os.File, error) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp, err)
	}
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (l *Log) load(data []byte) error {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || !bytes.HasPrefix(data, []byte(logMagic)) {
		return fmt.Errorf("%w: %s is not a switchyard log", ErrForeign, l.path)
	}
	if got := string(data[len(logMagic):nl]); got != l.format {
		return fmt.Errorf("%w: %s holds %q, want %q", ErrForeign, l.path, got, l.format)
	}
	off := nl + 1
	good, err := replay(data[off:], len(l.buckets), func(op byte, b byte, k, v []byte) {
		key := string(append([]byte{b}, k...))
		if op == opPut {
			l.live[key] = v
		} else {
			delete(l.live, key)
		}
	})
	if err != nil {
		return fmt.Errorf("read %s: %w (the file may be corrupt; move it aside to start empty)", l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path, err)
	}
	if err := os.Chmod(l.path, 0o600); err != nil {
		f.Close()
		return fmt.Errorf("make %s private (mode 0600): %w", l.path, err)
	}
	end := int64(off + good)
	if end < int64(len(data)) {
		if err := f.Truncate(end); err != nil {
			f.Close()
			return fmt.Errorf("cut the torn end of %s: %w", l.path, err)
		}
		l.Dropped = int64(len(data)) - end
	}
	l.f, l.size, l.base = f, end, end
	return nil
}

// replay calls fn for each whole record of data and returns how many bytes
// they take; it stops at the first torn or damaged record. Only a record
// that is whole but names a bucket that does not exist is an error.
func replay(data []byte, buckets int, fn func(op, bucket byte, k, v []byte)) (int, error) {
	off := 0
	for off < len(data) {
		n, w := binary.Uvarint(data[off:])
		if w <= 0 || n < 3 || n > maxLogBody || uint64(len(data)-off-w) < n+4 {
			break
		}
		body := data[off+w : off+w+int(n)]
		sum := binary.LittleEndian.Uint32(data[off+w+int(n):])
		if crc32.Checksum(body, castagnoli) != sum {
			break
		}
		op, b := body[0], body[1]
		klen, kw := binary.Uvarint(body[2:])
		if kw <= 0 || klen > uint64(len(body)-2-kw) || (op != opPut && op != opDelete) {
			break
		}
		if int(b) >= buckets {
			return off, fmt.Errorf("record at %d names bucket %d of %d", off, b, buckets)
		}
		k := body[2+kw : 2+kw+int(klen)]
		fn(op, b, k, body[2+kw+int(klen):])
		off += w + int(n) + 4
	}
	return off, nil
}

func appendRecord(buf []byte, op, bucket byte, k, v []byte) []byte {
	n := 2 + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(k))) + len(k) + len(v)
	buf = binary.AppendUvarint(buf, uint64(n))
	start := len(buf)
	buf = append(buf, op, bucket)
	buf = binary.AppendUvarint(buf, uint64(len(k)))
	buf = append(buf, k...)
	buf = append(buf, v...)
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf[start:], castagnoli))
}

// Path is the file's path.
func (l *Log) Path() string { return l.path }

// OnCommit sets a hook for metrics; set it before the first write.
func (l *Log) OnCommit(fn func(ops int, d time.Duration, err error)) { l.onCommit = fn }

// Err is the last commit failure, or nil once commits succeed again.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Stats returns commits and ops written so far.
func (l *Log) Stats() (commits, ops uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.commits, l.ops
}

// Write queues ops; cb (may be nil) runs on the writer goroutine once they
// are written, or with the error if the write failed. Failed writes stay
// queued and are retried.
func (l *Log) Write(ops []Op, cb func(error)) {
	l.mu.Lock()
	for _, op := range ops {
		b, ok := l.bidx[op.Bucket]
		if !ok {
			panic(fmt.Sprintf("store: no bucket %q", op.Bucket))
		}
		if op.Value == nil {
			l.buf = appendRecord(l.buf, opDelete, b, op.Key, nil)
		} else {
			l.buf = appendRecord(l.buf, opPut, b, op.Key, op.Value)
		}
	}
	l.nops += len(ops)
	if cb != nil {
		l.cbs = append(l.cbs, cb)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// WriteSync queues ops and waits until they are written.
func (l *Log) WriteSync(ops []Op) error {
	ch := make(chan error, 1)
	l.Write(ops, func(err error) { ch <- err })
	return <-ch
}

// ForEach reads every key of a bucket as Open found it, in key order.
// It is for loading at start: it does not see writes made since.
func (l *Log) ForEach(bucket string, fn func(k, v []byte) error) error {
	b, ok := l.bidx[bucket]
	if !ok {
		return fmt.Errorf("no bucket %q", bucket)
	}
	l.mu.Lock()
	live := l.live
	l.mu.Unlock()
	var keys []string
	for k := range live {
		if k[0] == b {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn([]byte(k[1:]), live[k]); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) writer() {
	defer close(l.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-l.quit:
			l.commit()
			return
		case <-l.wake:
		case <-retry.C:
		}
		if l.commit() != nil {
			retry.Reset(time.Second)
		}
	}
}

func (l *Log) commit() error {
	l.mu.Lock()
	buf, nops, cbs := l.buf, l.nops, l.cbs
	if len(buf) == 0 && len(cbs) == 0 {
		l.mu.Unlock()
		return nil
	}
	l.buf, l.nops, l.cbs = nil, 0, nil
	l.live = nil
	l.mu.Unlock()

	start := time.Now()
	_, err := l.f.WriteAt(buf, l.size)
	if err == nil && l.dur == SurviveHostCrash {
		err = l.f.Sync()
	}
	if err != nil {
		// A partial record would end the log at the next replay and
		// hide what follows it: cut it off before trying again.
		_ = l.f.Truncate(l.size)
	}
	if l.onCommit != nil {
		l.onCommit(nops, time.Since(start), err)
	}
	l.mu.Lock()
	if err != nil {
		err = fmt.Errorf("store %s: %w", l.path, err)
		l.err = err
		l.buf = append(buf, l.buf...)
		l.nops += nops
	} else {
		l.err = nil
		l.size += int64(len(buf))
		l.commits++
		l.ops += uint64(nops)
	}
	l.mu.Unlock()
	for _, cb := range cbs {
		cb(err)
	}
	if err == nil && l.size-l.base > max(CompactAfter, l.base) {
		l.compact()
	}
	return err
}

// compact rewrites the file with only its live records. On failure the
// old file stays in use and the next attempt waits for as much growth
// again.
func (l *Log) compact() {
	data := make([]byte, l.size)
	if _, err := l.f.ReadAt(data, 0); err != nil {
		l.base = l.size
		return
	}
	live := map[string][]byte{}
	off := len(l.header())
	_, _ = replay(data[off:], len(l.buckets), func(op, b byte, k, v []byte) {
		key := string(append([]byte{b}, k...))
		if op == opPut {
			live[key] = v
		} else {
			delete(live, key)
		}
	})
	keys := make([]string, 0, len(live))
	for k := range live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := l.header()
	for _, k := range keys {
		out = appendRecord(out, opPut, k[0], []byte(k[1:]), live[k])
	}
	f, err := writeFileSync(l.path, out)
	if err != nil {
		l.base = l.size
		return
	}
	l.f.Close()
	l.f, l.size, l.base = f, int64(len(out)), int64(len(out))
}

// Close writes what is queued and closes the file.
func (l *Log) Close() error {
	close(l.quit)
	<-l.done
	if err := l.Err(); err != nil {
		l.f.Close()
		return err
	}
	return l.f.Close()
}

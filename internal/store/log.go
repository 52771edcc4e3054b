package store

import (
	"bufio"
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

	"github.com/switchyard-hpc/switchyard/internal/seqarr"
)

// Log is an append-only store: a commit is one write(2) of the records
// queued since the last one, with no B-tree to update, and a restart
// replays the file. An index in memory says where each key's latest
// record is, so Get, Scan and ForEach read records back with pread at any
// time (the forwarder keeps finished tasks on disk that way); keys of
// sequenced buckets index into arrays, so such a record costs about 8
// bytes of memory. When the dead records outweigh twice
// the live ones (and CompactAfter), the writer rewrites the file with
// only the live records, streaming them.
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
	// sequenced: which buckets have sequence-number keys.
	sequenced []bool

	// commitMu is held by whoever commits: the writer goroutine, or a
	// WriteSync caller that found no commit running.
	commitMu sync.Mutex
	mu       sync.Mutex
	buf      []byte
	pend     []idxOp // index changes of buf's records
	// spare are the buffers of the last commit, for the next batch: a
	// busy log does not grow new ones from nothing every time.
	spareBuf  []byte
	sparePend []idxOp
	nops      int
	cbs       []func(error)
	err       error
	commits   uint64
	ops       uint64
	onCommit  func(ops int, d time.Duration, err error)
	wake      chan struct{}
	quit      chan struct{}
	done      chan struct{}
	// compactReq asks the writer to compact now.
	compactReq chan chan error

	// Written under commitMu; rmu also guards f and idx against a
	// compaction swapping them under a reader.
	rmu  sync.RWMutex
	f    *os.File
	size int64 // bytes of whole records in f
	idx  *index
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
	// maxSpare: a bigger commit buffer is not kept for reuse.
	maxSpare = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LogOptions say what a Log keeps.
type LogOptions struct {
	Durability Durability
	// Sequenced names the buckets whose keys are 8-byte big-endian
	// sequence numbers handed out in rising order: they are indexed in
	// arrays (8 bytes a key, no hashing) instead of a map.
	Sequenced []string
}

// OpenLog opens or creates the log at path for format and buckets (their
// order is part of the format). A file of another format is refused with
// ErrForeign.
func OpenLog(path, format string, buckets []string, o LogOptions) (*Log, bool, error) {
	if len(buckets) > 255 {
		return nil, false, errors.New("store: at most 255 buckets")
	}
	l := &Log{path: path, format: format, dur: o.Durability, buckets: buckets, bidx: map[string]byte{},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), compactReq: make(chan chan error)}
	for i, b := range buckets {
		l.bidx[b] = byte(i)
	}
	l.sequenced = make([]bool, len(buckets))
	for _, b := range o.Sequenced {
		i, ok := l.bidx[b]
		if !ok {
			return nil, false, fmt.Errorf("store: sequenced bucket %q is not a bucket", b)
		}
		l.sequenced[i] = true
	}
	l.idx = newIndex(l.sequenced)
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
	l.f, l.size = f, int64(len(l.header()))
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
	good, err := replay(data[off:], len(l.buckets), func(op byte, b byte, k, v []byte, at, n int) {
		l.idx.apply(op, b, k, int64(off+at), n)
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
	l.f, l.size = f, end
	return nil
}

// replay calls fn for each whole record of data (with its offset and
// length in data) and returns how many bytes they take; it stops at the
// first torn or damaged record. Only a record that is whole but names a
// bucket that does not exist is an error.
func replay(data []byte, buckets int, fn func(op, bucket byte, k, v []byte, at, n int)) (int, error) {
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
		fn(op, b, k, body[2+kw+int(klen):], off, w+int(n)+4)
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
	if l.buf == nil && l.spareBuf != nil {
		l.buf, l.pend, l.spareBuf, l.sparePend = l.spareBuf, l.sparePend, nil, nil
	}
	for _, op := range ops {
		b, ok := l.bidx[op.Bucket]
		if !ok {
			panic(fmt.Sprintf("store: no bucket %q", op.Bucket))
		}
		o := idxOp{op: opPut, b: b, off: int64(len(l.buf))}
		if op.Value == nil {
			o.op = opDelete
		}
		l.buf = appendRecord(l.buf, o.op, b, op.Key, op.Value)
		o.n = int(int64(len(l.buf)) - o.off)
		if len(op.Key) == 8 && l.sequenced[b] {
			o.seq, o.isSeq = binary.BigEndian.Uint64(op.Key), true
		} else {
			o.str = string(op.Key)
		}
		l.pend = append(l.pend, o)
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

// WriteSync queues ops and waits until they are written. When no commit
// is running the caller commits itself, with whatever else is queued, and
// saves two goroutine hand-offs.
func (l *Log) WriteSync(ops []Op) error {
	ch := make(chan error, 1)
	l.Write(ops, func(err error) { ch <- err })
	if l.commitMu.TryLock() {
		_ = l.commit()
		l.commitMu.Unlock()
	}
	return <-ch
}

// ForEach reads every key of a bucket in key order.
func (l *Log) ForEach(bucket string, fn func(k, v []byte) error) error {
	return l.Scan(bucket, nil, func(k, v []byte) (bool, error) { return true, fn(k, v) })
}

func (l *Log) writer() {
	defer close(l.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-l.quit:
			l.commitMu.Lock()
			l.commit()
			l.commitMu.Unlock()
			return
		case <-l.wake:
		case <-retry.C:
		case ch := <-l.compactReq:
			l.commitMu.Lock()
			err := l.commit()
			if err == nil {
				err = l.compact()
			}
			l.commitMu.Unlock()
			ch <- err
			continue
		}
		l.commitMu.Lock()
		err := l.commit()
		l.commitMu.Unlock()
		if err != nil {
			retry.Reset(time.Second)
		}
	}
}

func (l *Log) commit() error {
	l.mu.Lock()
	buf, pend, nops, cbs := l.buf, l.pend, l.nops, l.cbs
	if len(buf) == 0 && len(cbs) == 0 {
		l.mu.Unlock()
		return nil
	}
	l.buf, l.pend, l.nops, l.cbs = nil, nil, 0, nil
	l.mu.Unlock()

	start := time.Now()
	_, err := l.f.WriteAt(buf, l.size)
	if err == nil && l.dur == SurviveHostCrash {
		err = l.f.Sync()
	}
	if err == nil {
		l.rmu.Lock()
		for i := range pend {
			l.idx.applyOp(&pend[i], l.size)
		}
		l.rmu.Unlock()
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
		for i := range l.pend {
			l.pend[i].off += int64(len(buf))
		}
		l.buf = append(buf, l.buf...)
		l.pend = append(pend, l.pend...)
		l.nops += nops
	} else {
		l.err = nil
		l.size += int64(len(buf))
		l.commits++
		l.ops += uint64(nops)
		if cap(buf) <= maxSpare {
			clear(pend)
			l.spareBuf, l.sparePend = buf[:0], pend[:0]
		}
	}
	l.mu.Unlock()
	for _, cb := range cbs {
		cb(err)
	}
	// Twice the live bytes: a record rewritten once (a task accepted,
	// then ended) leaves about its own size dead, which is no reason to
	// rewrite everything.
	if dead := l.size - l.idx.bytes; err == nil && dead > max(CompactAfter, 2*l.idx.bytes) {
		_ = l.compact()
	}
	return err
}

// Compact rewrites the file now with only its live records (the writer
// also does so by itself as the file grows), after what is queued.
func (l *Log) Compact() error {
	ch := make(chan error, 1)
	l.compactReq <- ch
	return <-ch
}

// compact rewrites the file with only its live records, read one by one
// and streamed to a new file that replaces the old one once synced. On
// failure the old file stays in use.
func (l *Log) compact() error {
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compact %s: %w", l.path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	next := newIndex(l.sequenced)
	pos := int64(len(l.header()))
	_, err = w.Write(l.header())
	var rec []byte
	if err == nil {
		err = l.idx.each(func(b byte, k []byte, at loc) error {
			n, err := l.length(at)
			if err != nil {
				return err
			}
			if cap(rec) < n {
				rec = make([]byte, n)
			}
			if _, err := l.f.ReadAt(rec[:n], at.off()); err != nil {
				return err
			}
			next.apply(opPut, b, k, pos, n)
			pos += int64(n)
			_, err = w.Write(rec[:n])
			return err
		})
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, l.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(l.path))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", l.path, err)
	}
	l.rmu.Lock()
	l.f.Close()
	l.f, l.size, l.idx = f, pos, next
	l.rmu.Unlock()
	return nil
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

// loc is where a record is in the file, in 8 bytes: the offset (40
// bits) and the length (24 bits; 0 for a record of 16 MiB or more, whose
// length is read from its header).
type loc uint64

const locMaxLen = 1<<24 - 1

func mkloc(off int64, n int) loc {
	if n > locMaxLen {
		n = 0
	}
	return loc(uint64(off)<<24 | uint64(n))
}

func (at loc) off() int64 { return int64(at >> 24) }

// size is the length the live-bytes count uses: exact up to 16 MiB.
func (at loc) size() int64 {
	if n := int64(at & locMaxLen); n > 0 {
		return n
	}
	return locMaxLen
}

// length reads a record's length, from its header when loc lacks it.
func (l *Log) length(at loc) (int, error) {
	if n := int(at & locMaxLen); n > 0 {
		return n, nil
	}
	var h [binary.MaxVarintLen64]byte
	k, err := l.f.ReadAt(h[:], at.off())
	n, w := binary.Uvarint(h[:k])
	if w <= 0 {
		if err == nil {
			err = errors.New("bad record header")
		}
		return 0, fmt.Errorf("read %s at %d: %w", l.path, at.off(), err)
	}
	return w + int(n) + 4, nil
}

// index is where each key's latest record is, per bucket. Buckets of
// sequence numbers use a seqarr.Array for their 8-byte keys; other keys a
// map of strings.
type index struct {
	seq []*seqarr.Array[loc] // nil for a bucket not sequenced
	str []map[string]loc
	// bytes is the size of the live records.
	bytes int64
}

func newIndex(sequenced []bool) *index {
	x := &index{seq: make([]*seqarr.Array[loc], len(sequenced)), str: make([]map[string]loc, len(sequenced))}
	for i, sq := range sequenced {
		x.str[i] = map[string]loc{}
		if sq {
			x.seq[i] = &seqarr.Array[loc]{}
		}
	}
	return x
}

// idxOp is the index change of one record queued for writing.
type idxOp struct {
	op, b byte
	isSeq bool
	seq   uint64 // the key, when the bucket is sequenced and it is 8 bytes
	str   string // the key otherwise
	off   int64  // offset in the queued bytes
	n     int
}

// applyOp applies o for a commit written at base.
func (x *index) applyOp(o *idxOp, base int64) {
	if o.isSeq {
		x.applySeq(o.op, o.b, o.seq, base+o.off, o.n)
		return
	}
	x.applyStr(o.op, o.b, o.str, base+o.off, o.n)
}

func (x *index) apply(op, b byte, k []byte, off int64, n int) {
	if s, ok := x.seqKey(b, k); ok {
		x.applySeq(op, b, s, off, n)
		return
	}
	x.applyStr(op, b, string(k), off, n)
}

// seqKey reads k as a sequence number of bucket b, if b has them.
func (x *index) seqKey(b byte, k []byte) (uint64, bool) {
	if len(k) != 8 || x.seq[b] == nil {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}

func (x *index) applySeq(op, b byte, s uint64, off int64, n int) {
	var old loc
	var had bool
	if op == opDelete {
		old, had = x.seq[b].Delete(s)
	} else {
		at := mkloc(off, n)
		old, had = x.seq[b].Put(s, at)
		x.bytes += at.size()
	}
	if had {
		x.bytes -= old.size()
	}
}

func (x *index) applyStr(op, b byte, k string, off int64, n int) {
	if old, ok := x.str[b][k]; ok {
		x.bytes -= old.size()
	}
	if op == opDelete {
		delete(x.str[b], k)
		return
	}
	at := mkloc(off, n)
	x.str[b][k] = at
	x.bytes += at.size()
}

func (x *index) get(b byte, k []byte) (loc, bool) {
	if s, ok := x.seqKey(b, k); ok {
		return x.seq[b].Get(s)
	}
	at, ok := x.str[b][string(k)]
	return at, ok
}

// keys returns the keys of bucket b at or after from, in order.
func (x *index) keys(b byte, from []byte) [][]byte {
	var out [][]byte
	if sq := x.seq[b]; sq != nil {
		_ = sq.Each(func(s uint64, _ loc) error {
			if k := binary.BigEndian.AppendUint64(nil, s); bytes.Compare(k, from) >= 0 {
				out = append(out, k)
			}
			return nil
		})
	}
	for s := range x.str[b] {
		if bytes.Compare([]byte(s), from) >= 0 {
			out = append(out, []byte(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i], out[j]) < 0 })
	return out
}

// each calls fn for every record, bucket by bucket; fn must not keep k.
func (x *index) each(fn func(b byte, k []byte, at loc) error) error {
	var k [8]byte
	for b := range x.str {
		if sq := x.seq[b]; sq != nil {
			if err := sq.Each(func(s uint64, at loc) error {
				binary.BigEndian.PutUint64(k[:], s)
				return fn(byte(b), k[:], at)
			}); err != nil {
				return err
			}
		}
		for s, at := range x.str[b] {
			if err := fn(byte(b), []byte(s), at); err != nil {
				return err
			}
		}
	}
	return nil
}

// read returns the value of key k of bucket b (nil, false when absent) in
// memory of its own.
func (l *Log) read(b byte, k []byte) ([]byte, bool, error) {
	l.rmu.RLock()
	defer l.rmu.RUnlock()
	at, ok := l.idx.get(b, k)
	if !ok {
		return nil, false, nil
	}
	n, err := l.length(at)
	if err != nil {
		return nil, false, err
	}
	rec := make([]byte, n)
	if _, err := l.f.ReadAt(rec, at.off()); err != nil {
		return nil, false, fmt.Errorf("read %s at %d: %w", l.path, at.off(), err)
	}
	var v []byte
	got := false
	if _, err := replay(rec, len(l.buckets), func(_, _ byte, _, val []byte, _, _ int) { v, got = val, true }); err != nil || !got {
		return nil, false, fmt.Errorf("read %s: damaged record at %d", l.path, at.off())
	}
	return v, true, nil
}

// Get calls fn with the value of each key of bucket, nil for a missing
// one; fn may keep v.
func (l *Log) Get(bucket string, keys [][]byte, fn func(i int, v []byte) error) error {
	b, ok := l.bidx[bucket]
	if !ok {
		return fmt.Errorf("no bucket %q", bucket)
	}
	for i, k := range keys {
		v, _, err := l.read(b, k)
		if err != nil {
			return err
		}
		if err := fn(i, v); err != nil {
			return err
		}
	}
	return nil
}

// Scan reads the keys of bucket from the first one at or after from, in
// key order, while fn returns true.
func (l *Log) Scan(bucket string, from []byte, fn func(k, v []byte) (bool, error)) error {
	b, ok := l.bidx[bucket]
	if !ok {
		return fmt.Errorf("no bucket %q", bucket)
	}
	visit := func(k []byte) (bool, error) {
		v, found, err := l.read(b, k)
		if err != nil || !found {
			return err == nil, err
		}
		return fn(k, v)
	}
	l.rmu.RLock()
	// A bucket of sequence numbers is walked in order from the index; a
	// page of a long list costs the page, not the list.
	numeric := l.idx.seq[b] != nil && len(l.idx.str[b]) == 0 && (len(from) == 0 || len(from) == 8)
	var keys [][]byte
	if !numeric {
		keys = l.idx.keys(b, from)
	}
	l.rmu.RUnlock()
	if !numeric {
		for _, k := range keys {
			if more, err := visit(k); err != nil || !more {
				return err
			}
		}
		return nil
	}
	var s uint64
	if len(from) == 8 {
		s = binary.BigEndian.Uint64(from)
	}
	var k [8]byte
	for {
		l.rmu.RLock()
		// A compaction may have swapped the index meanwhile.
		next, _, ok := l.idx.seq[b].Next(s)
		l.rmu.RUnlock()
		if !ok {
			return nil
		}
		binary.BigEndian.PutUint64(k[:], next)
		if more, err := visit(k[:]); err != nil || !more {
			return err
		}
		if next == ^uint64(0) {
			return nil
		}
		s = next + 1
	}
}

// ReadLog reads the live records of the log at path, read-only. A torn
// last write (a crash while writing; never acknowledged) is skipped; a
// damaged record with whole records after it is refused with ErrDamaged
// naming the offset, since what follows was acknowledged.
func ReadLog(path, format string, buckets []string) ([]Op, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || !bytes.HasPrefix(data, []byte(logMagic)) {
		return nil, fmt.Errorf("%w: %s is not a switchyard log", ErrForeign, path)
	}
	if got := string(data[len(logMagic):nl]); got != format {
		return nil, fmt.Errorf("%w: %s holds %q, want %q", ErrForeign, path, got, format)
	}
	type rec struct {
		b byte
		v []byte
	}
	live := map[string]rec{}
	var order []string
	off := nl + 1
	good, err := replay(data[off:], len(buckets), func(op, b byte, k, v []byte, _, _ int) {
		key := string([]byte{b}) + string(k)
		if op == opDelete {
			delete(live, key)
			return
		}
		if _, ok := live[key]; !ok {
			order = append(order, key)
		}
		live[key] = rec{b, v}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, path, err)
	}
	if end := off + good; end < len(data) {
		if at, ok := nextRecord(data[end:], len(buckets)); ok {
			return nil, fmt.Errorf("%w: %s: bad record at offset %d with whole records after it (at %d): acknowledged data would be lost; the file was not changed",
				ErrDamaged, path, end, end+at)
		}
	}
	ops := make([]Op, 0, len(live))
	for _, key := range order {
		if r, ok := live[key]; ok {
			ops = append(ops, Op{Bucket: buckets[r.b], Key: []byte(key[1:]), Value: r.v})
			delete(live, key)
		}
	}
	return ops, nil
}

// nextRecord finds a whole record with a good checksum in data after its
// first byte: proof that data is damage, not a torn end.
func nextRecord(data []byte, buckets int) (int, bool) {
	for at := 1; at < len(data); at++ {
		n, err := replay(data[at:], buckets, func(byte, byte, []byte, []byte, int, int) {})
		if n > 0 && err == nil {
			return at, true
		}
	}
	return 0, false
}

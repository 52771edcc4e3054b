package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
)

// The append-only log of earlier versions is only read, once, to copy its
// records into a Pebble store (OpenDBFrom); nothing writes it any more.
//
// The file: a header line "switchyard-log 1 FORMAT\n", then records of
// uvarint(len(body)) body crc32c(body); a body is op (1 put, 2 delete),
// bucket index, uvarint(len(key)), key, value. A record cut short or with
// a bad checksum at the end was being written when the process or host
// stopped, so nobody was told it was stored.
const (
	logMagic   = "switchyard-log 1 "
	opPut      = 1
	opDelete   = 2
	maxLogBody = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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

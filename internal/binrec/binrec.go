// Package binrec is a tiny append-only binary record format for the stores:
// varints and length-prefixed bytes, no reflection. It is several times
// cheaper than a generic encoder on the per-task write path.
package binrec

import (
	"encoding/binary"
	"errors"
)

// ErrShort means a record ended before all its fields were read.
var ErrShort = errors.New("record truncated")

// Writer appends fields to a buffer.
type Writer struct{ B []byte }

func (w *Writer) Uvarint(v uint64) { w.B = binary.AppendUvarint(w.B, v) }
func (w *Writer) Varint(v int64)   { w.B = binary.AppendVarint(w.B, v) }
func (w *Writer) Bytes(b []byte) {
	w.B = binary.AppendUvarint(w.B, uint64(len(b)))
	w.B = append(w.B, b...)
}
func (w *Writer) String(s string) {
	w.B = binary.AppendUvarint(w.B, uint64(len(s)))
	w.B = append(w.B, s...)
}

// Reader reads fields in the order they were written; the first error
// sticks and later reads return zero values.
type Reader struct {
	B   []byte
	Err error
}

func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Err = ErrShort
		return 0
	}
	r.B = r.B[n:]
	return v
}

func (r *Reader) Varint() int64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Err = ErrShort
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Bytes returns a copy, so the record may outlive the store's buffer.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if r.Err != nil {
		return nil
	}
	if n > uint64(len(r.B)) {
		r.Err = ErrShort
		return nil
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, r.B[:n])
	r.B = r.B[n:]
	return out
}

func (r *Reader) String() string {
	n := r.Uvarint()
	if r.Err != nil {
		return ""
	}
	if n > uint64(len(r.B)) {
		r.Err = ErrShort
		return ""
	}
	s := string(r.B[:n])
	r.B = r.B[n:]
	return s
}

package store

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// logRecord is one record of the old log's format.
func logRecord(op, bucket byte, k, v []byte) []byte {
	body := append([]byte{op, bucket}, binary.AppendUvarint(nil, uint64(len(k)))...)
	body = append(append(body, k...), v...)
	out := binary.AppendUvarint(nil, uint64(len(body)))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(body, castagnoli))
}

// The old log's reader takes any bytes: it never reads past them, hands
// out only whole records inside them, and stops at the first that is not.
func FuzzLogReplay(f *testing.F) {
	whole := append(logRecord(opPut, 0, []byte("k1"), []byte("v1")), logRecord(opDelete, 1, []byte("k2"), nil)...)
	f.Add(whole)
	f.Add(whole[:len(whole)-3])
	f.Add(append(logRecord(opPut, 7, []byte("k"), []byte("v")), whole...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		end := 0
		n, err := replay(data, 2, func(op, b byte, k, v []byte, at, size int) {
			if at != end || at+size > len(data) {
				t.Fatalf("record at %d (%d bytes) after %d, in %d bytes", at, size, end, len(data))
			}
			if b >= 2 || (op != opPut && op != opDelete) {
				t.Fatalf("record with op %d, bucket %d", op, b)
			}
			end = at + size
		})
		if n > len(data) || (err == nil && n != end) {
			t.Fatalf("replay took %d of %d bytes, records end at %d (err %v)", n, len(data), end, err)
		}
	})
}

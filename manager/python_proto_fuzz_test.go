package manager

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
)

// Whatever a Python worker (or the function it runs) writes to the answer
// pipe, the manager's reading of it neither panics nor reads past a frame:
// frames come out whole and within the limit, and an answer's parts lie
// within its body.
func FuzzWorkerFrames(f *testing.F) {
	frame := func(kind byte, body []byte) []byte {
		h := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		return append(append(h, kind), body...)
	}
	answer := binary.BigEndian.AppendUint64(nil, 7)
	answer = append(binary.BigEndian.AppendUint32(answer, 2), "ok-rest"...)
	f.Add(frame('R', answer))
	f.Add(append(frame('E', append(binary.BigEndian.AppendUint32(nil, 3), "boom"...)), 0, 0, 0))
	f.Add(frame('R', []byte{0, 0, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 'R'})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 12
		r := bufio.NewReader(bytes.NewReader(data))
		read := 0
		for {
			_, body, err := readFrame(r, limit)
			if err != nil {
				break
			}
			if len(body) > limit {
				t.Fatalf("a frame of %d bytes over the %d limit", len(body), limit)
			}
			read += frameHeaderLen + len(body)
			if read > len(data) {
				t.Fatalf("%d bytes read from %d", read, len(data))
			}
			if rest, err := answerOf(body, 7); err == nil {
				if text, more, err := splitText(rest); err == nil && 4+len(more) > len(rest) {
					t.Fatalf("text of %d bytes and %d more from %d", len(text), len(more), len(rest))
				}
			}
			if s, p, err := splitException(body); err == nil && len(p) > len(body) {
				t.Fatalf("exception payload of %d bytes from %d (summary %d)", len(p), len(body), len(s))
			}
		}
	})
}

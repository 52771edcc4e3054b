package manager

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Frame types of the worker pipe protocol (docs/worker-protocol.md).
const (
	frameHello     byte = 'H' // worker -> manager, once: JSON
	frameFatal     byte = 'F' // worker -> manager: UTF-8 text, then it exits
	frameCall      byte = 'C' // manager -> worker: serialized call
	frameReturn    byte = 'R' // worker -> manager: serialized ("ok", value)
	frameException byte = 'X' // worker -> manager: summary length, summary, serialized ("err", exc, tb)
)

// workerProtocol is the version a worker must announce in its hello.
const workerProtocol = 1

const frameHeaderLen = 5

// maxSummaryBytes caps the exception summary that becomes the task's error.
const maxSummaryBytes = 4096

// writeFrame sends one frame; small ones go in a single write.
func writeFrame(w io.Writer, kind byte, body []byte, scratch []byte) ([]byte, error) {
	if len(body) > 1<<31 {
		return scratch, fmt.Errorf("frame of %d bytes is too large", len(body))
	}
	if len(body) <= 64<<10 {
		scratch = append(scratch[:0], 0, 0, 0, 0, kind)
		binary.BigEndian.PutUint32(scratch, uint32(len(body)))
		scratch = append(scratch, body...)
		_, err := w.Write(scratch)
		return scratch, err
	}
	var h [frameHeaderLen]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(body)))
	h[4] = kind
	if _, err := w.Write(h[:]); err != nil {
		return scratch, err
	}
	_, err := w.Write(body)
	return scratch, err
}

// errFrameTooLarge is returned with the announced size of a frame over the limit.
type errFrameTooLarge struct{ size, limit int }

func (e errFrameTooLarge) Error() string {
	return fmt.Sprintf("the worker sent a frame of %d bytes; the limit is %d", e.size, e.limit)
}

// readFrame reads one frame of at most limit body bytes into a new slice.
func readFrame(r *bufio.Reader, limit int) (byte, []byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(h[:4]))
	if n > limit {
		return h[4], nil, errFrameTooLarge{size: n, limit: limit}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return h[4], nil, err
	}
	return h[4], body, nil
}

// splitException reads an exception frame's body: the summary and the
// serialized exception.
func splitException(body []byte) (summary string, payload []byte, err error) {
	if len(body) < 4 {
		return "", nil, fmt.Errorf("exception frame of %d bytes is shorter than its 4-byte summary length", len(body))
	}
	n := int(binary.BigEndian.Uint32(body[:4]))
	if n > len(body)-4 {
		return "", nil, fmt.Errorf("exception frame announces a %d-byte summary in %d bytes", n, len(body)-4)
	}
	s := body[4 : 4+n]
	if len(s) > maxSummaryBytes {
		s = append(s[:maxSummaryBytes:maxSummaryBytes], "..."...)
	}
	return string(s), body[4+n:], nil
}

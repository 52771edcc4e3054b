package manager

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"github.com/switchyard-hpc/switchyard/internal/textcap"
	"io"
)

// Frame types of the worker pipe protocol (docs/worker-protocol.md).
const (
	frameHello     byte = 'H' // worker -> manager, once: JSON
	frameFatal     byte = 'F' // worker -> manager: UTF-8 text, then it exits
	frameCall      byte = 'C' // manager -> worker: call id, serialized call
	frameReturn    byte = 'R' // worker -> manager: call id, serialized ("ok", value)
	frameException byte = 'X' // worker -> manager: call id, summary length, summary, serialized ("err", exc, tb)
)

// workerProtocol is the version this manager's worker announces in its
// hello; minWorkerProtocol is the oldest one it still speaks. Version 2
// added call ids and moved the pipes to fds 4 and 5; version 3 added the
// readable text to 'R' and 'X' answers; version 4 lets the manager send
// calls before the previous answers came (python_pipe.go).
const (
	workerProtocol    = 4
	minWorkerProtocol = 2
)

// maxTextBytes caps the readable form of a result (docs/contract.md,
// Python tasks): enough to read a value or a traceback's end, small
// beside the payload.
const maxTextBytes = 2048

const frameHeaderLen = 5

// callIDLen is the size of the id that starts a call and its answer.
const callIDLen = 8

// writeCall sends a call frame: its id, then the payload.
func writeCall(w io.Writer, id uint64, payload []byte, scratch []byte) ([]byte, error) {
	if len(payload) > 1<<31 {
		return scratch, fmt.Errorf("frame of %d bytes is too large", len(payload))
	}
	scratch = append(scratch[:0], 0, 0, 0, 0, frameCall)
	binary.BigEndian.PutUint32(scratch, uint32(callIDLen+len(payload)))
	scratch = binary.BigEndian.AppendUint64(scratch, id)
	if len(payload) <= 64<<10 {
		scratch = append(scratch, payload...)
		_, err := w.Write(scratch)
		return scratch, err
	}
	if _, err := w.Write(scratch); err != nil {
		return scratch, err
	}
	_, err := w.Write(payload)
	return scratch, err
}

// errWrongAnswer: an answer that does not carry its call's id, so not
// the worker's answer to that call (the function may have written it).
type errWrongAnswer struct {
	want, got uint64
	short     bool
}

func (e errWrongAnswer) Error() string {
	if e.short {
		return fmt.Sprintf("an answer without a call id to call %016x", e.want)
	}
	return fmt.Sprintf("an answer to call %016x carrying id %016x", e.want, e.got)
}

// answerOf checks that an answer's body starts with call id want and
// returns the rest.
func answerOf(body []byte, want uint64) ([]byte, error) {
	if len(body) < callIDLen {
		return nil, errWrongAnswer{want: want, short: true}
	}
	if got := binary.BigEndian.Uint64(body); got != want {
		return nil, errWrongAnswer{want: want, got: got}
	}
	return body[callIDLen:], nil
}

// maxSummaryBytes caps the exception summary that becomes the task's error.
const maxSummaryBytes = 4096

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

// splitText reads the length-prefixed text that starts a protocol 3
// answer's body and returns it, capped, with the rest of the body.
func splitText(body []byte) (text string, rest []byte, err error) {
	if len(body) < 4 {
		return "", nil, fmt.Errorf("answer of %d bytes is shorter than its 4-byte text length", len(body))
	}
	n := int(binary.BigEndian.Uint32(body[:4]))
	if n > len(body)-4 {
		return "", nil, fmt.Errorf("answer announces a %d-byte text in %d bytes", n, len(body)-4)
	}
	return textcap.Cap(string(body[4:4+n]), maxTextBytes), body[4+n:], nil
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

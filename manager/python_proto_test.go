package manager

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	big := bytes.Repeat([]byte("y"), 100<<10) // over the single-write size
	for i, body := range [][]byte{nil, []byte("call"), big} {
		if _, err := writeCall(&buf, uint64(i)<<56|7, body, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&buf)
	for i, want := range [][]byte{nil, []byte("call"), big} {
		kind, body, err := readFrame(r, 1<<20)
		if err != nil || kind != frameCall {
			t.Fatalf("read %q, %v", kind, err)
		}
		if body, err = answerOf(body, uint64(i)<<56|7); err != nil || !bytes.Equal(body, want) {
			t.Fatalf("read %d bytes, %v; want %d bytes", len(body), err, len(want))
		}
	}
	if _, _, err := readFrame(r, 1<<20); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// An answer must start with its call's id.
func TestAnswerOf(t *testing.T) {
	body := []byte{0, 0, 0, 0, 0, 0, 0, 9, 'R'}
	if rest, err := answerOf(body, 9); err != nil || string(rest) != "R" {
		t.Fatalf("right id: %q %v", rest, err)
	}
	var wrong errWrongAnswer
	if _, err := answerOf(body, 10); !errors.As(err, &wrong) || !strings.Contains(err.Error(), "carrying id 0000000000000009") {
		t.Fatalf("wrong id: %v", err)
	}
	if _, err := answerOf(body[:7], 9); !errors.As(err, &wrong) || !strings.Contains(err.Error(), "without a call id") {
		t.Fatalf("short answer: %v", err)
	}
}

func TestFrameErrors(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		limit int
		check func(error) bool
	}{
		{"over the limit", []byte{0, 0, 1, 0, 'R'}, 255, func(err error) bool {
			var e errFrameTooLarge
			return errors.As(err, &e) && e.size == 256 && strings.Contains(err.Error(), "limit is 255")
		}},
		{"truncated header", []byte{0, 0}, 10, func(err error) bool { return err == io.ErrUnexpectedEOF }},
		{"truncated body", []byte{0, 0, 0, 5, 'R', 'a'}, 10, func(err error) bool { return err == io.ErrUnexpectedEOF }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readFrame(bufio.NewReader(bytes.NewReader(tc.in)), tc.limit)
			if !tc.check(err) {
				t.Fatalf("readFrame: %v", err)
			}
		})
	}
}

func TestSplitException(t *testing.T) {
	summary, payload, err := splitException([]byte("\x00\x00\x00\x05boom!PICKLE"))
	if err != nil || summary != "boom!" || string(payload) != "PICKLE" {
		t.Fatalf("got %q %q %v", summary, payload, err)
	}
	for _, bad := range []string{"", "\x00\x00", "\x00\x00\x00\x09short"} {
		if _, _, err := splitException([]byte(bad)); err == nil {
			t.Errorf("splitException(%q) accepted a malformed frame", bad)
		}
	}
	long := append([]byte{0, 0, 0x20, 0}, bytes.Repeat([]byte("e"), 0x2000)...)
	if s, _, err := splitException(long); err != nil || len(s) != maxSummaryBytes+3 {
		t.Errorf("long summary: %d bytes, %v; want it capped at %d", len(s), err, maxSummaryBytes)
	}
}

func TestCallsAhead(t *testing.T) {
	w := &pyWorker{protocol: 4}
	if n := w.ahead(); n != 1 {
		t.Errorf("a worker with no calls timed takes %d ahead, want 1", n)
	}
	for _, c := range []struct {
		avg  time.Duration
		want int
	}{{time.Microsecond, aheadMost}, {100 * time.Microsecond, aheadMost}, {500 * time.Microsecond, 4},
		{1500 * time.Microsecond, 1}, {time.Second, 1}} {
		w.avg = c.avg
		if n := w.ahead(); n != c.want {
			t.Errorf("calls taking %v: %d ahead, want %d", c.avg, n, c.want)
		}
	}
	w.protocol = 3
	w.avg = time.Microsecond
	if n := w.ahead(); n != 1 {
		t.Errorf("a protocol 3 worker takes %d calls at once, want 1", n)
	}
	w.avg = 0
	w.took(time.Millisecond)
	if w.avg != time.Millisecond {
		t.Errorf("first call sets the average to %v, want 1ms", w.avg)
	}
	for i := 0; i < 100; i++ {
		w.took(10 * time.Microsecond)
	}
	if w.avg > 20*time.Microsecond {
		t.Errorf("average %v after 100 calls of 10µs", w.avg)
	}
}

func TestAppendCall(t *testing.T) {
	b := appendCall([]byte("x"), 0x0102030405060708, []byte("payload"))
	kind, body, err := readFrame(bufio.NewReader(bytes.NewReader(b[1:])), 100)
	if err != nil || kind != frameCall || string(body) != "\x01\x02\x03\x04\x05\x06\x07\x08payload" {
		t.Fatalf("appendCall wrote %q: %c %q %v", b, kind, body, err)
	}
}

func TestFrameBuffered(t *testing.T) {
	frame := appendCall(nil, 7, []byte("abc"))
	for n := 0; n <= len(frame); n++ {
		r := bufio.NewReader(io.MultiReader(bytes.NewReader(frame[:n]), blockingReader{t}))
		if n > 0 {
			r.Peek(n) // buffer the first n bytes
		}
		if got, want := frameBuffered(r), n == len(frame); got != want {
			t.Errorf("%d of %d bytes buffered: frameBuffered %v", n, len(frame), got)
		}
	}
}

// blockingReader fails the test if read: frameBuffered must never read.
type blockingReader struct{ t *testing.T }

func (b blockingReader) Read([]byte) (int, error) {
	b.t.Fatal("frameBuffered read from its reader")
	return 0, io.EOF
}

package messages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// A fuzz input is one mode byte followed by data:
//
//	modeFramed: frames as (uvarint length, bytes) pairs; a broken tail is
//	            taken as the last frame as it is
//	modeSingle: the rest is one frame
//	modeSplit:  a 2-byte big-endian offset, then bytes cut into two frames
//	            at offset mod (len+1)
const (
	modeFramed = iota
	modeSingle
	modeSplit
	modeCount
)

const maxFuzzFrames = 4

func encodeFramed(frames [][]byte) []byte {
	out := []byte{modeFramed}
	for _, f := range frames {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}

func encodeSplit(frames [][]byte) []byte {
	cat := bytes.Join(frames, nil)
	out := []byte{modeSplit, byte(len(frames[0]) >> 8), byte(len(frames[0]))}
	return append(out, cat...)
}

func decodeFuzzInput(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	mode, rest := data[0]%modeCount, data[1:]
	switch mode {
	case modeSingle:
		return [][]byte{rest}
	case modeSplit:
		if len(rest) < 2 {
			return [][]byte{rest}
		}
		at := int(binary.BigEndian.Uint16(rest)) % (len(rest) - 2 + 1)
		rest = rest[2:]
		return [][]byte{rest[:at], rest[at:]}
	}
	var frames [][]byte
	for len(rest) > 0 && len(frames) < maxFuzzFrames {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			frames = append(frames, rest)
			break
		}
		frames = append(frames, rest[k:k+int(n)])
		rest = rest[k+int(n):]
	}
	return frames
}

func FuzzUnpack(f *testing.F) {
	for _, tc := range roundTripCases() {
		frames, err := tc.msg.Pack()
		if err != nil {
			f.Fatalf("%s: %v", tc.name, err)
		}
		if len(bytes.Join(frames, nil)) > 4096 {
			continue // big seeds slow the fuzzer; smaller ones cover the type
		}
		f.Add(encodeFramed(frames))
		if len(frames) == 1 {
			f.Add(append([]byte{modeSingle}, frames[0]...))
		} else {
			f.Add(encodeSplit(frames))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{modeSingle})
	f.Add(encodeFramed([][]byte{{Version, byte(TypeHeartbeat), 0x91, 0x91, 0x90}}))
	// Tasks with owners: the old three fields, a nil owner, an owner in
	// str8 and in bin, a field after the owner, and a length past the end.
	id := []byte{0xc4, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	task := func(fields byte, rest ...byte) []byte {
		out := []byte{Version, byte(TypeTaskBatch), 0x92}
		for range 2 {
			out = append(out, 0x90|fields)
			out = append(out, id...)
			out = append(out, 1, 0)
			out = append(out, rest...)
		}
		return out
	}
	f.Add(append([]byte{modeSingle}, task(3)...))
	f.Add(append([]byte{modeSingle}, task(4, 0xc0)...))
	f.Add(append([]byte{modeSingle}, task(4, 0xd9, 3, 'b', 'o', 'b')...))
	f.Add(append([]byte{modeSingle}, task(4, 0xc4, 3, 'b', 'o', 'b')...))
	f.Add(append([]byte{modeSingle}, task(5, 0xa5, 'a', 'l', 'i', 'c', 'e', 0x91, 0xa1, 'x')...))
	f.Add(append([]byte{modeSingle}, task(4, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x')...))

	sentinels := []error{ErrEmpty, ErrVersion, ErrUnknownType, ErrTruncated, ErrExtraFrames, ErrOversized, ErrMalformed, ErrPayload}
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := decodeFuzzInput(data)
		m, err := Unpack(frames)
		if err != nil {
			if m != nil {
				t.Fatalf("Unpack returned %#v with error %v", m, err)
			}
			known := false
			for _, s := range sentinels {
				known = known || errors.Is(err, s)
			}
			if !known {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if m.Type() != Type(frames[0][1]) {
			t.Fatalf("type byte %d decoded as %s", frames[0][1], m.Type())
		}
		packed, err := m.Pack()
		if err != nil {
			t.Fatalf("decoded %#v but Pack failed: %v", m, err)
		}
		again, err := Unpack(packed)
		if err != nil {
			t.Fatalf("re-packed message does not decode: %v\nmessage %#v\nframes % x", err, m, packed)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("re-encoding changed the message\nfirst  %#v\nsecond %#v", m, again)
		}
		// Pack is canonical: packing the second decode gives the same bytes.
		packed2, err := again.Pack()
		if err != nil || !reflect.DeepEqual(packed, packed2) {
			t.Fatalf("Pack not stable: %v\n% x\n% x", err, packed, packed2)
		}
	})
}

// The input encoding itself splits frames as the seeds expect.
func TestFuzzInputEncoding(t *testing.T) {
	frames := [][]byte{{1, 2, 3}, {4, 5}}
	if got := decodeFuzzInput(encodeFramed(frames)); !reflect.DeepEqual(got, frames) {
		t.Fatalf("framed: %v", got)
	}
	if got := decodeFuzzInput(encodeSplit(frames)); !reflect.DeepEqual(got, frames) {
		t.Fatalf("split: %v", got)
	}
	if got := decodeFuzzInput([]byte{modeSingle, 1, 2}); !reflect.DeepEqual(got, [][]byte{{1, 2}}) {
		t.Fatalf("single: %v", got)
	}
	if got := decodeFuzzInput([]byte{modeFramed, 0x05, 1}); !reflect.DeepEqual(got, [][]byte{{0x05, 1}}) {
		t.Fatalf("broken tail: %v", got)
	}
}

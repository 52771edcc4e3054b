package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// tid builds a recognisable task id from one byte.
func tid(b byte) TaskID {
	var id TaskID
	for k := range id {
		id[k] = b + byte(k)
	}
	return id
}

// hdr builds a first frame from a type and msgpack-encoded header values;
// several values are written one after another (for trailing-byte cases).
func hdr(t *testing.T, typ Type, vals ...any) []byte {
	t.Helper()
	out := []byte{Version, byte(typ)}
	for _, v := range vals {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatalf("marshal %v: %v", v, err)
		}
		out = append(out, b...)
	}
	return out
}

// raw builds a first frame from a type and literal header bytes.
func raw(typ Type, b ...byte) []byte { return append([]byte{Version, byte(typ)}, b...) }

func mustPack(t testing.TB, m Message) [][]byte {
	t.Helper()
	frames, err := m.Pack()
	if err != nil {
		t.Fatalf("Pack %T: %v", m, err)
	}
	return frames
}

// roundTripCases holds at least one value of every type; fuzz seeds and the
// protocol examples use them too.
func roundTripCases() []struct {
	name   string
	msg    Message
	frames int
} {
	return []struct {
		name   string
		msg    Message
		frames int
	}{
		{"registration manager with http", &Registration{Role: RoleManager, ID: "m", Hostname: "n1", Workers: 1, ProtocolVersion: Version, BlockID: "b1", HTTPAddr: "n1:39123"}, 1},
		{"registration manager", &Registration{Role: RoleManager, ID: "mgr-1", Hostname: "node042",
			Workers: 8, Prefetch: 2, ProtocolVersion: Version, SoftwareVersion: "0.1.0", BlockID: "job-991"}, 1},
		{"registration adaptive prefetch", &Registration{Role: RoleManager, ID: "mgr-2", Workers: 4, Prefetch: 1000,
			ProtocolVersion: Version, AdaptivePrefetch: true}, 1},
		{"registration interchange", &Registration{Role: RoleInterchange, ID: "demo", Hostname: "login1",
			Workers: math.MaxUint32, ProtocolVersion: 255}, 1},
		{"heartbeat", &Heartbeat{}, 1},
		{"heartbeat with timing", &Heartbeat{Interval: 200e6, Threshold: 600e6}, 1},
		{"heartbeat req zero", &HeartbeatReq{}, 1},
		{"heartbeat req max", &HeartbeatReq{Nonce: math.MaxUint64}, 1},
		{"heartbeat resp", &HeartbeatResp{Nonce: 0xdeadbeef}, 1},
		{"task batch empty", &TaskBatch{}, 1},
		{"task batch one without payload", &TaskBatch{Tasks: []Task{{ID: tid(1), Attempt: 0}}}, 1},
		{"task batch without payloads", &TaskBatch{Tasks: []Task{{ID: tid(1)}, {ID: tid(2), Attempt: 7}}}, 1},
		{"task batch one with payload", &TaskBatch{Tasks: []Task{{ID: tid(1), Attempt: 1, Payload: []byte(`{"kind":"noop"}`)}}}, 2},
		{"task batch mixed payloads", &TaskBatch{Tasks: []Task{
			{ID: tid(1), Attempt: 1, Payload: []byte(`{"kind":"noop"}`)},
			{ID: tid(2), Attempt: 2},
			{ID: tid(3), Attempt: math.MaxUint32, Payload: bytes.Repeat([]byte{0xff, 0x00}, 40000)},
			{ID: tid(4), Payload: []byte{0}},
		}}, 2},
		{"task batch with owners", &TaskBatch{Tasks: []Task{
			{ID: tid(1), Attempt: 1, Payload: []byte(`{"kind":"noop"}`), Owner: "alice"},
			{ID: tid(2), Attempt: 1, Owner: "alice"},
			{ID: tid(3), Attempt: 2, Payload: []byte("x")},
			{ID: tid(4), Owner: "bob"},
			{ID: tid(5), Owner: strings.Repeat("o", 31)},
			{ID: tid(6), Owner: strings.Repeat("p", 32)},
			{ID: tid(7), Owner: strings.Repeat("q", 256)},
		}}, 2},
		{"task batch owner str32", &TaskBatch{Tasks: []Task{{ID: tid(1), Owner: strings.Repeat("r", 1<<16)}}}, 1},
		{"result batch empty", &ResultBatch{}, 1},
		{"result batch without payloads", &ResultBatch{Results: []Result{
			{ID: tid(1), Attempt: 1, Code: Success, Started: 1, Finished: 2},
			{ID: tid(2), Attempt: 3, Code: Failed, Error: "exit status 3", Started: -5, Finished: math.MaxInt64},
			{ID: tid(3), Code: Cancelled, Error: "cancelled by user", Started: math.MinInt64},
		}}, 1},
		{"result batch with payloads", &ResultBatch{Results: []Result{
			{ID: tid(1), Attempt: 1, Code: Success, Started: 1700000000000000000, Finished: 1700000000400000000,
				Payload: []byte(`{"exit_code":0,"stdout":"hi\n","stderr":""}`)},
			{ID: tid(2), Attempt: 1, Code: Failed, Error: "lost"},
			{ID: tid(3), Attempt: 2, Code: Failed, Error: "exit status 1", Payload: []byte("x")},
		}}, 2},
		{"result batch with text", &ResultBatch{Results: []Result{
			{ID: tid(1), Attempt: 1, Code: Success, Payload: []byte("pickle"), Text: "[1, 2, 3]"},
			{ID: tid(2), Attempt: 1, Code: Failed, Error: "ValueError: x", Payload: []byte("p"), Text: "Traceback ..."},
			{ID: tid(3), Attempt: 1, Code: Success, Payload: []byte("no text")},
		}}, 2},
		{"result batch with runs", &ResultBatch{Results: []Result{
			{ID: tid(1), Attempt: 1, Code: Success, Started: 1, Finished: 2, Runs: 2, Payload: []byte("p")},
			{ID: tid(3), Attempt: 1, Code: Success, Runs: 1, Text: "t"},
			{ID: tid(2), Attempt: 1, Code: Success},
		}}, 2},
		{"manager status report empty", &ManagerStatusReport{}, 1},
		{"manager status report", &ManagerStatusReport{Deltas: []Delta{
			{ID: tid(1), Code: Running, Attempt: 1, At: 1700000000000000000},
			{ID: tid(2), Code: WaitingForLaunch, Attempt: 2, At: -1},
			{ID: tid(3), Code: Cancelled},
		}, Workers: 4, IdleWorkers: 1, Capacity: 3, Outstanding: 5, ServingState: PushAndDispatchPaused}, 1},
		{"ep status report empty", &EPStatusReport{ServingState: PushPaused}, 1},
		{"ep status report with blocks", &EPStatusReport{Managers: 1, Blocks: []byte(`[{"block_id":"b1","state":"pending"}]`)}, 1},
		{"ep status report with managers", &EPStatusReport{Managers: 1, Blocks: []byte(`[]`), ManagerList: []byte(`[{"manager_id":"m1"}]`)}, 1},
		{"ep status report by owner", &EPStatusReport{Queued: 12, QueuedByOwner: []OwnerCount{{"alice", 10}, {"", 2}, {"", 0}}}, 1},
		{"ep status report by owner with blocks", &EPStatusReport{Blocks: []byte(`[]`), QueuedByOwner: []OwnerCount{{"bob", math.MaxUint32}}}, 1},
		{"ep status report with managers and owners", &EPStatusReport{Managers: 1, ManagerList: []byte(`[{"manager_id":"m1"}]`), QueuedByOwner: []OwnerCount{{"alice", 3}}}, 1},
		{"ep status report", &EPStatusReport{Deltas: []Delta{
			{ID: tid(9), Code: WaitingForNodes, Attempt: 1, At: 42, Runs: 3},
			{ID: tid(10), Code: Success, Attempt: math.MaxUint32, At: math.MaxInt64},
		}, Managers: 2, Workers: 8, IdleWorkers: 3, Queued: 100000, Outstanding: 5, ServingState: NonePaused}, 1},
		{"command set serving state", &Command{ID: 1, Op: OpSetServingState, State: PushPaused,
			Timeout: 60e9, Force: true, Manager: "mgr-1"}, 1},
		{"command clear override", &Command{ID: 2, Op: OpSetServingState, Clear: true}, 1},
		{"command cancel", &Command{ID: math.MaxUint64, Op: OpCancel, TaskIDs: []TaskID{tid(1), tid(2), tid(3)}}, 1},
		{"command drain", &Command{ID: 4, Op: OpDrain, Timeout: -1}, 1},
		{"command get serving state", &Command{ID: 6, Op: OpGetServingState, Manager: "m"}, 1},
		{"command give back", &Command{ID: 7, Op: OpGiveBack, TaskIDs: []TaskID{tid(4), tid(5)}}, 1},
		{"command reply", &CommandReply{ID: 1, Message: "Serving state forced to PUSH_PAUSED",
			Body: []byte(`{"state":"PUSH_PAUSED"}`)}, 1},
		{"command reply empty", &CommandReply{}, 1},
		{"ack empty", &Ack{}, 1},
		{"ack", &Ack{IDs: []TaskID{tid(1), tid(100), {}}}, 1},
		{"reregister", &Reregister{Reason: "unknown manager mgr-7"}, 1},
		{"reregister empty", &Reregister{}, 1},
		{"goodbye draining", &Goodbye{Reason: "SIGTERM", Returned: []TaskID{tid(1), tid(2)}}, 1},
		{"goodbye final", &Goodbye{Reason: "drained", Final: true}, 1},
		{"nack", &Nack{IDs: []TaskID{tid(3)}, Reason: "PUSH_PAUSED"}, 1},
		{"error reply", &ErrorReply{Code: CodeVersion, Reason: "unsupported protocol version: peer speaks 2"}, 1},
		{"error reply max code", &ErrorReply{Code: math.MaxUint16}, 1},
	}
}

func TestRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			frames := mustPack(t, tc.msg)
			if len(frames) != tc.frames {
				t.Fatalf("Pack gave %d frames, want %d", len(frames), tc.frames)
			}
			if frames[0][0] != Version || Type(frames[0][1]) != tc.msg.Type() {
				t.Fatalf("frame starts % x, want version %d type %d", frames[0][:2], Version, tc.msg.Type())
			}
			got, err := Unpack(frames)
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if !reflect.DeepEqual(got, tc.msg) {
				t.Fatalf("round trip changed the message\n got %#v\nwant %#v", got, tc.msg)
			}
			// Packing what was decoded gives the same bytes.
			again := mustPack(t, got)
			if !reflect.DeepEqual(again, frames) {
				t.Fatalf("re-pack differs\n got % x\nwant % x", again, frames)
			}
		})
		seen[tc.msg.Type()] = true
	}
	for typ := TypeInvalid + 1; typ < typeCount; typ++ {
		if !seen[typ] {
			t.Errorf("no round-trip case for %s", typ)
		}
	}
}

// A payload frame is handed out without copying and each payload is capped,
// so appending to one cannot overwrite the next.
func TestPayloadSlicesAreCapped(t *testing.T) {
	frames := mustPack(t, &TaskBatch{Tasks: []Task{
		{ID: tid(1), Payload: []byte("aaa")}, {ID: tid(2), Payload: []byte("bbb")},
	}})
	m, err := Unpack(frames)
	if err != nil {
		t.Fatal(err)
	}
	tb := m.(*TaskBatch)
	_ = append(tb.Tasks[0].Payload, 'X')
	if string(tb.Tasks[1].Payload) != "bbb" {
		t.Fatalf("second payload changed to %q", tb.Tasks[1].Payload)
	}
}

// Newer peers may append fields; they are skipped, even when nested.
func TestExtraFieldsSkipped(t *testing.T) {
	id := tid(1)
	cases := []struct {
		name   string
		frames [][]byte
		want   Message
	}{
		{"heartbeat with fields", [][]byte{hdr(t, TypeHeartbeat, []any{1, 2, "x", []any{[]any{}, map[string]any{"a": []any{1}}}})}, &Heartbeat{Interval: 1, Threshold: 2}},
		{"heartbeat with one unknown field", [][]byte{hdr(t, TypeHeartbeat, []any{"x"})}, &Heartbeat{}},
		{"heartbeat nil header", [][]byte{raw(TypeHeartbeat, 0xc0)}, &Heartbeat{}},
		{"heartbeat with bin, str and ext fields", [][]byte{raw(TypeHeartbeat, 0x97, 0x01, 0x02,
			0xc4, 0x02, 'a', 'b', // bin8
			0xa3, 'x', 'y', 'z', // fixstr
			0xd4, 0x01, 0x07, // fixext1
			0xc7, 0x02, 0x05, 'x', 'y', // ext8
			0xcb, 0, 0, 0, 0, 0, 0, 0, 0)}, &Heartbeat{Interval: 1, Threshold: 2}}, // float64
		{"heartbeat req extra", [][]byte{hdr(t, TypeHeartbeatReq, []any{7, nil, true, 1.5, []byte("z")})}, &HeartbeatReq{Nonce: 7}},
		{"reregister extra", [][]byte{hdr(t, TypeReregister, []any{"why", map[int]int{1: 2}})}, &Reregister{Reason: "why"}},
		{"task with extra field", [][]byte{hdr(t, TypeTaskBatch, []any{[]any{id[:], 1, 2, "alice", "later"}}), []byte("ab")},
			&TaskBatch{Tasks: []Task{{ID: id, Attempt: 1, Payload: []byte("ab"), Owner: "alice"}}}},
		{"task with nil owner", [][]byte{hdr(t, TypeTaskBatch, []any{[]any{id[:], 1, 0, nil}})},
			&TaskBatch{Tasks: []Task{{ID: id, Attempt: 1}}}},
		{"delta with extra field", [][]byte{hdr(t, TypeManagerStatusReport, []any{[]any{[]any{id[:], 3, 1, 9, 2, []any{}}}, 1, 1, 1, 1, 0, "new"})},
			&ManagerStatusReport{Deltas: []Delta{{ID: id, Code: Running, Attempt: 1, At: 9, Runs: 2}}, Workers: 1, IdleWorkers: 1, Capacity: 1, Outstanding: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Unpack(tc.frames)
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestUnpackErrors(t *testing.T) {
	id := tid(1)
	hb := mustPack(t, &Heartbeat{})[0]
	tb := mustPack(t, &TaskBatch{Tasks: []Task{{ID: id, Payload: []byte("abc")}}})
	big := make([]byte, 2+MaxHeaderBytes+1)
	big[0], big[1] = Version, byte(TypeHeartbeat)

	cases := []struct {
		name   string
		frames [][]byte
		want   error
	}{
		// ErrEmpty
		{"nil frames", nil, ErrEmpty},
		{"no frames", [][]byte{}, ErrEmpty},
		{"empty first frame", [][]byte{{}}, ErrEmpty},
		{"empty first frame with payload", [][]byte{{}, []byte("x")}, ErrEmpty},

		// ErrVersion
		{"version 0", [][]byte{{0, byte(TypeHeartbeat), 0x90}}, ErrVersion},
		{"version 2", [][]byte{{2, byte(TypeHeartbeat), 0x90}}, ErrVersion},
		{"version 255 alone", [][]byte{{255}}, ErrVersion},
		{"json instead", [][]byte{[]byte(`{"type":"heartbeat"}`)}, ErrVersion},

		// ErrUnknownType
		{"type 0", [][]byte{raw(TypeInvalid, 0x90)}, ErrUnknownType},
		{"type 200", [][]byte{raw(200, 0x90)}, ErrUnknownType},
		{"type after last", [][]byte{raw(typeCount, 0x90)}, ErrUnknownType},
		{"type 255 no header", [][]byte{{Version, 255}}, ErrUnknownType},

		// ErrTruncated (every prefix of every message is in TestTruncatedPrefixes)
		{"version only", [][]byte{{Version}}, ErrTruncated},
		{"no header", [][]byte{raw(TypeHeartbeat)}, ErrTruncated},
		{"array shorter than announced", [][]byte{raw(TypeHeartbeatReq, 0x92, 0x01)}, ErrTruncated},
		{"uint64 cut", [][]byte{raw(TypeHeartbeatReq, 0x91, 0xcf, 0, 0, 0)}, ErrTruncated},
		{"string cut", [][]byte{raw(TypeReregister, 0x91, 0xa5, 'a', 'b')}, ErrTruncated},
		{"task id cut", [][]byte{raw(TypeAck, 0x91, 0x91, 0xc4, 16, 1, 2, 3)}, ErrTruncated},
		{"items announced beyond header", [][]byte{raw(TypeAck, 0x91, 0xdc, 0x01, 0x00)}, ErrTruncated},
		{"bin16 announced beyond header", [][]byte{raw(TypeCommandReply, 0x94, 0x00, 0x00, 0xa0, 0xc5, 0x01, 0x00, 'x')}, ErrTruncated},
		{"str32 of 1MiB announced", [][]byte{raw(TypeReregister, 0x91, 0xdb, 0x00, 0x10, 0x00, 0x00, 'x')}, ErrTruncated},
		{"skipped array beyond header", [][]byte{raw(TypeHeartbeat, 0x91, 0xdd, 0x00, 0x01, 0x00, 0x00)}, ErrTruncated},
		{"skipped map beyond header", [][]byte{raw(TypeHeartbeat, 0x91, 0xdf, 0x00, 0x01, 0x00, 0x00)}, ErrTruncated},
		{"skipped string beyond header", [][]byte{raw(TypeHeartbeat, 0x91, 0xda, 0x01, 0x00)}, ErrTruncated},
		{"skipped bin beyond header", [][]byte{raw(TypeHeartbeat, 0x91, 0xc4, 0x05, 1, 2)}, ErrTruncated},
		{"skipped ext beyond header", [][]byte{raw(TypeHeartbeat, 0x91, 0xd8, 0x01, 1, 2)}, ErrTruncated},

		// ErrExtraFrames
		{"three frames", [][]byte{tb[0], tb[1], []byte("more")}, ErrExtraFrames},
		{"heartbeat with payload", [][]byte{hb, []byte("x")}, ErrExtraFrames},
		{"ack with payload", [][]byte{mustPack(t, &Ack{IDs: []TaskID{id}})[0], []byte("x")}, ErrExtraFrames},
		{"command with payload", [][]byte{mustPack(t, &Command{ID: 1, Op: OpDrain})[0], {}}, ErrExtraFrames},
		{"empty payload frame", [][]byte{tb[0], {}}, ErrExtraFrames},
		{"empty result payload frame", [][]byte{mustPack(t, &ResultBatch{})[0], {}}, ErrExtraFrames},

		// ErrOversized
		{"header over limit", [][]byte{big}, ErrOversized},
		{"ack over MaxItems", [][]byte{raw(TypeAck, 0x91, 0xdd, 0x00, 0x10, 0x00, 0x01)}, ErrOversized},
		{"task batch over MaxItems", [][]byte{raw(TypeTaskBatch, 0xdd, 0xff, 0xff, 0xff, 0xff)}, ErrOversized},
		{"fields over MaxItems", [][]byte{raw(TypeHeartbeat, 0xdd, 0x00, 0x10, 0x00, 0x01)}, ErrOversized},
		{"skipped array over MaxItems", [][]byte{raw(TypeHeartbeat, 0x91, 0xdd, 0x00, 0x10, 0x00, 0x01)}, ErrOversized},
		{"string over MaxStringBytes", [][]byte{raw(TypeReregister, 0x91, 0xdb, 0x00, 0x10, 0x00, 0x01)}, ErrOversized},
		{"bin32 of 2GiB announced", [][]byte{raw(TypeCommandReply, 0x94, 0x00, 0x00, 0xa0, 0xc6, 0x7f, 0xff, 0xff, 0xff)}, ErrOversized},

		// ErrMalformed
		{"trailing bytes", [][]byte{append(append([]byte{}, hb...), 0x00)}, ErrMalformed},
		{"two headers", [][]byte{hdr(t, TypeHeartbeatReq, []any{1}, []any{2})}, ErrMalformed},
		{"not an array", [][]byte{raw(TypeHeartbeat, 0x01)}, ErrMalformed},
		{"reserved code", [][]byte{raw(TypeHeartbeat, 0xc1)}, ErrMalformed},
		{"too few fields", [][]byte{hdr(t, TypeHeartbeatReq, []any{})}, ErrMalformed},
		{"too few fields in registration", [][]byte{hdr(t, TypeRegistration, []any{1, "m", "h", 1, 1, 1, "v"})}, ErrMalformed},
		{"nil where fields are needed", [][]byte{raw(TypeHeartbeatReq, 0xc0)}, ErrMalformed},
		{"string where uint wanted", [][]byte{hdr(t, TypeHeartbeatReq, []any{"7"})}, ErrMalformed},
		{"bool where uint wanted", [][]byte{hdr(t, TypeCommandReply, []any{1, true, "", nil})}, ErrMalformed},
		{"serving state out of range", [][]byte{hdr(t, TypeCommand, []any{1, 1, 7, 0, false, "", nil, false})}, ErrMalformed},
		{"id of 15 bytes", [][]byte{hdr(t, TypeAck, []any{[]any{make([]byte, 15)}})}, ErrMalformed},
		{"id of 17 bytes", [][]byte{hdr(t, TypeAck, []any{[]any{make([]byte, 17)}})}, ErrMalformed},
		// an extra field pads the header so the item-count check passes
		{"nil id", [][]byte{hdr(t, TypeAck, []any{[]any{nil}, strings.Repeat("p", 20)})}, ErrMalformed},
		{"id as integer", [][]byte{hdr(t, TypeAck, []any{[]any{1}, strings.Repeat("p", 20)})}, ErrMalformed},
		{"id as array", [][]byte{hdr(t, TypeAck, []any{[]any{[]any{1, 2}}, strings.Repeat("p", 20)})}, ErrMalformed},
		{"result code running", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, uint8(Running), "", 0, 0, 0}})}, ErrMalformed},
		{"result code none", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, uint8(CodeNone), "", 0, 0, 0}})}, ErrMalformed},
		{"result code 7", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, 7, "", 0, 0, 0}})}, ErrMalformed},
		{"result code over 8 bits", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, 260, "", 0, 0, 0}})}, ErrMalformed},
		{"delta code none", [][]byte{hdr(t, TypeEPStatusReport, []any{[]any{[]any{id[:], 0, 1, 0}}, 0, 0, 0, 0, 0, 0})}, ErrMalformed},
		{"delta code 7", [][]byte{hdr(t, TypeEPStatusReport, []any{[]any{[]any{id[:], 7, 1, 0}}, 0, 0, 0, 0, 0, 0})}, ErrMalformed},
		{"serving state 3 in manager report", [][]byte{hdr(t, TypeManagerStatusReport, []any{nil, 0, 0, 0, 0, 3})}, ErrMalformed},
		{"serving state 255 in ep report", [][]byte{hdr(t, TypeEPStatusReport, []any{[]any{}, 0, 0, 0, 0, 0, 255})}, ErrMalformed},
		{"role 0", [][]byte{hdr(t, TypeRegistration, []any{0, "m", "h", 1, 1, 1, "v", ""})}, ErrMalformed},
		{"role 3", [][]byte{hdr(t, TypeRegistration, []any{3, "m", "h", 1, 1, 1, "v", ""})}, ErrMalformed},
		{"role over 8 bits", [][]byte{hdr(t, TypeRegistration, []any{257, "m", "h", 1, 1, 1, "v", ""})}, ErrMalformed},
		{"workers over 32 bits", [][]byte{hdr(t, TypeRegistration, []any{1, "m", "h", uint64(1) << 32, 1, 1, "v", ""})}, ErrMalformed},
		{"negative workers", [][]byte{hdr(t, TypeRegistration, []any{1, "m", "h", -1, 1, 1, "v", ""})}, ErrMalformed},
		{"error code over 16 bits", [][]byte{hdr(t, TypeErrorReply, []any{1 << 16, "x"})}, ErrMalformed},
		{"command op over 8 bits", [][]byte{hdr(t, TypeCommand, []any{1, 256, 0, 0, false, "", nil, false})}, ErrMalformed},

		// ErrPayload
		{"payload longer than header says", [][]byte{tb[0], []byte("abcd")}, ErrPayload},
		{"payload shorter than header says", [][]byte{tb[0], []byte("ab")}, ErrPayload},
		{"payload frame missing", [][]byte{tb[0]}, ErrPayload},
		{"payload for an empty batch", [][]byte{mustPack(t, &TaskBatch{})[0], []byte("x")}, ErrPayload},
		{"payload for tasks without payloads", [][]byte{mustPack(t, &TaskBatch{Tasks: []Task{{ID: id}}})[0], []byte("x")}, ErrPayload},
		{"result payload longer", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, uint8(Success), "", 0, 0, 2}}), []byte("abc")}, ErrPayload},
		{"result payload shorter", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, uint8(Success), "", 0, 0, 4}}), []byte("abc")}, ErrPayload},
		{"result payload length max uint32", [][]byte{hdr(t, TypeResultBatch, []any{[]any{id[:], 1, uint8(Success), "", 0, 0, uint32(math.MaxUint32)}}), []byte("abc")}, ErrPayload},
	}
	sentinels := []error{ErrEmpty, ErrVersion, ErrUnknownType, ErrTruncated, ErrExtraFrames, ErrOversized, ErrMalformed, ErrPayload}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Unpack(tc.frames)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unpack = %v, %v; want %v", m, err, tc.want)
			}
			if m != nil {
				t.Fatalf("Unpack returned a message with error: %#v", m)
			}
			for _, s := range sentinels {
				if s != tc.want && errors.Is(err, s) {
					t.Fatalf("error %v also matches %v", err, s)
				}
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Detail == "" {
				t.Fatalf("error %v is not a *DecodeError with detail", err)
			}
		})
	}
}

// Every strict prefix of a header is an incomplete msgpack value.
func TestTruncatedPrefixes(t *testing.T) {
	for _, tc := range roundTripCases() {
		frames := mustPack(t, tc.msg)
		f0 := frames[0]
		t.Run(tc.name, func(t *testing.T) {
			for cut := 1; cut < len(f0); cut++ {
				in := [][]byte{f0[:cut]}
				in = append(in, frames[1:]...)
				_, err := Unpack(in)
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("cut at %d of %d: got %v, want ErrTruncated", cut, len(f0), err)
				}
			}
		})
	}
}

// Regression: msgpack's Skip recursed once per nesting level, so a header
// of 16 MiB of 0x91 bytes overflowed the goroutine stack (a fatal error,
// not a panic). Skipping is now iterative.
func TestDeeplyNestedExtraFields(t *testing.T) {
	depth := MaxHeaderBytes - 1
	if testing.Short() {
		depth = 1 << 16
	}
	f := make([]byte, 2, depth+3)
	f[0], f[1] = Version, byte(TypeHeartbeat)
	f = append(f, bytes.Repeat([]byte{0x91}, depth)...)
	f = append(f, 0x90)
	m, err := Unpack([][]byte{f})
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if _, ok := m.(*Heartbeat); !ok {
		t.Fatalf("got %T", m)
	}
	// The same, cut short.
	if _, err := Unpack([][]byte{f[:len(f)-1]}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("cut: got %v, want ErrTruncated", err)
	}
}

// Regression: a forged bin32 length made msgpack allocate it before reading.
func TestForgedLengthDoesNotAllocate(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
	}{
		{"bin32 body", raw(TypeCommandReply, 0x94, 0x00, 0x00, 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff)},
		{"str32 reason", raw(TypeReregister, 0x91, 0xdb, 0x00, 0x0f, 0xff, 0xff)},
		{"bin32 task id", raw(TypeAck, 0x91, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"skipped bin32", raw(TypeHeartbeat, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff)},
		{"skipped ext32", raw(TypeHeartbeat, 0x91, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Unpack([][]byte{tc.frame})
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("Unpack accepted a forged length")
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 2<<20 {
				t.Fatalf("Unpack allocated %d bytes for a %d-byte frame (%v)", n, len(tc.frame), err)
			}
		})
	}
}

func TestPackOversized(t *testing.T) {
	cases := []struct {
		name string
		msg  Message
	}{
		{"command reply body", &CommandReply{Body: make([]byte, MaxHeaderBytes)}},
		{"ack ids", &Ack{IDs: make([]TaskID, MaxHeaderBytes/18+1)}},
		// Pack refuses what every decoder would refuse.
		{"reregister reason", &Reregister{Reason: strings.Repeat("x", MaxStringBytes+1)}},
		{"result error", &ResultBatch{Results: []Result{{Code: Failed, Error: strings.Repeat("x", MaxStringBytes+1)}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.msg.Pack(); !errors.Is(err, ErrOversized) {
				t.Fatalf("Pack error %v, want ErrOversized", err)
			}
		})
	}
	// The pooled writer is fine afterwards.
	frames := mustPack(t, &Heartbeat{})
	if !bytes.Equal(frames[0], []byte{Version, byte(TypeHeartbeat), 0x90}) {
		t.Fatalf("heartbeat after oversize = % x", frames[0])
	}
}

func TestTaskID(t *testing.T) {
	t.Run("round trip", func(t *testing.T) {
		for _, id := range []TaskID{{}, tid(0), tid(0xf0), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
			s := id.String()
			if len(s) != 36 || s != strings.ToLower(s) {
				t.Fatalf("String() = %q", s)
			}
			got, err := ParseTaskID(s)
			if err != nil || got != id {
				t.Fatalf("ParseTaskID(%q) = %v, %v; want %v", s, got, err, id)
			}
		}
	})
	t.Run("known value", func(t *testing.T) {
		const s = "5f0c1e2a-0b1c-4d2e-8f90-123456789abc"
		id, err := ParseTaskID(s)
		if err != nil {
			t.Fatal(err)
		}
		want := TaskID{0x5f, 0x0c, 0x1e, 0x2a, 0x0b, 0x1c, 0x4d, 0x2e, 0x8f, 0x90, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}
		if id != want || id.String() != s {
			t.Fatalf("got %x / %s", id[:], id)
		}
		upper, err := ParseTaskID(strings.ToUpper(s))
		if err != nil || upper != want {
			t.Fatalf("upper case: %v, %v", upper, err)
		}
	})
	t.Run("json", func(t *testing.T) {
		in := struct{ ID TaskID }{tid(7)}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"ID":"%s"}`, tid(7)); string(b) != want {
			t.Fatalf("json %s, want %s", b, want)
		}
		var out struct{ ID TaskID }
		if err := json.Unmarshal(b, &out); err != nil || out != in {
			t.Fatalf("unmarshal: %v, %v", out, err)
		}
		if err := json.Unmarshal([]byte(`{"ID":"nope"}`), &out); err == nil {
			t.Fatal("bad id accepted from JSON")
		}
	})
	bad := []struct{ name, in string }{
		{"empty", ""},
		{"compact", "5f0c1e2a0b1c4d2e8f90123456789abc"},
		{"short", "5f0c1e2a-0b1c-4d2e-8f90-123456789ab"},
		{"long", "5f0c1e2a-0b1c-4d2e-8f90-123456789abcd"},
		{"braces", "{5f0c1e2a-0b1c-4d2e-8f90-123456789a}"},
		{"non-hex", "5f0c1e2a-0b1c-4d2e-8f90-123456789abg"},
		{"dash moved", "5f0c1e2a0-b1c-4d2e-8f90-123456789abc"},
		{"dashes only", "--------------------------------------"[:36]},
		{"spaces", " 5f0c1e2a-0b1c-4d2e-8f90-123456789ab"},
		{"urn", "urn:uuid:5f0c1e2a-0b1c-4d2e-8f90-1234"},
		{"unicode", "5f0c1e2a-0b1c-4d2e-8f90-123456789aé"},
	}
	for _, tc := range bad {
		t.Run("bad "+tc.name, func(t *testing.T) {
			id, err := ParseTaskID(tc.in)
			if err == nil {
				t.Fatalf("ParseTaskID(%q) = %v, want error", tc.in, id)
			}
			if !strings.Contains(err.Error(), "UUID") {
				t.Fatalf("error %q does not say what is legal", err)
			}
		})
	}
}

func TestParseServingState(t *testing.T) {
	cases := []struct {
		in   string
		want ServingState
		ok   bool
	}{
		{"NONE_PAUSED", NonePaused, true},
		{"PUSH_PAUSED", PushPaused, true},
		{"PUSH_AND_DISPATCH_PAUSED", PushAndDispatchPaused, true},
		{"PUSH_AND_REPLICATE_PAUSED", PushAndDispatchPaused, true},
		{"push_paused", PushPaused, true},
		{"  None_Paused\n", NonePaused, true},
		{"", 0, false},
		{"INVALID", 0, false},
		{"PAUSED", 0, false},
		{"0", 0, false},
		{"PUSH PAUSED", 0, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := ParseServingState(tc.in)
			if tc.ok {
				if err != nil || got != tc.want {
					t.Fatalf("got %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %v, want error", got)
			}
			want := fmt.Sprintf("Invalid state '%s'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED", tc.in)
			if err.Error() != want {
				t.Fatalf("error %q, want %q", err, want)
			}
		})
	}
	t.Run("names and numbers", func(t *testing.T) {
		for s, name := range map[ServingState]string{NonePaused: "NONE_PAUSED", PushPaused: "PUSH_PAUSED", PushAndDispatchPaused: "PUSH_AND_DISPATCH_PAUSED"} {
			if s.String() != name || !s.Valid() {
				t.Errorf("%d: String %q Valid %v", uint8(s), s, s.Valid())
			}
			b, _ := s.MarshalText()
			var back ServingState
			if err := back.UnmarshalText(b); err != nil || back != s {
				t.Errorf("text round trip of %s: %v, %v", s, back, err)
			}
		}
		if NonePaused != 0 || PushPaused != 1 || PushAndDispatchPaused != 2 {
			t.Fatal("serving state numbers are part of the wire protocol")
		}
		if ServingState(3).Valid() || ServingState(3).String() != "ServingState(3)" {
			t.Fatalf("ServingState(3): %v %q", ServingState(3).Valid(), ServingState(3))
		}
		var s ServingState
		if err := s.UnmarshalText([]byte("bogus")); err == nil {
			t.Fatal("UnmarshalText accepted bogus")
		}
	})
	t.Run("push and dispatch", func(t *testing.T) {
		for _, tc := range []struct {
			s              ServingState
			push, dispatch bool
		}{{NonePaused, true, true}, {PushPaused, false, true}, {PushAndDispatchPaused, false, false}} {
			if tc.s.PushAllowed() != tc.push || tc.s.DispatchAllowed() != tc.dispatch {
				t.Errorf("%s: push %v dispatch %v", tc.s, tc.s.PushAllowed(), tc.s.DispatchAllowed())
			}
		}
	})
}

func TestCodeForAndReplyFor(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want ErrorCode
	}{
		{"nil", nil, CodeUnknown},
		{"version", derr(ErrVersion, "x"), CodeVersion},
		{"unknown type", derr(ErrUnknownType, "x"), CodeUnknownType},
		{"oversized", derr(ErrOversized, "x"), CodeOversized},
		{"empty", derr(ErrEmpty, "x"), CodeMalformed},
		{"truncated", derr(ErrTruncated, "x"), CodeMalformed},
		{"extra frames", derr(ErrExtraFrames, "x"), CodeMalformed},
		{"malformed", derr(ErrMalformed, "x"), CodeMalformed},
		{"payload", derr(ErrPayload, "x"), CodeMalformed},
		{"bare sentinel", ErrVersion, CodeVersion},
		{"wrapped", fmt.Errorf("from peer mgr-1: %w", derr(ErrOversized, "x")), CodeOversized},
		{"foreign error", errors.New("boom"), CodeMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CodeFor(tc.err); got != tc.want {
				t.Fatalf("CodeFor = %s, want %s", got, tc.want)
			}
			if tc.err == nil {
				return
			}
			r := ReplyFor(tc.err)
			if r.Code != tc.want || r.Reason != tc.err.Error() {
				t.Fatalf("ReplyFor = %+v", r)
			}
			got, err := Unpack(mustPack(t, r))
			if err != nil || !reflect.DeepEqual(got, r) {
				t.Fatalf("reply round trip: %#v, %v", got, err)
			}
		})
	}
	t.Run("from real decode errors", func(t *testing.T) {
		for frame, want := range map[string]ErrorCode{
			"\x02\x02\x90": CodeVersion,
			"\x01\xc8\x90": CodeUnknownType,
			"\x01\x02":     CodeMalformed,
			"\x01\x02\x01": CodeMalformed,
		} {
			_, err := Unpack([][]byte{[]byte(frame)})
			if r := ReplyFor(err); r.Code != want || !strings.Contains(r.Reason, err.Error()) {
				t.Errorf("% x: reply %+v, want code %s", frame, r, want)
			}
		}
	})
	t.Run("code names", func(t *testing.T) {
		for code, name := range map[ErrorCode]string{CodeUnknown: "unknown", CodeVersion: "version",
			CodeUnknownType: "unknown-type", CodeMalformed: "malformed", CodeOversized: "oversized",
			CodeNotRegistered: "not-registered", CodeRefused: "refused", 99: "code(99)"} {
			if code.String() != name {
				t.Errorf("%d: %q, want %q", uint16(code), code, name)
			}
		}
	})
}

func TestEnumNames(t *testing.T) {
	want := []string{"Invalid", "Registration", "Heartbeat", "HeartbeatReq", "HeartbeatResp",
		"TaskBatch", "ResultBatch", "ManagerStatusReport", "EPStatusReport", "Command", "CommandReply",
		"Ack", "Reregister", "ErrorReply"}
	for k, name := range want {
		if got := Type(k).String(); got != name {
			t.Errorf("Type(%d) = %q, want %q", k, got, name)
		}
	}
	if Type(200).String() != "Type(200)" {
		t.Errorf("Type(200) = %q", Type(200))
	}
	for v, name := range map[fmt.Stringer]string{RoleManager: "manager", RoleInterchange: "interchange",
		Role(0): "role(0)", OpSetServingState: "set-serving-state", OpCancel: "cancel", OpDrain: "drain",
		CommandOp(4): "op(4)", OpGetServingState: "get-serving-state", CommandOp(0): "op(0)"} {
		if v.String() != name {
			t.Errorf("%#v = %q, want %q", v, v, name)
		}
	}
}

// The examples in docs/protocol.md are these bytes.
func TestProtocolExamples(t *testing.T) {
	id, err := ParseTaskID("5f0c1e2a-0b1c-4d2e-8f90-123456789abc")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		msg    Message
		frames []string
	}{
		{"heartbeat", &Heartbeat{}, []string{"01 02 90"}},
		{"one-task batch", &TaskBatch{Tasks: []Task{{ID: id, Attempt: 1, Payload: []byte(`{"kind":"noop"}`)}}}, []string{
			"01 05 91 93 c4 10 5f 0c 1e 2a 0b 1c 4d 2e 8f 90 12 34 56 78 9a bc 01 0f",
			"7b 22 6b 69 6e 64 22 3a 22 6e 6f 6f 70 22 7d",
		}},
		{"registration", &Registration{Role: RoleManager, ID: "mgr-1", Hostname: "node042", Workers: 8,
			ProtocolVersion: 1, SoftwareVersion: "0.1.0"}, []string{
			"01 01 98 01 a5 6d 67 72 2d 31 a7 6e 6f 64 65 30 34 32 08 00 01 a5 30 2e 31 2e 30 a0",
		}},
		{"ack", &Ack{IDs: []TaskID{id}}, []string{"01 0b 91 91 c4 10 5f 0c 1e 2a 0b 1c 4d 2e 8f 90 12 34 56 78 9a bc"}},
		{"version refusal", ReplyFor(derr(ErrVersion, "x")), []string{"01 0d 92 01"}},
	}
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatalf("read the protocol document: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frames := mustPack(t, tc.msg)
			if len(frames) != len(tc.frames) {
				t.Fatalf("%d frames, want %d", len(frames), len(tc.frames))
			}
			for k, want := range tc.frames {
				got := strings.TrimSpace(fmt.Sprintf("% x", frames[k]))
				if !strings.HasPrefix(got, want) {
					t.Fatalf("frame %d\n got %s\nwant %s", k, got, want)
				}
				if !bytes.Contains(doc, []byte(want)) {
					t.Errorf("docs/protocol.md does not show %q", want)
				}
			}
		})
	}
}

// A batch's repeated owner decodes to one string, and the owner is written
// as the msgpack library writes a str.
func TestTaskOwners(t *testing.T) {
	tasks := []Task{{ID: tid(1), Owner: "alice"}, {ID: tid(2), Owner: "alice"}, {ID: tid(3)}, {ID: tid(4), Owner: "alice"}}
	m, err := Unpack(mustPack(t, &TaskBatch{Tasks: tasks}))
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*TaskBatch).Tasks
	if got[0].Owner != "alice" || got[2].Owner != "" || unsafe.StringData(got[0].Owner) != unsafe.StringData(got[1].Owner) ||
		unsafe.StringData(got[0].Owner) != unsafe.StringData(got[3].Owner) {
		t.Fatalf("owners %q, %q, %q, %q not shared", got[0].Owner, got[1].Owner, got[2].Owner, got[3].Owner)
	}
	for _, n := range []int{0, 1, 31, 32, 255, 256, 1<<16 - 1, 1 << 16} {
		owner := strings.Repeat("u", n)
		frames := mustPack(t, &TaskBatch{Tasks: []Task{{ID: tid(1), Owner: owner}}})
		fields := 4
		if n == 0 {
			fields = 3
		}
		id := tid(1)
		want := hdr(t, TypeTaskBatch, []any{[]any{id[:], 0, 0, owner}[:fields]})
		if !bytes.Equal(frames[0], want) {
			t.Fatalf("owner of %d bytes:\n got % x\nwant % x", n, frames[0][:min(40, len(frames[0]))], want[:min(40, len(want))])
		}
	}
	if _, err := (&TaskBatch{Tasks: []Task{{Owner: strings.Repeat("x", MaxStringBytes+1)}}}).Pack(); !errors.Is(err, ErrOversized) {
		t.Fatalf("owner over the limit: %v", err)
	}
}

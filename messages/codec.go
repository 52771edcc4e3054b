package messages

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Frame layout: frame 0 = [Version, Type, msgpack header...]; TaskBatch and
// ResultBatch may add one last frame holding every item's payload back to
// back, in item order, with each item's length in the header.

type writer struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
	err error
}

var writers = sync.Pool{New: func() any {
	w := &writer{}
	w.enc = msgpack.NewEncoder(&w.buf)
	return w
}}

func getWriter(t Type, sizeHint int) *writer {
	w := writers.Get().(*writer)
	w.buf.Reset()
	w.buf.Grow(sizeHint + 2)
	w.buf.WriteByte(Version)
	w.buf.WriteByte(byte(t))
	w.err = nil
	return w
}

// finish copies the frame out so the pooled buffer can be reused.
func (w *writer) finish() ([]byte, error) {
	err := w.err
	var out []byte
	if err == nil {
		if w.buf.Len()-2 > MaxHeaderBytes {
			err = derr(ErrOversized, "header of %d bytes", w.buf.Len()-2)
		} else {
			out = make([]byte, w.buf.Len())
			copy(out, w.buf.Bytes())
		}
	}
	if w.buf.Cap() <= 1<<20 {
		writers.Put(w)
	}
	return out, err
}

func (w *writer) set(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}
func (w *writer) arr(n int)  { w.set(w.enc.EncodeArrayLen(n)) }
func (w *writer) u(v uint64) { w.set(w.enc.EncodeUint(v)) }
func (w *writer) i(v int64)  { w.set(w.enc.EncodeInt(v)) }
func (w *writer) s(v string) {
	if len(v) > MaxStringBytes { // the peer would refuse the whole message
		w.set(derr(ErrOversized, "string of %d bytes (limit %d)", len(v), MaxStringBytes))
		return
	}
	w.set(w.enc.EncodeString(v))
}

// str writes a msgpack str as EncodeString does, without its calls
// through io.Writer: an owner is in every task of a batch.
func (w *writer) str(v string) {
	n := len(v)
	switch {
	case n > MaxStringBytes:
		w.set(derr(ErrOversized, "string of %d bytes (limit %d)", n, MaxStringBytes))
		return
	case n < 32:
		w.buf.WriteByte(msgpcode.FixedStrLow | byte(n))
	case n < 1<<8:
		w.buf.Write([]byte{msgpcode.Str8, byte(n)})
	case n < 1<<16:
		w.buf.Write([]byte{msgpcode.Str16, byte(n >> 8), byte(n)})
	default:
		w.buf.Write([]byte{msgpcode.Str32, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	w.buf.WriteString(v)
}

func (w *writer) b(v bool)     { w.set(w.enc.EncodeBool(v)) }
func (w *writer) bin(v []byte) { w.set(w.enc.EncodeBytes(v)) }

// id writes bin8 of 16 bytes, as EncodeBytes does, without its calls
// through io.Writer: ids are most of a busy header.
func (w *writer) id(v *TaskID) {
	w.buf.Write([]byte{msgpcode.Bin8, byte(len(v))})
	w.buf.Write(v[:])
}
func (w *writer) ids(v []TaskID) {
	w.arr(len(v))
	for k := range v {
		w.id(&v[k])
	}
}

type reader struct {
	rd  bytes.Reader
	dec *msgpack.Decoder
	err error
	tmp []byte // scratch for strings, at most MaxStringBytes
	hdr []byte // what rd reads
}

var readers = sync.Pool{New: func() any {
	r := &reader{}
	r.dec = msgpack.NewDecoder(&r.rd)
	return r
}}

func (r *reader) fail(err error) {
	if err == nil || r.err != nil {
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		r.err = derr(ErrTruncated, "header ends early")
		return
	}
	var de *DecodeError
	if errors.As(err, &de) {
		r.err = err
		return
	}
	r.err = derr(ErrMalformed, "%v", err)
}

// arr reads an array length and checks it against the bytes left, so a
// forged length cannot make us allocate.
func (r *reader) arr(minItemBytes int) int {
	if r.err != nil {
		return 0
	}
	n, err := r.dec.DecodeArrayLen()
	if err != nil {
		r.fail(err)
		return 0
	}
	if n < 0 {
		return 0
	}
	if n > MaxItems {
		r.err = derr(ErrOversized, "%d items (limit %d)", n, MaxItems)
		return 0
	}
	if n*minItemBytes > r.rd.Len() {
		r.err = derr(ErrTruncated, "%d items announced, %d bytes left", n, r.rd.Len())
		return 0
	}
	return n
}

// fields reads a struct's array header; a newer peer may append fields,
// which are skipped, but fewer than want is malformed.
func (r *reader) fields(want int) int {
	n := r.arr(1)
	if r.err == nil && n < want {
		r.err = derr(ErrMalformed, "%d fields, need %d", n, want)
	}
	return n
}

func (r *reader) skip(n, want int) {
	if n > want {
		r.skipValues(n - want)
	}
}

// skipValues skips n values without recursion: msgpack's own Skip recurses
// once per nesting level, so a deeply nested header would overflow the stack.
func (r *reader) skipValues(n int) {
	for pending := n; pending > 0 && r.err == nil; pending-- {
		c, err := r.dec.PeekCode()
		if err != nil {
			r.fail(err)
			return
		}
		var n, per, blob int
		switch {
		case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
			n, err = r.dec.DecodeArrayLen()
			per = 1
		case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
			n, err = r.dec.DecodeMapLen()
			per = 2
		case msgpcode.IsString(c) || msgpcode.IsBin(c):
			blob, err = r.dec.DecodeBytesLen()
		case msgpcode.IsExt(c):
			_, blob, err = r.dec.DecodeExtHeader()
		default:
			err = r.dec.Skip() // a fixed-size scalar
		}
		if err != nil {
			r.fail(err)
			return
		}
		if blob > 0 {
			// skip in place: msgpack's Skip would read the bytes into a buffer
			if blob > r.rd.Len() {
				r.err = derr(ErrTruncated, "%d bytes to skip, %d bytes left", blob, r.rd.Len())
				return
			}
			if _, err := r.rd.Seek(int64(blob), io.SeekCurrent); err != nil {
				r.fail(err)
				return
			}
			continue
		}
		if n > MaxItems {
			r.err = derr(ErrOversized, "%d items (limit %d)", n, MaxItems)
			return
		}
		if n > 0 {
			// every value still to skip takes at least one byte
			if pending-1+n*per > r.rd.Len() {
				r.err = derr(ErrTruncated, "%d values to skip, %d bytes left", pending-1+n*per, r.rd.Len())
				return
			}
			pending += n * per
		}
	}
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := r.dec.DecodeUint64()
	r.fail(err)
	return v
}

func (r *reader) u32() uint32 {
	v := r.u64()
	if v > 1<<32-1 {
		r.fail(derr(ErrMalformed, "value %d over 32 bits", v))
		return 0
	}
	return uint32(v)
}

func (r *reader) u16() uint16 {
	v := r.u64()
	if v > 1<<16-1 {
		r.fail(derr(ErrMalformed, "value %d over 16 bits", v))
		return 0
	}
	return uint16(v)
}

func (r *reader) u8() uint8 {
	v := r.u64()
	if v > 255 {
		r.fail(derr(ErrMalformed, "value %d over 8 bits", v))
		return 0
	}
	return uint8(v)
}

func (r *reader) i64() int64 {
	if r.err != nil {
		return 0
	}
	v, err := r.dec.DecodeInt64()
	r.fail(err)
	return v
}

func (r *reader) b() bool {
	if r.err != nil {
		return false
	}
	v, err := r.dec.DecodeBool()
	r.fail(err)
	return v
}

// blobLen reads a str or bin length and checks it before anything is
// allocated: msgpack's DecodeBytes allocates whatever length it is told.
func (r *reader) blobLen(limit int) int {
	if r.err != nil {
		return 0
	}
	n, err := r.dec.DecodeBytesLen()
	if err != nil {
		r.fail(err)
		return 0
	}
	if n > limit {
		r.err = derr(ErrOversized, "string of %d bytes (limit %d)", n, limit)
		return 0
	}
	if n > r.rd.Len() {
		r.err = derr(ErrTruncated, "string of %d bytes, %d bytes left", n, r.rd.Len())
		return 0
	}
	return n
}

func (r *reader) s() string {
	n := r.blobLen(MaxStringBytes)
	if n <= 0 {
		return ""
	}
	if cap(r.tmp) < n {
		r.tmp = make([]byte, n)
	}
	b := r.tmp[:n]
	if err := r.dec.ReadFull(b); err != nil {
		r.fail(err)
		return ""
	}
	return string(b)
}

// sLike reads a string and returns prev itself when they are equal, so a
// batch's repeated owner costs one allocation, not one per task. It reads
// straight from the header (the decoder never reads ahead).
func (r *reader) sLike(prev string) string {
	if r.err != nil {
		return ""
	}
	// A short str's header is read here too, as id does for ids.
	at := len(r.hdr) - r.rd.Len()
	n, head := -1, 0
	if at < len(r.hdr) {
		switch c := r.hdr[at]; {
		case msgpcode.IsFixedString(c):
			n, head = int(c&msgpcode.FixedStrMask), 1
		case c == msgpcode.Str8 && at+1 < len(r.hdr):
			n, head = int(r.hdr[at+1]), 2
		}
	}
	if n < 0 || at+head+n > len(r.hdr) {
		if n = r.blobLen(MaxStringBytes); n <= 0 {
			return ""
		}
		at, head = len(r.hdr)-r.rd.Len(), 0
	}
	b := r.hdr[at+head : at+head+n]
	_, _ = r.rd.Seek(int64(head+n), io.SeekCurrent)
	if string(b) == prev {
		return prev
	}
	return string(b)
}

func (r *reader) bin() []byte {
	n := r.blobLen(MaxHeaderBytes)
	if n <= 0 {
		return nil
	}
	v := make([]byte, n)
	r.fail(r.dec.ReadFull(v))
	return v
}

func (r *reader) id(dst *TaskID) {
	if r.err != nil {
		return
	}
	// The usual bin8 of 16 bytes is copied straight from the header (the
	// decoder reads r.rd byte by byte, never ahead).
	if at := len(r.hdr) - r.rd.Len(); at+2+len(dst) <= len(r.hdr) && r.hdr[at] == msgpcode.Bin8 && int(r.hdr[at+1]) == len(dst) {
		copy(dst[:], r.hdr[at+2:])
		_, _ = r.rd.Seek(int64(2+len(dst)), io.SeekCurrent)
		return
	}
	n, err := r.dec.DecodeBytesLen()
	if err != nil {
		r.fail(err)
		return
	}
	if n != len(dst) {
		r.err = derr(ErrMalformed, "task id of %d bytes, want 16", n)
		return
	}
	r.fail(r.dec.ReadFull(dst[:]))
}

func (r *reader) ids() []TaskID {
	n := r.arr(17)
	if n == 0 {
		return nil
	}
	out := make([]TaskID, n)
	for k := range out {
		r.id(&out[k])
	}
	return out
}

// payloadSplitter hands out consecutive slices of the payload frame.
type payloadSplitter struct {
	frame []byte
	off   int
}

func (p *payloadSplitter) take(n uint32) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	end := p.off + int(n)
	if end > len(p.frame) || end < p.off {
		return nil, derr(ErrPayload, "payloads need more than the %d-byte payload frame", len(p.frame))
	}
	b := p.frame[p.off:end:end]
	p.off = end
	return b, nil
}

// Unpack reads one message from its frames (routing frames already removed).
func Unpack(frames [][]byte) (Message, error) {
	if len(frames) == 0 || len(frames[0]) == 0 {
		return nil, derr(ErrEmpty, "no frames")
	}
	f := frames[0]
	if f[0] != Version {
		return nil, derr(ErrVersion, "peer speaks version %d, this side speaks %d", f[0], Version)
	}
	if len(f) < 2 {
		return nil, derr(ErrTruncated, "no type byte")
	}
	t := Type(f[1])
	if t == TypeInvalid || t >= typeCount {
		return nil, derr(ErrUnknownType, "type byte %d", f[1])
	}
	if len(f)-2 > MaxHeaderBytes {
		return nil, derr(ErrOversized, "header of %d bytes (limit %d)", len(f)-2, MaxHeaderBytes)
	}
	var payload []byte
	switch {
	case len(frames) == 1:
	case len(frames) == 2 && (t == TypeTaskBatch || t == TypeResultBatch):
		payload = frames[1]
		if len(payload) == 0 {
			return nil, derr(ErrExtraFrames, "empty payload frame")
		}
	default:
		return nil, derr(ErrExtraFrames, "%s with %d frames", t, len(frames))
	}

	r := readers.Get().(*reader)
	r.rd.Reset(f[2:])
	r.hdr = f[2:]
	r.dec.Reset(&r.rd)
	r.err = nil
	m := decodeBody(t, r, payload)
	err := r.err
	if err == nil && r.rd.Len() != 0 {
		err = derr(ErrMalformed, "%d trailing header bytes", r.rd.Len())
	}
	r.rd.Reset(nil)
	r.hdr = nil
	readers.Put(r)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func decodeBody(t Type, r *reader, payload []byte) Message {
	switch t {
	case TypeRegistration:
		m := &Registration{}
		m.decode(r)
		return m
	case TypeHeartbeat:
		n := r.fields(0)
		m := &Heartbeat{}
		if n >= 2 {
			m.Interval, m.Threshold = r.i64(), r.i64()
			r.skip(n, 2)
			return m
		}
		r.skip(n, 0)
		return m
	case TypeHeartbeatReq:
		n := r.fields(1)
		m := &HeartbeatReq{Nonce: r.u64()}
		r.skip(n, 1)
		return m
	case TypeHeartbeatResp:
		n := r.fields(1)
		m := &HeartbeatResp{Nonce: r.u64()}
		r.skip(n, 1)
		return m
	case TypeTaskBatch:
		m := &TaskBatch{}
		m.decode(r, payload)
		return m
	case TypeResultBatch:
		m := &ResultBatch{}
		m.decode(r, payload)
		return m
	case TypeManagerStatusReport:
		m := &ManagerStatusReport{}
		m.decode(r)
		return m
	case TypeEPStatusReport:
		m := &EPStatusReport{}
		m.decode(r)
		return m
	case TypeCommand:
		m := &Command{}
		m.decode(r)
		return m
	case TypeCommandReply:
		n := r.fields(4)
		m := &CommandReply{ID: r.u64(), Code: ReplyCode(r.u8()), Message: r.s(), Body: r.bin()}
		r.skip(n, 4)
		return m
	case TypeAck:
		n := r.fields(1)
		m := &Ack{IDs: r.ids()}
		r.skip(n, 1)
		return m
	case TypeReregister:
		n := r.fields(1)
		m := &Reregister{Reason: r.s()}
		r.skip(n, 1)
		return m
	case TypeErrorReply:
		n := r.fields(2)
		m := &ErrorReply{Code: ErrorCode(r.u16()), Reason: r.s()}
		r.skip(n, 2)
		return m
	case TypeGoodbye:
		n := r.fields(3)
		m := &Goodbye{Reason: r.s(), Final: r.b(), Returned: r.ids()}
		r.skip(n, 3)
		return m
	case TypeNack:
		n := r.fields(2)
		m := &Nack{IDs: r.ids(), Reason: r.s()}
		r.skip(n, 2)
		return m
	}
	r.err = derr(ErrUnknownType, "type %s", t)
	return nil
}

// --- Registration

func (m *Registration) Pack() ([][]byte, error) {
	w := getWriter(TypeRegistration, 64+len(m.ID)+len(m.Hostname)+len(m.SoftwareVersion)+len(m.BlockID)+len(m.HTTPAddr))
	// Optional trailing fields, left out when unset, so older peers skip
	// them: 9 the metrics address, 10 the adaptive-prefetch flag (a
	// manager that predates it reads as explicit).
	n := 8
	switch {
	case m.AdaptivePrefetch:
		n = 10
	case m.HTTPAddr != "":
		n = 9
	}
	w.arr(n)
	w.u(uint64(m.Role))
	w.s(m.ID)
	w.s(m.Hostname)
	w.u(uint64(m.Workers))
	w.u(uint64(m.Prefetch))
	w.u(uint64(m.ProtocolVersion))
	w.s(m.SoftwareVersion)
	w.s(m.BlockID)
	if n >= 9 {
		w.s(m.HTTPAddr)
	}
	if n >= 10 {
		w.b(true)
	}
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Registration) decode(r *reader) {
	n := r.fields(8)
	m.Role = Role(r.u8())
	m.ID = r.s()
	m.Hostname = r.s()
	m.Workers = r.u32()
	m.Prefetch = r.u32()
	m.ProtocolVersion = r.u8()
	m.SoftwareVersion = r.s()
	m.BlockID = r.s()
	want := 8
	if n >= 9 {
		m.HTTPAddr = r.s()
		want = 9
	}
	if n >= 10 {
		m.AdaptivePrefetch = r.b()
		want = 10
	}
	if r.err == nil && m.Role != RoleManager && m.Role != RoleInterchange {
		r.err = derr(ErrMalformed, "unknown role %d", m.Role)
	}
	r.skip(n, want)
}

// --- small messages

func (m *Heartbeat) Pack() ([][]byte, error) {
	w := getWriter(TypeHeartbeat, 20)
	// The timing fields are left out when unset: a plain heartbeat stays
	// one empty array, as older peers send and expect it.
	if m.Interval == 0 && m.Threshold == 0 {
		w.arr(0)
	} else {
		w.arr(2)
		w.i(m.Interval)
		w.i(m.Threshold)
	}
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *HeartbeatReq) Pack() ([][]byte, error) {
	w := getWriter(TypeHeartbeatReq, 10)
	w.arr(1)
	w.u(m.Nonce)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *HeartbeatResp) Pack() ([][]byte, error) {
	w := getWriter(TypeHeartbeatResp, 10)
	w.arr(1)
	w.u(m.Nonce)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *CommandReply) Pack() ([][]byte, error) {
	w := getWriter(TypeCommandReply, 16+len(m.Message)+len(m.Body))
	w.arr(4)
	w.u(m.ID)
	w.u(uint64(m.Code))
	w.s(m.Message)
	w.bin(m.Body)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Ack) Pack() ([][]byte, error) {
	w := getWriter(TypeAck, 8+18*len(m.IDs))
	w.arr(1)
	w.ids(m.IDs)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Goodbye) Pack() ([][]byte, error) {
	w := getWriter(TypeGoodbye, 8+len(m.Reason)+18*len(m.Returned))
	w.arr(3)
	w.s(m.Reason)
	w.b(m.Final)
	w.ids(m.Returned)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Nack) Pack() ([][]byte, error) {
	w := getWriter(TypeNack, 8+len(m.Reason)+18*len(m.IDs))
	w.arr(2)
	w.ids(m.IDs)
	w.s(m.Reason)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Reregister) Pack() ([][]byte, error) {
	w := getWriter(TypeReregister, 4+len(m.Reason))
	w.arr(1)
	w.s(m.Reason)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *ErrorReply) Pack() ([][]byte, error) {
	w := getWriter(TypeErrorReply, 8+len(m.Reason))
	w.arr(2)
	w.u(uint64(m.Code))
	w.s(m.Reason)
	f, err := w.finish()
	return [][]byte{f}, err
}

// --- Command

func (m *Command) Pack() ([][]byte, error) {
	w := getWriter(TypeCommand, 48+len(m.Manager)+18*len(m.TaskIDs))
	w.arr(8)
	w.u(m.ID)
	w.u(uint64(m.Op))
	w.u(uint64(m.State))
	w.i(m.Timeout)
	w.b(m.Force)
	w.s(m.Manager)
	w.ids(m.TaskIDs)
	w.b(m.Clear)
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *Command) decode(r *reader) {
	n := r.fields(8)
	m.ID = r.u64()
	m.Op = CommandOp(r.u8())
	m.State = ServingState(r.u8())
	m.Timeout = r.i64()
	m.Force = r.b()
	m.Manager = r.s()
	m.TaskIDs = r.ids()
	m.Clear = r.b()
	if r.err == nil && !m.State.Valid() {
		r.err = derr(ErrMalformed, "serving state %d", m.State)
	}
	r.skip(n, 8)
}

// --- TaskBatch

func (m *TaskBatch) Pack() ([][]byte, error) {
	total, owners := 0, 0
	for k := range m.Tasks {
		total += len(m.Tasks[k].Payload)
		owners += len(m.Tasks[k].Owner)
	}
	w := getWriter(TypeTaskBatch, 5+32*len(m.Tasks)+owners)
	w.arr(len(m.Tasks))
	for k := range m.Tasks {
		t := &m.Tasks[k]
		// The owner is a fourth field, left out when empty: a peer that
		// predates it skips it, and an owner-less task reads as before.
		if t.Owner == "" {
			w.arr(3)
		} else {
			w.arr(4)
		}
		w.id(&t.ID)
		w.u(uint64(t.Attempt))
		w.u(uint64(len(t.Payload)))
		if t.Owner != "" {
			w.str(t.Owner)
		}
	}
	f, err := w.finish()
	if err != nil {
		return nil, err
	}
	if total == 0 {
		return [][]byte{f}, nil
	}
	body := make([]byte, 0, total)
	for k := range m.Tasks {
		body = append(body, m.Tasks[k].Payload...)
	}
	return [][]byte{f, body}, nil
}

func (m *TaskBatch) decode(r *reader, payload []byte) {
	n := r.arr(20)
	if n == 0 {
		checkPayloadUsed(r, payload, 0)
		return
	}
	m.Tasks = make([]Task, n)
	ps := payloadSplitter{frame: payload}
	owner := ""
	for k := range m.Tasks {
		t := &m.Tasks[k]
		nf := r.fields(3)
		r.id(&t.ID)
		t.Attempt = r.u32()
		plen := r.u32()
		if nf >= 4 {
			owner = r.sLike(owner)
			t.Owner = owner
			r.skip(nf, 4)
		}
		if r.err != nil {
			return
		}
		var err error
		if t.Payload, err = ps.take(plen); err != nil {
			r.err = err
			return
		}
	}
	checkPayloadUsed(r, payload, ps.off)
}

func checkPayloadUsed(r *reader, payload []byte, used int) {
	if r.err == nil && used != len(payload) {
		r.err = derr(ErrPayload, "header accounts for %d of %d payload bytes", used, len(payload))
	}
}

// --- ResultBatch

func (m *ResultBatch) Pack() ([][]byte, error) {
	total := 0
	for k := range m.Results {
		total += len(m.Results[k].Payload)
	}
	w := getWriter(TypeResultBatch, 5+48*len(m.Results))
	w.arr(len(m.Results))
	for k := range m.Results {
		x := &m.Results[k]
		// The 8th field, text, only when there is one (or runs follow):
		// peers that predate it skip it, and results without one stay as
		// they were. The 9th, runs, only when counted.
		switch {
		case x.Runs > 0:
			w.arr(9)
		case x.Text != "":
			w.arr(8)
		default:
			w.arr(7)
		}
		w.id(&x.ID)
		w.u(uint64(x.Attempt))
		w.u(uint64(x.Code))
		w.s(x.Error)
		w.i(x.Started)
		w.i(x.Finished)
		w.u(uint64(len(x.Payload)))
		if x.Text != "" || x.Runs > 0 {
			w.s(x.Text)
		}
		if x.Runs > 0 {
			w.u(uint64(x.Runs))
		}
	}
	f, err := w.finish()
	if err != nil {
		return nil, err
	}
	if total == 0 {
		return [][]byte{f}, nil
	}
	body := make([]byte, 0, total)
	for k := range m.Results {
		body = append(body, m.Results[k].Payload...)
	}
	return [][]byte{f, body}, nil
}

func (m *ResultBatch) decode(r *reader, payload []byte) {
	n := r.arr(24)
	if n == 0 {
		checkPayloadUsed(r, payload, 0)
		return
	}
	m.Results = make([]Result, n)
	ps := payloadSplitter{frame: payload}
	for k := range m.Results {
		x := &m.Results[k]
		nf := r.fields(7)
		r.id(&x.ID)
		x.Attempt = r.u32()
		x.Code = TaskStatusCode(r.u8())
		x.Error = r.s()
		x.Started = r.i64()
		x.Finished = r.i64()
		plen := r.u32()
		if nf >= 8 {
			x.Text = r.s()
		}
		if nf >= 9 {
			x.Runs = r.u32()
			r.skip(nf, 9)
		} else {
			r.skip(nf, 8)
		}
		if r.err != nil {
			return
		}
		if !x.Code.Terminal() {
			r.err = derr(ErrMalformed, "result with non-terminal code %d", x.Code)
			return
		}
		var err error
		if x.Payload, err = ps.take(plen); err != nil {
			r.err = err
			return
		}
	}
	checkPayloadUsed(r, payload, ps.off)
}

// --- status reports

func writeDeltas(w *writer, ds []Delta) {
	w.arr(len(ds))
	for k := range ds {
		d := &ds[k]
		if d.Runs > 0 {
			w.arr(5)
		} else {
			w.arr(4)
		}
		w.id(&d.ID)
		w.u(uint64(d.Code))
		w.u(uint64(d.Attempt))
		w.i(d.At)
		if d.Runs > 0 {
			w.u(uint64(d.Runs))
		}
	}
}

func readDeltas(r *reader) []Delta {
	n := r.arr(22)
	if n == 0 {
		return nil
	}
	out := make([]Delta, n)
	for k := range out {
		d := &out[k]
		nf := r.fields(4)
		r.id(&d.ID)
		d.Code = TaskStatusCode(r.u8())
		d.Attempt = r.u32()
		d.At = r.i64()
		if nf >= 5 {
			d.Runs = r.u32()
			r.skip(nf, 5)
		} else {
			r.skip(nf, 4)
		}
		if r.err != nil {
			return nil
		}
		if !d.Code.Valid() {
			r.err = derr(ErrMalformed, "delta with unknown code %d", d.Code)
			return nil
		}
	}
	return out
}

func (r *reader) serving() ServingState {
	s := ServingState(r.u8())
	if r.err == nil && !s.Valid() {
		r.err = derr(ErrMalformed, "unknown serving state %d", s)
	}
	return s
}

func (m *ManagerStatusReport) Pack() ([][]byte, error) {
	w := getWriter(TypeManagerStatusReport, 32+36*len(m.Deltas))
	w.arr(6)
	writeDeltas(w, m.Deltas)
	w.u(uint64(m.Workers))
	w.u(uint64(m.IdleWorkers))
	w.u(uint64(m.Capacity))
	w.u(uint64(m.Outstanding))
	w.u(uint64(m.ServingState))
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *ManagerStatusReport) decode(r *reader) {
	n := r.fields(6)
	m.Deltas = readDeltas(r)
	m.Workers = r.u32()
	m.IdleWorkers = r.u32()
	m.Capacity = r.u32()
	m.Outstanding = r.u32()
	m.ServingState = r.serving()
	r.skip(n, 6)
}

func (m *EPStatusReport) Pack() ([][]byte, error) {
	owners := 0
	for _, o := range m.QueuedByOwner {
		owners += len(o.Owner) + 8
	}
	w := getWriter(TypeEPStatusReport, 40+36*len(m.Deltas)+len(m.Blocks)+len(m.ManagerList)+owners)
	// Optional trailing fields: 8 blocks, 9 the manager list, 10 queued
	// tasks by owner; each present when it or a later one is.
	n := 7
	switch {
	case len(m.QueuedByOwner) > 0:
		n = 10
	case len(m.ManagerList) > 0:
		n = 9
	case len(m.Blocks) > 0:
		n = 8
	}
	w.arr(n)
	writeDeltas(w, m.Deltas)
	w.u(uint64(m.Managers))
	w.u(uint64(m.Workers))
	w.u(uint64(m.IdleWorkers))
	w.u(uint64(m.Queued))
	w.u(uint64(m.Outstanding))
	w.u(uint64(m.ServingState))
	if n >= 8 {
		w.bin(m.Blocks)
	}
	if n >= 9 {
		w.bin(m.ManagerList)
	}
	if n >= 10 {
		// Flat: owner, count, owner, count, ...
		w.arr(2 * len(m.QueuedByOwner))
		for _, o := range m.QueuedByOwner {
			w.s(o.Owner)
			w.u(uint64(o.N))
		}
	}
	f, err := w.finish()
	return [][]byte{f}, err
}

func (m *EPStatusReport) decode(r *reader) {
	n := r.fields(7)
	m.Deltas = readDeltas(r)
	m.Managers = r.u32()
	m.Workers = r.u32()
	m.IdleWorkers = r.u32()
	m.Queued = r.u32()
	m.Outstanding = r.u32()
	m.ServingState = r.serving()
	if n < 8 {
		return
	}
	m.Blocks = r.bin()
	if n < 9 {
		return
	}
	m.ManagerList = r.bin()
	if n < 10 {
		return
	}
	k := r.arr(1)
	if r.err == nil && k%2 != 0 {
		r.err = derr(ErrMalformed, "queued by owner has %d values, want pairs", k)
	}
	if r.err == nil && k > 0 {
		m.QueuedByOwner = make([]OwnerCount, 0, k/2)
		for i := 0; i < k/2 && r.err == nil; i++ {
			m.QueuedByOwner = append(m.QueuedByOwner, OwnerCount{Owner: r.s(), N: r.u32()})
		}
	}
	r.skip(n, 10)
}

// ReplyFor builds the refusal sent to a peer whose message failed to decode.
func ReplyFor(err error) *ErrorReply {
	return &ErrorReply{Code: CodeFor(err), Reason: err.Error()}
}

package taskspec

import (
	"bytes"
	"encoding/json"
	"testing"
)

func generalEncode(s Spec) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// The python fast path writes exactly what encoding/json writes.
func TestEncodePythonMatchesJSON(t *testing.T) {
	for _, s := range []Spec{
		{Kind: KindPython, Payload: []byte{0x80, 5, 0, '"', '\\', 0xff}},
		{Kind: KindPython, Payload: bytes.Repeat([]byte{1, 2, 3}, 1000), Timeout: "1m30s"},
		{Kind: KindPython, Payload: []byte("x"), Timeout: "500µs"}, // not plain ASCII: general path
	} {
		if got, want := s.Encode(), generalEncode(s); !bytes.Equal(got, want) {
			t.Errorf("Encode(%+v)\n got %s\nwant %s", s, got, want)
		}
	}
}

func checkFastPath(t *testing.T, raw []byte) {
	fast, ok := decodePython(raw)
	if !ok {
		return
	}
	var slow Spec
	if err := json.Unmarshal(raw, &slow); err != nil {
		t.Fatalf("fast path took %q, which is not a JSON spec: %v", raw, err)
	}
	if fast.Kind != slow.Kind || fast.Timeout != slow.Timeout || !bytes.Equal(fast.Payload, slow.Payload) || len(slow.Args) != 0 {
		t.Fatalf("%q: fast path read %+v, encoding/json %+v", raw, fast, slow)
	}
	if _, err := Parse(raw); err != nil && bytes.Contains([]byte(err.Error()), []byte("payload")) {
		t.Fatalf("%q: fast path decoded a payload that Parse refuses: %v", raw, err)
	}
}

func TestDecodePythonAgreesWithJSON(t *testing.T) {
	for _, raw := range []string{
		`{"kind":"python","payload":"gARLAS4="}`,
		`{"kind":"python","timeout":"30s","payload":"AA=="}`,
		`{"kind":"python","payload":"AA==","kind":"exec"}`,
		`{"kind":"python","payload":"A\/A="}`,
		`{"kind":"python","payload":""}`,
		`{"kind":"python","timeout":"3\"0s","payload":"AA=="}`,
		`{"kind":"python","args":["x"],"payload":"AA=="}`,
		`{"kind":"python","payload":"AA=="} `,
		"{\"kind\":\"python\",\"payload\":\"AA\n==\"}", // base64 skips newlines; JSON strings may not hold them
	} {
		checkFastPath(t, []byte(raw))
	}
	if _, ok := decodePython([]byte(`{"kind":"python","payload":"gARLAS4="}`)); !ok {
		t.Fatal("the SDK's form did not take the fast path")
	}
}

func FuzzDecodePython(f *testing.F) {
	f.Add([]byte(`{"kind":"python","payload":"gARLAS4="}`))
	f.Add([]byte(`{"kind":"python","timeout":"1s","payload":"AA=="}`))
	f.Fuzz(func(t *testing.T, raw []byte) { checkFastPath(t, raw) })
}

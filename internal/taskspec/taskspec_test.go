package taskspec_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want taskspec.Spec
		// wantErr lists substrings the error must contain; empty means valid.
		wantErr []string
	}{
		{name: "noop", in: `{"kind":"noop"}`, want: taskspec.Spec{Kind: "noop"}},
		{name: "noop with empty args", in: `{"kind":"noop","args":[]}`, want: taskspec.Spec{Kind: "noop", Args: []string{}}},
		{name: "sleep", in: `{"kind":"sleep","args":["0.5"]}`, want: taskspec.Spec{Kind: "sleep", Args: []string{"0.5"}}},
		{name: "sleep zero", in: `{"kind":"sleep","args":["0"]}`, want: taskspec.Spec{Kind: "sleep", Args: []string{"0"}}},
		{name: "exec", in: `{"kind":"exec","args":["echo","hi"]}`, want: taskspec.Spec{Kind: "exec", Args: []string{"echo", "hi"}}},
		{name: "exec with timeout", in: `{"kind":"exec","args":["true"],"timeout":"30s"}`,
			want: taskspec.Spec{Kind: "exec", Args: []string{"true"}, Timeout: "30s"}},
		{name: "sleep with timeout", in: `{"kind":"sleep","args":["1"],"timeout":"500ms"}`,
			want: taskspec.Spec{Kind: "sleep", Args: []string{"1"}, Timeout: "500ms"}},

		{name: "python", in: `{"kind":"python","payload":"gARLAS4="}`, want: taskspec.Spec{Kind: "python", Payload: []byte("\x80\x04K\x01.")}},
		{name: "python with timeout", in: `{"kind":"python","payload":"AA==","timeout":"1m"}`, want: taskspec.Spec{Kind: "python", Payload: []byte{0}, Timeout: "1m"}},

		{name: "unknown kind", in: `{"kind":"fortran"}`, wantErr: []string{`unknown kind "fortran"`, "noop, sleep, exec, python"}},
		{name: "missing kind", in: `{"args":["x"]}`, wantErr: []string{`no "kind"`, "noop, sleep, exec, python"}},
		{name: "python without payload", in: `{"kind":"python"}`, wantErr: []string{`"python" needs "payload"`, "base64"}},
		{name: "python with empty payload", in: `{"kind":"python","payload":""}`, wantErr: []string{`"python" needs "payload"`}},
		{name: "python with args", in: `{"kind":"python","payload":"AA==","args":["x"]}`, wantErr: []string{`"python" takes no args`}},
		{name: "python payload not base64", in: `{"kind":"python","payload":"not base64!"}`, wantErr: []string{`"payload" must be standard base64`, "byte 3"}},
		{name: "python payload a number", in: `{"kind":"python","payload":12}`, wantErr: []string{`"payload" must be a base64 string`, "number"}},
		{name: "payload on exec", in: `{"kind":"exec","args":["true"],"payload":"AA=="}`, wantErr: []string{`kind "exec" takes no "payload"`}},
		{name: "empty object", in: `{}`, wantErr: []string{`no "kind"`}},
		{name: "kind not a string", in: `{"kind":3}`, wantErr: []string{"kind", "string", "number"}},
		{name: "args not a list", in: `{"kind":"exec","args":"echo hi"}`, wantErr: []string{`"args" must be a list of strings`, "string"}},
		{name: "args an object", in: `{"kind":"exec","args":{"a":1}}`, wantErr: []string{`"args" must be a list of strings`}},
		{name: "args holding a number", in: `{"kind":"exec","args":["echo",1]}`, wantErr: []string{`"args" must be a list of strings`, "number"}},
		{name: "exec without args", in: `{"kind":"exec"}`, wantErr: []string{`"exec" needs "args"`}},
		{name: "exec with empty program", in: `{"kind":"exec","args":[""]}`, wantErr: []string{`"exec" needs "args"`}},
		{name: "noop with args", in: `{"kind":"noop","args":["x"]}`, wantErr: []string{`"noop" takes no args`}},
		{name: "sleep without arg", in: `{"kind":"sleep"}`, wantErr: []string{`"sleep" takes one arg`}},
		{name: "sleep with two args", in: `{"kind":"sleep","args":["1","2"]}`, wantErr: []string{`"sleep" takes one arg`}},
		{name: "bad sleep word", in: `{"kind":"sleep","args":["soon"]}`, wantErr: []string{`sleep arg "soon"`, "non-negative number"}},
		{name: "bad sleep negative", in: `{"kind":"sleep","args":["-1"]}`, wantErr: []string{`sleep arg "-1"`, "non-negative"}},
		{name: "bad sleep NaN", in: `{"kind":"sleep","args":["NaN"]}`, wantErr: []string{`sleep arg "NaN"`}},
		{name: "bad sleep infinite", in: `{"kind":"sleep","args":["Inf"]}`, wantErr: []string{`sleep arg "Inf"`, "limit"}},
		{name: "bad sleep too long", in: `{"kind":"sleep","args":["1e9"]}`, wantErr: []string{`sleep arg "1e9"`, "limit"}},
		{name: "bad timeout word", in: `{"kind":"noop","timeout":"soon"}`, wantErr: []string{`invalid timeout "soon"`, "Go duration"}},
		{name: "bad timeout unitless", in: `{"kind":"noop","timeout":"30"}`, wantErr: []string{`invalid timeout "30"`}},
		{name: "bad timeout negative", in: `{"kind":"noop","timeout":"-1s"}`, wantErr: []string{`invalid timeout "-1s"`, "positive"}},
		{name: "bad timeout zero", in: `{"kind":"noop","timeout":"0s"}`, wantErr: []string{`invalid timeout "0s"`}},
		{name: "timeout not a string", in: `{"kind":"noop","timeout":30}`, wantErr: []string{"timeout", "string", "number"}},
		{name: "unknown field", in: `{"kind":"noop","cmd":"ls"}`, wantErr: []string{`unknown field "cmd"`, `"kind", "args", "timeout", "env" and "payload"`}},
		{name: "exec with env", in: `{"kind":"exec","args":["env"],"env":{"A_1":"x y"}}`,
			want: taskspec.Spec{Kind: "exec", Args: []string{"env"}, Env: map[string]string{"A_1": "x y"}}},
		{name: "env bad name", in: `{"kind":"noop","env":{"1A":"x"}}`, wantErr: []string{`env name "1A"`}},
		{name: "env name with '='", in: `{"kind":"noop","env":{"A=B":"x"}}`, wantErr: []string{`env name "A=B"`}},
		{name: "env NUL value", in: `{"kind":"noop","env":{"A":"x\u0000"}}`, wantErr: []string{"NUL"}},
		{name: "env not strings", in: `{"kind":"noop","env":{"A":1}}`, wantErr: []string{"env"}},
		{name: "python with env", in: `{"kind":"python","env":{"A":"x"},"payload":"AQID"}`, wantErr: []string{`"python" takes no "env"`, "--task-env"}},
		{name: "NUL byte in program", in: `{"kind":"exec","args":["ec\u0000ho"]}`, wantErr: []string{"args[0]", "NUL"}},
		{name: "NUL byte in argument", in: `{"kind":"exec","args":["echo","a\u0000b"]}`, wantErr: []string{"args[1]", "NUL"}},
		{name: "not an object", in: `["noop"]`, wantErr: []string{"JSON object"}},
		{name: "a string", in: `"noop"`, wantErr: []string{"JSON object"}},
		{name: "truncated", in: `{"kind":"no`, wantErr: []string{"JSON object"}},
		{name: "empty", in: ``, wantErr: []string{"JSON object"}},
		{name: "too many args", in: `{"kind":"exec","args":[` + strings.Repeat(`"a",`, taskspec.MaxArgs) + `"a"]}`,
			wantErr: []string{"args; the limit is"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := taskspec.Parse([]byte(tc.in))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Parse(%s): %v", tc.in, err)
				}
				if got.Kind != tc.want.Kind || strings.Join(got.Args, "\x00") != strings.Join(tc.want.Args, "\x00") || got.Timeout != tc.want.Timeout ||
					!bytes.Equal(got.Payload, tc.want.Payload) || len(got.Env) != len(tc.want.Env) {
					t.Fatalf("Parse(%s) = %+v, want %+v", tc.in, got, tc.want)
				}
				// The canonical encoding parses back to the same spec.
				again, err := taskspec.Parse(got.Encode())
				if err != nil {
					t.Fatalf("Parse(Encode()) of %s: %v", got.Encode(), err)
				}
				if again.Kind != got.Kind || strings.Join(again.Args, "\x00") != strings.Join(got.Args, "\x00") || again.Timeout != got.Timeout ||
					!bytes.Equal(again.Payload, got.Payload) {
					t.Fatalf("round trip changed %+v to %+v", got, again)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%.80s) accepted an invalid spec: %+v", tc.in, got)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "json: ") {
				t.Errorf("error %q leaks the decoder's prefix", err)
			}
		})
	}
}

func TestParseOversizedSpec(t *testing.T) {
	big := `{"kind":"exec","args":["` + strings.Repeat("a", taskspec.MaxSpecBytes) + `"]}`
	_, err := taskspec.Parse([]byte(big))
	if err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("oversized spec: %v, want a refusal naming the limit", err)
	}
	// One argument over MaxArgBytes inside a spec under MaxSpecBytes.
	arg := `{"kind":"exec","args":["echo","` + strings.Repeat("a", taskspec.MaxArgBytes+1) + `"]}`
	_, err = taskspec.Parse([]byte(arg))
	if err == nil || !strings.Contains(err.Error(), "args[1]") {
		t.Fatalf("oversized arg: %v, want a refusal naming args[1]", err)
	}
}

// A python payload up to MaxPayloadBytes is accepted although its spec is
// far over the limit of the other kinds; one byte more is refused.
func TestParsePythonPayloadLimit(t *testing.T) {
	spec := func(n int) []byte {
		return []byte(`{"kind":"python","payload":"` + base64.StdEncoding.EncodeToString(make([]byte, n)) + `"}`)
	}
	s, err := taskspec.Parse(spec(taskspec.MaxPayloadBytes))
	if err != nil || len(s.Payload) != taskspec.MaxPayloadBytes {
		t.Fatalf("payload of MaxPayloadBytes: %v (%d bytes)", err, len(s.Payload))
	}
	if enc := s.Encode(); len(enc) > s.MaxBytes() {
		t.Fatalf("encoded spec of %d bytes is over its own limit %d", len(enc), s.MaxBytes())
	}
	_, err = taskspec.Parse(spec(taskspec.MaxPayloadBytes + 1))
	if err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("payload over MaxPayloadBytes: %v, want a refusal naming the limit", err)
	}
}

func TestDurations(t *testing.T) {
	cases := []struct {
		spec    taskspec.Spec
		sleep   time.Duration
		timeout time.Duration
	}{
		{taskspec.Spec{Kind: "sleep", Args: []string{"0.25"}}, 250 * time.Millisecond, 0},
		{taskspec.Spec{Kind: "sleep", Args: []string{"2"}, Timeout: "1m"}, 2 * time.Second, time.Minute},
		{taskspec.Spec{Kind: "sleep", Args: []string{"0.001"}, Timeout: "500ms"}, time.Millisecond, 500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.spec.Args[0]+"/"+tc.spec.Timeout, func(t *testing.T) {
			if err := tc.spec.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			d, err := tc.spec.SleepDuration()
			if err != nil || d != tc.sleep {
				t.Errorf("SleepDuration = %s, %v; want %s", d, err, tc.sleep)
			}
			to, err := tc.spec.TimeoutDuration()
			if err != nil || to != tc.timeout {
				t.Errorf("TimeoutDuration = %s, %v; want %s", to, err, tc.timeout)
			}
		})
	}
}

// A spec followed by more JSON is not one task object; accepting it would
// silently drop what follows.
func TestParseRefusesTrailingData(t *testing.T) {
	for _, in := range []string{`{"kind":"noop"}{"kind":"exec","args":["rm"]}`, `{"kind":"noop"} x`} {
		if s, err := taskspec.Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%s) = %+v, nil; want an error about data after the object", in, s)
		}
	}
}

// Package taskspec defines the task kinds users submit and checks them. The
// forwarder validates a spec once; the manager runs it. Brokers carry the
// canonical JSON as an opaque payload.
package taskspec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kinds that a manager can run.
const (
	KindNoop  = "noop"
	KindSleep = "sleep"
	KindExec  = "exec"
	// KindPython carries a serialized call in Payload; a manager's Python
	// workers run it (docs/worker-protocol.md).
	KindPython = "python"
)

// Kinds lists the legal kinds for error messages.
var Kinds = []string{KindNoop, KindSleep, KindExec, KindPython}

// Limits on a spec.
const (
	MaxArgs      = 4096
	MaxArgBytes  = 1 << 20
	MaxSleep     = 7 * 24 * time.Hour
	MaxSpecBytes = 4 << 20
	MaxEnv       = 256
	// MaxPayloadBytes caps a python task's serialized call: a 10 MB
	// argument fits, and the spec in base64 (16 MiB) still fits in one
	// message under the brokers' limit (a full batch plus 1 MiB).
	MaxPayloadBytes = 12 << 20
	// MaxPythonSpecBytes caps a python task object: its payload in base64
	// plus the other fields.
	MaxPythonSpecBytes = (MaxPayloadBytes+2)/3*4 + 64<<10
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// Spec is one task as submitted.
type Spec struct {
	Kind    string   `json:"kind"`
	Args    []string `json:"args,omitempty"`
	Timeout string   `json:"timeout,omitempty"`
	// Env adds variables to the task's clean environment (exec tasks).
	Env map[string]string `json:"env,omitempty"`
	// Payload is a python task's serialized call, base64 in JSON.
	Payload []byte `json:"payload,omitempty"`
}

// MaxBytes is the size limit of a spec of this kind, raw or encoded.
func (s Spec) MaxBytes() int {
	if s.Kind == KindPython {
		return MaxPythonSpecBytes
	}
	return MaxSpecBytes
}

// Parse reads and validates one task object; errors name the field.
func Parse(raw []byte) (Spec, error) {
	var s Spec
	if len(raw) > MaxPythonSpecBytes {
		return s, fmt.Errorf("task is %d bytes; the limit is %d (%d for kinds other than python)", len(raw), MaxPythonSpecBytes, MaxSpecBytes)
	}
	if s, ok := decodePython(raw); ok {
		return s, s.Validate()
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return s, fmt.Errorf("task is not a JSON object; send one like {\"kind\":\"noop\"}, got %q", shorten(t))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, describe(err)
	}
	if dec.More() {
		return s, fmt.Errorf("unexpected data after the task object")
	}
	if len(raw) > s.MaxBytes() {
		return s, fmt.Errorf("task is %d bytes; the limit is %d for kind %q", len(raw), s.MaxBytes(), s.Kind)
	}
	return s, s.Validate()
}

func describe(err error) error {
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		return fmt.Errorf("\"payload\" must be standard base64 (RFC 4648, with padding): bad data at byte %d", int64(ce))
	}
	var te *json.UnmarshalTypeError
	if ok := asType(err, &te); ok {
		switch te.Field {
		case "payload":
			return fmt.Errorf("\"payload\" must be a base64 string, got %s", te.Value)
		case "args", "args.0":
			return fmt.Errorf("\"args\" must be a list of strings, got %s", te.Value)
		}
		if strings.HasPrefix(te.Field, "args") {
			return fmt.Errorf("\"args\" must be a list of strings, got %s in it", te.Value)
		}
		return fmt.Errorf("%q must be a %s, got %s", te.Field, te.Type, te.Value)
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field") {
		return fmt.Errorf("%s; a task has \"kind\", \"args\", \"timeout\", \"env\" and \"payload\" (python)", strings.TrimPrefix(msg, "json: "))
	}
	return fmt.Errorf("task is not a JSON object: %s", strings.TrimPrefix(msg, "json: "))
}

func asType(err error, te **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = t
	}
	return ok
}

// Decode reads a spec that was validated when it was accepted (the
// payload a manager receives): no strict field check, so it is cheaper
// than Parse, but the kind and arguments are still checked.
func Decode(raw []byte) (Spec, error) {
	if string(raw) == noopEncoded {
		return Spec{Kind: KindNoop}, nil
	}
	if s, ok := decodePython(raw); ok {
		return s, s.Validate()
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, describe(err)
	}
	return s, s.Validate()
}

// Validate checks a spec's kind and arguments.
func (s Spec) Validate() error {
	if len(s.Args) > MaxArgs {
		return fmt.Errorf("%d args; the limit is %d", len(s.Args), MaxArgs)
	}
	if s.Timeout != "" {
		if _, err := s.TimeoutDuration(); err != nil {
			return err
		}
	}
	if len(s.Env) > MaxEnv {
		return fmt.Errorf("\"env\" has %d variables; the limit is %d", len(s.Env), MaxEnv)
	}
	for k, v := range s.Env {
		if !envName.MatchString(k) {
			return fmt.Errorf("env name %q: use letters, digits and '_', not starting with a digit", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("env %s contains a NUL byte", k)
		}
	}
	if len(s.Payload) > 0 && s.Kind != KindPython {
		return fmt.Errorf("kind %q takes no \"payload\"; only kind \"python\" does", s.Kind)
	}
	if len(s.Env) > 0 && s.Kind == KindPython {
		return fmt.Errorf("kind \"python\" takes no \"env\": its calls run in long-lived workers with the manager's task environment (--task-env)")
	}
	switch s.Kind {
	case KindNoop:
		if len(s.Args) != 0 {
			return fmt.Errorf("kind \"noop\" takes no args, got %d", len(s.Args))
		}
	case KindSleep:
		if len(s.Args) != 1 {
			return fmt.Errorf("kind \"sleep\" takes one arg, the seconds to sleep, like [\"0.5\"]")
		}
		if _, err := s.SleepDuration(); err != nil {
			return err
		}
	case KindExec:
		if len(s.Args) == 0 || s.Args[0] == "" {
			return fmt.Errorf("kind \"exec\" needs \"args\": the program and its arguments, like [\"echo\", \"hi\"]")
		}
		for i, a := range s.Args {
			if len(a) > MaxArgBytes {
				return fmt.Errorf("args[%d] is %d bytes; the limit is %d", i, len(a), MaxArgBytes)
			}
			if strings.IndexByte(a, 0) >= 0 {
				return fmt.Errorf("args[%d] contains a NUL byte", i)
			}
		}
	case KindPython:
		if len(s.Args) != 0 {
			return fmt.Errorf("kind \"python\" takes no args; the call goes in \"payload\"")
		}
		if len(s.Payload) == 0 {
			return fmt.Errorf("kind \"python\" needs \"payload\": a serialized call in base64, as the switchyard Python SDK sends it")
		}
		if len(s.Payload) > MaxPayloadBytes {
			return fmt.Errorf("python payload is %d bytes; the limit is %d", len(s.Payload), MaxPayloadBytes)
		}
	case "":
		return fmt.Errorf("task has no \"kind\"; legal kinds: %s", strings.Join(Kinds, ", "))
	default:
		return fmt.Errorf("unknown kind %q; legal kinds: %s", s.Kind, strings.Join(Kinds, ", "))
	}
	return nil
}

// SleepDuration is a sleep task's argument.
func (s Spec) SleepDuration() (time.Duration, error) {
	f, err := strconv.ParseFloat(s.Args[0], 64)
	if err != nil || f < 0 || f != f {
		return 0, fmt.Errorf("sleep arg %q must be a non-negative number of seconds", s.Args[0])
	}
	d := time.Duration(f * float64(time.Second))
	if f*float64(time.Second) > float64(MaxSleep) {
		return 0, fmt.Errorf("sleep arg %q is over the limit of %s", s.Args[0], MaxSleep)
	}
	return d, nil
}

// TimeoutDuration is the run-time limit; zero means none.
func (s Spec) TimeoutDuration() (time.Duration, error) {
	if s.Timeout == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s.Timeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid timeout %q: use a positive Go duration like \"30s\" or \"5m\"", s.Timeout)
	}
	return d, nil
}

// Encode is the canonical payload carried on the wire.
// noopEncoded is how Encode writes a bare noop, the commonest task of a
// benchmark: Decode knows it without a JSON decoder.
var noopEncoded = string(Spec{Kind: KindNoop}.Encode())

func (s Spec) Encode() []byte {
	if s.Kind == KindPython && len(s.Args) == 0 && len(s.Env) == 0 && plainJSON(s.Timeout) {
		return encodePython(s)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Keep '&', '<' and '>' as they are: escaping them grows a task sixfold.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// ExecResult is the result payload of an exec task.
type ExecResult struct {
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

func shorten(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// The python fast path: a python task is mostly its base64 payload, and
// the general decoder scans it several times over. The exact forms
// encoding/json writes for a python spec, and the SDK sends,
//
//	{"kind":"python","payload":"<base64>"}
//	{"kind":"python","timeout":"<duration>","payload":"<base64>"}
//
// are read and written directly; anything else takes the general path, so
// both paths accept and refuse the same specs.
const (
	pyPrefix  = `{"kind":"python",`
	pyTimeout = `"timeout":"`
	pyPayload = `"payload":"`
)

func decodePython(raw []byte) (Spec, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(pyPrefix))
	if !ok {
		return Spec{}, false
	}
	s := Spec{Kind: KindPython}
	if r, ok := bytes.CutPrefix(rest, []byte(pyTimeout)); ok {
		i := bytes.IndexByte(r, '"')
		if i < 0 || !plainJSON(string(r[:i])) || len(r) < i+2 || r[i+1] != ',' {
			return Spec{}, false
		}
		s.Timeout, rest = string(r[:i]), r[i+2:]
	}
	b64, ok := bytes.CutPrefix(rest, []byte(pyPayload))
	if !ok || len(b64) < 2 || string(b64[len(b64)-2:]) != `"}` {
		return Spec{}, false
	}
	b64 = b64[:len(b64)-2]
	// Two IndexByte scans (vectorised) cost less than one ContainsAny.
	if bytes.IndexByte(b64, '\n') >= 0 || bytes.IndexByte(b64, '\r') >= 0 {
		return Spec{}, false // the decoder would skip them; JSON refuses them
	}
	s.Payload = make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(s.Payload, b64)
	if err != nil || n == 0 {
		return Spec{}, false // the general path explains what is wrong
	}
	s.Payload = s.Payload[:n]
	return s, true
}

func encodePython(s Spec) []byte {
	n := len(pyPrefix) + len(pyTimeout) + len(s.Timeout) + 2 + len(pyPayload) + base64.StdEncoding.EncodedLen(len(s.Payload)) + 2
	b := make([]byte, 0, n)
	b = append(b, pyPrefix...)
	if s.Timeout != "" {
		b = append(append(append(b, pyTimeout...), s.Timeout...), '"', ',')
	}
	b = append(b, pyPayload...)
	b = base64.StdEncoding.AppendEncode(b, s.Payload)
	return append(b, '"', '}')
}

// plainJSON reports whether s is written in JSON as it is: printable
// ASCII without quotes or backslashes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

package client

import (
	"encoding/json"
	"slices"
	"testing"
)

// idsBody says the same as json.Marshal would, for ids of any bytes.
func FuzzIDsBody(f *testing.F) {
	f.Add("5f0c1e2a-0b1c-4d2e-8f90-123456789abc", "a\"b\\c\x01\u00e9")
	f.Fuzz(func(t *testing.T, a, b string) {
		ids := []string{a, b, a}
		var got struct {
			TaskIDs []string `json:"task_ids"`
		}
		if err := json.Unmarshal(idsBody(ids), &got); err != nil {
			t.Fatalf("%q: %v", idsBody(ids), err)
		}
		want := make([]string, len(ids))
		for i, id := range ids {
			// JSON carries text: invalid UTF-8 reads back as U+FFFD, as
			// with json.Marshal.
			q, _ := json.Marshal(id)
			_ = json.Unmarshal(q, &want[i])
		}
		if !slices.Equal(got.TaskIDs, want) {
			t.Fatalf("ids %q read back as %q", want, got.TaskIDs)
		}
	})
}

// fastIDs reads what encoding/json reads, or leaves it to encoding/json.
func FuzzFastIDs(f *testing.F) {
	f.Add([]byte(`{"task_ids":["5f0c1e2a-0b1c-4d2e-8f90-123456789abc","x"]}` + "\n"))
	f.Add([]byte(`{"task_ids":[]}`))
	f.Add([]byte(`{"task_ids":["a\"b"]}`))
	f.Add([]byte(`{"task_ids":["a",]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastIDs(b)
		if !ok {
			return
		}
		var want struct {
			TaskIDs []string `json:"task_ids"`
		}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: fast path read %q, encoding/json refuses it: %v", b, got, err)
		}
		if !slices.Equal(got, want.TaskIDs) || (got == nil) != (want.TaskIDs == nil) {
			t.Fatalf("%q: fast path %q, encoding/json %q", b, got, want.TaskIDs)
		}
	})
}

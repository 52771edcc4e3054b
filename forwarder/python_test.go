package forwarder_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// A python task's payload and result cross the forwarder as opaque bytes:
// calls and results over the 4 MiB limit of the other kinds arrive
// unchanged, the result shown as
// {"payload": base64}.
func TestPythonTaskCarriesBigPayloads(t *testing.T) {
	// Moving megabytes under -race on a busy machine can pause the loops
	// longer than the usual test threshold.
	e := connect(t, forwarder.Options{HeartbeatThreshold: 10 * time.Second})
	call := bytes.Repeat([]byte{0x80, 5, 'c', 0}, 5<<20/4)
	ids, err := e.c.Submit(ep, map[string]any{"kind": "python", "payload": base64.StdEncoding.EncodeToString(call)})
	if err != nil {
		t.Fatal(err)
	}
	got := e.received(t, ids)[ids[0]]
	spec, err := taskspec.Decode(got.Payload)
	if err != nil || spec.Kind != taskspec.KindPython || !bytes.Equal(spec.Payload, call) {
		t.Fatalf("the endpoint got kind %q, %d payload bytes (%v); want python and the %d bytes sent", spec.Kind, len(spec.Payload), err, len(call))
	}
	result := bytes.Repeat([]byte{0x80, 5, 'r', 1}, 5<<20/4)
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: got.ID, Attempt: 1, Code: messages.Failed,
		Error: "ValueError: boom", Finished: time.Now().UnixNano(), Payload: result}}})
	var v testutil.TaskView
	testutil.WaitFor(t, 10*time.Second, func() error {
		v = e.task(t, ids[0])
		if !v.Terminal() {
			return testutil.Errorf("task is %s", v.State)
		}
		return nil
	})
	var r struct {
		Payload []byte `json:"payload"`
	}
	if err := json.Unmarshal(v.Result, &r); err != nil || !bytes.Equal(r.Payload, result) || v.State != "failed" || v.Error != "ValueError: boom" {
		t.Fatalf("task %s %q, result of %d bytes (%v); want failed with the %d bytes sent", v.State, v.Error, len(r.Payload), err, len(result))
	}
}

package client_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// Every call of the client against a whole in-process endpoint.
func TestClientAgainstChain(t *testing.T) {
	ch := testutil.StartChain(t, testutil.ChainOptions{Managers: 1, Workers: 2})
	c := ch.Client.Client
	ctx := context.Background()

	ids, err := c.Submit(ctx, ch.Endpoint, map[string]any{"kind": "exec", "args": []string{"echo", "hi"}},
		map[string]any{"kind": "sleep", "args": []string{"30"}})
	if err != nil || len(ids) != 2 {
		t.Fatalf("Submit: %v %v", ids, err)
	}
	tk, err := c.Wait(ctx, ids[0], 10*time.Second)
	if err != nil || tk.State != "success" {
		t.Fatalf("Wait: %+v %v", tk, err)
	}
	if r, err := tk.Exec(); err != nil || r.Stdout != "hi\n" || r.ExitCode == nil || *r.ExitCode != 0 {
		t.Fatalf("Exec: %+v %v", r, err)
	}
	if got, err := c.Task(ctx, ids[0]); err != nil || got.TaskID != ids[0] || !got.Terminal() {
		t.Fatalf("Task: %+v %v", got, err)
	}
	unknown := uuid.NewString()
	sts, err := c.Status(ctx, []string{ids[1], unknown})
	if err != nil || len(sts) != 2 || sts[0].TaskID != ids[1] || sts[1].State != "unknown" {
		t.Fatalf("Status: %+v %v", sts, err)
	}
	cv, err := c.Cancel(ctx, ids[1])
	if err != nil || !cv.Cancelled || cv.State != "cancelled" {
		t.Fatalf("Cancel: %+v %v", cv, err)
	}
	cvs, err := c.CancelMany(ctx, []string{ids[0], ids[1]})
	if err != nil || len(cvs) != 2 || cvs[0].Cancelled || cvs[1].Cancelled {
		t.Fatalf("CancelMany of ended tasks: %+v %v", cvs, err)
	}
	eps, err := c.Endpoints(ctx)
	if err != nil || len(eps) != 1 || eps[0].EndpointID != ch.Endpoint || !eps[0].Connected {
		t.Fatalf("Endpoints: %+v %v", eps, err)
	}
	ep, err := c.Endpoint(ctx, ch.Endpoint, true)
	if err != nil || ep.Managers != 1 || !strings.Contains(string(ep.Probe), `"ok":true`) {
		t.Fatalf("Endpoint with probe: %+v %s %v", ep, ep.Probe, err)
	}
	text, err := c.ServingState(ctx, ch.Endpoint, "", false)
	if err != nil || !strings.Contains(string(text), "Current state: NONE_PAUSED") {
		t.Fatalf("ServingState: %s %v", text, err)
	}
	if _, err := c.SetServingState(ctx, ch.Endpoint, client.ServingChange{State: "BOGUS"}, false); client.StatusOf(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "Legal values") {
		t.Fatalf("SetServingState BOGUS: %v; want HTTP 400 naming the legal values", err)
	}
	ixText, err := ch.Interchange.Client().ServingState(ctx, "", "", false)
	if err != nil || !strings.Contains(string(ixText), "Current state:") {
		t.Fatalf("interchange ServingState: %s %v", ixText, err)
	}
	var st map[string]any
	if err := ch.Interchange.Client().DaemonStatus(ctx, &st); err != nil || st["managers"] == nil {
		t.Fatalf("DaemonStatus: %v %v", st, err)
	}
	if m, err := c.Metrics(ctx); err != nil || !strings.Contains(string(m), "switchyard_forwarder_tasks_submitted_total") {
		t.Fatalf("Metrics: %v", err)
	}
}

// Errors carry the status and the server's own message, not its JSON.
func TestClientErrors(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{})
	f.Enroll(t, "ep1")
	c := f.Client().Client
	ctx := context.Background()
	unknown := uuid.NewString()
	_, err := c.Task(ctx, unknown)
	var e *client.Error
	if client.StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "unknown task id "+unknown) {
		t.Fatalf("Task(unknown) = %v; want HTTP 404 with the server's message", err)
	}
	if ok := asError(err, &e); !ok || strings.Contains(e.Message, `{"error"`) || e.Path != "/v1/tasks/"+unknown {
		t.Fatalf("error %#v; want the plain message and the path", e)
	}
	if _, err := c.Submit(ctx, "ep1", map[string]any{"kind": "nope"}); client.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("Submit(unknown kind) = %v; want HTTP 400", err)
	}
	dead := client.New("127.0.0.1:1")
	if _, err := dead.Endpoints(ctx); err == nil || client.StatusOf(err) != 0 || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("unreachable forwarder: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Endpoints(cctx); err == nil {
		t.Fatal("a cancelled context must end the call")
	}
}

func asError(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	*target = e
	return ok
}

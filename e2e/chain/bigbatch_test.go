package chain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// Tasks whose specs add up to far more than one message may carry must
// still flow: senders split batches by bytes, and a later task is not
// stuck behind them.
func TestHugeTasksDoNotJamTheEndpoint(t *testing.T) {
	c := testutil.StartChain(t, testutil.ChainOptions{Managers: 1, Workers: 2})
	// 8 tasks of 3 MiB: more than one batch's bytes. '&' is what a
	// careless JSON encoder would turn into six bytes.
	big := strings.Repeat("&", 1<<20)
	one := `{"kind":"exec","args":["true","` + big + `","` + big + `","` + big + `"]}`
	body := `{"tasks":[` + strings.TrimSuffix(strings.Repeat(one+",", 8), ",") + `]}`
	var resp struct {
		TaskIDs []string `json:"task_ids"`
	}
	c.Client.Must(t, 202, "POST", "/v1/endpoints/"+c.Endpoint+"/tasks", testutil.Raw(body), &resp)
	ids := resp.TaskIDs
	after, err := c.Client.Submit(c.Endpoint, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range c.Client.WaitTerminal(t, append(ids, after...), 60*time.Second) {
		if v.TaskID == after[0] && v.State != "success" {
			t.Fatalf("the task after the big ones ended %s", v.State)
		}
	}
}

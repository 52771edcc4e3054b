package forwarder_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

// lossyProxy forwards HTTP connections to addr, but drops the first answer
// to a submit: the request reaches the forwarder, the client never hears.
func lossyProxy(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dropped atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if err := req.Write(up); err != nil {
						return
					}
					resp, err := http.ReadResponse(bufio.NewReader(up), req)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if strings.HasSuffix(req.URL.Path, "/tasks") && dropped.CompareAndSwap(false, true) {
						return // the answer is lost
					}
					resp.Body = io.NopCloser(strings.NewReader(string(body)))
					if err := resp.Write(c); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// A submit whose answer was lost, sent again, once created its tasks twice.
// With the Idempotency-Key the client sends, the retry gets the first
// request's ids and the tasks exist once.
func TestSubmitRetriedAfterALostAnswer(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	c := client.New(lossyProxy(t, f.HTTPAddr()), client.WithToken(f.AdminToken()))
	ids, err := c.Submit(t.Context(), "ep1", map[string]any{"kind": "noop"}, map[string]any{"kind": "sleep", "args": []string{"1"}})
	if err != nil || len(ids) != 2 {
		t.Fatalf("submit through a lossy link: %v %v", ids, err)
	}
	ts, err := admin.Client.ListTasks(t.Context(), client.TaskQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, task := range ts.Tasks {
		listed = append(listed, task.TaskID)
	}
	slices.Sort(listed)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("the forwarder holds %v; want exactly the ids answered %v", listed, ids)
	}
}

// The same key with the same tasks answers the same ids, at once or
// concurrently; with other tasks it is refused; keys are per user.
func TestIdempotencyKey(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	alice := f.User(t, "alice", false)
	f.Share(t, "ep1", "alice")
	body := []byte(`{"tasks":[{"kind":"noop"},{"kind":"noop"},{"kind":"noop"}]}`)
	ctx := context.Background()
	var wg sync.WaitGroup
	answers := make([][]string, 8)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids, err := admin.Client.SubmitBodyKey(ctx, "ep1", body, "key-1")
			if err != nil {
				t.Error(err)
			}
			answers[i] = ids
		}()
	}
	wg.Wait()
	for i := range answers {
		if !slices.Equal(answers[i], answers[0]) || len(answers[0]) != 3 {
			t.Fatalf("answer %d: %v; want the same 3 ids as %v", i, answers[i], answers[0])
		}
	}
	if _, err := admin.Client.SubmitBodyKey(ctx, "ep1", []byte(`{"tasks":[{"kind":"noop"}]}`), "key-1"); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("the key with other tasks: %v; want 422", err)
	}
	ids, err := alice.Client.SubmitBodyKey(ctx, "ep1", body, "key-1")
	if err != nil || slices.Equal(ids, answers[0]) {
		t.Fatalf("another user's same key: %v %v; want new tasks", ids, err)
	}
	if _, err := admin.Client.SubmitBodyKey(ctx, "ep1", body, "bad key"); client.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("a key with a space: %v; want 400", err)
	}
	n := 0
	ts, err := admin.Client.ListTasks(ctx, client.TaskQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	n = len(ts.Tasks)
	if n != 6 {
		t.Fatalf("%d tasks stored; want 6 (3 once by key, 3 of alice's)", n)
	}
}

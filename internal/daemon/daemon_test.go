package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGroupFirstFailureStopsAll(t *testing.T) {
	var g Group
	stopped := make(chan string, 3)
	for _, name := range []string{"loop", "janitor"} {
		g.Add(name, func(c context.Context) error {
			<-c.Done()
			stopped <- name
			return nil
		})
	}
	boom := errors.New("listener closed")
	g.Add("http", func(context.Context) error { return boom })
	err := g.Run(context.Background())
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "http: ") {
		t.Fatalf("Run = %v, want the http part's error", err)
	}
	if len(stopped) != 2 {
		t.Fatalf("%d of 2 other parts stopped", len(stopped))
	}
}

func TestGroupPartEndingEarlyIsAnError(t *testing.T) {
	var g Group
	g.Add("loop", func(c context.Context) error { <-c.Done(); return nil })
	g.Add("reports", func(context.Context) error { return nil })
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "reports stopped unexpectedly") {
		t.Fatalf("Run = %v", err)
	}
}

func TestGroupStopsCleanlyWithItsContext(t *testing.T) {
	var g Group
	for _, name := range []string{"a", "b"} {
		g.Add(name, func(c context.Context) error { <-c.Done(); return nil })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatalf("Run = %v after its context ended", err)
	}
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
)

// api is the forwarder's client, shaped for the benchmark: many idle
// connections, no compression.
type api = client.Client

func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}}
}

func newAPI(base, token string, hc *http.Client) *api {
	return client.New(base, client.WithToken(token), client.WithHTTPClient(hc))
}

// noopBody is a submission of n no-op tasks.
func noopBody(n int) []byte {
	var b bytes.Buffer
	b.Grow(11 + 16*n)
	b.WriteString(`{"tasks":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"kind":"noop"}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// ixStatus is the part of the interchange's GET /status the bench reads.
type ixStatus struct {
	ForwarderConnected bool `json:"forwarder_connected"`
	Managers           int  `json:"managers"`
	Queued             int  `json:"queued"`
	Outstanding        int  `json:"outstanding"`
}

func ixStatusOf(ctx context.Context, hc *http.Client, base, token string) (ixStatus, error) {
	var v ixStatus
	err := newAPI(base, token, hc).DaemonStatus(ctx, &v)
	return v, err
}

// pollUntil calls cond every step until it returns nil, ctx ends or
// timeout passes.
func pollUntil(ctx context.Context, timeout, step time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
		}
	}
}

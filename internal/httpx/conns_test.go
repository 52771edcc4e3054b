package httpx

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// One address holding as many busy connections as it may gets its next one
// refused; an idle one would have given its place instead.
func TestPerClientCap(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	srv, err := ListenConfig("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "ok")
	}), Config{MaxConns: 10, MaxConnsPerClient: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, logrus.NewEntry(logrus.New())) }()
	defer func() { close(release); cancel(); <-done }()
	for range 2 {
		conn, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a blocking request never reached the handler")
		}
	}
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(conn); len(b) != 0 {
		t.Fatalf("a third connection from one address with two busy was served: %q %v", b, err)
	}
}

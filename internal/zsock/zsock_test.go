package zsock_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
)

func newContext(t *testing.T) *zmq.Context {
	t.Helper()
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("context: %v", err)
	}
	return ctx
}

// term ends ctx and fails the test if that hangs (a socket left open).
func term(t *testing.T, ctx *zmq.Context) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- ctx.Term() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("context term: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("context term hung: a socket was left open")
	}
}

type item struct{ from, seq int }

func TestMailboxDeliversEverythingFromManyGoroutines(t *testing.T) {
	ctx := newContext(t)
	mb, err := zsock.NewMailbox[item](ctx)
	if err != nil {
		t.Fatalf("NewMailbox: %v", err)
	}
	const posters, each = 16, 2000
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < posters; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				if i%7 == 0 {
					mb.Post(item{g, i}, item{g, i + 1})
					i++
					continue
				}
				mb.Post(item{g, i})
			}
		}(g)
	}
	close(start)

	// The owner loop: poll, take, repeat, as a daemon does.
	poller := zmq.NewPoller()
	poller.Add(mb.Socket(), zmq.POLLIN)
	next := make([]int, posters)
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	var spare []item
	for got < posters*each {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d items arrived; Len()=%d", got, posters*each, mb.Len())
		}
		// A long timeout: every item must come with a wake-up, so the
		// loop never needs to time out to find one.
		polled, err := poller.Poll(5 * time.Second)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(polled) == 0 {
			t.Fatalf("poll timed out with %d of %d items taken and %d waiting: a Post did not wake the owner",
				got, posters*each, mb.Len())
		}
		items := mb.Take(spare)
		for _, it := range items {
			if it.seq != next[it.from] {
				t.Fatalf("poster %d: got item %d, want %d (lost, duplicated or reordered)", it.from, it.seq, next[it.from])
			}
			next[it.from]++
			got++
		}
		spare = items
	}
	wg.Wait()
	if n := mb.Len(); n != 0 {
		t.Errorf("Len() = %d after everything was taken", n)
	}
	mb.Close()
	term(t, ctx)
}

func TestMailboxWakesPoller(t *testing.T) {
	ctx := newContext(t)
	mb, err := zsock.NewMailbox[string](ctx)
	if err != nil {
		t.Fatalf("NewMailbox: %v", err)
	}
	poller := zmq.NewPoller()
	poller.Add(mb.Socket(), zmq.POLLIN)

	for round := 0; round < 50; round++ {
		// Nothing posted: the owner sleeps in Poll.
		polled, err := poller.Poll(0)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(polled) != 0 {
			t.Fatalf("round %d: poll reports the mailbox readable with nothing posted", round)
		}
		go mb.Post(fmt.Sprintf("msg-%d", round))
		start := time.Now()
		polled, err = poller.Poll(10 * time.Second)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(polled) != 1 {
			t.Fatalf("round %d: Post from another goroutine did not wake the poller within 10s", round)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("round %d: wake-up took %s", round, d)
		}
		// The wake-up may come before the waker's message; take until the
		// item is there.
		var got []string
		for len(got) == 0 {
			got = mb.Take(nil)
			if len(got) == 0 {
				if _, err := poller.Poll(10 * time.Second); err != nil {
					t.Fatalf("poll: %v", err)
				}
			}
		}
		if len(got) != 1 || got[0] != fmt.Sprintf("msg-%d", round) {
			t.Fatalf("round %d: took %q", round, got)
		}
	}
	mb.Close()
	term(t, ctx)
}

func TestMailboxCloseIsIdempotent(t *testing.T) {
	ctx := newContext(t)
	mb, err := zsock.NewMailbox[int](ctx)
	if err != nil {
		t.Fatalf("NewMailbox: %v", err)
	}
	mb.Post(1, 2, 3)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mb.Close()
		mb.Close()
		mb.Close()
		// A late Post (a worker finishing during shutdown) must neither
		// panic nor block.
		mb.Post(4)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close or a Post after Close blocked")
	}
	term(t, ctx)
}

func TestSendErrors(t *testing.T) {
	ctx := newContext(t)
	defer term(t, ctx)

	t.Run("unknown ROUTER identity is ErrUnroutable", func(t *testing.T) {
		r, addr, err := zsock.NewRouter(ctx, "tcp://127.0.0.1:*")
		if err != nil {
			t.Fatalf("NewRouter: %v", err)
		}
		defer zsock.Close(r)
		if addr == "" || addr == "tcp://127.0.0.1:*" {
			t.Fatalf("NewRouter returned endpoint %q, want the bound port", addr)
		}
		err = zsock.Send(r, []byte("nobody"), [][]byte{[]byte("x")})
		if !errors.Is(err, zsock.ErrUnroutable) {
			t.Fatalf("Send to unknown identity: %v, want ErrUnroutable", err)
		}
	})

	t.Run("ROUTER to a peer that does not read is ErrWouldBlock at the HWM", func(t *testing.T) {
		r, addr, err := zsock.NewRouter(ctx, "inproc://hwm-router")
		if err != nil {
			t.Fatalf("NewRouter: %v", err)
		}
		defer zsock.Close(r)
		d, err := zsock.NewDealer(ctx, "slow", addr)
		if err != nil {
			t.Fatalf("NewDealer: %v", err)
		}
		defer zsock.Close(d)
		// The ROUTER learns the identity from the first message.
		if err := zsock.Send(d, nil, [][]byte{[]byte("hello")}); err != nil {
			t.Fatalf("dealer send: %v", err)
		}
		var got [][]byte
		if err := pollRecv(r, &got); err != nil {
			t.Fatal(err)
		}
		if string(got[0]) != "slow" {
			t.Fatalf("routing id %q, want slow", got[0])
		}
		sent := 0
		for ; sent < 10*zsock.DefaultHWM; sent++ {
			err = zsock.Send(r, []byte("slow"), [][]byte{[]byte("m")})
			if err != nil {
				break
			}
		}
		if !errors.Is(err, zsock.ErrWouldBlock) {
			t.Fatalf("after %d sends: %v, want ErrWouldBlock", sent, err)
		}
		if sent < zsock.DefaultHWM {
			t.Errorf("ErrWouldBlock after %d messages; the HWM is %d", sent, zsock.DefaultHWM)
		}
		t.Logf("ROUTER refused with ErrWouldBlock after %d queued messages", sent)
	})

	t.Run("DEALER with no peer is ErrWouldBlock at the HWM", func(t *testing.T) {
		d, err := zsock.NewDealer(ctx, "lonely", "tcp://127.0.0.1:1")
		if err != nil {
			t.Fatalf("NewDealer: %v", err)
		}
		defer zsock.Close(d)
		sent := 0
		for ; sent < 10*zsock.DefaultHWM; sent++ {
			err = zsock.Send(d, nil, [][]byte{[]byte("m")})
			if err != nil {
				break
			}
		}
		if !errors.Is(err, zsock.ErrWouldBlock) {
			t.Fatalf("after %d sends: %v, want ErrWouldBlock", sent, err)
		}
	})

	t.Run("Recv with nothing waiting is not an error", func(t *testing.T) {
		r, _, err := zsock.NewRouter(ctx, "tcp://127.0.0.1:*")
		if err != nil {
			t.Fatalf("NewRouter: %v", err)
		}
		defer zsock.Close(r)
		frames, ok, err := zsock.Recv(r)
		if err != nil || ok || frames != nil {
			t.Fatalf("Recv on an idle socket = %v, %v, %v; want nil, false, nil", frames, ok, err)
		}
	})

	t.Run("bad bind address fails at once and names it", func(t *testing.T) {
		_, _, err := zsock.NewRouter(ctx, "tcp://not-an-address")
		if err == nil {
			t.Fatal("NewRouter on a bad address succeeded")
		}
		if !strings.Contains(err.Error(), "tcp://not-an-address") {
			t.Errorf("error %q does not name the address", err)
		}
	})

	t.Run("Send on a closed socket is ErrSocketGone", func(t *testing.T) {
		d, err := zsock.NewDealer(ctx, "closed", "tcp://127.0.0.1:1")
		if err != nil {
			t.Fatalf("NewDealer: %v", err)
		}
		zsock.Close(d)
		err = zsock.Send(d, nil, [][]byte{[]byte("m")})
		if !errors.Is(err, zsock.ErrSocketGone) {
			t.Errorf("Send on a closed socket: %v (%T), want ErrSocketGone", err, err)
		}
		_, _, err = zsock.Recv(d)
		if !errors.Is(err, zsock.ErrSocketGone) {
			t.Errorf("Recv on a closed socket: %v (%T), want ErrSocketGone", err, err)
		}
	})
}

func pollRecv(s *zmq.Socket, out *[][]byte) error {
	p := zmq.NewPoller()
	p.Add(s, zmq.POLLIN)
	polled, err := p.Poll(5 * time.Second)
	if err != nil {
		return err
	}
	if len(polled) == 0 {
		return errors.New("nothing received within 5s")
	}
	frames, ok, err := zsock.Recv(s)
	if err != nil || !ok {
		return fmt.Errorf("recv: ok=%v err=%v", ok, err)
	}
	*out = frames
	return nil
}

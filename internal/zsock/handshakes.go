package zsock

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"
)

// A failed CURVE handshake (a client with a wrong or unknown key, or not
// speaking CURVE) never reaches the daemon's loop: libzmq drops the
// connection. HandshakeWatch reads the socket's monitor events instead, so
// operators can count and see them.

// HandshakeFailure names why a handshake failed, for a metric label.
type HandshakeFailure string

const (
	FailedAuth     HandshakeFailure = "auth"     // the ZAP handler refused the key
	FailedProtocol HandshakeFailure = "protocol" // not CURVE, or a wrong server key
	FailedOther    HandshakeFailure = "other"
)

// HandshakeWatch reads one socket's handshake failures on its own
// goroutine (which owns the monitor's PAIR socket).
type HandshakeWatch struct {
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

var monitorSeq atomic.Uint64

// WatchHandshakes calls onFail for each failed handshake on sock, with the
// peer's address. Call it from sock's owner before the owner's loop runs;
// onFail runs on the watch's goroutine.
func WatchHandshakes(ctx *zmq.Context, sock *zmq.Socket, onFail func(why HandshakeFailure, addr string)) (*HandshakeWatch, error) {
	addr := fmt.Sprintf("inproc://switchyard-monitor-%d", monitorSeq.Add(1))
	events := zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
	if err := sock.Monitor(addr, events); err != nil {
		return nil, fmt.Errorf("monitor socket: %w", err)
	}
	pair, err := ctx.NewSocket(zmq.PAIR)
	if err != nil {
		return nil, err
	}
	_ = pair.SetLinger(0)
	if err := pair.Connect(addr); err != nil {
		pair.Close()
		return nil, fmt.Errorf("connect socket monitor: %w", err)
	}
	w := &HandshakeWatch{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer pair.Close()
		poller := zmq.NewPoller()
		poller.Add(pair, zmq.POLLIN)
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			polled, err := poller.Poll(100 * time.Millisecond)
			if err != nil || len(polled) == 0 {
				continue
			}
			ev, peer, _, err := pair.RecvEvent(zmq.DONTWAIT)
			if err != nil {
				continue
			}
			switch {
			case ev&zmq.EVENT_HANDSHAKE_FAILED_AUTH != 0:
				onFail(FailedAuth, peer)
			case ev&zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL != 0:
				onFail(FailedProtocol, peer)
			default:
				onFail(FailedOther, peer)
			}
		}
	}()
	return w, nil
}

// Stop ends the watch.
func (w *HandshakeWatch) Stop() {
	w.once.Do(func() {
		close(w.quit)
		<-w.done
	})
}

// QuietFailures logs handshake failures at most once per period per kind,
// with how many were not logged since: a client can repeat them at will.
func QuietFailures(log *logrus.Entry, period time.Duration, what string) func(HandshakeFailure, string) {
	var mu sync.Mutex
	last := map[HandshakeFailure]time.Time{}
	count := map[HandshakeFailure]int{}
	return func(why HandshakeFailure, addr string) {
		mu.Lock()
		defer mu.Unlock()
		count[why]++
		if now := time.Now(); now.Sub(last[why]) >= period {
			log.WithFields(logrus.Fields{"reason": string(why), "peer": addr, "count": count[why]}).
				Warn("a CURVE handshake on the " + what + " socket failed (a key not enrolled, a wrong server key, or not CURVE); the connection was dropped")
			last[why], count[why] = now, 0
		}
	}
}

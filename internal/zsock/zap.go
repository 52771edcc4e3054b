package zsock

import (
	"fmt"
	"sync"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Authorizer decides on one CURVE client: ok admits it, and userID is the
// name its messages carry as User-Id metadata.
type Authorizer func(domain, address, publicKey string) (userID string, ok bool)

// ZAP is the authentication handler of one ZMQ context (RFC 27). libzmq
// asks it about every CURVE handshake on that context's server sockets.
type ZAP struct {
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// StartZAP binds the context's ZAP endpoint and answers requests on a
// goroutine that owns that socket. It must run before any CURVE server
// socket of ctx binds, or libzmq would admit clients unchecked.
func StartZAP(ctx *zmq.Context, auth Authorizer) (*ZAP, error) {
	rep, err := ctx.NewSocket(zmq.REP)
	if err != nil {
		return nil, fmt.Errorf("ZAP socket: %w", err)
	}
	if err := rep.SetLinger(0); err != nil {
		rep.Close()
		return nil, err
	}
	if err := rep.Bind("inproc://zeromq.zap.01"); err != nil {
		rep.Close()
		return nil, fmt.Errorf("bind ZAP handler: %w", err)
	}
	z := &ZAP{quit: make(chan struct{}), done: make(chan struct{})}
	go z.serve(rep, auth)
	return z, nil
}

func (z *ZAP) serve(rep *zmq.Socket, auth Authorizer) {
	defer close(z.done)
	defer rep.Close()
	poller := zmq.NewPoller()
	poller.Add(rep, zmq.POLLIN)
	for {
		select {
		case <-z.quit:
			return
		default:
		}
		polled, err := poller.Poll(100 * time.Millisecond)
		if err != nil || len(polled) == 0 {
			continue
		}
		req, err := rep.RecvMessageBytes(zmq.DONTWAIT)
		if err != nil {
			continue
		}
		_, _ = rep.SendMessageDontwait(answer(req, auth))
	}
}

// answer builds the ZAP reply frames for one request.
func answer(req [][]byte, auth Authorizer) []string {
	// version, request id, domain, address, identity, mechanism, credentials...
	if len(req) < 6 {
		return []string{"1.0", "", "500", "malformed ZAP request", "", ""}
	}
	id := string(req[1])
	if string(req[0]) != "1.0" {
		return []string{"1.0", id, "500", "unknown ZAP version", "", ""}
	}
	if string(req[5]) != "CURVE" || len(req) < 7 || len(req[6]) != 32 {
		return []string{"1.0", id, "400", "only CURVE clients are admitted", "", ""}
	}
	user, ok := auth(string(req[2]), string(req[3]), zmq.Z85encode(string(req[6])))
	if !ok {
		return []string{"1.0", id, "400", "key not enrolled", "", ""}
	}
	return []string{"1.0", id, "200", "OK", user, ""}
}

// Stop ends the handler; call it after the context's server sockets are
// closed.
func (z *ZAP) Stop() {
	z.once.Do(func() {
		close(z.quit)
		<-z.done
	})
}

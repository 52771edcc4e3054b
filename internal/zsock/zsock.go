// Package zsock builds ZeroMQ sockets with the options every Switchyard link
// needs, and hands messages to a socket's owning goroutine.
package zsock

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Defaults chosen so a burst of batches fits, and a hostile peer cannot make
// libzmq allocate without bound.
const (
	DefaultHWM        = 10000
	DefaultMaxMsgSize = 256 << 20
)

// Errors from Send.
var (
	ErrWouldBlock = errors.New("peer pipe full (high-water mark)")
	ErrUnroutable = errors.New("no connected peer with that identity")
	ErrSocketGone = errors.New("socket closed")
)

// Option sets up a socket before it binds or connects.
type Option func(*zmq.Socket) error

// CurveServer makes the socket a CurveZMQ server with the given secret key;
// clients are admitted by the context's ZAP handler (see StartZAP) under
// domain.
func CurveServer(secretKey, domain string) Option {
	return func(s *zmq.Socket) error {
		if err := s.SetZapDomain(domain); err != nil {
			return fmt.Errorf("set ZAP domain: %w", err)
		}
		if err := s.SetCurveServer(1); err != nil {
			return fmt.Errorf("set CURVE server: %w", err)
		}
		if err := s.SetCurveSecretkey(secretKey); err != nil {
			return fmt.Errorf("set CURVE secret key: %w", err)
		}
		return nil
	}
}

// CurveClient makes the socket a CurveZMQ client that accepts only a
// server holding serverKey.
func CurveClient(serverKey, publicKey, secretKey string) Option {
	return func(s *zmq.Socket) error {
		if err := s.SetCurveServerkey(serverKey); err != nil {
			return fmt.Errorf("set CURVE server key: %w", err)
		}
		if err := s.SetCurvePublickey(publicKey); err != nil {
			return fmt.Errorf("set CURVE public key: %w", err)
		}
		if err := s.SetCurveSecretkey(secretKey); err != nil {
			return fmt.Errorf("set CURVE secret key: %w", err)
		}
		return nil
	}
}

// MaxMsgSize lowers the largest message the socket accepts; a peer that
// sends more is disconnected by libzmq before anything is allocated.
func MaxMsgSize(n int64) Option {
	return func(s *zmq.Socket) error {
		if err := s.SetMaxmsgsize(n); err != nil {
			return fmt.Errorf("set MAXMSGSIZE: %w", err)
		}
		return nil
	}
}

func apply(s *zmq.Socket, opts []Option) error {
	if err := setCommon(s); err != nil {
		return err
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return err
		}
	}
	return nil
}

// NewRouter binds a ROUTER that refuses to drop unroutable messages
// silently and lets a reconnecting peer take over its identity.
func NewRouter(ctx *zmq.Context, addr string, opts ...Option) (*zmq.Socket, string, error) {
	s, err := ctx.NewSocket(zmq.ROUTER)
	if err != nil {
		return nil, "", fmt.Errorf("new ROUTER: %w", err)
	}
	if err := apply(s, opts); err != nil {
		s.Close()
		return nil, "", err
	}
	if err := s.SetRouterMandatory(1); err != nil {
		s.Close()
		return nil, "", fmt.Errorf("set ROUTER_MANDATORY: %w", err)
	}
	if err := s.SetRouterHandover(true); err != nil {
		s.Close()
		return nil, "", fmt.Errorf("set ROUTER_HANDOVER: %w", err)
	}
	if err := s.Bind(addr); err != nil {
		s.Close()
		return nil, "", fmt.Errorf("bind %s: %w", addr, err)
	}
	ep, err := s.GetLastEndpoint()
	if err != nil {
		s.Close()
		return nil, "", fmt.Errorf("last endpoint of %s: %w", addr, err)
	}
	return s, ep, nil
}

// NewDealer connects a DEALER with the given identity.
func NewDealer(ctx *zmq.Context, identity, addr string, opts ...Option) (*zmq.Socket, error) {
	s, err := ctx.NewSocket(zmq.DEALER)
	if err != nil {
		return nil, fmt.Errorf("new DEALER: %w", err)
	}
	if err := apply(s, opts); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.SetIdentity(identity); err != nil {
		s.Close()
		return nil, fmt.Errorf("set identity %q: %w", identity, err)
	}
	if err := s.Connect(addr); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return s, nil
}

func setCommon(s *zmq.Socket) error {
	if err := s.SetLinger(0); err != nil {
		return fmt.Errorf("set LINGER: %w", err)
	}
	if err := s.SetSndhwm(DefaultHWM); err != nil {
		return fmt.Errorf("set SNDHWM: %w", err)
	}
	if err := s.SetRcvhwm(DefaultHWM); err != nil {
		return fmt.Errorf("set RCVHWM: %w", err)
	}
	if err := s.SetMaxmsgsize(DefaultMaxMsgSize); err != nil {
		return fmt.Errorf("set MAXMSGSIZE: %w", err)
	}
	return nil
}

// Close drops pending messages at once so shutdown never hangs.
func Close(s *zmq.Socket) {
	if s == nil {
		return
	}
	_ = s.SetLinger(0)
	_ = s.Close()
}

// Send writes one multipart message without blocking. identity, when not
// nil, is prepended as the ROUTER routing frame.
func Send(s *zmq.Socket, identity []byte, frames [][]byte) error {
	n := len(frames)
	if identity != nil {
		if _, err := s.SendBytes(identity, zmq.DONTWAIT|zmq.SNDMORE); err != nil {
			return classify(err)
		}
	}
	for i, f := range frames {
		flag := zmq.DONTWAIT
		if i < n-1 {
			flag |= zmq.SNDMORE
		}
		if _, err := s.SendBytes(f, flag); err != nil {
			return classify(err)
		}
	}
	return nil
}

func classify(err error) error {
	if errors.Is(err, zmq.ErrorSocketClosed) {
		return ErrSocketGone
	}
	switch zmq.AsErrno(err) {
	case zmq.Errno(syscall.EAGAIN):
		return ErrWouldBlock
	case zmq.Errno(syscall.EHOSTUNREACH):
		return ErrUnroutable
	case zmq.ETERM, zmq.Errno(syscall.ENOTSOCK):
		return ErrSocketGone
	}
	return err
}

// Recv reads one multipart message without blocking; ok is false when none
// is waiting.
func Recv(s *zmq.Socket) (frames [][]byte, ok bool, err error) {
	frames, err = s.RecvMessageBytes(zmq.DONTWAIT)
	if err != nil {
		if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
			return nil, false, nil
		}
		return nil, false, classify(err)
	}
	return frames, true, nil
}

// RecvAuth is Recv on a ROUTER that also returns the User-Id the ZAP
// handler gave the sending connection. The routing frame is made by the
// ROUTER itself and carries no metadata, so it is read from the next one.
func RecvAuth(s *zmq.Socket) (frames [][]byte, userID string, ok bool, err error) {
	route, err := s.RecvBytes(zmq.DONTWAIT)
	if err != nil {
		if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
			return nil, "", false, nil
		}
		return nil, "", false, classify(err)
	}
	frames = [][]byte{route}
	more, err := s.GetRcvmore()
	if err != nil || !more {
		return frames, "", true, nil
	}
	first, meta, err := s.RecvBytesWithMetadata(0, "User-Id")
	if err != nil {
		return nil, "", false, classify(err)
	}
	frames = append(frames, first)
	for {
		more, err := s.GetRcvmore()
		if err != nil || !more {
			break
		}
		b, err := s.RecvBytes(0)
		if err != nil {
			return nil, "", false, classify(err)
		}
		frames = append(frames, b)
	}
	return frames, meta["User-Id"], true, nil
}

// Wait polls until a socket is readable or the earliest non-zero deadline
// passes, and never longer than 100ms so a loop notices shutdown. An
// interrupted poll (EINTR) returns nothing and no error.
func Wait(p *zmq.Poller, deadlines ...time.Time) ([]zmq.Polled, error) {
	timeout := 100 * time.Millisecond
	for _, d := range deadlines {
		if !d.IsZero() {
			timeout = min(timeout, time.Until(d))
		}
	}
	// Poll counts whole milliseconds: round up, or the last part of a
	// wait spins.
	timeout = max(timeout, 0) + time.Millisecond - 1
	polled, err := p.Poll(timeout.Truncate(time.Millisecond))
	if err != nil {
		if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
			return nil, nil
		}
		return nil, fmt.Errorf("poll: %w", err)
	}
	return polled, nil
}

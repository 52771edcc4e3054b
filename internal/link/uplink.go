package link

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// UplinkConfig describes a DEALER link to a ROUTER.
type UplinkConfig struct {
	Ctx *zmq.Context
	// Addr is the server's address, or several separated by commas
	// (forwarders sharing one database): a lost or silent server makes
	// the next connect go to the next address.
	Addr string
	// ID is who we are; each connection routes as ID plus a random
	// suffix, so nobody can guess a live connection's routing id.
	ID     string
	Timing Timing
	// Keys turn CURVE on; nil is an insecure link.
	Keys *ClientKeys
	// MaxMsgSize caps what the server may send us (0 keeps the default).
	MaxMsgSize int64
	// Register builds the Registration sent on every (re)connect.
	Register func() messages.Message
	// Peer names the other side in logs ("forwarder", "interchange").
	Peer string
	Log  *logrus.Entry
}

// Uplink is the client side of a link. A lost server gets a new socket
// each time, with backoff.
type Uplink struct {
	cfg        UplinkConfig
	addrs      []string
	at         int // index in addrs of the current server
	log        *logrus.Entry
	sock       *zmq.Socket
	route      string
	registered bool
	lastSeen   time.Time
	lastSent   time.Time
	lastTry    time.Time
	backoff    time.Duration
	connects   int
	// socketChanged tells the owner to rebuild its poller.
	socketChanged bool
	lost          Reason
	// refused: this server refused our Registration and there are
	// others; its requests to re-register are ignored until we move on.
	refused bool
}

// NewUplink makes an unconnected uplink; Connect dials.
func NewUplink(cfg UplinkConfig) *Uplink {
	var addrs []string
	for a := range strings.SplitSeq(cfg.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		addrs = []string{cfg.Addr}
	}
	return &Uplink{cfg: cfg, addrs: addrs, log: cfg.Log.WithField("peer", cfg.Peer)}
}

// Addr is the address of the current (or next) server.
func (u *Uplink) Addr() string { return u.addrs[u.at] }

// failOver moves the next connect to the next address.
func (u *Uplink) failOver() {
	if len(u.addrs) > 1 {
		u.at = (u.at + 1) % len(u.addrs)
		u.log.WithField("address", u.addrs[u.at]).Info("trying the next " + u.cfg.Peer)
	}
}

// SetTiming changes the heartbeat interval and threshold, e.g. to the
// ones the server announced.
func (u *Uplink) SetTiming(t Timing) { u.cfg.Timing = t }

// Connect makes a new socket and registers.
func (u *Uplink) Connect(now time.Time) {
	u.Close()
	u.lastTry = now
	u.registered = false
	u.refused = false
	u.socketChanged = true
	opts := []zsock.Option{}
	if k := u.cfg.Keys; k != nil {
		opts = append(opts, zsock.CurveClient(k.ServerKey, k.Public, k.Secret))
	}
	if u.cfg.MaxMsgSize > 0 {
		opts = append(opts, zsock.MaxMsgSize(u.cfg.MaxMsgSize))
	}
	u.route = routeFor(u.cfg.ID)
	s, err := zsock.NewDealer(u.cfg.Ctx, u.route, u.addrs[u.at], opts...)
	if err != nil {
		u.log.WithError(err).Error("cannot connect to " + u.cfg.Peer)
		return
	}
	u.sock = s
	u.connects++
	u.Send(u.cfg.Register())
}

// routeFor is a fresh routing id for one connection of id.
func routeFor(id string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return id + "/" + hex.EncodeToString(b[:])
}

// Close drops the socket.
func (u *Uplink) Close() {
	if u.sock != nil {
		zsock.Close(u.sock)
		u.sock = nil
		u.socketChanged = true
	}
}

// CloseLinger closes the socket after giving what is queued up to d to
// leave (a goodbye must not be dropped by a zero linger).
func (u *Uplink) CloseLinger(d time.Duration) {
	if u.sock != nil {
		_ = u.sock.SetLinger(d)
		_ = u.sock.Close()
		u.sock = nil
		u.socketChanged = true
	}
}

// Socket is the current socket, nil between connections.
func (u *Uplink) Socket() *zmq.Socket { return u.sock }

// SocketChanged reports, once, that the socket was replaced since the
// last call, so the owner rebuilds its poller.
func (u *Uplink) SocketChanged() bool {
	c := u.socketChanged
	u.socketChanged = false
	return c
}

// Registered is true once the server answered our Registration.
func (u *Uplink) Registered() bool { return u.registered }

// Connects counts sockets made so far.
func (u *Uplink) Connects() int { return u.connects }

// Backoff is the wait before the next reconnect, 0 while registered.
func (u *Uplink) Backoff() time.Duration { return u.backoff }

// LastSeen is when we last heard from the server.
func (u *Uplink) LastSeen() time.Time { return u.lastSeen }

// Send packs and sends m.
func (u *Uplink) Send(m messages.Message) error {
	if u.sock == nil {
		return zsock.ErrSocketGone
	}
	frames, err := m.Pack()
	if err != nil {
		return err
	}
	if err := zsock.Send(u.sock, nil, frames); err != nil {
		return err
	}
	u.lastSent = time.Now()
	return nil
}

// TrySend is Send for messages the link recovers from losing (heartbeats,
// replies): a failure is only logged at debug level.
func (u *Uplink) TrySend(m messages.Message) {
	if err := u.Send(m); err != nil {
		u.log.WithError(err).WithField("type", m.Type().String()).Debug("message to " + u.cfg.Peer + " not sent")
	}
}

// Recv reads one message without blocking.
func (u *Uplink) Recv() (frames [][]byte, ok bool, err error) {
	if u.sock == nil {
		return nil, false, nil
	}
	return zsock.Recv(u.sock)
}

// Heard updates liveness for a decoded message and handles what the link
// itself answers (Reregister, HeartbeatReq). registered is true when this
// message completed a registration: the owner re-sends what it holds.
// handled is true when the owner need not look at the message.
func (u *Uplink) Heard(msg messages.Message, now time.Time) (registered, handled bool) {
	u.lastSeen = now
	_, again := msg.(*messages.Reregister)
	_, refused := msg.(*messages.ErrorReply)
	if !u.registered && !again && !refused {
		u.registered = true
		u.backoff = 0
		u.lost = ReasonNone
		registered = true
	}
	if refused && !u.registered && len(u.addrs) > 1 && !u.refused {
		// A forwarder that cannot dispatch this endpoint (it lost its
		// database, or another holds the endpoint) refuses it: go to
		// the next after the back-off, not the threshold.
		u.refused = true
		u.lastTry = now.Add(-u.cfg.Timing.Threshold)
		u.log.WithField("reason", msg.(*messages.ErrorReply).Reason).Warn(u.cfg.Peer + " refused our registration; trying the next")
	}
	switch m := msg.(type) {
	case *messages.HeartbeatReq:
		u.TrySend(&messages.HeartbeatResp{Nonce: m.Nonce})
		return registered, true
	case *messages.Reregister:
		if u.refused {
			return registered, true
		}
		if !u.registered && now.Sub(u.lastTry) < u.cfg.Timing.Interval {
			return registered, true // our Registration is on its way
		}
		u.log.WithField("reason", m.Reason).Info(u.cfg.Peer + " asked us to re-register")
		u.registered = false
		u.lastTry = now
		u.TrySend(u.cfg.Register())
		return registered, true
	}
	return registered, false
}

// Tick is what happened at one timer check.
type Tick uint8

// What Timers did.
const (
	TickNothing   Tick = iota
	TickLost           // the server went silent; we reconnected
	TickRetried        // no answer to our Registration; we reconnected
	TickHeartbeat      // we sent a heartbeat
)

// Timers declares the server lost after the threshold, reconnects with
// backoff, and sends a soft heartbeat when nothing else went out.
func (u *Uplink) Timers(now time.Time) Tick {
	t := u.cfg.Timing
	switch {
	case u.registered && now.Sub(u.lastSeen) > t.Threshold:
		u.registered = false
		u.lost = ReasonSilent
		u.log.WithField("silent_for", now.Sub(u.lastSeen).Round(time.Millisecond).String()).
			Warn(u.cfg.Peer + " lost; reconnecting")
		u.backoff = t.Interval
		u.failOver()
		u.Connect(now)
		return TickLost
	case !u.registered && now.Sub(u.lastTry) > u.backoff+t.Threshold:
		u.backoff = heartbeat.NextBackoff(u.backoff, t.Interval, t.Threshold)
		u.log.WithFields(logrus.Fields{"address": u.addrs[u.at], "next_try_in": u.backoff.String()}).
			Warn("no answer from " + u.cfg.Peer + "; reconnecting")
		u.failOver()
		u.Connect(now)
		return TickRetried
	case u.registered && now.Sub(u.lastSent) >= t.Interval:
		if u.Send(&messages.Heartbeat{}) == nil {
			return TickHeartbeat
		}
	}
	return TickNothing
}

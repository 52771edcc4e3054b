package link

import (
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Peer is the link state of one registered client, embedded in the
// owner's own record of it (an endpoint, a manager).
type Peer struct {
	ID string
	// Route is the routing id of the connection it registered on.
	Route []byte
	// User is the name the ZAP handler gave its key ("" when insecure).
	User       string
	LastSeen   time.Time
	LastSent   time.Time
	Registered time.Time
}

// Silent reports whether p has been quiet past the threshold.
func (p *Peer) Silent(now time.Time, t Timing) bool { return now.Sub(p.LastSeen) > t.Threshold }

// Envelope is one message received on a ROUTER.
type Envelope struct {
	Route  []byte
	User   string // authenticated User-Id, "" on an insecure link
	Frames [][]byte
}

// Router is the server side of a link: a ROUTER socket and the routing
// table of who registered on which connection.
type Router struct {
	sock   *zmq.Socket
	timing Timing
	secure bool
	// routes maps a connection's routing id to the peer id registered
	// on it; a newer registration of the same id replaces the old route.
	routes map[string]string
	// asked limits Reregister replies to one per interval per connection.
	asked map[string]time.Time
	// Malformed, when set, is told of each message Accept drops as
	// malformed (err nil: no payload), before any answer goes out.
	Malformed func(route []byte, err error)
}

// NewRouter wraps a bound ROUTER socket; secure says it is a CURVE server,
// so every message carries its sender's User-Id.
func NewRouter(sock *zmq.Socket, t Timing, secure bool) *Router {
	return &Router{sock: sock, timing: t, secure: secure, routes: make(map[string]string), asked: make(map[string]time.Time)}
}

// Socket is the ROUTER socket, for the owner's poller.
func (r *Router) Socket() *zmq.Socket { return r.sock }

// Secure reports whether peers are authenticated.
func (r *Router) Secure() bool { return r.secure }

// Recv reads one message without blocking. A message without a routing
// frame and a payload is reported as malformed (ok true, Frames nil).
func (r *Router) Recv() (env Envelope, ok bool, err error) {
	var frames [][]byte
	if r.secure {
		frames, env.User, ok, err = zsock.RecvAuth(r.sock)
	} else {
		frames, ok, err = zsock.Recv(r.sock)
	}
	if err != nil || !ok {
		return env, ok, err
	}
	env.Route = frames[0]
	if len(frames) >= 2 {
		env.Frames = frames[1:]
	}
	return env, true, nil
}

// PeerID is the id registered on a connection, if any.
func (r *Router) PeerID(route []byte) (string, bool) {
	id, ok := r.routes[string(route)]
	return id, ok
}

// Bind records that p registered on route; a previous connection of the
// same peer stops being routed to it.
func (r *Router) Bind(p *Peer, route []byte, user string, now time.Time) {
	if p.Route != nil && string(p.Route) != string(route) {
		delete(r.routes, string(p.Route))
	}
	p.Route = append(p.Route[:0:0], route...)
	p.User = user
	p.LastSeen = now
	p.Registered = now
	r.routes[string(route)] = p.ID
	delete(r.asked, string(route))
}

// Unbind forgets p's connection (it was lost, revoked or said goodbye).
func (r *Router) Unbind(p *Peer) {
	if p.Route != nil {
		if r.routes[string(p.Route)] == p.ID {
			delete(r.routes, string(p.Route))
		}
	}
}

// Send packs m and sends it to p.
func (r *Router) Send(p *Peer, m messages.Message) error {
	frames, err := m.Pack()
	if err != nil {
		return err
	}
	if err := zsock.Send(r.sock, p.Route, frames); err != nil {
		return err
	}
	p.LastSent = time.Now()
	return nil
}

// Reply answers a connection that is not (or no longer) a registered
// peer; errors are dropped, the peer's own timers recover.
func (r *Router) Reply(route []byte, m messages.Message) {
	if frames, err := m.Pack(); err == nil {
		_ = zsock.Send(r.sock, route, frames)
	}
}

// AskReregister tells an unknown connection to register, at most once per
// interval; it reports whether it asked.
func (r *Router) AskReregister(route []byte, reason string, now time.Time) bool {
	if last, ok := r.asked[string(route)]; ok && now.Sub(last) < r.timing.Interval {
		return false
	}
	r.asked[string(route)] = now
	r.Reply(route, &messages.Reregister{Reason: reason})
	return true
}

// HeartbeatDue reports whether p needs a heartbeat: nothing was sent to it
// for idle.
func (r *Router) HeartbeatDue(p *Peer, now time.Time, idle time.Duration) bool {
	return now.Sub(p.LastSent) >= idle
}

// Prune forgets old Reregister requests.
func (r *Router) Prune(now time.Time) {
	for k, at := range r.asked {
		if now.Sub(at) > r.timing.Threshold {
			delete(r.asked, k)
		}
	}
}

// Refuse answers a registration or message with an error reply.
func (r *Router) Refuse(route []byte, code messages.ErrorCode, reason string) {
	r.Reply(route, &messages.ErrorReply{Code: code, Reason: reason})
}

// Verdict is what Accept made of a message.
type Verdict uint8

// Verdicts of Accept.
const (
	FromPeer    Verdict = iota // from a live registered peer: the owner handles it
	Registering                // a Registration: the owner decides
	Malformed                  // no payload, or undecodable; counted and answered
	Unknown                    // from a connection without a live peer
)

// Inbound is one message as Accept sorted it.
type Inbound struct {
	Msg     messages.Message
	PeerID  string // FromPeer: who sent it
	Verdict Verdict
	Asked   bool // Unknown: a Reregister request went out this time
}

// Accept does what every ROUTER owner does first with a message: decode
// it, report (to Malformed) and answer one that does not decode, and ask a connection without a
// live peer (live says whether a registered id still is) to register
// again, at most once per interval, with reason.
func (r *Router) Accept(env Envelope, now time.Time, live func(id string) bool, reason string) Inbound {
	if env.Frames == nil {
		if r.Malformed != nil {
			r.Malformed(env.Route, nil)
		}
		return Inbound{Verdict: Malformed}
	}
	msg, err := messages.Unpack(env.Frames)
	if err != nil {
		if r.Malformed != nil {
			r.Malformed(env.Route, err)
		}
		r.Reply(env.Route, messages.ReplyFor(err))
		return Inbound{Verdict: Malformed}
	}
	if _, ok := msg.(*messages.Registration); ok {
		return Inbound{Msg: msg, Verdict: Registering}
	}
	if id, ok := r.PeerID(env.Route); ok && live(id) {
		return Inbound{Msg: msg, PeerID: id, Verdict: FromPeer}
	}
	return Inbound{Msg: msg, Verdict: Unknown, Asked: r.AskReregister(env.Route, reason, now)}
}

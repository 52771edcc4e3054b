// Package link keeps a ZeroMQ link alive, once for every daemon: the
// DEALER side (Uplink: dial, register, back off, soft heartbeat,
// re-register), the ROUTER side (Router: who is behind which connection,
// expiry, re-register requests, error replies) and delivery until
// acknowledged (Deliveries, and Outbox with its send queue: held records
// re-sent when due and after a re-registration; the state lives in a
// Delivery embedded in the caller's record). Everything here is a plain
// struct owned by one event loop; nothing starts a goroutine.
package link

import (
	"time"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
)

// Timing is a link's heartbeat interval and the silence after which the
// other side is declared lost.
type Timing struct {
	Interval  time.Duration
	Threshold time.Duration
}

// Tick is how often the owning loop should call the link's timers.
func (t Timing) Tick() time.Duration { return heartbeat.Tick(t.Interval) }

// Reason says why a peer was dropped (NATS's ClosedState, for links).
type Reason uint8

// Reasons a peer is lost.
const (
	ReasonNone      Reason = iota
	ReasonSilent           // nothing heard within the threshold
	ReasonGoodbye          // the peer said it was leaving
	ReasonReplaced         // a newer connection registered under its id
	ReasonRevoked          // its credential was revoked
	ReasonRefused          // the other side refused us
	ReasonLeaseLost        // this server no longer holds the peer (shared database)
)

var reasonNames = [...]string{"", "heartbeat timeout", "said goodbye", "replaced by a new connection",
	"credential revoked", "refused", "lease lost"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// ClientKeys are what a CURVE client needs; nil on an insecure link.
type ClientKeys struct {
	ServerKey string
	Public    string
	Secret    string
}

// Package simmanager simulates many managers in one process, for
// benchmarks and scale tests of an interchange. Each simulated manager is
// its own DEALER socket with its own routing id and speaks the messages
// package like a real manager: it registers, sends a ManagerStatusReport
// every heartbeat interval (the interchange answers each with a
// Heartbeat), sends a soft Heartbeat when it has sent nothing else within
// the interval, completes every task of a TaskBatch at once as a no-op
// success, keeps results until they are acked, and registers again (and
// re-sends what was not acked) on Reregister or when the interchange goes
// silent.
//
// Sockets are owned by a few loop goroutines, each polling a share of
// them (Options.PerLoop), so a thousand managers cost a handful of
// goroutines, not a thousand.
package simmanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Options configure a Fleet.
type Options struct {
	// Interchange is the ROUTER address managers connect to (required).
	Interchange string
	// Count is how many simulated managers to run (default 1).
	Count int
	// IDPrefix starts every manager id; the id is the prefix plus a
	// zero-padded index (default "sim-<pid>-").
	IDPrefix string
	// Workers and Prefetch are what each manager registers; the
	// interchange sends it at most Workers+Prefetch tasks at a time
	// (defaults 1 and 0).
	Workers  uint32
	Prefetch uint32
	// HeartbeatInterval is how often a status report goes up (default 1s);
	// HeartbeatThreshold is how long without any message before a manager
	// registers again (default 3 intervals).
	HeartbeatInterval  time.Duration
	HeartbeatThreshold time.Duration
	// PerLoop is how many sockets one goroutine owns (default 250).
	PerLoop int
	// IOThreads of the fleet's ZMQ context (default 1).
	IOThreads int
	Log       *logrus.Entry
	// Credentials are the interchange's manager credentials; nil talks to
	// an interchange started with --insecure.
	Credentials *curve.Credentials
}

func (o *Options) setDefaults() error {
	if o.Interchange == "" {
		return errors.New("simmanager: Interchange address is required")
	}
	if o.Count == 0 {
		o.Count = 1
	}
	if o.Count < 0 || o.Count > 100000 {
		return fmt.Errorf("simmanager: Count %d must be between 1 and 100000", o.Count)
	}
	if o.IDPrefix == "" {
		o.IDPrefix = fmt.Sprintf("sim-%d-", os.Getpid())
	}
	if o.Workers == 0 {
		o.Workers = 1
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = time.Second
	}
	if o.HeartbeatInterval < time.Millisecond {
		return fmt.Errorf("simmanager: HeartbeatInterval %s is too short (minimum 1ms)", o.HeartbeatInterval)
	}
	if o.HeartbeatThreshold == 0 {
		o.HeartbeatThreshold = 3 * o.HeartbeatInterval
	}
	if o.HeartbeatThreshold <= o.HeartbeatInterval {
		return fmt.Errorf("simmanager: HeartbeatThreshold %s must be longer than HeartbeatInterval %s", o.HeartbeatThreshold, o.HeartbeatInterval)
	}
	if o.PerLoop <= 0 {
		o.PerLoop = 250
	}
	if o.IOThreads <= 0 {
		o.IOThreads = 1
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = logrus.NewEntry(l)
	}
	o.Log = o.Log.WithField("component", "simmanager")
	return nil
}

// numTypes sizes the per-type counters.
const numTypes = int(messages.TypeErrorReply) + 1

// Stats is a snapshot of what a fleet did since it started.
type Stats struct {
	Managers   int // simulated managers
	Registered int // of them, currently registered
	// Sent and Received count messages by type (index messages.Type).
	Sent     [numTypes]uint64
	Received [numTypes]uint64
	// Undecodable messages received; SendFailures are sends refused
	// by the socket (pipe full); Reconnects are re-registrations after the
	// interchange went silent.
	Undecodable  uint64
	SendFailures uint64
	Reconnects   uint64
	// TasksCompleted counts tasks answered with a result (re-sends not
	// counted); ResultsAcked counts results the interchange acked.
	TasksCompleted uint64
	ResultsAcked   uint64
}

// SentTotal is every message sent.
func (s Stats) SentTotal() uint64 { return sum(s.Sent[:]) }

// ReceivedTotal is every message received.
func (s Stats) ReceivedTotal() uint64 { return sum(s.Received[:]) }

func sum(v []uint64) uint64 {
	var n uint64
	for _, x := range v {
		n += x
	}
	return n
}

// Sub is s minus an earlier snapshot, for rates.
func (s Stats) Sub(before Stats) Stats {
	d := s
	for i := range d.Sent {
		d.Sent[i] -= before.Sent[i]
		d.Received[i] -= before.Received[i]
	}
	d.Undecodable -= before.Undecodable
	d.SendFailures -= before.SendFailures
	d.Reconnects -= before.Reconnects
	d.TasksCompleted -= before.TasksCompleted
	d.ResultsAcked -= before.ResultsAcked
	return d
}

type counters struct {
	sent, received                     [numTypes]atomic.Uint64
	undecodable, sendFailures, reconns atomic.Uint64
	completed, acked                   atomic.Uint64
	registered                         atomic.Int64
}

// Fleet is a set of simulated managers.
type Fleet struct {
	opts    Options
	log     *logrus.Entry
	zctx    *zmq.Context
	loops   []*loop
	c       counters
	running atomic.Bool
	closeMu sync.Mutex
	closed  bool
}

// New validates options and connects every manager's socket (nothing is
// sent until Run).
func New(opts Options) (*Fleet, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	f := &Fleet{opts: opts, log: opts.Log}
	var err error
	if f.zctx, err = zmq.NewContext(); err != nil {
		return nil, fmt.Errorf("simmanager: zmq context: %w", err)
	}
	// Every socket needs a slot, and libzmq's default is 1023.
	if err := f.zctx.SetMaxSockets(opts.Count + 64); err != nil {
		f.term()
		return nil, fmt.Errorf("simmanager: set max sockets %d: %w", opts.Count+64, err)
	}
	if err := f.zctx.SetIoThreads(opts.IOThreads); err != nil {
		f.term()
		return nil, fmt.Errorf("simmanager: set io threads %d: %w", opts.IOThreads, err)
	}
	width := len(fmt.Sprint(opts.Count - 1))
	start := time.Now()
	var cur *loop
	for i := 0; i < opts.Count; i++ {
		if cur == nil || len(cur.sims) == opts.PerLoop {
			cur = &loop{f: f}
			f.loops = append(f.loops, cur)
		}
		id := fmt.Sprintf("%s%0*d", opts.IDPrefix, width, i)
		// Spread the status reports over one interval so a thousand
		// managers do not all report in the same millisecond.
		first := start.Add(time.Duration(int64(opts.HeartbeatInterval) * int64(i) / int64(opts.Count)))
		sm := &sim{id: id, nextReport: first, results: link.NewOutbox(resultDelivery), byID: make(map[messages.TaskID]*simResult)}
		var keys *link.ClientKeys
		if c := opts.Credentials; c != nil {
			keys = &link.ClientKeys{ServerKey: c.ServerKey, Public: c.Client.Public, Secret: c.Client.Secret}
		}
		sm.up = link.NewUplink(link.UplinkConfig{Ctx: f.zctx, Addr: opts.Interchange, ID: id, Keys: keys,
			Timing:   link.Timing{Interval: opts.HeartbeatInterval, Threshold: opts.HeartbeatThreshold},
			Register: cur.registration(sm), Peer: "interchange", Log: f.log.WithField("manager", id)})
		cur.sims = append(cur.sims, sm)
	}
	return f, nil
}

// IDs lists the managers' ids (their routing ids).
func (f *Fleet) IDs() []string {
	var out []string
	for _, l := range f.loops {
		for _, s := range l.sims {
			out = append(out, s.id)
		}
	}
	return out
}

// Stats reads the counters; safe from any goroutine.
func (f *Fleet) Stats() Stats {
	st := Stats{Managers: f.opts.Count, Registered: int(f.c.registered.Load()),
		Undecodable: f.c.undecodable.Load(), SendFailures: f.c.sendFailures.Load(), Reconnects: f.c.reconns.Load(),
		TasksCompleted: f.c.completed.Load(), ResultsAcked: f.c.acked.Load()}
	for i := range st.Sent {
		st.Sent[i] = f.c.sent[i].Load()
		st.Received[i] = f.c.received[i].Load()
	}
	return st
}

// Run drives every manager until ctx ends, then closes the sockets and
// the fleet's ZMQ context. It may be called once.
func (f *Fleet) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("simmanager: Run called twice")
	}
	f.closeMu.Lock()
	if f.closed {
		f.closeMu.Unlock()
		return errors.New("simmanager: fleet already closed")
	}
	f.closeMu.Unlock()
	f.log.WithFields(logrus.Fields{"managers": f.opts.Count, "loops": len(f.loops), "interchange": f.opts.Interchange,
		"interval": f.opts.HeartbeatInterval.String()}).Info("simulated managers starting")
	errs := make(chan error, len(f.loops))
	for _, l := range f.loops {
		go func(l *loop) { errs <- l.run(ctx) }(l)
	}
	var first error
	for range f.loops {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	f.closeMu.Lock()
	f.closed = true
	f.closeMu.Unlock()
	f.term()
	return first
}

// Close releases a fleet whose Run was never called.
func (f *Fleet) Close() {
	if f.running.Load() {
		return
	}
	f.closeMu.Lock()
	defer f.closeMu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	f.closeSockets()
	f.term()
}

func (f *Fleet) closeSockets() {
	for _, l := range f.loops {
		for _, s := range l.sims {
			s.up.Close()
		}
	}
}

func (f *Fleet) term() {
	if f.zctx != nil {
		_ = f.zctx.Term()
		f.zctx = nil
	}
}

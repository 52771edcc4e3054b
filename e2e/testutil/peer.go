package testutil

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Received is one message a Peer got.
type Received struct {
	// Identity is the sender's id (ROUTER peers only): its routing id
	// without the per-connection suffix the link layer adds.
	Identity string
	Frames   [][]byte // frames after the routing id
	Msg      messages.Message
	Err      error // decode error; Msg is nil then
	At       time.Time
}

// Type is the message type, or TypeInvalid if it did not decode.
func (r Received) Type() messages.Type {
	if r.Msg == nil {
		return messages.TypeInvalid
	}
	return r.Msg.Type()
}

func (r Received) String() string {
	if r.Err != nil {
		return fmt.Sprintf("undecodable from %q: %v", r.Identity, r.Err)
	}
	return fmt.Sprintf("%s from %q", r.Msg.Type(), r.Identity)
}

type outgoing struct {
	identity []byte
	frames   [][]byte
	errc     chan error
}

// Peer is a raw ZMQ socket speaking the messages package, owned by one
// goroutine of its own (sockets are never shared). A DEALER peer plays a
// manager (towards an interchange) or an interchange (towards a forwarder);
// a ROUTER peer plays a forwarder (towards an interchange) or an
// interchange (towards managers).
//
// Everything received is kept in order. Expect finds the first message not
// yet taken that matches, so tests can wait for one kind of message while
// others keep arriving. Optional automatic behaviour, run by the owner
// goroutine: a Heartbeat to every known peer each interval, and an Ack for
// every ResultBatch.
type Peer struct {
	name   string
	router bool
	addr   string
	out    chan outgoing
	quit   chan struct{}
	done   chan struct{}
	nonce  atomic.Uint64
	closed atomic.Bool

	mu      sync.Mutex
	inbox   []Received
	taken   []bool
	arrived chan struct{} // closed and replaced at each arrival
	hb      time.Duration
	autoAck bool
	ackTask bool
	peers   map[string]bool // identities seen (ROUTER)
	// routes maps an id to the routing id of its latest connection.
	routes    map[string]string
	sentN     map[messages.Type]int
	serverKey string
}

// PeerOptions configure a Peer.
type PeerOptions struct {
	// Heartbeat, when set, makes the peer send a Heartbeat this often to
	// its DEALER peer, or to every identity a ROUTER has heard from.
	Heartbeat time.Duration
	// AutoAck answers every ResultBatch with an Ack of its ids.
	AutoAck bool
	// AckTasks answers every TaskBatch with an Ack of its ids, as an
	// interchange does once it has stored them.
	AckTasks bool
	// Insecure makes a ROUTER peer a plain socket; otherwise it is a CURVE
	// server with a fresh key and admits any client (no ZAP handler).
	Insecure bool
	// Credentials make a DEALER peer a CURVE client; nil is plain.
	Credentials *curve.Credentials
}

// NewDealer connects a DEALER with routing id identity to addr.
func NewDealer(t testing.TB, name, identity, addr string, o PeerOptions) *Peer {
	t.Helper()
	if o.Credentials == nil && !o.Insecure {
		kind := curve.KindManager
		if _, ok := lookup(forwarders, addr); ok {
			kind = curve.KindEndpoint
		}
		o.Credentials = credentialsFor(t, addr, kind, identity)
	}
	return newPeer(t, name, zmq.DEALER, identity, addr, o)
}

// NewRouter binds a ROUTER on addr (default tcp://127.0.0.1:*) with
// ROUTER_MANDATORY and ROUTER_HANDOVER set. Addr returns the bound endpoint.
func NewRouter(t testing.TB, name, addr string, o PeerOptions) *Peer {
	t.Helper()
	if addr == "" {
		addr = "tcp://127.0.0.1:*"
	}
	return newPeer(t, name, zmq.ROUTER, "", addr, o)
}

func newPeer(t testing.TB, name string, kind zmq.Type, identity, addr string, o PeerOptions) *Peer {
	t.Helper()
	p := &Peer{name: name, router: kind == zmq.ROUTER, out: make(chan outgoing, 64), quit: make(chan struct{}),
		done: make(chan struct{}), arrived: make(chan struct{}), hb: o.Heartbeat, autoAck: o.AutoAck, ackTask: o.AckTasks,
		peers: map[string]bool{}, routes: map[string]string{}, sentN: map[messages.Type]int{}}
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("%s: zmq context: %v", name, err)
	}
	sock, err := zctx.NewSocket(kind)
	if err != nil {
		t.Fatalf("%s: socket: %v", name, err)
	}
	fail := func(what string, err error) {
		sock.Close()
		zctx.Term()
		t.Fatalf("%s: %s: %v", name, what, err)
	}
	if err := sock.SetLinger(0); err != nil {
		fail("linger", err)
	}
	if p.router && !o.Insecure {
		kp, err := curve.NewKeyPair()
		if err != nil {
			fail("key pair", err)
		}
		if err := zsock.CurveServer(kp.Secret, "test")(sock); err != nil {
			fail("curve server", err)
		}
		p.serverKey = kp.Public
	}
	if !p.router && o.Credentials != nil {
		c := o.Credentials
		if err := zsock.CurveClient(c.ServerKey, c.Client.Public, c.Client.Secret)(sock); err != nil {
			fail("curve client", err)
		}
	}
	if p.router {
		if err := sock.SetRouterMandatory(1); err != nil {
			fail("router mandatory", err)
		}
		if err := sock.SetRouterHandover(true); err != nil {
			fail("router handover", err)
		}
		if err := sock.Bind(addr); err != nil {
			fail("bind "+addr, err)
		}
		if p.addr, err = sock.GetLastEndpoint(); err != nil {
			fail("last endpoint", err)
		}
	} else {
		if err := sock.SetIdentity(identity); err != nil {
			fail("identity", err)
		}
		if err := sock.Connect(addr); err != nil {
			fail("connect "+addr, err)
		}
		p.addr = addr
	}
	go p.run(zctx, sock)
	t.Cleanup(p.Close)
	if p.router {
		remember(fakeServers, p.addr, p, t)
	}
	return p
}

// ServerKey is a ROUTER peer's CURVE public key ("" when insecure).
func (p *Peer) ServerKey() string { return p.serverKey }

// Credentials are client credentials for a daemon that connects to this
// ROUTER peer: a fresh key pair (the peer admits any) and its server key.
func (p *Peer) Credentials(t testing.TB, kind, id string) *curve.Credentials {
	t.Helper()
	kp, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return &curve.Credentials{Kind: kind, ID: id, ServerKey: p.serverKey, Client: kp, Address: p.addr}
}

// Addr is the bound (ROUTER) or connected (DEALER) endpoint.
func (p *Peer) Addr() string { return p.addr }

// Close stops the owner goroutine and closes the socket; safe to repeat.
func (p *Peer) Close() {
	if p.closed.CompareAndSwap(false, true) {
		close(p.quit)
	}
	<-p.done
}

// SetHeartbeat changes the automatic heartbeat period; 0 silences the peer.
func (p *Peer) SetHeartbeat(d time.Duration) {
	p.mu.Lock()
	p.hb = d
	p.mu.Unlock()
}

// SetAutoAck turns automatic Acks of ResultBatches on or off.
func (p *Peer) SetAutoAck(on bool) {
	p.mu.Lock()
	p.autoAck = on
	p.mu.Unlock()
}

func (p *Peer) run(zctx *zmq.Context, sock *zmq.Socket) {
	defer close(p.done)
	defer func() {
		sock.Close()
		zctx.Term()
	}()
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	lastHB := time.Now()
	for {
		select {
		case <-p.quit:
			return
		default:
		}
	drainOut:
		for {
			select {
			case o := <-p.out:
				o.errc <- p.sendNow(sock, o.identity, o.frames)
			default:
				break drainOut
			}
		}
		polled, err := poller.Poll(2 * time.Millisecond)
		if err != nil && zmq.AsErrno(err) != zmq.Errno(syscall.EINTR) {
			return
		}
		if len(polled) > 0 {
			for i := 0; i < 1000; i++ {
				frames, err := sock.RecvMessageBytes(zmq.DONTWAIT)
				if err != nil {
					break
				}
				p.receive(sock, frames)
			}
		}
		p.mu.Lock()
		hb := p.hb
		var targets []string
		if p.router {
			for id := range p.peers {
				targets = append(targets, id)
			}
		}
		p.mu.Unlock()
		if hb > 0 && time.Since(lastHB) >= hb {
			lastHB = time.Now()
			frames, _ := (&messages.Heartbeat{}).Pack()
			if p.router {
				for _, id := range targets {
					_ = p.sendNow(sock, p.route(id), frames)
				}
			} else {
				_ = p.sendNow(sock, nil, frames)
			}
		}
	}
}

// peerID strips the per-connection suffix ("/" and 12 hex digits) that
// link.Uplink adds to an id.
func peerID(route string) string {
	i := strings.LastIndexByte(route, '/')
	if i < 0 || len(route)-i != 13 {
		return route
	}
	for _, c := range route[i+1:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return route
		}
	}
	return route[:i]
}

// route is the routing id to reach id: its latest connection, or id itself.
func (p *Peer) route(id string) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.routes[id]; ok {
		return []byte(r)
	}
	return []byte(id)
}

func (p *Peer) receive(sock *zmq.Socket, frames [][]byte) {
	r := Received{At: time.Now()}
	var rawRoute []byte
	if p.router && len(frames) > 0 {
		rawRoute = frames[0]
	}
	if p.router {
		if len(frames) == 0 {
			return
		}
		r.Identity = peerID(string(frames[0]))
		frames = frames[1:]
	}
	r.Frames = frames
	r.Msg, r.Err = messages.Unpack(frames)
	p.mu.Lock()
	if p.router {
		p.peers[r.Identity] = true
		if _, ok := r.Msg.(*messages.Registration); ok || p.routes[r.Identity] == "" {
			p.routes[r.Identity] = string(rawRoute)
		}
	}
	p.inbox = append(p.inbox, r)
	p.taken = append(p.taken, false)
	close(p.arrived)
	p.arrived = make(chan struct{})
	autoAck, ackTask := p.autoAck, p.ackTask
	p.mu.Unlock()
	var ack *messages.Ack
	switch b := r.Msg.(type) {
	case *messages.ResultBatch:
		if autoAck {
			ack = &messages.Ack{}
			for _, x := range b.Results {
				ack.IDs = append(ack.IDs, x.ID)
			}
		}
	case *messages.TaskBatch:
		if ackTask {
			ack = &messages.Ack{}
			for _, x := range b.Tasks {
				ack.IDs = append(ack.IDs, x.ID)
			}
		}
	}
	if ack != nil {
		if f, err := ack.Pack(); err == nil {
			var id []byte
			if p.router {
				id = rawRoute
			}
			_ = p.sendNow(sock, id, f)
		}
	}
}

func (p *Peer) sendNow(sock *zmq.Socket, identity []byte, frames [][]byte) error {
	parts := make([]any, 0, len(frames)+1)
	if identity != nil {
		parts = append(parts, identity)
	}
	for _, f := range frames {
		parts = append(parts, f)
	}
	_, err := sock.SendMessageDontwait(parts...)
	if err == nil && len(frames) > 0 && len(frames[0]) > 1 {
		p.mu.Lock()
		p.sentN[messages.Type(frames[0][1])]++
		p.mu.Unlock()
	}
	return err
}

// SendRaw sends frames as they are (to identity, for a ROUTER peer) and
// returns the socket's error.
func (p *Peer) SendRaw(identity string, frames [][]byte) error {
	o := outgoing{frames: frames, errc: make(chan error, 1)}
	if p.router {
		o.identity = p.route(identity)
	}
	select {
	case p.out <- o:
	case <-p.done:
		return fmt.Errorf("%s is closed", p.name)
	}
	select {
	case err := <-o.errc:
		return err
	case <-p.done:
		return fmt.Errorf("%s is closed", p.name)
	}
}

// Send packs m and sends it (to identity, for a ROUTER peer; a DEALER
// ignores identity).
func (p *Peer) Send(t testing.TB, identity string, m messages.Message) {
	t.Helper()
	if err := p.TrySend(identity, m); err != nil {
		t.Fatalf("%s: send %s: %v", p.name, m.Type(), err)
	}
}

// TrySend is Send returning the error, for use off the test goroutine.
func (p *Peer) TrySend(identity string, m messages.Message) error {
	frames, err := m.Pack()
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	return p.SendRaw(identity, frames)
}

// Expect waits for the first message not yet taken that matches, marks it
// taken and returns it. what names the expectation in the failure.
func (p *Peer) Expect(t testing.TB, timeout time.Duration, what string, match func(Received) bool) Received {
	t.Helper()
	r, err := p.TryExpect(timeout, match)
	if err != nil {
		t.Fatalf("%s: expected %s: %v", p.name, what, err)
	}
	return r
}

// TryExpect is Expect returning an error instead of failing the test.
func (p *Peer) TryExpect(timeout time.Duration, match func(Received) bool) (Received, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := range p.inbox {
			if !p.taken[i] && match(p.inbox[i]) {
				p.taken[i] = true
				r := p.inbox[i]
				p.mu.Unlock()
				return r, nil
			}
		}
		ch := p.arrived
		n := len(p.inbox)
		p.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return Received{}, fmt.Errorf("nothing matching within %s (%d messages received: %s)", timeout, n, p.summary())
		case <-p.done:
			return Received{}, fmt.Errorf("%s closed", p.name)
		}
	}
}

// ExpectType waits for the next untaken message of type typ from identity
// (any identity when empty).
func (p *Peer) ExpectType(t testing.TB, timeout time.Duration, identity string, typ messages.Type) Received {
	t.Helper()
	return p.Expect(t, timeout, typ.String(), func(r Received) bool {
		return r.Type() == typ && (identity == "" || r.Identity == identity)
	})
}

// Sync sends a HeartbeatReq (to identity, for a ROUTER peer) and waits for
// the matching HeartbeatResp. Daemons handle one connection's messages in
// order, so afterwards everything sent earlier has been handled.
func (p *Peer) Sync(t testing.TB, identity string) {
	t.Helper()
	n := p.nonce.Add(1) + 1<<40
	p.Send(t, identity, &messages.HeartbeatReq{Nonce: n})
	p.Expect(t, 10*time.Second, fmt.Sprintf("HeartbeatResp %d", n), func(r Received) bool {
		x, ok := r.Msg.(*messages.HeartbeatResp)
		return ok && x.Nonce == n && (identity == "" || r.Identity == identity)
	})
}

// All returns every message received so far, taken or not.
func (p *Peer) All() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Received(nil), p.inbox...)
}

// Count is how many received messages match.
func (p *Peer) Count(match func(Received) bool) int {
	n := 0
	for _, r := range p.All() {
		if match(r) {
			n++
		}
	}
	return n
}

// Sent is how many messages of type typ the peer has sent.
func (p *Peer) Sent(typ messages.Type) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sentN[typ]
}

func (p *Peer) summary() string {
	counts := map[string]int{}
	var order []string
	for _, r := range p.All() {
		k := r.Type().String()
		if r.Err != nil {
			k = "undecodable"
		}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s×%d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// Tasks collects every task of the TaskBatches received (from identity,
// when not empty), in order.
func (p *Peer) Tasks(identity string) []messages.Task {
	var out []messages.Task
	for _, r := range p.All() {
		if b, ok := r.Msg.(*messages.TaskBatch); ok && (identity == "" || r.Identity == identity) {
			out = append(out, b.Tasks...)
		}
	}
	return out
}

// Results collects every result of the ResultBatches received, in order.
func (p *Peer) Results(identity string) []messages.Result {
	var out []messages.Result
	for _, r := range p.All() {
		if b, ok := r.Msg.(*messages.ResultBatch); ok && (identity == "" || r.Identity == identity) {
			out = append(out, b.Results...)
		}
	}
	return out
}

// Deltas collects every delta of the status reports received, in order.
func (p *Peer) Deltas(identity string) []messages.Delta {
	var out []messages.Delta
	for _, r := range p.All() {
		if identity != "" && r.Identity != identity {
			continue
		}
		switch m := r.Msg.(type) {
		case *messages.EPStatusReport:
			out = append(out, m.Deltas...)
		case *messages.ManagerStatusReport:
			out = append(out, m.Deltas...)
		}
	}
	return out
}

// NewTaskID returns a random task id.
func NewTaskID() messages.TaskID {
	var id messages.TaskID
	for i := range id {
		id[i] = byte(rnd.Uint32())
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

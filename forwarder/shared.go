package forwarder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Several forwarders on one database (a taskstore.Shared store). The
// forwarder an endpoint's interchange registers with dispatches its tasks,
// and holds a lease on it in the database to say so: claimed before the
// registration is accepted, renewed every heartbeat, lapsing after the
// heartbeat threshold. A forwarder keeps in memory only the unfinished
// tasks of endpoints it holds; the others' it stores and forgets, and the
// holder, told by NOTIFY, reads them from the database.

// sharedState is the lease holder and the listener of one forwarder.
type sharedState struct {
	f      *Forwarder
	st     taskstore.Shared
	holder string // names this process in leases
	ttl    time.Duration
	every  time.Duration
	log    *logrus.Entry

	mu sync.Mutex
	// leases: true once held, false while being claimed.
	leases   map[string]bool
	claims   []string
	releases []string
	wake     chan struct{}
	// okUntil is when the leases lapse unless renewed: the start of the
	// last renewal that answered, plus the ttl.
	okUntil time.Time

	// endMu guards endWake, closed and replaced when tasks ended.
	endMu   sync.Mutex
	endWake chan struct{}

	// authMu guards missTok; missAt is when endpoints were last read
	// again on a miss (missMu is held meanwhile).
	authMu  sync.Mutex
	missMu  sync.Mutex
	missAt  time.Time
	missTok map[string]time.Time
}

func newShared(f *Forwarder, st taskstore.Shared) *sharedState {
	var b [3]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return &sharedState{f: f, st: st, holder: fmt.Sprintf("%s #%s", host, hex.EncodeToString(b[:])),
		ttl: f.opts.HeartbeatThreshold, every: f.opts.HeartbeatInterval, log: f.log.WithField("part", "lease"),
		leases: map[string]bool{}, wake: make(chan struct{}, 1), endWake: make(chan struct{}), missTok: map[string]time.Time{}}
}

// named puts the bound ZMQ address into the holder's name, for the
// refusals and logs of the other forwarders.
func (s *sharedState) named() {
	host, tag, _ := strings.Cut(s.holder, " ")
	s.holder = host + " " + s.f.zmqAddr + " " + tag
}

// sharedServerKey makes every forwarder on the database present one CURVE
// key: the first one's, which the others take from the database.
func (f *Forwarder) sharedServerKey() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, sec, err := f.shared.st.ServerKey(ctx, f.serverKey.Public, f.serverKey.Secret)
	if err != nil {
		return fmt.Errorf("forwarder: CURVE key in the database: %w", err)
	}
	if pub != f.serverKey.Public {
		f.log.WithField("public_key", pub).Warn("the database holds another forwarder's CURVE server key: presenting that one, so endpoints' credentials work with every forwarder (curve.key in the state dir is not used)")
		f.serverKey.Public, f.serverKey.Secret = pub, sec
	}
	return nil
}

// opTimeout bounds one lease statement: well inside the ttl, so a
// database that does not answer is noticed before the lease lapses.
func (s *sharedState) opTimeout() time.Duration { return max(s.ttl/3, 200*time.Millisecond) }

func (s *sharedState) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// claim asks for endpoint's lease; the loop hears evLease.
func (s *sharedState) claim(ep string) {
	s.mu.Lock()
	if _, ok := s.leases[ep]; !ok {
		s.leases[ep] = false
	}
	s.claims = append(s.claims, ep)
	s.mu.Unlock()
	s.poke()
}

// release gives endpoint's lease up (its interchange left).
func (s *sharedState) release(ep string) {
	s.mu.Lock()
	delete(s.leases, ep)
	s.releases = append(s.releases, ep)
	s.mu.Unlock()
	s.poke()
}

// wants says whether tasks of ep belong here: held or being claimed.
func (s *sharedState) wants(ep string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.leases[ep]
	return ok
}

func (s *sharedState) post(ev event) { s.f.mbox.Post(ev) }

// leaser claims, renews and releases leases until ctx ends, then gives
// up those it holds so another forwarder takes them at once.
func (s *sharedState) leaser(ctx context.Context) {
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	type retry struct {
		ep       string
		deadline time.Time
	}
	var retries []retry
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			held := make([]string, 0, len(s.leases))
			for ep := range s.leases {
				held = append(held, ep)
			}
			s.mu.Unlock()
			c, cancel := context.WithTimeout(context.Background(), time.Second)
			for _, ep := range held {
				_ = s.st.ReleaseLease(c, ep, s.holder)
			}
			cancel()
			return
		case <-s.wake:
		case <-tick.C:
			s.renew()
			again := retries[:0]
			for _, r := range retries {
				if !s.tryClaim(r.ep, r.deadline) {
					again = append(again, r)
				}
			}
			retries = again
		}
		s.mu.Lock()
		claims, releases := s.claims, s.releases
		s.claims, s.releases = nil, nil
		s.mu.Unlock()
		for _, ep := range releases {
			c, cancel := context.WithTimeout(context.Background(), s.opTimeout())
			if err := s.st.ReleaseLease(c, ep, s.holder); err != nil {
				s.log.WithError(err).WithField("endpoint", ep).Warn("lease not released; it lapses by itself")
			}
			cancel()
		}
		for _, ep := range claims {
			if slices.ContainsFunc(retries, func(r retry) bool { return r.ep == ep }) {
				continue
			}
			// A holder that died renewed at most a ttl ago: wait that
			// long before saying no.
			deadline := time.Now().Add(s.ttl + s.every)
			if !s.tryClaim(ep, deadline) {
				retries = append(retries, retry{ep, deadline})
			}
		}
	}
}

// tryClaim claims ep once; false means try again later (another holder's
// lease lapses before deadline). It posts evLease when it is decided.
func (s *sharedState) tryClaim(ep string, deadline time.Time) bool {
	s.mu.Lock()
	_, wanted := s.leases[ep]
	s.mu.Unlock()
	if !wanted {
		return true // released meanwhile
	}
	fail := func(why string) bool {
		s.mu.Lock()
		if !s.leases[ep] {
			delete(s.leases, ep)
		}
		s.mu.Unlock()
		s.post(event{kind: evLease, ep: ep, why: why})
		return true
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout())
	defer cancel()
	ok, by, left, err := s.st.ClaimLease(ctx, ep, s.holder, s.ttl)
	if err != nil {
		return fail(fmt.Sprintf("this forwarder cannot reach its database to take endpoint %s (%v); try another forwarder", ep, err))
	}
	if !ok {
		if start.Add(left).Before(deadline) {
			return false
		}
		return fail(fmt.Sprintf("endpoint %s is dispatched by forwarder %s (its lease runs %s more); connect to that one", ep, by, left.Round(time.Millisecond)))
	}
	s.mu.Lock()
	if until := start.Add(s.ttl); until.After(s.okUntil) {
		s.okUntil = until
	}
	s.mu.Unlock()
	// Whatever the last holder left unfinished is ours now.
	ctx2, cancel2 := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel2()
	ts, err := s.st.Unfinished(ctx2, ep, 0, 0)
	if err != nil {
		_ = s.st.ReleaseLease(ctx, ep, s.holder)
		return fail(fmt.Sprintf("this forwarder cannot read endpoint %s's tasks from its database (%v); try another forwarder", ep, err))
	}
	s.mu.Lock()
	s.leases[ep] = true
	s.mu.Unlock()
	s.post(event{kind: evLease, ep: ep, tasks: s.f.tasks.adopt(ts)})
	return true
}

// loadTimeout bounds reading an endpoint's unfinished tasks.
const loadTimeout = time.Minute

// renew extends the leases held; those another forwarder took, or all
// when the database has not answered for the ttl, are lost.
func (s *sharedState) renew() {
	s.mu.Lock()
	var held []string
	for ep, ok := range s.leases {
		if ok {
			held = append(held, ep)
		}
	}
	s.mu.Unlock()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout())
	got, err := s.st.RenewLeases(ctx, s.holder, held, s.ttl)
	cancel()
	var lost []string
	s.mu.Lock()
	switch {
	case err == nil:
		s.okUntil = start.Add(s.ttl)
		for _, ep := range held {
			if !slices.Contains(got, ep) && s.leases[ep] {
				lost = append(lost, ep)
			}
		}
	case time.Now().After(s.okUntil):
		for ep, ok := range s.leases {
			if ok {
				lost = append(lost, ep)
			}
		}
	}
	for _, ep := range lost {
		delete(s.leases, ep)
	}
	s.mu.Unlock()
	if err != nil && len(held) > 0 {
		s.log.WithError(err).Warn("leases not renewed")
	}
	for _, ep := range lost {
		s.log.WithField("endpoint", ep).Warn("lease of endpoint lost; dropping its connection so it moves to another forwarder")
		s.post(event{kind: evLeaseLost, ep: ep})
	}
}

// listener hears the other forwarders' notices until ctx ends,
// reconnecting with back-off.
func (s *sharedState) listener(ctx context.Context) {
	backoff := s.every
	for {
		err := s.st.Listen(ctx, s.resync, s.notice)
		if ctx.Err() != nil {
			return
		}
		s.log.WithError(err).Warn("not listening to the other forwarders; trying again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff): // a back-off before reconnecting
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// resync reads again what notices missed while nobody listened.
func (s *sharedState) resync() {
	s.reloadAuth()
	s.wakeEnded()
	s.mu.Lock()
	var eps []string
	for ep := range s.leases {
		eps = append(eps, ep)
	}
	s.mu.Unlock()
	for _, ep := range eps {
		s.load(ep, 0, 0)
	}
}

func (s *sharedState) notice(n taskstore.Notice) {
	switch n.Kind {
	case taskstore.NoticeEnded:
		s.wakeEnded()
	case taskstore.NoticeAuth:
		s.reloadAuth()
	case taskstore.NoticeCancel:
		if ids := s.f.tasks.cancelledElsewhere(n.IDs); len(ids) > 0 {
			s.post(event{kind: evCancel, ep: n.Endpoint, ids: ids})
		}
	case taskstore.NoticeTasks:
		if s.wants(n.Endpoint) {
			s.load(n.Endpoint, n.First, n.Last)
		}
	}
}

// load reads the unfinished tasks of ep with seqs in [from, to] and hands
// those this forwarder does not know to the loop.
func (s *sharedState) load(ep string, from, to uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	ts, err := s.st.Unfinished(ctx, ep, from, to)
	if err != nil {
		s.log.WithError(err).WithField("endpoint", ep).Warn("cannot read tasks another forwarder accepted; they are read when the listener reconnects")
		return
	}
	if es := s.f.tasks.adopt(ts); len(es) > 0 {
		s.post(event{kind: evAdopt, ep: ep, tasks: es})
	}
}

// wakeEnded wakes followers of the journal of ends.
func (s *sharedState) wakeEnded() {
	s.endMu.Lock()
	close(s.endWake)
	s.endWake = make(chan struct{})
	s.endMu.Unlock()
}

func (s *sharedState) endedChanged() <-chan struct{} {
	s.endMu.Lock()
	defer s.endMu.Unlock()
	return s.endWake
}

// reloadAuth reads tokens and endpoints again; a connection whose key was
// replaced or deleted through another forwarder is dropped.
func (s *sharedState) reloadAuth() {
	if err := s.f.access.reload(); err != nil {
		s.log.WithError(err).Warn("cannot read tokens again")
	}
	s.reloadEndpoints()
}

func (s *sharedState) reloadEndpoints() {
	if s.f.opts.Insecure {
		return
	}
	gone, err := s.f.enrolled.reload()
	if err != nil {
		s.log.WithError(err).Warn("cannot read created endpoints again")
	}
	for id, key := range gone {
		if _, ok := s.f.enrolled.cached(id); ok {
			s.post(event{kind: evRevoke, ep: id, key: key})
			continue
		}
		// Deleted through another forwarder, which failed the tasks in
		// the database: those held here read failed too.
		if _, err := s.f.tasks.failEndpoint(id, "endpoint "+id+" was deleted"); err != nil {
			s.log.WithError(err).WithField("endpoint", id).Warn("tasks of an endpoint deleted through another forwarder not failed here")
		}
		s.post(event{kind: evDeleted, ep: id, key: key})
	}
}

// missedEndpoint reads endpoints again for an id or key not known here,
// unless a reading began within 250 ms (a hostile peer may ask for
// anything) or one is under way. It never waits: the loop calls it.
func (s *sharedState) missedEndpoint() {
	if !s.missMu.TryLock() {
		return
	}
	defer s.missMu.Unlock()
	if time.Since(s.missAt) < 250*time.Millisecond {
		return
	}
	s.missAt = time.Now()
	s.reloadEndpoints()
}

// endpointsNow reads endpoints again for a request refused here: one
// created or shared through another forwarder may not have reached this
// one yet. It returns once a reading that began after it was called has
// ended; readings begin at most every 250 ms, so a caller waits about
// that long at most.
func (s *sharedState) endpointsNow() {
	asked := time.Now()
	s.missMu.Lock()
	defer s.missMu.Unlock()
	if s.missAt.After(asked) {
		return
	}
	if wait := time.Until(s.missAt.Add(250 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	s.missAt = time.Now()
	s.reloadEndpoints()
}

// missedToken reads one token not known here from the database; a hash
// found missing is not asked again for a second.
func (s *sharedState) missedToken(hash string) (taskstore.Token, bool) {
	now := time.Now()
	s.authMu.Lock()
	if at, ok := s.missTok[hash]; ok && now.Sub(at) < time.Second {
		s.authMu.Unlock()
		return taskstore.Token{}, false
	}
	if len(s.missTok) > 10000 {
		clear(s.missTok)
	}
	s.missTok[hash] = now
	s.authMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout())
	defer cancel()
	t, ok, err := s.st.Token(ctx, hash)
	if err != nil {
		s.log.WithError(err).Warn("cannot read a token from the database")
	}
	return t, ok
}

// The loop's side.

// leaseDecided completes a registration waiting for its lease, or
// refuses it.
func (l *loop) leaseDecided(ev *event) {
	ep := l.endpointFor(ev.ep)
	c := ep.claiming
	ep.claiming = nil
	if ev.why != "" {
		ep.held = false
		l.dropTasks(ep)
		if c != nil {
			l.f.m.refusedRegistrations.Inc()
			l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "connection": string(c.route)}).Warn("registration refused: " + ev.why)
			l.router.Refuse(c.route, messages.CodeRefused, ev.why)
		}
		return
	}
	ep.held = true
	ep.pending.add(ev.tasks)
	if c == nil {
		// The interchange went meanwhile; the lease goes too.
		l.f.shared.release(ep.id)
		ep.held = false
		l.dropTasks(ep)
		return
	}
	l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "loaded": len(ev.tasks)}).Info("lease of endpoint taken")
	l.bindRegistration(ep, link.Envelope{Route: c.route, User: c.user}, &c.reg, time.Now())
}

// leaseLost drops the endpoint: another forwarder dispatches it now, or
// will once its interchange moves there.
func (l *loop) leaseLost(id string) {
	ep, ok := l.eps[id]
	if !ok || !ep.held {
		return
	}
	ep.held = false
	if ep.connected {
		l.router.Refuse(ep.Route, messages.CodeRefused, "this forwarder lost endpoint "+id+"'s lease; connect to another forwarder")
		l.endpointLost(ep, link.ReasonLeaseLost, time.Now())
	}
	l.dropTasks(ep)
}

// dropTasks forgets the endpoint's tasks this forwarder holds in memory:
// they are in the database, for whichever forwarder holds it next.
func (l *loop) dropTasks(ep *endpoint) {
	// take reuses its slice: copy what it gives.
	es := append([]*entry(nil), ep.pending.take(ep.pending.Len())...)
	for _, e := range ep.inflight {
		ep.release(e)
		es = append(es, e)
	}
	if ep.sent.Len() > 0 {
		es = append(es, ep.sent.TakeAll(nil)...)
	}
	l.f.tasks.forget(es)
	ep.pending = pendingTasks{}
	clear(ep.inflight)
	l.f.publish(ep)
}

// adopt makes live the tasks of ts this table does not know (another
// forwarder accepted them, or held their endpoint), and returns them.
func (tt *taskTable) adopt(ts []*Task) []*entry {
	out := make([]*entry, 0, len(ts))
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, t := range ts {
		if _, known := tt.index[t.ID]; known || t.State.Terminal() {
			continue
		}
		e := &entry{Task: *t, owner: tt.owners.Index(t.Owner)}
		tt.insert(e)
		tt.byState[t.State].Add(1)
		o := tt.open[t.Owner]
		o.n++
		o.bytes += int64(len(t.Spec))
		tt.open[t.Owner] = o
		out = append(out, e)
	}
	return out
}

// forget drops unfinished tasks from memory without a write: the
// database has them, and another forwarder dispatches them. Waiters go
// on reading the database.
func (tt *taskTable) forget(es []*entry) {
	if len(es) == 0 {
		return
	}
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, e := range es {
		if e.gone || e.State.Terminal() {
			continue // an end on its way to the store retires it
		}
		delete(tt.index, e.ID)
		tt.ends.Delete(e.Seq)
		tt.unlive(e)
		tt.byState[e.State].Add(-1)
		tt.closeOwned(&e.Task)
		if ch, ok := tt.waiters[e.ID]; ok {
			close(ch)
			delete(tt.waiters, e.ID)
		}
	}
}

// ended answers GET /v1/tasks/ended from the database's journal of ends,
// which every forwarder writes: a follower sees the ends of every task,
// through whichever forwarder it asks. A cursor is JOURNAL-POSITION.
func (s *sharedState) ended(ctx context.Context, after string, who auth.Identity, limit int, wait time.Duration) (EndedPage, error) {
	var page EndedPage
	jid := s.st.JournalID()
	head := func() (uint64, error) {
		c, cancel := context.WithTimeout(ctx, s.opTimeout()*3)
		defer cancel()
		return s.st.EndedHead(c)
	}
	var from uint64
	if after == "" {
		// No cursor: start now, with nothing to report yet.
		h, err := head()
		page.Cursor, page.Tasks = jid+"-"+strconv.FormatUint(h, 10), []EndedView{}
		return page, err
	}
	epoch, num, found := strings.Cut(after, "-")
	n, err := strconv.ParseUint(num, 10, 64)
	if !found || err != nil || epoch == "" {
		return page, &errStatus{status: 400, msg: fmt.Sprintf("invalid cursor %q: pass back the cursor of an earlier answer, or leave it out to start now", after)}
	}
	from = n
	if epoch != jid {
		h, err := head()
		if err != nil {
			return page, err
		}
		page.Reset, from = true, h
	}
	var timer <-chan time.Time
	for {
		// Take the wake-up before reading, so an end in between wakes us.
		changed := s.endedChanged()
		c, cancel := context.WithTimeout(ctx, s.opTimeout()*3)
		rows, err := s.st.Ended(c, from, limit)
		cancel()
		if err != nil {
			return page, err
		}
		page.Tasks = make([]EndedView, 0, len(rows))
		for _, e := range rows {
			if who.Admin || (who.User != "" && e.Owner == who.User) {
				page.Tasks = append(page.Tasks, EndedView{TaskID: e.ID, State: e.State})
			}
			from = e.Pos
		}
		page.More = len(rows) == limit
		page.Cursor = jid + "-" + strconv.FormatUint(from, 10)
		if len(page.Tasks) > 0 || page.Reset || page.More || wait <= 0 {
			return page, nil
		}
		if timer == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-changed:
		case <-time.After(time.Second): // in case a notice was missed
		case <-timer:
			return page, nil
		case <-ctx.Done():
			return page, nil
		}
	}
}

// cancelledElsewhere applies cancels another forwarder stored to the
// tasks held here, and returns their ids for the endpoint.
func (tt *taskTable) cancelledElsewhere(ids []messages.TaskID) []messages.TaskID {
	now := time.Now()
	var ended []*entry
	var out []messages.TaskID
	tt.mu.Lock()
	for _, id := range ids {
		t, _, _, _ := tt.find(id)
		if t == nil || t.State.Terminal() {
			continue
		}
		tt.move(&t.Task, messages.StateCancelled)
		t.Error = "cancelled by request"
		tt.touch(t, now, false)
		ended = append(ended, t)
		out = append(out, id)
	}
	tt.mu.Unlock()
	// Stored already, by the forwarder that cancelled them.
	tt.retire(ended)
	return out
}

package taskstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

func init() {
	Register("postgres", openPostgres)
	Register("postgresql", openPostgres)
}

// pgMigrations are the schema's versions in order: migrations[i] takes
// the schema from version i to i+1. Never edit a released step; add one.
var pgMigrations = []string{
	// 1: tasks, tokens, endpoints. fillfactor leaves room in each page so
	// a task's end is a HOT update that touches no index.
	`CREATE TABLE tasks (
		id uuid PRIMARY KEY,
		seq bigint NOT NULL,
		endpoint text NOT NULL,
		owner text NOT NULL,
		kind text NOT NULL,
		spec bytea,
		state text NOT NULL,
		attempts bigint NOT NULL,
		result bytea,
		error text NOT NULL,
		created_at bigint NOT NULL,
		updated_at bigint NOT NULL,
		completed_at bigint NOT NULL,
		writes bigint NOT NULL
	) WITH (fillfactor = 70);
	CREATE UNIQUE INDEX tasks_seq ON tasks (seq);
	CREATE TABLE tokens (
		hash text PRIMARY KEY,
		id text NOT NULL,
		username text NOT NULL,
		admin boolean NOT NULL,
		groups text[] NOT NULL,
		created_at timestamptz NOT NULL,
		created_by text NOT NULL
	);
	CREATE TABLE endpoints (
		id text PRIMARY KEY,
		public_key text NOT NULL,
		owner text NOT NULL,
		multi_user boolean NOT NULL,
		users text[] NOT NULL,
		groups text[] NOT NULL,
		created_at timestamptz NOT NULL
	);`,
	// 2: several forwarders on one database. Seqs come from a sequence
	// in blocks (one round trip per block); ends get a position in a
	// journal of their own (a table apart, so an end stays a HOT update
	// of tasks: no index covers a column it changes); leases say which
	// forwarder dispatches an endpoint. No index by endpoint: it costs
	// every insert a fifth of its speed, for a read done once per
	// takeover (a sequential scan).
	`CREATE SEQUENCE task_seq INCREMENT BY ` + pgSeqBlock + `;
	SELECT setval('task_seq', (SELECT coalesce(max(seq), 0) + 1 FROM tasks), false);
	CREATE SEQUENCE ended_seq;
	CREATE TABLE ended (
		pos bigint PRIMARY KEY,
		id uuid NOT NULL,
		owner text NOT NULL,
		state text NOT NULL,
		completed_at bigint NOT NULL
	);
	INSERT INTO ended SELECT nextval('ended_seq'), id, owner, state, completed_at FROM
		(SELECT * FROM tasks WHERE state IN ('success', 'failed', 'cancelled') ORDER BY completed_at, seq) AS done;
	CREATE TABLE endpoint_leases (
		endpoint text PRIMARY KEY,
		holder text NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE TABLE settings (name text PRIMARY KEY, value text NOT NULL);
	INSERT INTO settings VALUES ('journal', md5(random()::text || clock_timestamp()::text));`,
}

// pgSeqBlock is how many seqs one nextval of task_seq reserves; it must
// hold taskstore.MaxSeqBatch.
const pgSeqBlock = "131072"

// pgLockID serialises migrations between forwarders starting at once;
// pgEndedLockID the transactions that give out journal positions.
const (
	pgLockID      = 0x5357_5944 // "SWYD"
	pgEndedLockID = 0x5357_5945
)

// pgEndedStates are the final states, as SQL.
const pgEndedStates = "('success', 'failed', 'cancelled')"

func anyEnded(ts []*Task) bool {
	for _, t := range ts {
		if t.State.Terminal() {
			return true
		}
	}
	return false
}

// pgStore keeps tasks, tokens and endpoints in PostgreSQL. Writes of tasks
// go through one writer goroutine that commits everything queued since
// its last commit in one transaction (group commit, as the log does).
type pgStore struct {
	pool *pgxpool.Pool
	desc string
	log  *logrus.Entry
	cfg  Config

	mu      sync.Mutex
	queue   []pgOp
	wake    chan struct{}
	closed  bool
	lastErr error
	stop    chan struct{}
	stopped chan struct{}

	// instance names this handle in notices, so it skips its own.
	instance string
	// journal names the database's journal of ends (settings).
	journal string
	// seqMu guards the block of seqs reserved (NextSeqs).
	seqMu           sync.Mutex
	seqNext, seqEnd uint64
}

type pgOpKind uint8

const (
	pgInsert pgOpKind = iota + 1
	pgUpdate
	pgDelete
	pgBarrier // no write; its done waits for the commit
)

// pgOp is one queued write; the task is a copy taken at the call.
type pgOp struct {
	kind pgOpKind
	t    Task
	done func(error) // on the op that ends a call
}

// pgTimeout bounds one statement or commit: a database that does not
// answer fails the write instead of holding the forwarder.
const pgTimeout = 10 * time.Second

// pgMaxBatch caps the tasks of one commit.
const pgMaxBatch = 20000

func openPostgres(cfg Config) (Store, bool, error) {
	url := cfg.URL
	if !strings.Contains(url, "://") {
		// "postgres" alone: the libpq environment (PGHOST, PGPORT, ...).
		_, url, _ = strings.Cut(url, ":")
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, false, fmt.Errorf("postgres store: %w", err)
	}
	if pc.MaxConns < 8 {
		pc.MaxConns = 8
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, false, fmt.Errorf("postgres store: %w", err)
	}
	s := &pgStore{pool: pool, log: cfg.Log, cfg: cfg, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		desc: fmt.Sprintf("postgres %s@%s:%d/%s", pc.ConnConfig.User, pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database)}
	existed, err := s.migrate(ctx)
	if err != nil {
		pool.Close()
		return nil, false, fmt.Errorf("postgres store %s: %w", s.desc, err)
	}
	if err := pool.QueryRow(ctx, "SELECT value FROM settings WHERE name = 'journal'").Scan(&s.journal); err != nil {
		pool.Close()
		return nil, false, fmt.Errorf("postgres store %s: %w", s.desc, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s.instance = hex.EncodeToString(b[:])
	go s.writer()
	return s, existed, nil
}

// migrate brings the schema to the newest version, under an advisory lock
// so two forwarders starting together do not both apply a step; existed
// says the schema was there already.
func (s *pgStore) migrate(ctx context.Context) (bool, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", pgLockID); err != nil {
		return false, err
	}
	defer func() { _, _ = c.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", pgLockID) }()
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"); err != nil {
		return false, err
	}
	var v int
	err = c.QueryRow(ctx, "SELECT version FROM schema_version").Scan(&v)
	existed := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = c.Exec(ctx, "INSERT INTO schema_version VALUES (0)")
	}
	if err != nil {
		return false, err
	}
	if v > len(pgMigrations) {
		return false, fmt.Errorf("schema version %d is newer than this build's %d: run a newer switchyard", v, len(pgMigrations))
	}
	for ; v < len(pgMigrations); v++ {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, pgMigrations[v]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE schema_version SET version = $1", v+1)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("schema migration to version %d: %w", v+1, err)
		}
		s.log.WithField("version", v+1).Info("postgres store: schema migrated")
	}
	// Tasks copied in with their own seqs (migrate-store) move the
	// sequence past them, and past any block given out already.
	if _, err := c.Exec(ctx, `SELECT setval('task_seq', greatest(m + 1, t.last_value + `+pgSeqBlock+`), false)
		FROM (SELECT max(seq) AS m FROM tasks) AS x, task_seq AS t WHERE m >= t.last_value`); err != nil {
		return false, err
	}
	return existed && v > 0, nil
}

func (s *pgStore) Describe() string { return s.desc }

// FindsByID: tasks are keyed by id here.
func (s *pgStore) FindsByID() bool { return true }

func (s *pgStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.stopped
	s.pool.Close()
	return nil
}

func (s *pgStore) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.lastErr
}

// enqueue hands ops to the writer; done, if not nil, is called once they
// and every earlier op are committed, or failed.
func (s *pgStore) enqueue(kind pgOpKind, ts []*Task, done func(error)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	for _, t := range ts {
		s.queue = append(s.queue, pgOp{kind: kind, t: *t})
	}
	if done != nil {
		s.queue = append(s.queue, pgOp{kind: pgBarrier, done: done})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *pgStore) sync(kind pgOpKind, ts []*Task) error {
	ch := make(chan error, 1)
	s.enqueue(kind, ts, func(err error) { ch <- err })
	return <-ch
}

// writer commits what is queued, one transaction a turn, until Close.
func (s *pgStore) writer() {
	defer close(s.stopped)
	// A failed database is pinged until it answers, so Err clears by
	// itself when it is back.
	ping := time.NewTicker(time.Second)
	defer ping.Stop()
	for {
		s.mu.Lock()
		n := min(len(s.queue), pgMaxBatch)
		// A call's ops commit together (Add is all or nothing): a batch
		// ends on a barrier.
		for n < len(s.queue) && s.queue[n-1].kind != pgBarrier {
			n++
		}
		batch := s.queue[:n:n]
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		closed := s.closed
		s.mu.Unlock()
		if len(batch) > 0 {
			s.commit(batch)
			continue
		}
		if closed {
			return
		}
		select {
		case <-s.wake:
		case <-ping.C:
			if s.Err() != nil {
				ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
				if s.pool.Ping(ctx) == nil {
					s.setErr(nil)
				}
				cancel()
			}
		case <-s.stop:
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
		}
	}
}

func (s *pgStore) setErr(err error) {
	s.mu.Lock()
	if err != nil && s.lastErr == nil {
		s.log.WithError(err).Error("postgres store: a write failed; new tasks are refused until the database answers again")
	} else if err == nil && s.lastErr != nil {
		s.log.Info("postgres store: the database answers again")
	}
	s.lastErr = err
	s.mu.Unlock()
}

// commit writes one batch in one transaction: inserts, then updates (the
// last of each task's), then deletes.
func (s *pgStore) commit(batch []pgOp) {
	start := time.Now()
	var ins, upd []*Task
	var del []messages.TaskID
	last := map[messages.TaskID]int{}
	for i := range batch {
		op := &batch[i]
		switch op.kind {
		case pgInsert:
			ins = append(ins, &op.t)
		case pgUpdate, pgDelete:
			last[op.t.ID] = i
		}
	}
	for i := range batch {
		op := &batch[i]
		if (op.kind == pgUpdate || op.kind == pgDelete) && last[op.t.ID] == i {
			if op.kind == pgUpdate {
				upd = append(upd, &op.t)
			} else {
				del = append(del, op.t.ID)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	var err error
	if len(ins)+len(upd)+len(del) > 0 {
		// One batch: its statements run in one implicit transaction, in
		// one round trip.
		var b pgx.Batch
		if anyEnded(ins) || anyEnded(upd) {
			// Ends take their journal positions in commit order: a
			// reader that sees position n sees every one before it.
			b.Queue("SELECT pg_advisory_xact_lock($1)", pgEndedLockID)
		}
		pgInsertTasks(&b, ins)
		pgUpdateTasks(&b, upd)
		s.notifyCommit(&b, ins, upd)
		if len(del) > 0 {
			// The journal forgets ends as old as the newest pruned.
			b.Queue(`DELETE FROM ended WHERE completed_at <=
				(SELECT max(completed_at) FROM tasks WHERE id = ANY($1) AND state IN `+pgEndedStates+`)`, uuids(del))
			b.Queue("DELETE FROM tasks WHERE id = ANY($1)", uuids(del))
		}
		err = s.pool.SendBatch(ctx, &b).Close()
		s.setErr(err)
	}
	if s.cfg.OnCommit != nil {
		s.cfg.OnCommit(len(batch), time.Since(start), err)
	}
	for i := range batch {
		if batch[i].done != nil {
			batch[i].done(err)
		}
	}
}

func uuids(ids []messages.TaskID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// pgTaskColumns are a task's columns in the order of scanTask.
const pgTaskColumns = "id, seq, endpoint, owner, kind, spec, state, attempts, result, error, created_at, updated_at, completed_at, writes"

func pgInsertTasks(b *pgx.Batch, ts []*Task) {
	if len(ts) == 0 {
		return
	}
	n := len(ts)
	ids, seqs := make([][16]byte, n), make([]int64, n)
	eps, owners, kinds, states, errs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	specs, results := make([][]byte, n), make([][]byte, n)
	attempts, created, updated, completed, writes := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, t := range ts {
		ids[i], seqs[i] = t.ID, int64(t.Seq)
		eps[i], owners[i], kinds[i], states[i], errs[i] = t.Endpoint, t.Owner, t.Kind, string(t.State), t.Error
		specs[i], results[i] = t.Spec, t.Result
		attempts[i], created[i], updated[i], completed[i], writes[i] = int64(t.Attempts), t.CreatedAt, t.UpdatedAt, t.CompletedAt, int64(t.Writes)
	}
	// Tasks stored ended (migrate-store) go into the journal of ends.
	b.Queue(`WITH i AS (INSERT INTO tasks (`+pgTaskColumns+`)
		SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[],
			$8::int8[], $9::bytea[], $10::text[], $11::int8[], $12::int8[], $13::int8[], $14::int8[])
		RETURNING id, owner, state, completed_at)
		INSERT INTO ended SELECT nextval('ended_seq'), id, owner, state, completed_at FROM i WHERE state IN `+pgEndedStates,
		ids, seqs, eps, owners, kinds, specs, states, attempts, results, errs, created, updated, completed, writes)
}

// pgUpdateTasks writes what changes after acceptance; the spec and the
// other fields fixed at acceptance are not sent again. An end is final:
// a forwarder that lost an endpoint does not undo what another stored.
func pgUpdateTasks(b *pgx.Batch, ts []*Task) {
	if len(ts) == 0 {
		return
	}
	n := len(ts)
	ids := make([][16]byte, n)
	states, errs := make([]string, n), make([]string, n)
	results := make([][]byte, n)
	attempts, updated, completed, writes := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, t := range ts {
		ids[i], states[i], errs[i], results[i] = t.ID, string(t.State), t.Error, t.Result
		attempts[i], updated[i], completed[i], writes[i] = int64(t.Attempts), t.UpdatedAt, t.CompletedAt, int64(t.Writes)
	}
	b.Queue(`WITH w AS (UPDATE tasks SET state = u.state, attempts = u.attempts, result = u.result, error = u.error,
			updated_at = u.updated_at, completed_at = u.completed_at, writes = u.writes
		FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::bytea[], $5::text[], $6::int8[], $7::int8[], $8::int8[])
			AS u(id, state, attempts, result, error, updated_at, completed_at, writes)
		WHERE tasks.id = u.id AND tasks.state NOT IN `+pgEndedStates+`
		RETURNING tasks.id, tasks.owner, tasks.state, tasks.completed_at)
		INSERT INTO ended SELECT nextval('ended_seq'), id, owner, state, completed_at FROM w WHERE state IN `+pgEndedStates,
		ids, states, attempts, results, errs, updated, completed, writes)
}

func scanTask(rows pgx.Rows) (*Task, error) {
	var t Task
	var id [16]byte
	var seq, attempts, writes int64
	var state string
	if err := rows.Scan(&id, &seq, &t.Endpoint, &t.Owner, &t.Kind, &t.Spec, &state, &attempts, &t.Result, &t.Error,
		&t.CreatedAt, &t.UpdatedAt, &t.CompletedAt, &writes); err != nil {
		return nil, err
	}
	st, err := messages.ParseTaskState(state)
	if err != nil {
		return nil, err
	}
	t.ID, t.Seq, t.State, t.Attempts, t.Writes = id, uint64(seq), st, uint32(attempts), uint32(writes)
	return &t, nil
}

func (s *pgStore) query(sql string, args []any, fn func(t *Task) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return err
		}
		if !fn(t) {
			return nil
		}
	}
	return rows.Err()
}

func (s *pgStore) Recover(fn func(t *Task)) error {
	// A long read: no statement timeout but the pool's.
	rows, err := s.pool.Query(context.Background(), "SELECT "+pgTaskColumns+" FROM tasks")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return err
		}
		fn(t)
	}
	return rows.Err()
}

func (s *pgStore) Add(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	return s.sync(pgInsert, ts)
}

func (s *pgStore) Complete(ts []*Task, done func(error)) {
	if len(ts) == 0 && done == nil {
		return
	}
	if done == nil {
		done = func(error) {}
	}
	s.enqueue(pgUpdate, ts, done)
}

func (s *pgStore) CompleteNow(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	return s.sync(pgUpdate, ts)
}

func (s *pgStore) Requeue(ts []*Task) {
	if len(ts) > 0 {
		s.enqueue(pgUpdate, ts, nil)
	}
}

// Get finds tasks by id; a key's seq, when set, must match.
func (s *pgStore) Get(keys []Key, out []Task, found []bool) error {
	at := make(map[messages.TaskID][]int, len(keys))
	bySeq := map[uint64][]int{}
	ids := make([]messages.TaskID, 0, len(keys))
	var seqs []int64
	for i, k := range keys {
		found[i] = false
		if k.ID == (messages.TaskID{}) {
			// An owner's index holds seqs alone.
			if _, dup := bySeq[k.Seq]; !dup {
				seqs = append(seqs, int64(k.Seq))
			}
			bySeq[k.Seq] = append(bySeq[k.Seq], i)
			continue
		}
		if _, dup := at[k.ID]; !dup {
			ids = append(ids, k.ID)
		}
		at[k.ID] = append(at[k.ID], i)
	}
	if len(ids) > 0 {
		if err := s.query("SELECT "+pgTaskColumns+" FROM tasks WHERE id = ANY($1)", []any{uuids(ids)}, func(t *Task) bool {
			for _, i := range at[t.ID] {
				if keys[i].Seq == 0 || keys[i].Seq == t.Seq {
					out[i], found[i] = *t, true
				}
			}
			return true
		}); err != nil {
			return err
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	return s.query("SELECT "+pgTaskColumns+" FROM tasks WHERE seq = ANY($1)", []any{seqs}, func(t *Task) bool {
		for _, i := range bySeq[t.Seq] {
			out[i], found[i] = *t, true
		}
		return true
	})
}

func (s *pgStore) Census(keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	return census(s, keys, fn)
}

// pgListPage is how many rows one query of List reads.
const pgListPage = 1000

func (s *pgStore) List(f Filter, after uint64, fn func(t *Task) bool) error {
	var since int64
	if !f.Since.IsZero() {
		since = f.Since.UnixNano()
	}
	for {
		n, more := 0, true
		err := s.query(`SELECT `+pgTaskColumns+` FROM tasks
			WHERE seq > $1 AND ($2 = '' OR endpoint = $2) AND (NOT $3 OR owner = $4) AND created_at >= $5
			ORDER BY seq LIMIT $6`, []any{int64(after), f.Endpoint, f.OwnerSet, f.Owner, since, pgListPage}, func(t *Task) bool {
			n++
			after = t.Seq
			more = fn(t)
			return more
		})
		if err != nil || !more || n < pgListPage {
			return err
		}
	}
}

func (s *pgStore) Prune(keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	ts := make([]*Task, len(keys))
	for i, k := range keys {
		ts[i] = &Task{ID: k.ID}
	}
	s.enqueue(pgDelete, ts, nil)
	return nil
}

// execAuth is exec of a change of tokens or endpoints, which the other
// forwarders then read again.
func (s *pgStore) execAuth(sql string, args ...any) error {
	if err := s.exec(sql, args...); err != nil {
		return err
	}
	if err := s.notifyAuth(); err != nil {
		s.log.WithError(err).Warn("postgres store: the other forwarders were not told of a changed token or endpoint; they see it on a miss or their next start")
	}
	return nil
}

func (s *pgStore) exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	_, err := s.pool.Exec(ctx, sql, args...)
	return err
}

func (s *pgStore) Tokens() ([]Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT hash, id, username, admin, groups, created_at, created_by FROM tokens")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) {
		var t Token
		err := r.Scan(&t.Hash, &t.ID, &t.User, &t.Admin, &t.Groups, &t.CreatedAt, &t.CreatedBy)
		t.CreatedAt = t.CreatedAt.UTC()
		if len(t.Groups) == 0 {
			t.Groups = nil
		}
		return t, err
	})
}

func (s *pgStore) PutToken(t Token) error {
	return s.execAuth(`INSERT INTO tokens (hash, id, username, admin, groups, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (hash) DO UPDATE SET id = $2, username = $3, admin = $4, groups = $5, created_at = $6, created_by = $7`,
		t.Hash, t.ID, t.User, t.Admin, nonNil(t.Groups), t.CreatedAt, t.CreatedBy)
}

func (s *pgStore) DeleteTokens(hashes []string) error {
	return s.execAuth("DELETE FROM tokens WHERE hash = ANY($1)", nonNil(hashes))
}

func (s *pgStore) Endpoints() ([]Endpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT id, public_key, owner, multi_user, users, groups, created_at FROM endpoints")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Endpoint, error) {
		var e Endpoint
		err := r.Scan(&e.ID, &e.PublicKey, &e.Owner, &e.MultiUser, &e.Users, &e.Groups, &e.CreatedAt)
		e.CreatedAt = e.CreatedAt.UTC()
		if len(e.Users) == 0 {
			e.Users = nil
		}
		if len(e.Groups) == 0 {
			e.Groups = nil
		}
		return e, err
	})
}

func (s *pgStore) PutEndpoint(e Endpoint) error {
	return s.execAuth(`INSERT INTO endpoints (id, public_key, owner, multi_user, users, groups, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET public_key = $2, owner = $3, multi_user = $4, users = $5, groups = $6, created_at = $7`,
		e.ID, e.PublicKey, e.Owner, e.MultiUser, nonNil(e.Users), nonNil(e.Groups), e.CreatedAt)
}

func (s *pgStore) DeleteEndpoint(id string) error {
	return s.execAuth("DELETE FROM endpoints WHERE id = $1", id)
}

// nonNil is l, or an empty list: the columns are NOT NULL.
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

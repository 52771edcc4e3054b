package taskstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchyard-hpc/switchyard/messages"
)

// The channels of NOTIFY between forwarders sharing a database.
const (
	pgChanTasks = "switchyard_tasks"
	pgChanEnded = "switchyard_ended"
	pgChanAuth  = "switchyard_auth"
	// pgChanCancel: "INSTANCE ENDPOINT ID ID ...", at most pgCancelIDs.
	pgChanCancel = "switchyard_cancel"
	pgCancelIDs  = 100
)

// NextSeqs hands out seqs from a block of task_seq reserved with one
// nextval; a call that does not fit the rest of the block takes a new one
// (the rest is skipped: seqs need to be unique and rising, not dense).
func (s *pgStore) NextSeqs(n int) (uint64, error) {
	if n < 1 || n > MaxSeqBatch {
		return 0, fmt.Errorf("cannot reserve %d seqs at once (at most %d)", n, MaxSeqBatch)
	}
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	if s.seqNext+uint64(n) > s.seqEnd {
		ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
		defer cancel()
		var first int64
		if err := s.pool.QueryRow(ctx, "SELECT nextval('task_seq')").Scan(&first); err != nil {
			return 0, fmt.Errorf("reserve task seqs: %w", err)
		}
		block, _ := strconv.ParseUint(pgSeqBlock, 10, 64)
		s.seqNext, s.seqEnd = uint64(first), uint64(first)+block
	}
	first := s.seqNext
	s.seqNext += uint64(n)
	return first, nil
}

// notifyCommit tells the other forwarders, in the committing transaction
// (so they hear of it only once it is committed), which endpoints got
// tasks (with the seqs, so they read just those) and that tasks ended.
func (s *pgStore) notifyCommit(b *pgx.Batch, ins, upd []*Task) {
	var payloads []string
	if len(ins) > 0 {
		type span struct{ lo, hi uint64 }
		byEP := map[string]span{}
		for _, t := range ins {
			if t.State.Terminal() {
				continue
			}
			sp, ok := byEP[t.Endpoint]
			if !ok {
				sp = span{t.Seq, t.Seq}
			}
			sp.lo, sp.hi = min(sp.lo, t.Seq), max(sp.hi, t.Seq)
			byEP[t.Endpoint] = sp
		}
		for ep, sp := range byEP {
			payloads = append(payloads, pgChanTasks, fmt.Sprintf("%s %s %d %d", s.instance, ep, sp.lo, sp.hi))
		}
	}
	if anyEnded(ins) || anyEnded(upd) {
		payloads = append(payloads, pgChanEnded, s.instance)
	}
	if len(payloads) == 0 {
		return
	}
	chans, texts := make([]string, 0, len(payloads)/2), make([]string, 0, len(payloads)/2)
	for i := 0; i < len(payloads); i += 2 {
		chans, texts = append(chans, payloads[i]), append(texts, payloads[i+1])
	}
	b.Queue("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)", chans, texts)
}

// notifyAuth tells the other forwarders that tokens or endpoints changed.
func (s *pgStore) notifyAuth() error {
	return s.exec("SELECT pg_notify($1, $2)", pgChanAuth, s.instance)
}

func (s *pgStore) ClaimLease(ctx context.Context, endpoint, holder string, ttl time.Duration) (bool, string, time.Duration, error) {
	var by string
	var left float64
	err := s.pool.QueryRow(ctx, `INSERT INTO endpoint_leases AS l (endpoint, holder, expires_at)
			VALUES ($1, $2, now() + make_interval(secs => $3))
		ON CONFLICT (endpoint) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
			WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
		RETURNING holder, 0::float8`, endpoint, holder, ttl.Seconds()).Scan(&by, &left)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.pool.QueryRow(ctx, "SELECT holder, extract(epoch FROM expires_at - now())::float8 FROM endpoint_leases WHERE endpoint = $1",
			endpoint).Scan(&by, &left)
		if errors.Is(err, pgx.ErrNoRows) {
			// Released meanwhile: the caller tries again.
			return false, "", 0, nil
		}
		return false, by, time.Duration(max(left, 0) * float64(time.Second)), err
	}
	if err != nil {
		return false, "", 0, err
	}
	return true, by, 0, nil
}

func (s *pgStore) RenewLeases(ctx context.Context, holder string, endpoints []string, ttl time.Duration) ([]string, error) {
	rows, err := s.pool.Query(ctx, `UPDATE endpoint_leases SET expires_at = now() + make_interval(secs => $3)
		WHERE holder = $1 AND endpoint = ANY($2) AND expires_at >= now() RETURNING endpoint`, holder, nonNil(endpoints), ttl.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (s *pgStore) ReleaseLease(ctx context.Context, endpoint, holder string) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM endpoint_leases WHERE endpoint = $1 AND holder = $2", endpoint, holder)
	return err
}

func (s *pgStore) Unfinished(ctx context.Context, endpoint string, from, to uint64) ([]*Task, error) {
	if to == 0 {
		to = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, "SELECT "+pgTaskColumns+" FROM tasks WHERE endpoint = $1 AND seq BETWEEN $2 AND $3 AND state NOT IN "+pgEndedStates+" ORDER BY seq",
		endpoint, int64(from), int64(to))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Listen holds a connection of its own (LISTEN needs one session).
func (s *pgStore) Listen(ctx context.Context, ready func(), fn func(Notice)) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The session keeps its LISTENs: it must not go back to the pool.
	conn := c.Hijack()
	defer conn.Close(context.Background())
	for _, ch := range []string{pgChanTasks, pgChanEnded, pgChanAuth, pgChanCancel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		from, rest, _ := strings.Cut(n.Payload, " ")
		if from == s.instance && n.Channel != pgChanEnded {
			continue // its own tasks and tokens this handle's user knows
		}
		switch n.Channel {
		case pgChanEnded:
			fn(Notice{Kind: NoticeEnded})
		case pgChanAuth:
			fn(Notice{Kind: NoticeAuth})
		case pgChanCancel:
			f := strings.Fields(rest)
			if len(f) < 2 {
				continue
			}
			n := Notice{Kind: NoticeCancel, Endpoint: f[0]}
			for _, s := range f[1:] {
				if id, err := messages.ParseTaskID(s); err == nil {
					n.IDs = append(n.IDs, id)
				}
			}
			fn(n)
		case pgChanTasks:
			f := strings.Fields(rest)
			if len(f) != 3 {
				continue
			}
			lo, err1 := strconv.ParseUint(f[1], 10, 64)
			hi, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 == nil && err2 == nil {
				fn(Notice{Kind: NoticeTasks, Endpoint: f[0], First: lo, Last: hi})
			}
		}
	}
}

func (s *pgStore) Ended(ctx context.Context, after uint64, limit int) ([]Ended, error) {
	rows, err := s.pool.Query(ctx, "SELECT pos, id, owner, state FROM ended WHERE pos > $1 ORDER BY pos LIMIT $2",
		int64(after), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Ended, error) {
		var e Ended
		var pos int64
		var id [16]byte
		var st string
		if err := r.Scan(&pos, &id, &e.Owner, &st); err != nil {
			return e, err
		}
		e.Pos, e.ID = uint64(pos), messages.TaskID(id)
		e.State, err = messages.ParseTaskState(st)
		return e, err
	})
}

func (s *pgStore) EndedHead(ctx context.Context) (uint64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT coalesce(max(pos), 0) FROM ended").Scan(&n)
	return uint64(n), err
}

func (s *pgStore) JournalID() string { return s.journal }

func (s *pgStore) Token(ctx context.Context, hash string) (Token, bool, error) {
	var t Token
	err := s.pool.QueryRow(ctx, "SELECT hash, id, username, admin, groups, created_at, created_by FROM tokens WHERE hash = $1", hash).
		Scan(&t.Hash, &t.ID, &t.User, &t.Admin, &t.Groups, &t.CreatedAt, &t.CreatedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, false, nil
	}
	t.CreatedAt = t.CreatedAt.UTC()
	if len(t.Groups) == 0 {
		t.Groups = nil
	}
	return t, err == nil, err
}

// ServerKey keeps the pair in settings: whoever has database access can
// enrol endpoints already, so the secret adds no one who could not
// impersonate the forwarders before.
func (s *pgStore) ServerKey(ctx context.Context, public, secret string) (string, string, error) {
	if _, err := s.pool.Exec(ctx, `INSERT INTO settings VALUES ('curve_public', $1), ('curve_secret', $2) ON CONFLICT DO NOTHING`,
		public, secret); err != nil {
		return "", "", err
	}
	var pub, sec string
	err := s.pool.QueryRow(ctx, `SELECT (SELECT value FROM settings WHERE name = 'curve_public'), (SELECT value FROM settings WHERE name = 'curve_secret')`).
		Scan(&pub, &sec)
	return pub, sec, err
}

func (s *pgStore) CancelStored(ctx context.Context, ids []messages.TaskID, reason string, at int64) ([]*Task, error) {
	var out []*Task
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = nil
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgEndedLockID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `WITH w AS (UPDATE tasks SET state = 'cancelled', error = $2, updated_at = $3, completed_at = $3,
				writes = writes + 1
			WHERE id = ANY($1) AND state NOT IN `+pgEndedStates+` RETURNING `+pgTaskColumns+`),
			j AS (INSERT INTO ended SELECT nextval('ended_seq'), id, owner, state, completed_at FROM w)
			SELECT * FROM w`, uuids(ids), reason, at)
		if err != nil {
			return err
		}
		for rows.Next() {
			t, err := scanTask(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(out) == 0 {
			return err
		}
		chans, texts := []string{pgChanEnded}, []string{s.instance}
		byEP := map[string][]string{}
		for _, t := range out {
			byEP[t.Endpoint] = append(byEP[t.Endpoint], t.ID.String())
		}
		for ep, l := range byEP {
			for len(l) > 0 {
				n := min(len(l), pgCancelIDs)
				chans, texts = append(chans, pgChanCancel), append(texts, s.instance+" "+ep+" "+strings.Join(l[:n], " "))
				l = l[n:]
			}
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)", chans, texts)
		return err
	})
	return out, err
}

func (s *pgStore) FailEndpoint(ctx context.Context, endpoint, reason string, at int64) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgEndedLockID); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `WITH w AS (UPDATE tasks SET state = 'failed', error = $2, updated_at = $3, completed_at = $3,
				writes = writes + 1
			WHERE endpoint = $1 AND state NOT IN `+pgEndedStates+` RETURNING id, owner, state, completed_at),
			j AS (INSERT INTO ended SELECT nextval('ended_seq'), id, owner, state, completed_at FROM w)
			SELECT count(*) FROM w`, endpoint, reason, at).Scan(&n)
		if err != nil || n == 0 {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", pgChanEnded, s.instance)
		return err
	})
	return n, err
}

func (s *pgStore) MaxSeq(ctx context.Context) (uint64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM tasks").Scan(&n)
	return uint64(n), err
}

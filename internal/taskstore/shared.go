package taskstore

import (
	"context"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// MaxSeqBatch is the most seqs one NextSeqs call reserves.
const MaxSeqBatch = 1 << 17

// SeqSource is a Store that gives out task seqs itself, so forwarders
// sharing it never number two tasks alike. Seqs rise within one store
// handle; between handles they interleave by block, not by time.
type SeqSource interface {
	// NextSeqs reserves n (1..MaxSeqBatch) consecutive seqs and returns
	// the first.
	NextSeqs(n int) (uint64, error)
}

// Shared is a Store several forwarders use at once: it holds which
// forwarder dispatches each endpoint (a lease), tells every forwarder of
// new tasks, ends and changed tokens or endpoints, keeps a durable journal
// of ends and the CURVE server key they all present.
type Shared interface {
	SeqSource
	// ClaimLease makes holder the dispatcher of endpoint for ttl unless a
	// live lease of another holder names it (by, left until it expires).
	ClaimLease(ctx context.Context, endpoint, holder string, ttl time.Duration) (ok bool, by string, left time.Duration, err error)
	// RenewLeases extends holder's leases of endpoints and returns those
	// it still holds.
	RenewLeases(ctx context.Context, holder string, endpoints []string, ttl time.Duration) ([]string, error)
	// ReleaseLease gives up holder's lease of endpoint.
	ReleaseLease(ctx context.Context, endpoint, holder string) error
	// Unfinished reads the tasks of endpoint that have not ended, with
	// seq in [from, to] (to 0: no bound), in seq order.
	Unfinished(ctx context.Context, endpoint string, from, to uint64) ([]*Task, error)
	// Listen calls fn with each notice of another store handle until ctx
	// ends or the connection fails (it returns the error); ready is
	// called once it listens, before any notice.
	Listen(ctx context.Context, ready func(), fn func(Notice)) error
	// Ended reads up to limit ends after position after, oldest first;
	// Head is the newest position.
	Ended(ctx context.Context, after uint64, limit int) ([]Ended, error)
	EndedHead(ctx context.Context) (uint64, error)
	// MaxSeq is the highest seq stored, by any handle.
	MaxSeq(ctx context.Context) (uint64, error)
	// JournalID names the ended journal (cursors of another are reset).
	JournalID() string
	// CancelStored ends as cancelled, with reason, the tasks of ids that
	// have not ended, and tells the other handles; it returns those it
	// ended.
	CancelStored(ctx context.Context, ids []messages.TaskID, reason string, at int64) ([]*Task, error)
	// FailEndpoint ends as failed, with reason, the tasks of a deleted
	// endpoint that have not ended, and returns how many.
	FailEndpoint(ctx context.Context, endpoint, reason string, at int64) (int, error)
	// Token reads one token by hash.
	Token(ctx context.Context, hash string) (Token, bool, error)
	// ServerKey returns the CURVE server key pair all handles present,
	// storing mine first when there is none.
	ServerKey(ctx context.Context, public, secret string) (string, string, error)
}

// Notice is what one store handle tells the others.
type Notice struct {
	Kind NoticeKind
	// Endpoint and the seqs of the tasks added (NoticeTasks).
	Endpoint    string
	First, Last uint64
	// IDs of the tasks cancelled (NoticeCancel).
	IDs []messages.TaskID
}

// NoticeKind says what changed.
type NoticeKind uint8

// What a Notice says.
const (
	NoticeTasks NoticeKind = iota + 1
	NoticeEnded
	NoticeAuth   // tokens or endpoints changed
	NoticeCancel // tasks of Endpoint were cancelled in the database
)

// Ended is one entry of the journal of ends.
type Ended struct {
	Pos   uint64
	ID    messages.TaskID
	Owner string
	State messages.TaskState
}

// Package taskstore is the forwarder's durable state behind one interface:
// tasks, API tokens and created endpoints with their keys. The forwarder's
// task table (live tasks, the ended journal, waiters, quotas, metrics)
// sits above a Store and never sees how it keeps things.
//
// Implementations register themselves by name (Register); the forwarder
// opens one by the scheme of its --store value. "pebble" (the default with a
// state directory) is Pebble; "memory" keeps everything in memory
// (tests, --no-persist). Every implementation passes
// the conformance suite in this package's tests.
package taskstore

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Task is the service-side record of one task.
type Task struct {
	ID       messages.TaskID
	Seq      uint64 // order of acceptance, unique in one store
	Endpoint string
	// Owner is the user who submitted the task; only they (and admins)
	// see it.
	Owner    string
	Kind     string
	Spec     []byte
	State    messages.TaskState
	Attempts uint32
	Result   []byte
	Error    string
	// Times are unix nanoseconds, 0 when unset: 8 bytes and no pointer
	// each, where a time.Time takes 24 and one.
	CreatedAt   int64
	UpdatedAt   int64
	CompletedAt int64
	Writes      uint32
}

// Filter selects tasks of a listing; zero fields match everything.
type Filter struct {
	Endpoint string
	States   []messages.TaskState
	Owner    string
	// OwnerSet makes Owner count even when it is empty (tasks of old
	// records have no owner).
	OwnerSet bool
	Since    time.Time
}

// Match reports whether t passes every field of f.
func (f *Filter) Match(t *Task) bool {
	return f.MatchStored(t) && (len(f.States) == 0 || slices.Contains(f.States, t.State))
}

// MatchStored checks the fields that never change after acceptance:
// endpoint, owner and creation time.
func (f *Filter) MatchStored(t *Task) bool {
	if f.Endpoint != "" && t.Endpoint != f.Endpoint {
		return false
	}
	if f.OwnerSet && t.Owner != f.Owner {
		return false
	}
	return f.Since.IsZero() || !time.Unix(0, t.CreatedAt).Before(f.Since)
}

// Token is a stored API token: its hash, never the token itself.
type Token struct {
	Hash      string    `json:"-"`
	ID        string    `json:"token_id"`
	User      string    `json:"user"`
	Admin     bool      `json:"admin"`
	Groups    []string  `json:"groups,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Endpoint is a created endpoint: the CURVE public key its interchange
// connects with, who owns it and whom it is shared with.
type Endpoint struct {
	ID        string    `json:"endpoint_id"`
	PublicKey string    `json:"public_key"`
	Owner     string    `json:"owner,omitempty"`
	MultiUser bool      `json:"multi_user,omitempty"`
	Users     []string  `json:"users,omitempty"`
	Groups    []string  `json:"groups,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Key names a stored task: its id, and the seq it was accepted with
// (0 when the caller does not know it; a store that cannot look a task
// up by id alone then reports it not found). A zero ID with a seq reads
// the task of that seq, whatever its id (an index by owner holds seqs).
type Key struct {
	ID  messages.TaskID
	Seq uint64
}

// KeyOf is t's key.
func KeyOf(t *Task) Key { return Key{ID: t.ID, Seq: t.Seq} }

// Store keeps tasks, tokens and endpoints durably. Methods are safe for
// concurrent use. Tasks passed in are read during the call only (Complete
// and Requeue: until they return, not until done).
//
// Ends and re-queues are stored; intermediate states (waiting-for-nodes,
// running, ...) are not: after a crash the endpoint reports them again.
// The caller indexes tasks in memory (which are live, how ended ones
// ended) and comes to the store for whole records.
type Store interface {
	// Recover calls fn with every stored task, in no particular order;
	// it is called once, before any other method.
	Recover(fn func(t *Task)) error
	// Add stores new tasks (their Seq set by the caller, rising) and
	// returns once they are durable; on an error none of them is stored.
	Add(ts []*Task) error
	// Complete stores the ends of tasks (results). done, if not nil, is
	// called once these and every earlier write are durable, or failed.
	Complete(ts []*Task, done func(error))
	// CompleteNow stores ends (cancellations, an endpoint's deletion) and
	// returns once they are durable.
	CompleteNow(ts []*Task) error
	// Requeue stores tasks sent back to waiting (their endpoint was
	// lost) without waiting for durability.
	Requeue(ts []*Task)
	// Get reads tasks into out; found[i] says keys[i] is stored.
	Get(keys []Key, out []Task, found []bool) error
	// Census calls fn with the owner and state of every key, known false
	// for one not stored.
	Census(keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error
	// List calls fn with the stored tasks after seq `after`, in
	// acceptance order, that match f.MatchStored; states are the stored
	// ones, so the caller filters on states after putting newer ones in.
	// fn returns false to stop.
	List(f Filter, after uint64, fn func(t *Task) bool) error
	// Prune forgets ended tasks (the caller picks those past retention).
	Prune(keys []Key) error
	// Err is why new work must be refused now (the disk fails), or nil.
	Err() error

	Tokens() ([]Token, error)
	PutToken(t Token) error
	DeleteTokens(hashes []string) error

	Endpoints() ([]Endpoint, error)
	PutEndpoint(e Endpoint) error
	DeleteEndpoint(id string) error

	// Describe names the store for logs ("pebble /var/forwarder/forwarder.pebble").
	Describe() string
	Close() error
}

// Compacter is a Store that can rewrite its files so removed records
// leave the disk.
type Compacter interface {
	Compact() error
}

// IDFinder is a Store whose Get finds a task by its id alone (Key.Seq 0),
// whoever stored it: a database several forwarders share, where one
// forwarder's index knows only its own tasks.
type IDFinder interface {
	FindsByID() bool
}

// Config is what an implementation is opened with.
type Config struct {
	// URL is the --store value: "scheme:rest" or "scheme://rest".
	URL string
	// Dir is the forwarder's state directory ("" without one).
	Dir        string
	Durability store.Durability
	// OnCommit, when set, sees each group commit (for metrics).
	OnCommit func(ops int, d time.Duration, err error)
	Log      *logrus.Entry
}

// Opener opens a store; existed says it held state already (the forwarder
// is then in recovery mode).
type Opener func(Config) (s Store, existed bool, err error)

var (
	regMu   sync.Mutex
	openers = map[string]Opener{}
)

// Register makes an implementation available under scheme.
func Register(scheme string, open Opener) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := openers[scheme]; dup {
		panic("taskstore: " + scheme + " registered twice")
	}
	openers[scheme] = open
}

// Schemes lists the registered implementations.
func Schemes() []string {
	regMu.Lock()
	defer regMu.Unlock()
	out := make([]string, 0, len(openers))
	for s := range openers {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Scheme is the implementation a --store value names.
func Scheme(url string) string {
	s, _, _ := strings.Cut(url, ":")
	return s
}

// Open opens the store cfg.URL names.
func Open(cfg Config) (Store, bool, error) {
	scheme := Scheme(cfg.URL)
	regMu.Lock()
	open, ok := openers[scheme]
	regMu.Unlock()
	if !ok {
		return nil, false, fmt.Errorf("unknown store %q: use one of %s (as SCHEME or SCHEME:ADDRESS)", cfg.URL, strings.Join(Schemes(), ", "))
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	return open(cfg)
}

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("task store is closed")

// census answers Census from whole records.
func census(s Store, keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	out, found := make([]Task, len(keys)), make([]bool, len(keys))
	err := s.Get(keys, out, found)
	for i, k := range keys {
		fn(k, out[i].Owner, out[i].State, found[i])
	}
	return err
}

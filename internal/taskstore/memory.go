package taskstore

import (
	"cmp"
	"slices"
	"sync"

	"github.com/switchyard-hpc/switchyard/messages"
)

func init() {
	Register("memory", func(Config) (Store, bool, error) { return NewMemory(), false, nil })
}

// Memory keeps everything in maps: for tests, and for a forwarder that
// persists nothing (--no-persist). Nothing survives a restart.
type Memory struct {
	mu        sync.RWMutex
	tasks     map[messages.TaskID]*Task
	bySeq     map[uint64]*Task
	tokens    map[string]Token
	endpoints map[string]Endpoint
	closed    bool
}

// NewMemory makes an empty store.
func NewMemory() *Memory {
	return &Memory{tasks: map[messages.TaskID]*Task{}, bySeq: map[uint64]*Task{}, tokens: map[string]Token{}, endpoints: map[string]Endpoint{}}
}

func (m *Memory) Describe() string { return "memory (nothing survives a restart)" }

func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *Memory) Err() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

func (m *Memory) Recover(fn func(t *Task)) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, t := range m.tasks {
		c := *t
		fn(&c)
	}
	return nil
}

func (m *Memory) put(ts []*Task) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, t := range ts {
		c := *t
		m.tasks[t.ID] = &c
		m.bySeq[t.Seq] = &c
	}
	return nil
}

func (m *Memory) Add(ts []*Task) error { return m.put(ts) }

func (m *Memory) Complete(ts []*Task, done func(error)) {
	err := m.put(ts)
	if done != nil {
		done(err)
	}
}

func (m *Memory) CompleteNow(ts []*Task) error { return m.put(ts) }

func (m *Memory) Requeue(ts []*Task) { _ = m.put(ts) }

func (m *Memory) Get(keys []Key, out []Task, found []bool) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i, k := range keys {
		t, ok := m.tasks[k.ID]
		if k.ID == (messages.TaskID{}) {
			t, ok = m.bySeq[k.Seq]
		}
		found[i] = ok
		if ok {
			out[i] = *t
		}
	}
	return nil
}

func (m *Memory) Census(keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	return census(m, keys, fn)
}

func (m *Memory) List(f Filter, after uint64, fn func(t *Task) bool) error {
	m.mu.RLock()
	var hits []Task
	for _, t := range m.tasks {
		if t.Seq > after && f.MatchStored(t) {
			hits = append(hits, *t)
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(hits, func(a, b Task) int { return cmp.Compare(a.Seq, b.Seq) })
	for i := range hits {
		if !fn(&hits[i]) {
			return nil
		}
	}
	return nil
}

func (m *Memory) Prune(keys []Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if t, ok := m.tasks[k.ID]; ok {
			delete(m.bySeq, t.Seq)
		}
		delete(m.tasks, k.ID)
	}
	return nil
}

func (m *Memory) Tokens() ([]Token, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Token, 0, len(m.tokens))
	for _, t := range m.tokens {
		out = append(out, t)
	}
	return out, nil
}

func (m *Memory) PutToken(t Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.tokens[t.Hash] = t
	return nil
}

func (m *Memory) DeleteTokens(hashes []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range hashes {
		delete(m.tokens, h)
	}
	return nil
}

func (m *Memory) Endpoints() ([]Endpoint, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Endpoint, 0, len(m.endpoints))
	for _, e := range m.endpoints {
		e.Users, e.Groups = slices.Clone(e.Users), slices.Clone(e.Groups)
		out = append(out, e)
	}
	return out, nil
}

func (m *Memory) PutEndpoint(e Endpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	e.Users, e.Groups = slices.Clone(e.Users), slices.Clone(e.Groups)
	m.endpoints[e.ID] = e
	return nil
}

func (m *Memory) DeleteEndpoint(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.endpoints, id)
	return nil
}

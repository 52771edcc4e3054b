package zsock

import (
	"fmt"
	"sync"
	"sync/atomic"

	zmq "github.com/pebbe/zmq4"
)

var mailboxSeq atomic.Uint64

// Mailbox carries values from any goroutine to the one goroutine that owns a
// poll loop. The loop polls Socket(); a waker goroutine owns the PUSH end, so
// no socket is ever shared between goroutines.
type Mailbox[T any] struct {
	mu    sync.Mutex
	items []T
	// woken: a wake-up was sent since the last Take.
	woken bool
	wake  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	pull  *zmq.Socket
	once  sync.Once
}

// NewMailbox must be called by the goroutine that will own the PULL end, or
// before that goroutine starts.
func NewMailbox[T any](ctx *zmq.Context) (*Mailbox[T], error) {
	addr := fmt.Sprintf("inproc://mailbox-%d", mailboxSeq.Add(1))
	pull, err := ctx.NewSocket(zmq.PULL)
	if err != nil {
		return nil, fmt.Errorf("mailbox PULL: %w", err)
	}
	if err := pull.SetLinger(0); err != nil {
		pull.Close()
		return nil, err
	}
	if err := pull.Bind(addr); err != nil {
		pull.Close()
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	push, err := ctx.NewSocket(zmq.PUSH)
	if err != nil {
		pull.Close()
		return nil, fmt.Errorf("mailbox PUSH: %w", err)
	}
	if err := push.SetLinger(0); err != nil {
		pull.Close()
		push.Close()
		return nil, err
	}
	if err := push.Connect(addr); err != nil {
		pull.Close()
		push.Close()
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	m := &Mailbox[T]{wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), pull: pull}
	go m.waker(push)
	return m, nil
}

func (m *Mailbox[T]) waker(push *zmq.Socket) {
	defer close(m.done)
	defer push.Close()
	for {
		select {
		case <-m.wake:
			// A full pipe means the loop already has a wake-up pending.
			_, _ = push.SendBytes(nil, zmq.DONTWAIT)
		case <-m.quit:
			return
		}
	}
}

// Post queues items for the loop and wakes it if it may be asleep.
func (m *Mailbox[T]) Post(items ...T) {
	m.mu.Lock()
	wake := !m.woken
	m.woken = true
	m.items = append(m.items, items...)
	m.mu.Unlock()
	if wake {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// PostLazy queues items without waking the loop: it takes them at its
// next wake-up or Take.
func (m *Mailbox[T]) PostLazy(items ...T) {
	m.mu.Lock()
	m.items = append(m.items, items...)
	m.mu.Unlock()
}

// Socket is the PULL end to add to the owner's poller.
func (m *Mailbox[T]) Socket() *zmq.Socket { return m.pull }

// Take drains wake-ups and returns everything posted so far. Only the owner
// calls it. spare is reused as the next buffer.
func (m *Mailbox[T]) Take(spare []T) []T {
	for {
		if _, err := m.pull.RecvBytes(zmq.DONTWAIT); err != nil {
			break
		}
	}
	m.mu.Lock()
	out := m.items
	m.items = spare[:0]
	m.woken = false
	m.mu.Unlock()
	return out
}

// Len is the number of items waiting.
func (m *Mailbox[T]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.items)
}

// Close stops the waker and closes the PULL end; call from the owner.
func (m *Mailbox[T]) Close() {
	m.once.Do(func() {
		close(m.quit)
		<-m.done
		m.pull.Close()
	})
}

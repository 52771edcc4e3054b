package httpx

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connGuard caps a listener's open connections, in all and per client
// address. A connection with no request under way (new, or idle between
// requests) gives its place to a new one at the cap, the idlest first: a
// flood of idle sockets, authenticated or not, can then never hold every
// place while a real client waits (Accept blocks only when all are busy).
type connGuard struct {
	net.Listener
	max, perClient int

	mu     sync.Mutex
	open   map[*guardedConn]struct{}
	byAddr map[string]int
	// freed is signalled when a connection closes.
	freed chan struct{}
	done  chan struct{}
	once  sync.Once
}

type guardedConn struct {
	net.Conn
	g    *connGuard
	addr string
	once sync.Once
	// busy says a request is under way; since is when the connection
	// last became idle (or was accepted). Both under g.mu.
	busy  bool
	since time.Time
}

// idleGrace is how long a new connection may take to send its request
// before another may take its place.
const idleGrace = 200 * time.Millisecond

func newConnGuard(l net.Listener, max, perClient int) *connGuard {
	return &connGuard{Listener: l, max: max, perClient: perClient, open: map[*guardedConn]struct{}{},
		byAddr: map[string]int{}, freed: make(chan struct{}, 1), done: make(chan struct{})}
}

func hostOf(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// idlest is the connection idle longest, of addr when addr != "", that
// may go now; waitable says some connection in scope is idle but too new
// to go yet. g.mu is held.
func (g *connGuard) idlest(addr string, now time.Time) (best *guardedConn, waitable bool) {
	for c := range g.open {
		if c.busy || (addr != "" && c.addr != addr) {
			continue
		}
		if now.Sub(c.since) < idleGrace {
			waitable = true
			continue
		}
		if best == nil || c.since.Before(best.since) {
			best = c
		}
	}
	return best, waitable
}

func (g *connGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		gc := &guardedConn{Conn: c, g: g, addr: hostOf(c)}
		if g.admit(gc) {
			return gc, nil
		}
	}
}

// admit makes room for c, closing idle connections if need be, or waits
// while every connection is busy. It refuses c (closing it) when its
// address already has as many busy connections as it may.
func (g *connGuard) admit(c *guardedConn) bool {
	for {
		now := time.Now()
		g.mu.Lock()
		perClient := g.perClient > 0 && g.byAddr[c.addr] >= g.perClient
		if !perClient && len(g.open) < g.max {
			g.open[c] = struct{}{}
			g.byAddr[c.addr]++
			c.since = now
			g.mu.Unlock()
			return true
		}
		scope := ""
		if perClient {
			scope = c.addr
		}
		evict, waitable := g.idlest(scope, now)
		g.mu.Unlock()
		if evict != nil {
			evict.Close()
			continue
		}
		if perClient && !waitable {
			c.Conn.Close()
			return false
		}
		// Every connection is busy or too new to take: wait for one to
		// close or to go idle.
		select {
		case <-g.freed:
		case <-time.After(idleGrace):
		case <-g.done:
			c.Conn.Close()
			return false
		}
	}
}

// state follows the server's view of each connection.
func (g *connGuard) state(c net.Conn, st http.ConnState) {
	gc := unwrap(c)
	if gc == nil {
		return
	}
	g.mu.Lock()
	switch st {
	case http.StateActive:
		gc.busy = true
	case http.StateIdle:
		gc.busy, gc.since = false, time.Now()
	}
	g.mu.Unlock()
	if st == http.StateIdle {
		select {
		case g.freed <- struct{}{}:
		default:
		}
	}
}

// unwrap finds our connection under a TLS one.
func unwrap(c net.Conn) *guardedConn {
	for {
		switch v := c.(type) {
		case *guardedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		g := c.g
		g.mu.Lock()
		delete(g.open, c)
		if g.byAddr[c.addr]--; g.byAddr[c.addr] <= 0 {
			delete(g.byAddr, c.addr)
		}
		g.mu.Unlock()
		select {
		case g.freed <- struct{}{}:
		default:
		}
	})
	return err
}

func (g *connGuard) Close() error {
	g.once.Do(func() { close(g.done) })
	return g.Listener.Close()
}

package launch

import (
	"fmt"
	"net"
	"sync"
)

var (
	portMu sync.Mutex
	given  = map[int]bool{}
)

// FreePort returns a TCP port of host ("" for every interface) that nobody
// listens on, never the same one twice in a process: the kernel may hand
// a port that was just released out again, and two daemons told the same
// port would collide. The port is released before the daemon binds it;
// another process could take it meanwhile, and the daemon's bind error
// then names it.
func FreePort(host string) (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port on %s: %w", host, err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !given[p] {
			given[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("no fresh free port on %s after 100 tries", host)
}

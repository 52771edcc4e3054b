package manager

import (
	"net"
	"os"
)

// advertisedHTTP is the address the interchange publishes for scraping
// this manager's /metrics: the host as given to --listen-http when it is
// a name (the bound IP may be a loopback alias of it), this node's name
// for a wildcard, else the bound address; with the bound port.
func (mg *Manager) advertisedHTTP() string {
	a := mg.HTTPAddr()
	if a == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if given, _, err := net.SplitHostPort(mg.opts.ListenHTTP); err == nil && given != "" && net.ParseIP(given) == nil {
		host = given
	} else if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

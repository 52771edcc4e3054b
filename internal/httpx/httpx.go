// Package httpx holds the small HTTP helpers shared by the daemons' APIs.
package httpx

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// Error is the JSON body of every refusal.
type Error struct {
	Error string `json:"error"`
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// Fail writes a JSON error naming the problem.
func Fail(w http.ResponseWriter, status int, format string, args ...any) {
	WriteJSON(w, status, Error{Error: fmt.Sprintf(format, args...)})
}

// Config bounds what slow or many clients can hold, and turns on TLS.
// Zero fields take the defaults below.
type Config struct {
	// TLSCert and TLSKey (PEM files) serve HTTPS instead of HTTP.
	TLSCert, TLSKey string
	// ReadHeaderTimeout and ReadTimeout bound reading a request's headers
	// and the whole request; WriteTimeout bounds the answer (longer than
	// the longest long-poll); IdleTimeout closes idle keep-alives.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConns caps open connections. At the cap a new connection takes
	// the place of the one idle longest (no request under way), so idle
	// sockets cannot lock clients out; when every one is busy, new ones
	// wait in the kernel's backlog.
	MaxConns int
	// MaxConnsPerClient caps one client address's connections; past it
	// that address's idlest connection goes, or, when all of them are
	// busy, the new one is refused (0: DefaultMaxConnsPerClient when
	// below MaxConns, else no cap of its own).
	MaxConnsPerClient int
}

// Defaults for every HTTP server of the daemons.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 2 * time.Minute
	DefaultWriteTimeout      = 6 * time.Minute // long-polls wait up to 5 minutes
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerClient = 256
)

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	// A cap per client as large as the whole one would only refuse
	// where the whole one waits.
	if c.MaxConnsPerClient <= 0 && DefaultMaxConnsPerClient < c.MaxConns {
		c.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
}

// Server runs an http.Server on a listener until ctx ends.
type Server struct {
	ln  net.Listener
	srv *http.Server
	tls bool
}

// Listen binds addr at once with the default Config, so a bad address
// fails at start.
func Listen(addr string, h http.Handler) (*Server, error) {
	return ListenConfig(addr, h, Config{})
}

// ListenConfig binds addr with cfg; a bad address or an unreadable
// certificate fails here, at start.
func ListenConfig(addr string, h http.Handler, cfg Config) (*Server, error) {
	cfg.setDefaults()
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("HTTPS needs both --tls-cert and --tls-key")
		}
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	guard := newConnGuard(ln, cfg.MaxConns, cfg.MaxConnsPerClient)
	ln = guard
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: cfg.ReadHeaderTimeout, ReadTimeout: cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: 64 << 10, ConnState: guard.state}
	return &Server{ln: ln, srv: srv, tls: tlsCfg != nil}, nil
}

// URL is the server's base URL (https when it serves TLS).
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context, log *logrus.Entry) error {
	// Handshake failures and the like: noise a client can make at will.
	w := log.WriterLevel(logrus.DebugLevel)
	defer w.Close()
	s.srv.ErrorLog = stdlog.New(w, "http: ", 0)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			_ = s.srv.Close()
		}
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		log.WithError(err).Error("http server stopped")
		return err
	}
}

// Close stops the server without waiting, and frees its address even when
// it never served.
func (s *Server) Close() {
	_ = s.srv.Close()
	_ = s.ln.Close()
}

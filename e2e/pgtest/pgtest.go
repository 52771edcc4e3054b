// Package pgtest starts a real PostgreSQL server for tests: Debian's
// postgresql package's initdb and postgres, run as an unprivileged system
// user (postgres refuses to run as root) with its data directory and unix
// socket in a temporary directory and its own free TCP port on 127.0.0.1,
// so several servers, or a system PostgreSQL, do not collide.
//
// The server runs with fsync=off: a test server needs no durability across
// a host crash, and fsync would dominate the tests' time. Never copy that
// setting to a real deployment.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// User is the system user the server runs as when the tests are root.
const User = "sy-postgres"

// Superuser is the database role initdb makes; it logs in without a
// password over the socket and 127.0.0.1 (trust: test servers only).
const Superuser = "postgres"

// Server is a running PostgreSQL server.
type Server struct {
	Dir  string // everything of this server lives here
	Data string
	Port int
	Sock string // the unix socket's directory

	bin  string
	cred *syscall.Credential
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	dbs  int
}

// Bin is the directory of the newest installed PostgreSQL's programs.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run scripts/install-deps.sh (it installs postgresql-15)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

var userMu sync.Mutex

// account is who runs the server: User when root (made once, with useradd),
// else the current user.
func account() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	userMu.Lock()
	defer userMu.Unlock()
	u, err := user.Lookup(User)
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", User).CombinedOutput()
		// Another test binary may have made it meanwhile.
		if u, err = user.Lookup(User); err != nil {
			return nil, fmt.Errorf("useradd %s: %v: %s", User, aerr, out)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start starts a server for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if s != nil {
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("stop postgres: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	return s
}

// New makes a data directory and starts a server on it. On error the
// returned server, when not nil, must still be closed.
func New() (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	cred, err := account()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Data: filepath.Join(dir, "data"), Sock: filepath.Join(dir, "run"), bin: bin, cred: cred}
	// The server's user must reach its directories; MkdirTemp makes 0700.
	if err := os.Chmod(dir, 0o755); err != nil {
		return s, err
	}
	for _, d := range []string{s.Data, s.Sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return s, err
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return s, err
			}
		}
	}
	if out, err := s.command("initdb", "-D", s.Data, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return s, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if s.Port, err = launch.FreePort("127.0.0.1"); err != nil {
		return s, err
	}
	return s, s.Start()
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// Start starts the server on its data directory (again, after Stop or
// Kill) and waits until it takes connections. After a Kill the old
// backends may hold the shared memory a little longer: a start that
// exits is tried again until the deadline.
func (s *Server) Start() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		done, err := s.launch()
		if err != nil {
			return err
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c, err := pgx.Connect(ctx, s.URL("postgres"))
			if err == nil {
				c.Close(ctx)
				cancel()
				return nil
			}
			cancel()
			if time.Now().After(deadline) {
				return fmt.Errorf("postgres not taking connections after 30s: %v; see %s", err, filepath.Join(s.Dir, "postgres.log"))
			}
			select {
			case <-done:
			case <-time.After(50 * time.Millisecond):
				continue
			}
			break
		}
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres exited at start; see %s", filepath.Join(s.Dir, "postgres.log"))
		}
		time.Sleep(100 * time.Millisecond) // a back-off before the next try, not a wait for a condition
	}
}

// launch starts the postmaster; done closes when it exits.
func (s *Server) launch() (chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil, errors.New("postgres is running already")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	// fsync off: tests only (see the package comment).
	cmd := s.command("postgres", "-D", s.Data, "-p", strconv.Itoa(s.Port), "-k", s.Sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "logging_collector=off")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return done, nil
}

// Stop stops the server: SIGINT (fast shutdown), SIGKILL if it is still
// running after 10 seconds.
func (s *Server) Stop() error { return s.stop(syscall.SIGINT, 10*time.Second) }

// Kill stops the server with SIGKILL at once (a crash); its backends
// notice and exit by themselves, and Start retries until they have.
func (s *Server) Kill() error { return s.stop(syscall.SIGKILL, 0) }

func (s *Server) stop(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	err := s.Stop()
	if rerr := os.RemoveAll(s.Dir); err == nil {
		err = rerr
	}
	return err
}

// URL is a connection URL for database db over TCP.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, s.Port, db)
}

// NewDatabase makes an empty database and returns its URL.
func (s *Server) NewDatabase() (string, error) {
	s.mu.Lock()
	s.dbs++
	name := fmt.Sprintf("db%d", s.dbs)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return s.URL(name), nil
}

// Database makes an empty database for the test.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	u, err := s.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

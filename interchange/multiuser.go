package interchange

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/messages"
)

// A multi-user endpoint (--user-map) runs each user's tasks only on
// managers running as her POSIX account. Each account has a manager key
// of its own; the ZAP handler names a connection by the account its key
// belongs to, a registration binds the manager to that account, and
// dispatch hands a task only to managers of its owner's account. The
// endpoint's plain manager key is not admitted at all.

// userIDPrefix starts the ZAP User-Id of a user's manager key.
const userIDPrefix = "user:"

// account is one POSIX account's share of the endpoint: its queue, its
// managers, its key and its blocks. The loop owns it.
type account struct {
	posixAccount
	idx      uint32 // its index in multiUser.list, plus one
	q        fqueue
	mgrs     []*manager
	rr       int
	creds    *curve.Credentials
	credPath string // the user's copy, which her managers read
	blocks   *blocks.Blocks
}

// multiUser is the loop's user map state.
type multiUser struct {
	m      *userMap
	list   []*account
	byName map[string]*account
	// byOwner caches each owner's account; refusals are kept for a while
	// (a flood from an unmapped user costs one lookup, not one a task).
	byOwner map[owner]ownerAcct
	// rr and brr: which account goes first at dispatch and at blocks.
	rr, brr int
}

type ownerAcct struct {
	idx   uint32
	why   string
	until time.Time // refusals: look again after
}

// userKeys maps each admitted public key to its POSIX account name; the
// ZAP handler reads it, the loop replaces it when an account is added.
type userKeys struct {
	mu sync.Mutex // writers
	m  atomic.Pointer[map[string]string]
}

func (k *userKeys) lookup(pub string) (string, bool) {
	m := k.m.Load()
	if m == nil {
		return "", false
	}
	name, ok := (*m)[pub]
	return name, ok
}

func (k *userKeys) add(pub, name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	next := map[string]string{pub: name}
	if cur := k.m.Load(); cur != nil {
		for p, n := range *cur {
			next[p] = n
		}
	}
	k.m.Store(&next)
}

// setupMultiUser reads the map and makes the accounts of its explicit
// lines, with their keys, before managers can connect.
func (ix *Interchange) setupMultiUser() error {
	m, err := readUserMap(ix.opts.UserMap)
	if err != nil {
		return err
	}
	mu := &multiUser{m: m, byName: map[string]*account{}, byOwner: map[owner]ownerAcct{}}
	ix.multi = mu
	// Users' managers reach their own users/NAME through it; everything
	// else in it is 0600 or 0700, and it cannot be listed.
	if err := os.Chmod(ix.dir.Path, 0o711); err != nil {
		return fmt.Errorf("interchange: state dir: %w", err)
	}
	seen := map[string]mapLine{}
	for _, ml := range m.explicit {
		if prev, ok := seen[ml.posix]; ok && prev.slurm != ml.slurm {
			return fmt.Errorf("%s:%d: POSIX user %q is charged to Slurm account %q here and %q on line %d; one account each",
				m.path, max(ml.line, prev.line), ml.posix, ml.slurm, prev.slurm, min(ml.line, prev.line))
		}
		seen[ml.posix] = ml
	}
	for _, ml := range seen {
		if _, err := ix.addAccount(ml.acct); err != nil {
			return err
		}
	}
	return nil
}

// addAccount makes the account's record and key (kept across restarts)
// and writes her credential file.
func (ix *Interchange) addAccount(pa posixAccount) (*account, error) {
	mu := ix.multi
	if a, ok := mu.byName[pa.Name]; ok {
		return a, nil
	}
	creds, path, err := ix.userCredentials(pa)
	if err != nil {
		return nil, fmt.Errorf("interchange: manager key of POSIX user %s: %w", pa.Name, err)
	}
	a := &account{posixAccount: pa, idx: uint32(len(mu.list) + 1), creds: creds, credPath: path}
	a.q.weight = ix.shareOf
	mu.list = append(mu.list, a)
	mu.byName[pa.Name] = a
	ix.keys.add(creds.Client.Public, pa.Name)
	if err := ix.startUserBlocks(a); err != nil {
		return nil, err
	}
	ix.log.WithFields(logrus.Fields{"posix_user": pa.Name, "uid": pa.UID, "credentials": path}).Info("multi-user: account ready")
	return a, nil
}

// Files of a multi-user endpoint, under the state dir (0711, root):
//
//	keys/      0700 root: NAME.credentials, the authoritative key of each account
//	users/     0711 root: traversable, not listable
//	users/NAME 0700 NAME: manager.credentials (0600 NAME), her copy
//
// The user's copy is rewritten from keys/ at every start, so what she
// writes into her own directory never changes whom a key belongs to.
func (ix *Interchange) userCredentials(pa posixAccount) (*curve.Credentials, string, error) {
	keysDir := ix.dir.File("keys")
	usersDir := ix.dir.File("users")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{keysDir, 0o700}, {usersDir, 0o711}} {
		if err := rootDir(d.path, d.mode); err != nil {
			return nil, "", err
		}
	}
	own := filepath.Join(keysDir, pa.Name+".credentials")
	creds, err := curve.ReadCredentials(own, curve.KindManager)
	if err != nil || creds.ServerKey != ix.serverPublic {
		if err != nil && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
			ix.log.WithError(err).WithField("path", own).Warn("multi-user: unreadable account key; making a new one")
		}
		client, err := curve.NewKeyPair()
		if err != nil {
			return nil, "", err
		}
		creds = &curve.Credentials{Kind: curve.KindManager, ServerKey: ix.serverPublic, Client: client}
	}
	creds.Address = ix.downAddr
	if err := curve.WriteCredentials(own, creds); err != nil {
		return nil, "", err
	}
	udir := filepath.Join(usersDir, pa.Name)
	if err := userDir(udir, pa); err != nil {
		return nil, "", err
	}
	path := filepath.Join(udir, "manager.credentials")
	data, err := curve.Marshal(creds)
	if err != nil {
		return nil, "", err
	}
	if err := writeAs(path, data, pa); err != nil {
		return nil, "", err
	}
	return creds, path, nil
}

// rootDir makes path a root-owned directory of mode (not a symlink).
func rootDir(path string, mode os.FileMode) error { return ownedDir(path, mode, 0, 0) }

// userDir makes path a directory of mode 0700 owned by the account. Its
// parent is root's, so nobody else can put a symlink in its place.
func userDir(path string, pa posixAccount) error {
	return ownedDir(path, 0o700, int(pa.UID), int(pa.GID))
}

// ownedDir makes path a directory (never following a symlink there) of
// mode, owned by uid and gid.
func ownedDir(path string, mode os.FileMode, uid, gid int) error {
	if err := os.Mkdir(path, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// writeAs writes data to path (in a directory the account owns) as a
// file of hers, mode 0600, without following anything she may have put
// there: a new file by O_EXCL|O_NOFOLLOW, then renamed over the name.
func writeAs(path string, data []byte, pa posixAccount) error {
	tmp := fmt.Sprintf("%s.%d.tmp", path, time.Now().UnixNano())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chown(int(pa.UID), int(pa.GID)); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// accountOf is the account that runs owner's tasks (its index, plus one),
// or 0 and why none does.
func (l *loop) accountOf(o owner, now time.Time) (uint32, string) {
	mu := l.multi
	if c, ok := mu.byOwner[o]; ok && (c.idx != 0 || now.Before(c.until)) {
		return c.idx, c.why
	}
	pa, err := mu.m.resolve(ownerName(o))
	if err != nil {
		why := err.Error()
		mu.byOwner[o] = ownerAcct{why: why, until: now.Add(10 * time.Second)}
		l.quiet.Warn("unmapped:"+ownerName(o), l.log.WithField("owner", ownerName(o)), "multi-user: task refused: "+why)
		return 0, why
	}
	a, err := l.ix.addAccount(pa)
	if err != nil {
		why := err.Error()
		mu.byOwner[o] = ownerAcct{why: why, until: now.Add(10 * time.Second)}
		l.log.WithError(err).Error("multi-user: cannot set up an account")
		return 0, why
	}
	mu.byOwner[o] = ownerAcct{idx: a.idx}
	return a.idx, ""
}

// placeTask queues t in its owner's account, or fails it when the user
// map gives it none. Single-user endpoints just queue it.
func (l *loop) placeTask(t *itask, now time.Time) {
	if l.multi == nil {
		l.enqueueBack(t, now)
		return
	}
	idx, why := l.accountOf(t.owner, now)
	if idx == 0 {
		l.ix.m.refused.WithLabelValues("unmapped-user").Inc()
		l.finishTask(t, messages.Result{ID: t.id, Attempt: t.attempt, Code: messages.Failed, Finished: now.UnixNano(),
			Error: "not run: " + why})
		return
	}
	t.acct = idx
	l.enqueueBack(t, now)
}

// bindAccount binds a registering manager to the account its key names;
// it returns why not when it cannot be.
func (l *loop) bindAccount(m *manager, known bool, zapUser string) (*account, string) {
	name, ok := strings.CutPrefix(zapUser, userIDPrefix)
	a := l.multi.byName[name]
	if !ok || a == nil {
		return nil, "this key is not a user's manager key of this multi-user endpoint"
	}
	if known && m.acct != a.idx {
		return nil, fmt.Sprintf("manager id %q is in use by another user's manager", m.ID)
	}
	return a, ""
}

// unbindAccount forgets a lost manager in its account.
func (l *loop) unbindAccount(m *manager) {
	if l.multi == nil || m.acct == 0 {
		return
	}
	a := l.multi.list[m.acct-1]
	for i, x := range a.mgrs {
		if x == m {
			a.mgrs = append(a.mgrs[:i:i], a.mgrs[i+1:]...)
			break
		}
	}
}

// dispatchMulti hands each account's queued tasks to that account's
// managers only: a fair share per pass among them, accounts in turn.
func (l *loop) dispatchMulti(now time.Time) {
	mu := l.multi
	n := len(mu.list)
	start := mu.rr
	mu.rr = (mu.rr + 1) % max(n, 1)
	for j := range n {
		a := mu.list[(start+j)%n]
		if len(a.mgrs) == 0 {
			continue
		}
		if a.q.n == 0 {
			l.stealFor(a.mgrs, now)
			continue
		}
		l.dispatchTo(a.mgrs, &a.q, &a.rr)
		if !l.retryAt.IsZero() {
			return
		}
	}
}

// watchHUP asks the loop to re-read the user map at each SIGHUP.
func (ix *Interchange) watchHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			ix.mbox.Post(event{kind: evReloadMap})
		}
	}
}

// reloadMap re-reads the user map; a bad one is logged and the old one
// kept. The new map decides for tasks that arrive from now on; queued
// tasks keep the account they were given.
func (l *loop) reloadMap() {
	mu := l.multi
	m, err := readUserMap(mu.m.path)
	if err != nil {
		l.log.WithError(err).Error("multi-user: user map not reloaded; the old one stays in force")
		return
	}
	for _, ml := range m.explicit {
		if _, err := l.ix.addAccount(ml.acct); err != nil {
			l.log.WithError(err).Error("multi-user: user map not reloaded; the old one stays in force")
			return
		}
	}
	mu.m = m
	clear(mu.byOwner)
	l.log.WithFields(logrus.Fields{"path": m.path, "users": len(m.explicit), "default": m.star != nil}).Info("multi-user: user map reloaded")
}

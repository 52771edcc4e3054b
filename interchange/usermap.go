package interchange

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
)

// A user map (--user-map FILE) says which POSIX account runs each
// Switchyard user's tasks on a multi-user endpoint:
//
//	# SWITCHYARD_USER POSIX_USER [SLURM_ACCOUNT]
//	alice-sy  alice  proj1
//	* = [SLURM_ACCOUNT]      every other user: the account of the same name
//
// Explicit lines are resolved when the map is read (an unknown account,
// root or a system account is an error naming file:line); "*" names are
// resolved at task time, and a task whose name resolves to nothing, root
// or a system account fails.
type userMap struct {
	path     string
	explicit map[string]mapLine
	star     *mapLine
}

type mapLine struct {
	posix, slurm string
	line         int
	// acct is the account of an explicit line, looked up at load.
	acct posixAccount
}

// posixAccount is who a user's managers run as.
type posixAccount struct {
	Name     string
	UID, GID uint32
	Groups   []uint32
	Home     string
	// Slurm is the account her blocks are charged to ("" = the flag's).
	Slurm string
}

// MinUID is the lowest UID a user map may name: below are root and the
// system accounts.
const MinUID = 1000

var (
	mapNameRE   = regexp.MustCompile(`^[A-Za-z0-9._@+-]{1,200}$`)
	posixNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}\$?$`)
	slurmAcctRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// readUserMap reads and checks the map at path.
func readUserMap(path string) (*userMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--user-map: %w", err)
	}
	return parseUserMap(path, data)
}

func parseUserMap(path string, data []byte) (*userMap, error) {
	m := &userMap{path: path, explicit: map[string]mapLine{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", path, n, fmt.Sprintf(format, args...))
		}
		if f[0] == "*" {
			if len(f) < 2 || f[1] != "=" || len(f) > 3 {
				return nil, bad("a default line reads '* =' or '* = SLURM_ACCOUNT', got %q", strings.TrimSpace(text))
			}
			if m.star != nil {
				return nil, bad("a second '*' line (the first is line %d)", m.star.line)
			}
			ml := mapLine{line: n}
			if len(f) == 3 {
				if !slurmAcctRE.MatchString(f[2]) {
					return nil, bad("Slurm account %q is not a plain name", f[2])
				}
				ml.slurm = f[2]
			}
			m.star = &ml
			continue
		}
		if len(f) < 2 || len(f) > 3 {
			return nil, bad("a line reads 'SWITCHYARD_USER POSIX_USER [SLURM_ACCOUNT]', got %d fields", len(f))
		}
		if !mapNameRE.MatchString(f[0]) {
			return nil, bad("Switchyard user %q is not a legal name", f[0])
		}
		if !posixNameRE.MatchString(f[1]) {
			return nil, bad("POSIX user %q is not a legal account name", f[1])
		}
		if prev, dup := m.explicit[f[0]]; dup {
			return nil, bad("user %q is mapped twice (first on line %d)", f[0], prev.line)
		}
		ml := mapLine{posix: f[1], line: n}
		if len(f) == 3 {
			if !slurmAcctRE.MatchString(f[2]) {
				return nil, bad("Slurm account %q is not a plain name", f[2])
			}
			ml.slurm = f[2]
		}
		acct, err := lookupAccount(f[1])
		if err != nil {
			return nil, bad("%v", err)
		}
		acct.Slurm = ml.slurm
		ml.acct = acct
		m.explicit[f[0]] = ml
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// resolve is the account that runs user's tasks, or why there is none.
func (m *userMap) resolve(name string) (posixAccount, error) {
	if ml, ok := m.explicit[name]; ok {
		return ml.acct, nil
	}
	if m.star == nil {
		return posixAccount{}, fmt.Errorf("user %q is not in the user map %s of this multi-user endpoint", name, m.path)
	}
	if name == "" || !posixNameRE.MatchString(name) {
		return posixAccount{}, fmt.Errorf("user %q has no POSIX account of the same name ('*' line %d of the user map %s)", name, m.star.line, m.path)
	}
	acct, err := lookupAccount(name)
	if err != nil {
		return posixAccount{}, fmt.Errorf("user %q: %v ('*' line %d of the user map %s)", name, err, m.star.line, m.path)
	}
	acct.Slurm = m.star.slurm
	return acct, nil
}

// lookupAccount finds a POSIX account; root and system accounts are refused.
func lookupAccount(name string) (posixAccount, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return posixAccount{}, fmt.Errorf("POSIX user %q: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return posixAccount{}, fmt.Errorf("POSIX user %q has uid %q, gid %q", name, u.Uid, u.Gid)
	}
	if uid < MinUID {
		what := "a system account"
		if uid == 0 {
			what = "root"
		}
		return posixAccount{}, fmt.Errorf("POSIX user %q (uid %d) is %s; tasks never run as root or as accounts with uid below %d", name, uid, what, MinUID)
	}
	a := posixAccount{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	gids, err := u.GroupIds()
	if err != nil {
		return posixAccount{}, fmt.Errorf("POSIX user %q: groups: %v", name, err)
	}
	for _, g := range gids {
		if v, err := strconv.ParseUint(g, 10, 32); err == nil {
			a.Groups = append(a.Groups, uint32(v))
		}
	}
	return a, nil
}

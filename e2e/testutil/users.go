package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// PosixUser is a Unix account a test made.
type PosixUser struct {
	Name     string
	UID, GID int
	Home     string
}

// AddUser makes a Unix account named prefix-<random> with a home
// directory (useradd -m) and removes it (userdel -r) when the test ends.
// The tests run as root (they make users, mount tmpfs, set firewall
// rules); useradd comes with Debian's passwd package.
func AddUser(t testing.TB, prefix string) PosixUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("creating Unix users needs root: run the tests as root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Fatalf("useradd not found (Debian's passwd package): %v", err)
	}
	name := strings.ToLower(prefix + "-" + randHex(3))
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", "-K", "UID_MIN=20000", "-K", "UID_MAX=29999", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel -r %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return PosixUser{Name: name, UID: uid, GID: gid, Home: u.HomeDir}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

package slurmtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
)

// A multi-user endpoint on Slurm: each user's blocks are jobs submitted as
// her (squeue shows her as the job's user, and the map's Slurm account),
// and her tasks run as her.
func TestMultiUserSlurmBlocks(t *testing.T) {
	alice, bob := testutil.AddUser(t, "sy-alice"), testutil.AddUser(t, "sy-bob")
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 5 * time.Second})
	// The users' sbatch reads slurm.conf, as on a real site: t.TempDir's
	// parent is 0700.
	if err := os.Chmod(filepath.Dir(c.Dir), 0o711); err != nil {
		t.Fatal(err)
	}
	for _, kv := range c.Env() {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "SLURM_CONF" {
			t.Setenv("SLURM_CONF", v)
		}
	}
	// Everything the users' jobs need is where they may reach it.
	dir, err := os.MkdirTemp("", "sy-mu-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "switchyard")
	copyFile(t, testutil.BuildSwitchyard(t), bin, 0o755)
	mapPath := filepath.Join(dir, "users.map")
	if err := os.WriteFile(mapPath, []byte(fmt.Sprintf("alice-sy %s proj-alice\nbob-sy %s\n", alice.Name, bob.Name)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The fixture is one node of 2 CPUs: each user's block asks for one
	// CPU of it (not the whole node, the default), so both run at once.
	cfg := &blocks.Config{Provider: blocks.ProviderSlurm, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 1, NoExclusive: true,
		Walltime: 5 * time.Minute, MaxIdle: 10 * time.Minute, Period: 300 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	hb := interchange.Options{HeartbeatInterval: 200 * time.Millisecond, HeartbeatThreshold: 5 * time.Second}
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: hb.HeartbeatInterval, HeartbeatThreshold: hb.HeartbeatThreshold})
	var out struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	fwd.Client().Must(t, http.StatusCreated, http.MethodPost, "/v1/endpoints", map[string]any{"endpoint_id": "mu", "multi_user": true}, &out)
	var cred curve.Credentials
	if err := json.Unmarshal(out.Credentials, &cred); err != nil {
		t.Fatal(err)
	}
	testutil.StartInterchange(t, interchange.Options{EndpointID: "mu", Credentials: &cred, Forwarder: fwd.ZMQAddr(),
		StateDir: filepath.Join(dir, "ix"), HeartbeatInterval: hb.HeartbeatInterval, HeartbeatThreshold: hb.HeartbeatThreshold,
		Blocks: cfg, ManagerBinary: bin, UserMap: mapPath, MaxBlocksPerUser: 1})
	asAlice, asBob := fwd.User(t, "alice-sy", false), fwd.User(t, "bob-sy", false)
	idA, err := asAlice.Submit("mu", map[string]any{"kind": "exec", "args": []string{"id", "-un"}})
	if err != nil {
		t.Fatal(err)
	}
	idB, err := asBob.Submit("mu", map[string]any{"kind": "exec", "args": []string{"id", "-un"}})
	if err != nil {
		t.Fatal(err)
	}
	var sq string
	testutil.WaitFor(t, 60*time.Second, func() error {
		sq, err = c.Output("squeue", "--noheader", "--states=all", "-o", "%i %u %a %T %j")
		if err != nil {
			return err
		}
		if !strings.Contains(sq, alice.Name) || !strings.Contains(sq, bob.Name) {
			return fmt.Errorf("squeue: %q", sq)
		}
		return nil
	})
	t.Logf("squeue -o '%%i %%u %%a %%T %%j':\n%s", sq)
	for _, l := range strings.Split(strings.TrimSpace(sq), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == alice.Name && f[2] != "proj-alice" {
			t.Errorf("alice's job is charged to %q, want proj-alice (the map's)", f[2])
		}
	}
	for _, tc := range []struct {
		cl   *testutil.Client
		ids  []string
		want string
	}{{asAlice, idA, alice.Name}, {asBob, idB, bob.Name}} {
		v := tc.cl.WaitTerminal(t, tc.ids, 120*time.Second)[0]
		var o struct {
			Stdout string `json:"stdout"`
		}
		_ = json.Unmarshal(v.Result, &o)
		t.Logf("id -un on a Slurm block of %s: %q", tc.want, o.Stdout)
		if v.State != "success" || strings.TrimSpace(o.Stdout) != tc.want {
			t.Fatalf("task of %s: %s %q %q", tc.want, v.State, v.Error, o.Stdout)
		}
	}
	// Her job script is hers, in her directory.
	matches, _ := filepath.Glob(filepath.Join(dir, "ix", "users", alice.Name, "blocks", "*", "job.sh"))
	if len(matches) != 1 {
		t.Fatalf("alice's job scripts: %v", matches)
	}
	fi, err := os.Stat(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != alice.UID {
		t.Errorf("alice's job script belongs to uid %d", st.Uid)
	}
	t.Logf("job script %s, mode %v, uid %d", matches[0], fi.Mode(), alice.UID)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

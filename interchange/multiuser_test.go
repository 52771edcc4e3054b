package interchange_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/messages"
)

// multiEndpoint creates a multi-user endpoint as the admin does
// (`switchyard endpoint create ID --multi-user`) and returns its credential.
func multiEndpoint(t *testing.T, f *testutil.Forwarder, id string) *curve.Credentials {
	t.Helper()
	var out struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	f.Client().Must(t, http.StatusCreated, http.MethodPost, "/v1/endpoints", map[string]any{"endpoint_id": id, "multi_user": true}, &out)
	var c curve.Credentials
	if err := json.Unmarshal(out.Credentials, &c); err != nil {
		t.Fatalf("endpoint credential: %v", err)
	}
	return &c
}

func writeMap(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users.map")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A user map is checked at start: a malformed line, root, a system account
// or an unknown account is an error naming file:line, and nothing starts.
func TestUserMapRefusedAtStart(t *testing.T) {
	alice := testutil.AddUser(t, "sy-alice")
	f := testutil.StartForwarder(t, forwarder.Options{})
	cred := multiEndpoint(t, f, "mu")
	for _, tc := range []struct{ name, text, want string }{
		{"root", "# admins\nalice-sy " + alice.Name + "\nboss root\n", ":3: POSIX user \"root\" (uid 0) is root"},
		{"system account", "daemon-sy daemon\n", ":1: POSIX user \"daemon\" (uid 1) is a system account"},
		{"malformed", "\nalice-sy\n", ":2: a line reads 'SWITCHYARD_USER POSIX_USER [SLURM_ACCOUNT]'"},
		{"too many fields", "a b c d\n", ":1: a line reads"},
		{"bad star", "* alice\n", ":1: a default line reads '* ='"},
		{"unknown account", "x-sy no-such-user-here\n", ":1: POSIX user \"no-such-user-here\""},
		{"twice", "a " + alice.Name + "\na " + alice.Name + "\n", ":2: user \"a\" is mapped twice (first on line 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeMap(t, tc.text)
			_, err := interchange.New(interchange.Options{Credentials: cred, Forwarder: f.ZMQAddr(), UserMap: path,
				StateDir: t.TempDir(), ListenManagers: "tcp://127.0.0.1:*", ListenHTTP: "127.0.0.1:0"})
			if err == nil || !strings.Contains(err.Error(), path+tc.want) {
				t.Fatalf("map %q: %v; want an error with %q", tc.text, err, path+tc.want)
			}
		})
	}
}

// The files a multi-user interchange writes, and who may read them.
func checkLayout(t *testing.T, state string, users ...testutil.PosixUser) {
	t.Helper()
	want := func(path string, mode os.FileMode, uid int) {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != mode || int(st.Uid) != uid || fi.Mode()&os.ModeSymlink != 0 {
			t.Errorf("%s: mode %v uid %d; want %v uid %d", path, fi.Mode(), st.Uid, mode, uid)
		}
	}
	want(state, 0o711, 0)
	want(filepath.Join(state, "users"), 0o711, 0)
	want(filepath.Join(state, "keys"), 0o700, 0)
	want(filepath.Join(state, "admin.token"), 0o600, 0)
	want(filepath.Join(state, "curve.key"), 0o600, 0)
	for _, u := range users {
		want(filepath.Join(state, "users", u.Name), 0o700, u.UID)
		want(filepath.Join(state, "users", u.Name, "manager.credentials"), 0o600, u.UID)
		want(filepath.Join(state, "keys", u.Name+".credentials"), 0o600, 0)
	}
	if _, err := os.Stat(filepath.Join(state, "manager.credentials")); err == nil {
		t.Errorf("a multi-user interchange wrote the plain manager.credentials")
	}
}

func register(t *testing.T, p *testutil.Peer, id string, workers uint32) {
	t.Helper()
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: id, Workers: workers, ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	p.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	p.SetHeartbeat(testutil.Interval)
}

func taskIDs(p *testutil.Peer) map[string]bool {
	got := map[string]bool{}
	for _, task := range p.Tasks("") {
		got[task.ID.String()] = true
	}
	return got
}

func forged(id string, attempt uint32) *messages.ResultBatch {
	tid, _ := messages.ParseTaskID(id)
	return &messages.ResultBatch{Results: []messages.Result{{ID: tid, Attempt: attempt, Code: messages.Success, Finished: time.Now().UnixNano()}}}
}

// On a multi-user endpoint each manager key belongs to one POSIX account:
// a manager holding alice's key gets alice's tasks only; it cannot forge a
// result for bob's task, for a task still waiting at the forwarder, nor
// take over bob's manager id; the plain key is gone and an unmapped
// user's task fails naming the map.
func TestMultiUserDispatchAndRogueManager(t *testing.T) {
	alice, bob := testutil.AddUser(t, "sy-alice"), testutil.AddUser(t, "sy-bob")
	f := testutil.StartForwarder(t, forwarder.Options{})
	cred := multiEndpoint(t, f, "mu")
	asAlice, asBob, asCarol := f.User(t, "alice-sy", false), f.User(t, "bob-sy", false), f.User(t, "carol-sy", false)
	mapPath := writeMap(t, fmt.Sprintf("# test map\nalice-sy %s\nbob-sy   %s  # bob\n", alice.Name, bob.Name))
	state := filepath.Join(t.TempDir(), "ix")
	ix := testutil.StartInterchange(t, interchange.Options{Credentials: cred, EndpointID: "mu", Forwarder: f.ZMQAddr(), StateDir: state, UserMap: mapPath})
	checkLayout(t, state, alice, bob)
	creds := map[string]*curve.Credentials{}
	for _, u := range []testutil.PosixUser{alice, bob} {
		c, err := curve.ReadCredentials(filepath.Join(state, "users", u.Name, "manager.credentials"), curve.KindManager)
		if err != nil || c.Address != ix.ManagersAddr() {
			t.Fatalf("%s's credentials: %+v %v", u.Name, c, err)
		}
		creds[u.Name] = c
	}
	if creds[alice.Name].Client.Public == creds[bob.Name].Client.Public {
		t.Fatal("alice and bob got the same manager key")
	}

	pa := testutil.NewDealer(t, "alice's manager", "ma", ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true, Credentials: creds[alice.Name]})
	register(t, pa, "ma", 50)
	pb := testutil.NewDealer(t, "bob's manager", "mb", ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true, Credentials: creds[bob.Name]})
	register(t, pb, "mb", 50)

	// A key the interchange never made (a stolen plain key would be one:
	// none is admitted) never completes the handshake.
	stranger, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	ps := testutil.NewDealer(t, "stranger", "ms", ix.ManagersAddr(), testutil.PeerOptions{
		Credentials: &curve.Credentials{Kind: curve.KindManager, ServerKey: creds[alice.Name].ServerKey, Client: stranger}})
	// Its send may find no connection at all (EAGAIN): the handshake fails.
	_ = ps.TrySend("", &messages.Registration{Role: messages.RoleManager, ID: "ms", Workers: 50, ProtocolVersion: messages.Version})
	// Alice's key cannot take bob's manager id (and with it his tasks).
	pa2 := testutil.NewDealer(t, "alice as mb", "mb/rogue", ix.ManagersAddr(), testutil.PeerOptions{Credentials: creds[alice.Name]})
	pa2.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "mb", Workers: 50, ProtocolVersion: messages.Version})
	rep := pa2.ExpectType(t, 5*time.Second, "", messages.TypeErrorReply).Msg.(*messages.ErrorReply)
	if rep.Code != messages.CodeRefused || !strings.Contains(rep.Reason, "another user's manager") {
		t.Fatalf("alice's key registering as bob's manager id: %+v", rep)
	}

	noop := map[string]any{"kind": "noop"}
	aIDs, err := asAlice.Submit("mu", noop, noop, noop)
	if err != nil {
		t.Fatal(err)
	}
	bIDs, err := asBob.Submit("mu", noop, noop)
	if err != nil {
		t.Fatal(err)
	}
	cIDs, err := asCarol.Submit("mu", noop)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if a, b := taskIDs(pa), taskIDs(pb); len(a) != 3 || len(b) != 2 {
			return fmt.Errorf("alice's manager has %d tasks, bob's %d; want 3 and 2", len(a), len(b))
		}
		return nil
	})
	ga, gb := taskIDs(pa), taskIDs(pb)
	for _, id := range aIDs {
		if !ga[id] {
			t.Errorf("alice's task %s did not go to alice's manager", id)
		}
	}
	for _, id := range bIDs {
		if !gb[id] {
			t.Errorf("bob's task %s did not go to bob's manager", id)
		}
	}
	if ps.Count(func(r testutil.Received) bool { return true }) != 0 {
		t.Errorf("a stranger's key got answers: %v", ps.All())
	}
	// Carol is not in the map: her task fails, naming it, and never runs.
	carol := asCarol.WaitTerminal(t, cIDs, 10*time.Second)[0]
	if carol.State != "failed" || !strings.Contains(carol.Error, mapPath) || !strings.Contains(carol.Error, "carol-sy") {
		t.Fatalf("unmapped user's task: %s %q; want failed naming %s", carol.State, carol.Error, mapPath)
	}

	// Forgeries from alice's manager: bob's task, and a task of hers
	// still waiting at the forwarder (pushes paused).
	ix.Client().Form(t, "/servingState", "state", "PUSH_PAUSED")
	upstream, err := asAlice.Submit("mu", noop)
	if err != nil {
		t.Fatal(err)
	}
	pa.Send(t, "", forged(bIDs[0], 1))
	pa.Send(t, "", forged(upstream[0], 1))
	testutil.WaitFor(t, 10*time.Second, func() error {
		notYours := testutil.Metric(t, ix.Reg, "switchyard_interchange_refused_total", "reason", "not-your-task")
		notHeld := testutil.Metric(t, ix.Reg, "switchyard_interchange_refused_total", "reason", "not-held")
		if notYours < 1 || notHeld < 1 {
			return fmt.Errorf("refused not-your-task %g, not-held %g", notYours, notHeld)
		}
		return nil
	})
	// Bob's manager finishes his task for real: only that result counts.
	pb.Send(t, "", forged(bIDs[1], 1))
	asBob.WaitTerminal(t, bIDs[1:], 10*time.Second)
	for _, id := range []string{bIDs[0], upstream[0]} {
		tv, err := asAlice.As(f.AdminToken()).Get(id)
		if err != nil || tv.State == "success" {
			t.Fatalf("forged result applied to %s: %+v %v", id, tv, err)
		}
	}
	ix.Client().Form(t, "/servingState", "state", "")
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !taskIDs(pa)[upstream[0]] {
			return fmt.Errorf("the task held upstream has not reached alice's manager")
		}
		return nil
	})
	if taskIDs(pb)[upstream[0]] {
		t.Fatal("alice's task reached bob's manager")
	}
}

package curve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeepsKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "curve.key")
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first start: %v created=%v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, err %v; want 0600", st.Mode().Perm(), err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || k2 != k1 {
		t.Fatalf("restart: %v created=%v same=%v", err, created, k2 == k1)
	}
	if err := os.WriteFile(path, []byte(`{"public_key":"x","secret_key":"y"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Fatal("a broken key file was accepted")
	}
}

func TestCredentialsRoundTripAndChecks(t *testing.T) {
	srv, _ := NewKeyPair()
	cli, _ := NewKeyPair()
	other, _ := NewKeyPair()
	path := filepath.Join(t.TempDir(), "ep.credentials")
	c := &Credentials{Kind: KindEndpoint, ID: "local", ServerKey: srv.Public, Client: cli}
	if err := WriteCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCredentials(path, KindEndpoint)
	if err != nil || *got != *c {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	if _, err := ReadCredentials(path, KindManager); err == nil || !strings.Contains(err.Error(), "manager") {
		t.Fatalf("wrong kind accepted: %v", err)
	}
	bad := *c
	bad.Client.Public = other.Public
	if err := bad.Check(KindEndpoint); err == nil {
		t.Fatal("mismatched key pair accepted")
	}
	bad = *c
	bad.ID = ""
	if err := bad.Check(KindEndpoint); err == nil {
		t.Fatal("endpoint credential without id accepted")
	}
}

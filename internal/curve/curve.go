// Package curve holds CurveZMQ key pairs and the credential files that
// enroll an interchange with a forwarder and managers with an interchange.
package curve

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	zmq "github.com/pebbe/zmq4"
)

// KeyPair is a CurveZMQ key pair in Z85 text (40 characters each).
type KeyPair struct {
	Public string `json:"public_key"`
	Secret string `json:"secret_key"`
}

// NewKeyPair makes a fresh key pair.
func NewKeyPair() (KeyPair, error) {
	if !zmq.HasCurve() {
		return KeyPair{}, errors.New("this libzmq was built without CURVE support; install a libzmq with libsodium or run with --insecure")
	}
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		return KeyPair{}, fmt.Errorf("new CURVE key pair: %w", err)
	}
	return KeyPair{Public: pub, Secret: sec}, nil
}

// Valid reports whether s is a Z85 CURVE key.
func Valid(s string) bool {
	return len(s) == 40 && len(zmq.Z85decode(s)) == 32
}

// Check verifies that the pair is well formed and that the public key
// belongs to the secret one.
func (k KeyPair) Check() error {
	if !Valid(k.Public) || !Valid(k.Secret) {
		return errors.New("key pair is not two 40-character Z85 CURVE keys")
	}
	pub, err := zmq.AuthCurvePublic(k.Secret)
	if err != nil {
		return fmt.Errorf("derive public key: %w", err)
	}
	if pub != k.Public {
		return errors.New("public key does not belong to the secret key")
	}
	return nil
}

// Credentials is what a client of a CURVE link needs: who it is, its key
// pair and the key of the server it must find at the other end.
// Kind is "endpoint" (interchange → forwarder) or "manager" (manager →
// interchange).
type Credentials struct {
	Kind      string  `json:"kind"`
	ID        string  `json:"id,omitempty"` // endpoint id; empty for managers
	ServerKey string  `json:"server_public_key"`
	Client    KeyPair `json:"client"`
	// Address is where the server was listening when this was written; a
	// flag may override it.
	Address string `json:"address,omitempty"`
}

// Kinds of credentials.
const (
	KindEndpoint = "endpoint"
	KindManager  = "manager"
)

// Check says what is wrong with a credential, if anything.
func (c *Credentials) Check(kind string) error {
	if c.Kind != kind {
		return fmt.Errorf("this is a %q credential; a %q credential is needed here", c.Kind, kind)
	}
	if kind == KindEndpoint && c.ID == "" {
		return errors.New("credential names no endpoint id")
	}
	if !Valid(c.ServerKey) {
		return errors.New("credential has no valid server_public_key")
	}
	if err := c.Client.Check(); err != nil {
		return fmt.Errorf("credential client keys: %w", err)
	}
	return nil
}

// WriteCredentials writes c to path with mode 0600, atomically.
func WriteCredentials(path string, c *Credentials) error {
	b, err := Marshal(c)
	if err != nil {
		return err
	}
	return writeFile0600(path, b)
}

// Marshal is the text of a credential file.
func Marshal(c *Credentials) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ReadCredentials reads and checks a credential file of the given kind.
func ReadCredentials(path, kind string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("credentials %s: not a Switchyard credential file: %w", path, err)
	}
	if err := c.Check(kind); err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	return &c, nil
}

// LoadOrCreate reads the key pair kept at path, or makes one and keeps it
// there (mode 0600) on first start. created says which.
func LoadOrCreate(path string) (k KeyPair, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &k); err != nil {
			return KeyPair{}, false, fmt.Errorf("key file %s: %w", path, err)
		}
		if err := k.Check(); err != nil {
			return KeyPair{}, false, fmt.Errorf("key file %s: %w", path, err)
		}
		_ = os.Chmod(path, 0o600)
		return k, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return KeyPair{}, false, fmt.Errorf("read key file: %w", err)
	}
	if k, err = NewKeyPair(); err != nil {
		return KeyPair{}, false, err
	}
	b, _ = json.MarshalIndent(k, "", "  ")
	if err := writeFile0600(path, append(b, '\n')); err != nil {
		return KeyPair{}, false, err
	}
	return k, true, nil
}

func writeFile0600(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

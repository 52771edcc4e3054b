package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, path string) (*Store, bool) {
	t.Helper()
	s, existed, err := Open(path, "test-v1", []string{"a", "b"}, SurviveHostCrash)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, existed
}

// read reads a bucket of either kind of store.
func read(t *testing.T, s interface {
	ForEach(string, func(k, v []byte) error) error
}, bucket string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := s.ForEach(bucket, func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEmptyThenExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	s, existed := open(t, path)
	if existed {
		t.Fatal("a new file reported as existing")
	}
	if err := s.WriteSync([]Op{{Bucket: "a", Key: []byte("k1"), Value: []byte("v1")},
		{Bucket: "b", Key: []byte("k2"), Value: []byte("v2")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, existed = open(t, path)
	defer s.Close()
	if !existed {
		t.Fatal("reopened file reported as new")
	}
	if got := read(t, s, "a"); got["k1"] != "v1" || len(got) != 1 {
		t.Fatalf("bucket a = %v", got)
	}
	if got := read(t, s, "b"); got["k2"] != "v2" || len(got) != 1 {
		t.Fatalf("bucket b = %v", got)
	}
}

func TestLastWriteWinsAndDelete(t *testing.T) {
	s, _ := open(t, filepath.Join(t.TempDir(), "x.db"))
	defer s.Close()
	s.Write([]Op{{Bucket: "a", Key: []byte("k"), Value: []byte("1")}}, nil)
	s.Write([]Op{{Bucket: "a", Key: []byte("k"), Value: []byte("2")}}, nil)
	s.Write([]Op{{Bucket: "a", Key: []byte("gone"), Value: []byte("x")}}, nil)
	if err := s.WriteSync([]Op{{Bucket: "a", Key: []byte("gone")}}); err != nil {
		t.Fatal(err)
	}
	got := read(t, s, "a")
	if got["k"] != "2" || len(got) != 1 {
		t.Fatalf("bucket a = %v, want k=2 only", got)
	}
}

func TestGroupCommitFromManyWriters(t *testing.T) {
	s, _ := open(t, filepath.Join(t.TempDir(), "x.db"))
	defer s.Close()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := fmt.Sprintf("%d-%d", w, i)
				if err := s.WriteSync([]Op{{Bucket: "a", Key: []byte(k), Value: []byte(k)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if got := read(t, s, "a"); len(got) != writers*each {
		t.Fatalf("%d records, want %d", len(got), writers*each)
	}
	commits, ops := s.Stats()
	if ops != writers*each {
		t.Fatalf("%d ops written, want %d", ops, writers*each)
	}
	if commits >= ops {
		t.Fatalf("%d commits for %d ops: writes were not grouped", commits, ops)
	}
	t.Logf("%d ops in %d commits (%.1f per commit)", ops, commits, float64(ops)/float64(commits))
}

func TestForeignAndCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	s, _, err := Open(other, "someone-else-v1", []string{"a"}, SurviveHostCrash)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, _, err := Open(other, "test-v1", []string{"a"}, SurviveHostCrash); !errors.Is(err, ErrForeign) {
		t.Fatalf("opening another format's file: %v, want ErrForeign", err)
	}

	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not a database, it is a text file with some words in it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = Open(junk, "test-v1", []string{"a"}, SurviveHostCrash)
	if err == nil {
		t.Fatal("a text file opened as a store")
	}
	if got := err.Error(); !strings.Contains(got, "junk.db") || !strings.Contains(got, "move it aside") {
		t.Fatalf("error %q should name the file and say what to do", got)
	}

	// A valid file whose first pages were overwritten.
	bad := filepath.Join(dir, "bad.db")
	s, _, err = Open(bad, "test-v1", []string{"a"}, SurviveHostCrash)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8192 && i < len(raw); i++ {
		raw[i] = 0xAB
	}
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(bad, "test-v1", []string{"a"}, SurviveHostCrash); err == nil {
		t.Fatal("a corrupted file opened without error")
	}
}

// Deleted records stay in bbolt's free pages until Compact rewrites the
// file; live ones survive it, and writes and reads go on during and after.
func TestCompactDropsDeletedRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	s, _ := open(t, path)
	defer s.Close()
	var ops, del []Op
	for i := 0; i < 200; i++ {
		k := []byte(fmt.Sprintf("k%03d", i))
		ops = append(ops, Op{Bucket: "a", Key: k, Value: []byte(fmt.Sprintf("secret-argument-%03d", i))})
		if i%2 == 0 {
			del = append(del, Op{Bucket: "a", Key: k})
		}
	}
	if err := s.WriteSync(ops); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSync(del); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "secret-argument-000") {
		t.Log("bbolt reused the deleted record's page already; the check below still holds")
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.WriteSync([]Op{{Bucket: "b", Key: []byte(fmt.Sprint(i)), Value: []byte("x")}}); err != nil {
				t.Error(err)
				return
			}
			read(t, s, "a")
		}
	}()
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	b, _ = os.ReadFile(path)
	for i := 0; i < 200; i += 2 {
		if strings.Contains(string(b), fmt.Sprintf("secret-argument-%03d", i)) {
			t.Fatalf("deleted record %d still in the file after Compact", i)
		}
	}
	got := read(t, s, "a")
	if len(got) != 100 || got["k001"] != "secret-argument-001" {
		t.Fatalf("%d live records after Compact, k001=%q", len(got), got["k001"])
	}
	if err := s.WriteSync([]Op{{Bucket: "a", Key: []byte("after"), Value: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("compacted file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestGetAndScan(t *testing.T) {
	s, _ := open(t, filepath.Join(t.TempDir(), "x.db"))
	defer s.Close()
	var ops []Op
	for _, k := range []string{"k1", "k2", "k3", "k5"} {
		ops = append(ops, Op{Bucket: "a", Key: []byte(k), Value: []byte("v" + k[1:])})
	}
	if err := s.WriteSync(ops); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := s.Get("a", [][]byte{[]byte("k2"), []byte("k4"), []byte("k5")}, func(i int, v []byte) error {
		got = append(got, fmt.Sprintf("%d=%s", i, v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "0=v2 1= 2=v5" {
		t.Fatalf("Get = %v, want [0=v2 1= 2=v5]", got)
	}
	got = nil
	if err := s.Scan("a", []byte("k2"), func(k, v []byte) (bool, error) {
		got = append(got, string(k))
		return len(got) < 2, nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "k2 k3" {
		t.Fatalf("Scan from k2, two keys = %v", got)
	}
	if err := s.Get("nope", nil, nil); err == nil {
		t.Fatal("Get of a missing bucket: no error")
	}
}

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/internal/store/oldfiletest"
)

func read(t *testing.T, d *DB, bucket string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := d.ForEach(bucket, func(k, v []byte) error { out[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// An old bbolt file or log is copied into a new store once, left
// unchanged, and renamed aside; a second open finds the store and copies
// nothing.
func TestOldFileIsCopiedOnce(t *testing.T) {
	for _, bolt := range []bool{true, false} {
		t.Run(fmt.Sprintf("bolt=%v", bolt), func(t *testing.T) { testOldFileIsCopiedOnce(t, bolt) })
	}
}

func testOldFileIsCopiedOnce(t *testing.T, bolt bool) {
	seqKey := func(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }
	dir := t.TempDir()
	path, old := filepath.Join(dir, "x.pebble"), filepath.Join(dir, "x.db")
	recs := []oldfiletest.Record{{Bucket: "a", Key: seqKey(1), Value: []byte("v1")},
		{Bucket: "a", Key: seqKey(2), Value: []byte("v2")}, {Bucket: "b", Key: []byte("k"), Value: []byte("b1")}}
	var err error
	if bolt {
		err = oldfiletest.Write(old, "test-v1", []string{"a", "b"}, recs...)
	} else {
		old = filepath.Join(dir, "x.log")
		ops := []oldfiletest.Op{{Record: recs[0]}, {Record: recs[1]}, {Record: recs[2]},
			{Record: oldfiletest.Record{Bucket: "a", Key: seqKey(3), Value: []byte("v3")}},
			{Record: oldfiletest.Record{Bucket: "a", Key: seqKey(3)}, Delete: true}}
		err = oldfiletest.WriteLog(old, "test-v1", []string{"a", "b"}, ops...)
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	for run, want := range []int{3, 0} {
		l, existed, _, copied, err := OpenDBFrom(path, []string{"a", "b"}, DBOptions{}, Old{Path: old, Format: "test-v1", Bolt: bolt})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if copied != want || !existed {
			t.Errorf("run %d: copied %d records (want %d), existed %v", run, copied, want, existed)
		}
		if a, b := read(t, l, "a"), read(t, l, "b"); len(a) != 2 || a[string(seqKey(2))] != "v2" || b["k"] != "b1" {
			t.Errorf("run %d: a = %v, b = %v", run, a, b)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.ReadFile(old + ".migrated")
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Error("the old file was changed by reading it")
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the old file is still in place: %v", err)
	}
}

// Old files of another format, not bbolt at all, or corrupt are refused
// with an error naming the file; no store is made and the file stays.
func TestOldFileForeignOrCorrupt(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	if err := oldfiletest.Write(other, "someone-else-v1", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not a database, it is a text file with some words in it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.db")
	if err := oldfiletest.Write(bad, "test-v1", []string{"a"}); err != nil {
		t.Fatal(err)
	}
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
	for _, tc := range []struct {
		old     string
		foreign bool
		advice  string
	}{{other, true, "someone-else-v1"}, {junk, false, "move it aside"}, {bad, false, "move it aside"}} {
		path := tc.old + ".pebble"
		_, _, _, _, err := OpenDBFrom(path, []string{"a"}, DBOptions{}, Old{Path: tc.old, Format: "test-v1", Bolt: true})
		switch {
		case err == nil:
			t.Errorf("%s: opened without error", tc.old)
		case tc.foreign != errors.Is(err, ErrForeign):
			t.Errorf("%s: %v; want ErrForeign %v", tc.old, err, tc.foreign)
		case !strings.Contains(err.Error(), tc.old) || !strings.Contains(err.Error(), tc.advice):
			t.Errorf("%s: error %q should name the file and say %q", tc.old, err, tc.advice)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: a store was left behind: %v", tc.old, err)
		}
		if _, err := os.Stat(tc.old); err != nil {
			t.Errorf("%s: the old file is gone: %v", tc.old, err)
		}
	}
}

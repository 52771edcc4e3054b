package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openLog(t *testing.T, path string) (*Log, bool) {
	t.Helper()
	l, existed, err := OpenLog(path, "test-v1", []string{"a", "b"}, LogOptions{Durability: SurviveProcessCrash, Sequenced: []string{"a"}})
	if err != nil {
		t.Fatalf("OpenLog: %v", err)
	}
	return l, existed
}

// read reads a bucket of a log.
func read(t *testing.T, l *Log, bucket string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := l.ForEach(bucket, func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLogReopensWithLastWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l, existed := openLog(t, path)
	if existed {
		t.Fatal("a new file reported as existing")
	}
	l.Write([]Op{{Bucket: "a", Key: []byte("k"), Value: []byte("1")}, {Bucket: "b", Key: []byte("k"), Value: []byte("b1")}}, nil)
	l.Write([]Op{{Bucket: "a", Key: []byte("k"), Value: []byte("2")}, {Bucket: "a", Key: []byte("gone"), Value: []byte("x")}}, nil)
	if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("gone")}, {Bucket: "a", Key: []byte("empty"), Value: []byte{}}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, existed = openLog(t, path)
	defer l.Close()
	if !existed {
		t.Fatal("reopened file reported as new")
	}
	if got := read(t, l, "a"); len(got) != 2 || got["k"] != "2" || got["empty"] != "" {
		t.Fatalf("bucket a = %v, want k=2 and empty", got)
	}
	if got := read(t, l, "b"); len(got) != 1 || got["k"] != "b1" {
		t.Fatalf("bucket b = %v", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", fi.Mode(), err)
	}
}

// A record cut short by a crash ends the log; the writes before it stay
// and new ones follow them.
func TestLogCutsATornEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l, _ := openLog(t, path)
	if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("k1"), Value: []byte("v1")}}); err != nil {
		t.Fatal(err)
	}
	if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("k2"), Value: bytes.Repeat([]byte("v"), 100)}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	fi, _ := os.Stat(path)
	for _, cut := range []int64{1, 50, 104} {
		if err := os.Truncate(path, fi.Size()-cut); err != nil {
			t.Fatal(err)
		}
		l, _ = openLog(t, path)
		if got := read(t, l, "a"); len(got) != 1 || got["k1"] != "v1" || l.Dropped == 0 {
			t.Fatalf("cut %d: bucket a = %v, dropped %d; want k1 only and the torn bytes dropped", cut, got, l.Dropped)
		}
		if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("k3"), Value: []byte("v3")}}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		l, _ = openLog(t, path)
		if got := read(t, l, "a"); len(got) != 2 || got["k3"] != "v3" || l.Dropped != 0 {
			t.Fatalf("after a write past the cut: %v, dropped %d", got, l.Dropped)
		}
		if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("k3")}, {Bucket: "a", Key: []byte("k2"), Value: bytes.Repeat([]byte("v"), 100)}}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		fi, _ = os.Stat(path)
	}
}

func TestLogRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"other-format": "switchyard-log 1 other-v9\n",
		"not-a-log":    "SQLite format 3\x00",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := OpenLog(path, "test-v1", []string{"a"}, LogOptions{}); !errors.Is(err, ErrForeign) {
			t.Errorf("%s: %v, want ErrForeign", name, err)
		}
	}
}

// Compaction keeps exactly the live records and the file shrinks.
func TestLogCompacts(t *testing.T) {
	old := CompactAfter
	CompactAfter = 4096
	defer func() { CompactAfter = old }()
	path := filepath.Join(t.TempDir(), "x.log")
	l, _ := openLog(t, path)
	val := bytes.Repeat([]byte("x"), 200)
	for i := 0; i < 500; i++ {
		k := []byte(fmt.Sprintf("k%04d", i))
		ops := []Op{{Bucket: "a", Key: k, Value: val}}
		if i%10 != 0 {
			ops = append(ops, Op{Bucket: "a", Key: k})
		}
		if err := l.WriteSync(ops); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	fi, _ := os.Stat(path)
	// 110 KB written; 50 live records take about 11 KB, and the file may
	// grow to twice that before the next compaction.
	if fi.Size() > 25000 {
		t.Fatalf("file is %d bytes after compactions; 50 live records of 200 bytes need about 11 KB", fi.Size())
	}
	l, _ = openLog(t, path)
	defer l.Close()
	got := read(t, l, "a")
	if len(got) != 50 || got["k0490"] != string(val) {
		t.Fatalf("%d live records after compaction, want 50", len(got))
	}
}

func TestLogGroupCommitFromManyWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l, _, err := OpenLog(path, "test-v1", []string{"a", "b"}, LogOptions{Durability: SurviveHostCrash})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte(fmt.Sprintf("%d-%d", w, i)), Value: []byte("v")}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	commits, ops := l.Stats()
	l.Close()
	if ops != 800 || commits == 0 || commits > 800 {
		t.Fatalf("%d ops in %d commits", ops, commits)
	}
	l, _ = openLog(t, path)
	defer l.Close()
	if got := read(t, l, "a"); len(got) != 800 {
		t.Fatalf("%d records after reopening, want 800", len(got))
	}
}

// Whatever the bytes, replay neither panics nor reads past them, and
// records it reads re-encode to the same bytes.
func FuzzLogReplay(f *testing.F) {
	var seed []byte
	seed = appendRecord(seed, opPut, 0, []byte("k"), []byte("v"))
	seed = appendRecord(seed, opDelete, 1, []byte("key"), nil)
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var again []byte
		n, err := replay(data, 2, func(op, b byte, k, v []byte, _, _ int) {
			again = appendRecord(again, op, b, k, v)
		})
		if n < 0 || n > len(data) {
			t.Fatalf("replay used %d of %d bytes", n, len(data))
		}
		if err == nil && !bytes.Equal(again, data[:n]) {
			t.Fatalf("records re-encode differently")
		}
	})
}

// An indexed log reads records back at any time: Get by key, Scan in key
// order from a key, also across compaction and reopening.
func TestLogIndexedReads(t *testing.T) {
	old := CompactAfter
	CompactAfter = 2048
	defer func() { CompactAfter = old }()
	path := filepath.Join(t.TempDir(), "x.log")
	l, _ := openLog(t, path)
	seq := func(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }
	for i := uint64(1); i <= 300; i++ {
		ops := []Op{{Bucket: "a", Key: seq(i), Value: []byte(fmt.Sprintf("v%d", i))}}
		if i%3 == 0 {
			ops = append(ops, Op{Bucket: "a", Key: seq(i - 1)})
		}
		if err := l.WriteSync(ops); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.WriteSync([]Op{{Bucket: "b", Key: []byte("node-001"), Value: []byte("m")}, {Bucket: "b", Key: []byte("x"), Value: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	check := func(l *Log) {
		t.Helper()
		var got []string
		if err := l.Get("a", [][]byte{seq(1), seq(2), seq(3), seq(299)}, func(i int, v []byte) error {
			got = append(got, string(v))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, ",") != "v1,,v3," {
			t.Fatalf("Get 1,2,3,299 = %q, want v1,,v3,", got)
		}
		got = nil
		if err := l.Scan("a", seq(290), func(k, v []byte) (bool, error) {
			got = append(got, string(v))
			return len(got) < 4, nil
		}); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, ",") != "v291,v292,v294,v295" {
			t.Fatalf("Scan from 290 = %q", got)
		}
		if b := read(t, l, "b"); len(b) != 2 || b["node-001"] != "m" {
			t.Fatalf("bucket b = %v", b)
		}
		if n := len(read(t, l, "a")); n != 200 {
			t.Fatalf("%d records in a, want 200", n)
		}
	}
	check(l)
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	check(l)
	l.Close()
	l, _ = openLog(t, path)
	defer l.Close()
	check(l)
}

// A record of 16 MiB or more (a big python task) reads back and survives
// compaction though its index entry does not hold its length.
func TestLogBigRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l, _ := openLog(t, path)
	big := bytes.Repeat([]byte("p"), 17<<20)
	if err := l.WriteSync([]Op{{Bucket: "a", Key: []byte("big"), Value: big}, {Bucket: "a", Key: []byte("small"), Value: []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		got := read(t, l, "a")
		if len(got) != 2 || got["big"] != string(big) || got["small"] != "s" {
			t.Fatalf("read back %d records, big one %d bytes", len(got), len(got["big"]))
		}
	}
	check()
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	check()
	l.Close()
	l, _ = openLog(t, path)
	defer l.Close()
	check()
}

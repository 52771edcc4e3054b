package store

import (
	"maps"
	"testing"
)

// A commit writes bucket by bucket; ops on one key keep their order, and
// WriteSync's come after the queued ones, as they always did.
func TestCommitKeepsTheOrderOfOpsOnAKey(t *testing.T) {
	d, _, err := OpenDB(t.TempDir(), []string{"a", "b"}, DBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	put := func(b, k, v string) Op { return Op{Bucket: b, Key: []byte(k), Value: []byte(v)} }
	del := func(b, k string) Op { return Op{Bucket: b, Key: []byte(k)} }
	d.Write([]Op{put("b", "x", "1"), put("a", "x", "1"), del("b", "x"), put("a", "y", "1")}, nil)
	d.Write([]Op{put("b", "x", "2"), del("a", "x"), put("a", "x", "3"), put("a", "z", "1")}, nil)
	if err := d.WriteSync([]Op{del("a", "z"), put("b", "w", "1")}); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{"a": {"x": "3", "y": "1"}, "b": {"x": "2", "w": "1"}}
	for b, w := range want {
		if got := read(t, d, b); !maps.Equal(got, w) {
			t.Errorf("bucket %s: %v, want %v", b, got, w)
		}
	}
}

// A key put once and deleted with SetOnce is gone, through a flush and a
// reopen, and may be put and deleted so again.
func TestSetOnceDeletes(t *testing.T) {
	dir := t.TempDir()
	d, _, err := OpenDB(dir, []string{"a"}, DBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := []byte("k")
	for round := range 3 {
		if err := d.WriteSync([]Op{{Bucket: "a", Key: k, Value: []byte{byte(round)}}}); err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			// The put reaches a table, its delete a later one.
			if err := d.db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.WriteSync([]Op{{Bucket: "a", Key: k, SetOnce: true}}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, d, "a"); len(got) != 0 {
			t.Fatalf("round %d: %v left after the delete", round, got)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if d, _, err = OpenDB(dir, []string{"a"}, DBOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, d, "a"); len(got) != 0 {
			t.Fatalf("round %d: %v back after a reopen", round, got)
		}
	}
	d.Close()
}

package store

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"
)

// A sequenced bucket holds what a map would: rising sequence numbers with
// gaps and deletes (pages fill, empty and are freed), numbers far from
// the rest, and keys that are not numbers at all; across compaction and
// reopening, in key order, from any key.
func TestLogSequencedBucketMatchesAMap(t *testing.T) {
	old := CompactAfter
	CompactAfter = 8192
	defer func() { CompactAfter = old }()
	path := filepath.Join(t.TempDir(), "x.log")
	l, _ := openLog(t, path)
	defer func() { l.Close() }()
	rng := rand.New(rand.NewSource(7))
	want := map[string]string{}
	var live []string
	seq := func(s uint64) string { return string(binary.BigEndian.AppendUint64(nil, s)) }
	next := uint64(1)
	check := func(step int) {
		t.Helper()
		got := read(t, l, "a")
		if len(got) != len(want) {
			t.Fatalf("step %d: %d keys, want %d", step, len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("step %d: key %x = %q, want %q", step, k, got[k], v)
			}
		}
		sorted := slices.Sorted(func(yield func(string) bool) {
			for k := range want {
				if !yield(k) {
					return
				}
			}
		})
		if len(sorted) == 0 {
			return
		}
		from := sorted[rng.Intn(len(sorted))]
		var scanned []string
		if err := l.Scan("a", []byte(from), func(k, _ []byte) (bool, error) {
			scanned = append(scanned, string(k))
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
		i, _ := slices.BinarySearch(sorted, from)
		if !slices.Equal(scanned, sorted[i:]) {
			t.Fatalf("step %d: Scan from %x gave %d keys, want %d in order", step, from, len(scanned), len(sorted)-i)
		}
	}
	for step := 0; step < 6000; step++ {
		var ops []Op
		for range 1 + rng.Intn(20) {
			switch r := rng.Intn(100); {
			case r < 45 || len(live) == 0:
				k := seq(next)
				next += 1 + uint64(rng.Intn(3))
				ops = append(ops, Op{Bucket: "a", Key: []byte(k), Value: []byte(fmt.Sprint(step))})
				want[k] = fmt.Sprint(step)
				live = append(live, k)
			case r < 88:
				i := rng.Intn(len(live))
				k := live[i]
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
				ops = append(ops, Op{Bucket: "a", Key: []byte(k)})
				delete(want, k)
			case r < 92:
				// Far from the rest: the map takes it.
				k := seq(1<<40 + uint64(rng.Intn(1000)))
				ops = append(ops, Op{Bucket: "a", Key: []byte(k), Value: []byte("far")})
				if _, ok := want[k]; !ok {
					live = append(live, k)
				}
				want[k] = "far"
			case r < 96:
				k := fmt.Sprintf("node-%03d", rng.Intn(50))
				ops = append(ops, Op{Bucket: "a", Key: []byte(k), Value: []byte("name")})
				if _, ok := want[k]; !ok {
					live = append(live, k)
				}
				want[k] = "name"
			default:
				// Overwrite a live key.
				k := live[rng.Intn(len(live))]
				ops = append(ops, Op{Bucket: "a", Key: []byte(k), Value: []byte("again")})
				want[k] = "again"
			}
		}
		if err := l.WriteSync(ops); err != nil {
			t.Fatal(err)
		}
		switch {
		case step%1500 == 1499:
			l.Close()
			l, _ = openLog(t, path)
			check(step)
		case step%500 == 0:
			check(step)
		}
	}
	check(-1)
}

package seqarr

import (
	"slices"
	"testing"
)

func TestFreesEmptyPages(t *testing.T) {
	var x Array[uint64]
	for s := uint64(1); s <= 10*PageLen; s++ {
		x.Put(s, s+100)
	}
	if len(x.pages) != 11 {
		t.Fatalf("%d pages for 10 pages of keys from 1", len(x.pages))
	}
	for s := uint64(1); s <= 9*PageLen; s++ {
		if _, ok := x.Delete(s); !ok {
			t.Fatalf("key %d missing", s)
		}
	}
	if len(x.pages) != 2 || x.n != PageLen || x.base != 9 {
		t.Fatalf("after deleting the first 9 pages: %d pages from %d, %d keys", len(x.pages), x.base, x.n)
	}
	if s, at, ok := x.Next(0); !ok || s != 9*PageLen+1 || at != s+100 {
		t.Fatalf("Next(0) = %d %v %v", s, at, ok)
	}
	if !x.fits(x.base<<PageBits+MaxSpan<<PageBits-PageLen) || x.fits(1<<40) {
		t.Fatal("fits is wrong about the span")
	}
}

// A key far from the rest is kept aside and still read, walked in order
// and deleted like the others.
func TestFarKeys(t *testing.T) {
	var x Array[uint64]
	for _, s := range []uint64{7, 1 << 45, 9, 1<<45 + 1} {
		x.Put(s, s+1)
	}
	if len(x.far) != 2 || x.Len() != 4 {
		t.Fatalf("%d far of %d keys", len(x.far), x.Len())
	}
	if v, ok := x.Get(1 << 45); !ok || v != 1<<45+1 {
		t.Fatalf("Get(1<<45) = %d %v", v, ok)
	}
	if old, ok := x.Put(1<<45, 5); !ok || old != 1<<45+1 || len(x.far) != 2 {
		t.Fatalf("overwrite of a far key: %d %v, %d far", old, ok, len(x.far))
	}
	if k, _, ok := x.Next(10); !ok || k != 1<<45 {
		t.Fatalf("Next(10) = %d %v", k, ok)
	}
	var keys []uint64
	_ = x.Each(func(s, _ uint64) error { keys = append(keys, s); return nil })
	if !slices.Equal(keys, []uint64{7, 9, 1 << 45, 1<<45 + 1}) {
		t.Fatalf("Each: %v", keys)
	}
	for _, s := range []uint64{1 << 45, 7, 1<<45 + 1, 9} {
		if _, ok := x.Delete(s); !ok {
			t.Fatalf("Delete(%d) found nothing", s)
		}
	}
	if x.Len() != 0 || len(x.far) != 0 || len(x.pages) != 0 {
		t.Fatalf("left %d keys, %d far, %d pages", x.Len(), len(x.far), len(x.pages))
	}
}

package seqarr

import "testing"

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
	if !x.Fits(x.base<<PageBits+MaxSpan<<PageBits-PageLen) || x.Fits(1<<40) {
		t.Fatal("fits is wrong about the span")
	}
}

// Package seqarr is a map from sequence numbers handed out in rising order
// to small values, kept in pages of an array.
package seqarr

import (
	"maps"
	"slices"
)

// Array maps sequence numbers to values: pages in a slice, so a put, get
// or delete is arithmetic and a memory access next to the previous one,
// not a hash lookup, and an entry costs the size of a value. The zero
// value of T means absent. Pages that empty are freed; the slice spans
// the oldest live page to the newest. A key too far from the others to
// stretch the slice to (say, from a much older run) is kept in a map.
type Array[T comparable] struct {
	base  uint64 // page number of pages[0]
	pages []*page[T]
	n     int // live keys
	// last is the page of the latest put, for the next one.
	last  *page[T]
	lastP uint64
	far   map[uint64]T
}

const (
	PageBits = 9
	PageLen  = 1 << PageBits
	// MaxSpan bounds the slice (8 bytes a page): a key this many pages
	// from the live ones goes to the map.
	MaxSpan = 1 << 22
)

type page[T comparable] struct {
	at [PageLen]T
	n  int
}

func (x *Array[T]) page(s uint64) *page[T] {
	p := s >> PageBits
	if x.last != nil && p == x.lastP {
		return x.last
	}
	if p < x.base || p-x.base >= uint64(len(x.pages)) {
		return nil
	}
	return x.pages[p-x.base]
}

// Get returns the value of s.
func (x *Array[T]) Get(s uint64) (T, bool) {
	var zero T
	pg := x.page(s)
	if pg == nil {
		at, ok := x.far[s]
		return at, ok
	}
	at := pg.at[s&(PageLen-1)]
	return at, at != zero
}

// fits reports whether s can go in the slice without stretching it past
// MaxSpan pages.
func (x *Array[T]) fits(s uint64) bool {
	p := s >> PageBits
	if len(x.pages) == 0 {
		return true
	}
	lo, hi := min(p, x.base), max(p, x.base+uint64(len(x.pages))-1)
	return hi-lo < MaxSpan
}

// Put sets s to at, not zero, and returns what it replaced.
func (x *Array[T]) Put(s uint64, at T) (T, bool) {
	var zero T
	pg := x.page(s)
	p := s >> PageBits
	if old, ok := x.far[s]; ok || pg == nil && !x.fits(s) {
		if x.far == nil {
			x.far = map[uint64]T{}
		}
		x.far[s] = at
		if !ok {
			x.n++
		}
		return old, ok
	}
	if pg == nil {
		pg = &page[T]{}
		switch {
		case len(x.pages) == 0:
			x.base = p
			x.pages = append(x.pages[:0], pg)
		case p < x.base:
			grown := make([]*page[T], x.base-p+uint64(len(x.pages)))
			copy(grown[x.base-p:], x.pages)
			grown[0] = pg
			x.pages, x.base = grown, p
		default:
			for uint64(len(x.pages)) <= p-x.base {
				x.pages = append(x.pages, nil)
			}
			x.pages[p-x.base] = pg
		}
	}
	x.last, x.lastP = pg, p
	i := s & (PageLen - 1)
	old := pg.at[i]
	pg.at[i] = at
	if old == zero {
		pg.n++
		x.n++
	}
	return old, old != zero
}

// Delete removes s and returns what it held.
func (x *Array[T]) Delete(s uint64) (T, bool) {
	var zero T
	pg := x.page(s)
	if pg == nil {
		old, ok := x.far[s]
		if ok {
			delete(x.far, s)
			x.n--
		}
		return old, ok
	}
	i := s & (PageLen - 1)
	old := pg.at[i]
	if old == zero {
		return zero, false
	}
	pg.at[i] = zero
	pg.n--
	x.n--
	if pg.n == 0 {
		x.free(s >> PageBits)
	}
	return old, true
}

// free drops the empty page p and trims empty pages off both ends.
func (x *Array[T]) free(p uint64) {
	x.pages[p-x.base] = nil
	if x.last != nil && x.lastP == p {
		x.last = nil
	}
	for len(x.pages) > 0 && x.pages[0] == nil {
		x.pages = x.pages[1:]
		x.base++
	}
	for len(x.pages) > 0 && x.pages[len(x.pages)-1] == nil {
		x.pages = x.pages[:len(x.pages)-1]
	}
	if len(x.pages) == 0 {
		x.pages = nil
	}
}

// Next returns the first key at or after s.
func (x *Array[T]) Next(s uint64) (uint64, T, bool) {
	k, at, ok := x.nextInPages(s)
	for fk, fat := range x.far {
		if fk >= s && (!ok || fk < k) {
			k, at, ok = fk, fat, true
		}
	}
	return k, at, ok
}

func (x *Array[T]) nextInPages(s uint64) (uint64, T, bool) {
	var zero T
	p := s >> PageBits
	if p < x.base {
		p, s = x.base, x.base<<PageBits
	}
	for ; p-x.base < uint64(len(x.pages)); p, s = p+1, (p+1)<<PageBits {
		pg := x.pages[p-x.base]
		if pg == nil {
			continue
		}
		for i := s & (PageLen - 1); i < PageLen; i++ {
			if at := pg.at[i]; at != zero {
				return p<<PageBits | i, at, true
			}
		}
	}
	return 0, zero, false
}

// Len is the number of keys.
func (x *Array[T]) Len() int { return x.n }

// Each calls fn for every key in order.
func (x *Array[T]) Each(fn func(s uint64, at T) error) error {
	var zero T
	far := slices.Sorted(maps.Keys(x.far))
	// emit calls fn for the far keys before k.
	emit := func(k uint64) error {
		for len(far) > 0 && far[0] < k {
			if err := fn(far[0], x.far[far[0]]); err != nil {
				return err
			}
			far = far[1:]
		}
		return nil
	}
	for i, pg := range x.pages {
		if pg == nil {
			continue
		}
		p := x.base + uint64(i)
		for j, at := range pg.at {
			if at == zero {
				continue
			}
			k := p<<PageBits | uint64(j)
			if err := emit(k); err != nil {
				return err
			}
			if err := fn(k, at); err != nil {
				return err
			}
		}
	}
	for _, k := range far {
		if err := fn(k, x.far[k]); err != nil {
			return err
		}
	}
	return nil
}

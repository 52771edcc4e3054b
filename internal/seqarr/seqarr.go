// Package seqarr is a map from sequence numbers handed out in rising order
// to small values, kept in pages of an array.
package seqarr

// Array maps sequence numbers to values: pages in a slice, so a put, get
// or delete is arithmetic and a memory access next to the previous one,
// not a hash lookup, and an entry costs the size of a value. The zero
// value of T means absent. Pages that empty are freed; the slice spans
// the oldest live page to the newest.
type Array[T comparable] struct {
	base  uint64 // page number of pages[0]
	pages []*page[T]
	n     int // live keys
	// last is the page of the latest put, for the next one.
	last  *page[T]
	lastP uint64
}

const (
	PageBits = 9
	PageLen  = 1 << PageBits
	// MaxSpan bounds the slice (8 bytes a page): Fits refuses a key this
	// many pages from the live ones.
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
		return zero, false
	}
	at := pg.at[s&(PageLen-1)]
	return at, at != zero
}

// Fits reports whether s can go in the slice without stretching it past
// MaxSpan pages.
func (x *Array[T]) Fits(s uint64) bool {
	p := s >> PageBits
	if len(x.pages) == 0 {
		return true
	}
	lo, hi := min(p, x.base), max(p, x.base+uint64(len(x.pages))-1)
	return hi-lo < MaxSpan
}

// Put sets s (which Fits) to at, not zero, and returns what it replaced.
func (x *Array[T]) Put(s uint64, at T) (T, bool) {
	var zero T
	pg := x.page(s)
	p := s >> PageBits
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
		return zero, false
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
	for i, pg := range x.pages {
		if pg == nil {
			continue
		}
		p := x.base + uint64(i)
		for j, at := range pg.at {
			if at == zero {
				continue
			}
			if err := fn(p<<PageBits|uint64(j), at); err != nil {
				return err
			}
		}
	}
	return nil
}

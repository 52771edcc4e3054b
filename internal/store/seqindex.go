package store

// seqIndex indexes a bucket whose keys are sequence numbers handed out in
// rising order: pages of locations in a slice, so a put, get or delete is
// arithmetic and a memory access next to the previous one, not a hash
// lookup, and an entry costs 8 bytes. Pages that empty are freed; the
// slice spans the oldest live page to the newest.
type seqIndex struct {
	base  uint64 // page number of pages[0]
	pages []*seqPage
	n     int // live keys
	// last is the page of the latest put, for the next one.
	last  *seqPage
	lastP uint64
}

const (
	seqPageBits = 9
	seqPageLen  = 1 << seqPageBits
	// seqMaxSpan bounds the slice (8 bytes a page): a key this many pages
	// from the live ones is not a sequence number; it goes to the map.
	seqMaxSpan = 1 << 22
)

type seqPage struct {
	at [seqPageLen]loc // 0: absent (no record starts at offset 0)
	n  int
}

func (x *seqIndex) page(s uint64) *seqPage {
	p := s >> seqPageBits
	if x.last != nil && p == x.lastP {
		return x.last
	}
	if p < x.base || p-x.base >= uint64(len(x.pages)) {
		return nil
	}
	return x.pages[p-x.base]
}

func (x *seqIndex) get(s uint64) (loc, bool) {
	pg := x.page(s)
	if pg == nil {
		return 0, false
	}
	at := pg.at[s&(seqPageLen-1)]
	return at, at != 0
}

// fits reports whether s can go in the slice without stretching it past
// seqMaxSpan pages.
func (x *seqIndex) fits(s uint64) bool {
	p := s >> seqPageBits
	if len(x.pages) == 0 {
		return true
	}
	lo, hi := min(p, x.base), max(p, x.base+uint64(len(x.pages))-1)
	return hi-lo < seqMaxSpan
}

// put sets s (which fits) to at and returns what it replaced.
func (x *seqIndex) put(s uint64, at loc) (loc, bool) {
	pg := x.page(s)
	p := s >> seqPageBits
	if pg == nil {
		pg = &seqPage{}
		switch {
		case len(x.pages) == 0:
			x.base = p
			x.pages = append(x.pages[:0], pg)
		case p < x.base:
			grown := make([]*seqPage, x.base-p+uint64(len(x.pages)))
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
	i := s & (seqPageLen - 1)
	old := pg.at[i]
	pg.at[i] = at
	if old == 0 {
		pg.n++
		x.n++
	}
	return old, old != 0
}

// del removes s and returns what it held.
func (x *seqIndex) del(s uint64) (loc, bool) {
	pg := x.page(s)
	if pg == nil {
		return 0, false
	}
	i := s & (seqPageLen - 1)
	old := pg.at[i]
	if old == 0 {
		return 0, false
	}
	pg.at[i] = 0
	pg.n--
	x.n--
	if pg.n == 0 {
		x.free(s >> seqPageBits)
	}
	return old, true
}

// free drops the empty page p and trims empty pages off both ends.
func (x *seqIndex) free(p uint64) {
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

// next returns the first live key at or after s.
func (x *seqIndex) next(s uint64) (uint64, loc, bool) {
	p := s >> seqPageBits
	if p < x.base {
		p, s = x.base, x.base<<seqPageBits
	}
	for ; p-x.base < uint64(len(x.pages)); p, s = p+1, (p+1)<<seqPageBits {
		pg := x.pages[p-x.base]
		if pg == nil {
			continue
		}
		for i := s & (seqPageLen - 1); i < seqPageLen; i++ {
			if at := pg.at[i]; at != 0 {
				return p<<seqPageBits | i, at, true
			}
		}
	}
	return 0, 0, false
}

// each calls fn for every live key in order.
func (x *seqIndex) each(fn func(s uint64, at loc) error) error {
	for i, pg := range x.pages {
		if pg == nil {
			continue
		}
		p := x.base + uint64(i)
		for j, at := range pg.at {
			if at == 0 {
				continue
			}
			if err := fn(p<<seqPageBits|uint64(j), at); err != nil {
				return err
			}
		}
	}
	return nil
}

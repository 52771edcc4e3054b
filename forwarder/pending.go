package forwarder

// pendingTasks are an endpoint's tasks waiting to be pushed: those going
// again first (re-sends, tasks given back), then a FIFO per owner, owners
// taking turns, so one user's backlog beyond --max-inflight does not hold
// up another user's tasks here (docs/contract.md, "Scheduling").
type pendingTasks struct {
	again []*entry
	// owners holds a FIFO per owner with tasks waiting; turn is their
	// order, next the index of the owner whose turn it is.
	owners map[uint32]*ownerFIFO
	turn   []*ownerFIFO
	next   int
	n      int
	buf    []*entry
}

type ownerFIFO struct {
	owner uint32
	items []*entry
	head  int
}

func (p *pendingTasks) Len() int { return p.n }

// add queues es behind the tasks of their owners.
func (p *pendingTasks) add(es []*entry) {
	p.n += len(es)
	for len(es) > 0 {
		o := es[0].owner
		k := 1
		for k < len(es) && es[k].owner == o {
			k++
		}
		q := p.owners[o]
		if q == nil {
			if p.owners == nil {
				p.owners = make(map[uint32]*ownerFIFO)
			}
			q = &ownerFIFO{owner: o}
			p.owners[o] = q
			p.turn = append(p.turn, q)
		}
		q.items = append(q.items, es[:k]...)
		es = es[k:]
	}
}

// each calls fn for every task waiting.
func (p *pendingTasks) each(fn func(*entry)) {
	for _, e := range p.again {
		fn(e)
	}
	for _, q := range p.turn {
		for _, e := range q.items[q.head:] {
			fn(e)
		}
	}
}

// addFront queues es, in order, before everything else.
func (p *pendingTasks) addFront(es []*entry) {
	if len(es) == 0 {
		return
	}
	p.n += len(es)
	// es may be the slice take returned: copy it.
	again := make([]*entry, 0, len(es)+len(p.again))
	p.again = append(append(again, es...), p.again...)
}

// take removes and returns up to limit tasks: those going again, then the
// owners in turn, each a share of what is left. The slice is reused by
// the next take.
func (p *pendingTasks) take(limit int) []*entry {
	out := p.buf[:0]
	if len(p.again) > 0 {
		k := min(limit, len(p.again))
		out = append(out, p.again[:k]...)
		clear(p.again[:k])
		p.again = p.again[k:]
		if len(p.again) == 0 {
			p.again = nil
		}
	}
	for len(out) < limit && len(p.turn) > 0 {
		if p.next >= len(p.turn) {
			p.next = 0
		}
		q := p.turn[p.next]
		k := min((limit-len(out)+len(p.turn)-1)/len(p.turn), len(q.items)-q.head)
		out = append(out, q.items[q.head:q.head+k]...)
		clear(q.items[q.head : q.head+k])
		q.head += k
		if q.head == len(q.items) {
			delete(p.owners, q.owner)
			p.turn = append(p.turn[:p.next], p.turn[p.next+1:]...)
			continue // the next owner moved into this index
		}
		if q.head > 4096 && q.head > len(q.items)/2 {
			n := copy(q.items, q.items[q.head:])
			clear(q.items[n:])
			q.items, q.head = q.items[:n], 0
		}
		p.next++
	}
	p.n -= len(out)
	p.buf = out
	return out
}

package testutil

import (
	"math/rand/v2"
	"sync"
)

type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) Uint32() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Uint32()
}

var rnd = &lockedRand{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}

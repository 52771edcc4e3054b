package testutil

import (
	"math/rand/v2"

	"github.com/switchyard-hpc/switchyard/messages"
)

// RandomMessages returns n multipart messages for robustness tests: a third
// are random bytes, the rest are packed copies of seeds with one byte
// flipped or replaced, or one frame cut short. None decodes as a
// Registration (that would register the sender). The same rng gives the
// same messages.
func RandomMessages(rng *rand.Rand, n int, seeds []messages.Message) [][][]byte {
	var packed [][][]byte
	for _, m := range seeds {
		if f, err := m.Pack(); err == nil {
			packed = append(packed, f)
		}
	}
	out := make([][][]byte, 0, n)
	for len(out) < n {
		var frames [][]byte
		if len(packed) == 0 || rng.IntN(3) == 0 {
			frames = make([][]byte, 1+rng.IntN(3))
			for k := range frames {
				f := make([]byte, rng.IntN(48))
				for j := range f {
					f[j] = byte(rng.Uint32())
				}
				frames[k] = f
			}
		} else {
			for _, f := range packed[rng.IntN(len(packed))] {
				frames = append(frames, append([]byte(nil), f...))
			}
			k := rng.IntN(len(frames))
			f := frames[k]
			switch rng.IntN(3) {
			case 0:
				if len(f) > 0 {
					f[rng.IntN(len(f))] ^= byte(1 << rng.IntN(8))
				}
			case 1:
				if len(f) > 0 {
					f[rng.IntN(len(f))] = byte(rng.Uint32())
				}
			default:
				frames[k] = f[:rng.IntN(len(f)+1)]
			}
		}
		if m, err := messages.Unpack(frames); err == nil && m.Type() == messages.TypeRegistration {
			continue
		}
		out = append(out, frames)
	}
	return out
}

// Undecodable counts the messages that messages.Unpack refuses.
func Undecodable(msgs [][][]byte) int {
	n := 0
	for _, f := range msgs {
		if _, err := messages.Unpack(f); err != nil {
			n++
		}
	}
	return n
}

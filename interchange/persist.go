package interchange

import (
	"fmt"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The interchange stores the tasks it acknowledged upward and the results
// the forwarder has not acknowledged yet, so a restart loses neither.
const (
	tasksBucket   = "tasks"
	resultsBucket = "results"
)

func taskOp(t *itask) store.Op {
	w := binrec.Writer{B: make([]byte, 0, 8+len(t.payload))}
	w.Uvarint(uint64(t.attempt))
	w.Bytes(t.payload)
	return store.Op{Bucket: tasksBucket, Key: append([]byte(nil), t.id[:]...), Value: w.B}
}

func taskDeleteOp(id messages.TaskID) store.Op {
	return store.Op{Bucket: tasksBucket, Key: append([]byte(nil), id[:]...)}
}

func resultOp(r *messages.Result) store.Op {
	w := binrec.Writer{B: make([]byte, 0, 32+len(r.Error)+len(r.Payload))}
	w.Uvarint(uint64(r.Attempt))
	w.Uvarint(uint64(r.Code))
	w.String(r.Error)
	w.Varint(r.Started)
	w.Varint(r.Finished)
	w.Bytes(r.Payload)
	return store.Op{Bucket: resultsBucket, Key: append([]byte(nil), r.ID[:]...), Value: w.B}
}

func resultDeleteOp(id messages.TaskID) store.Op {
	return store.Op{Bucket: resultsBucket, Key: append([]byte(nil), id[:]...)}
}

// recovered is what a restarted interchange found in its store.
type recovered struct {
	tasks   []*itask
	results []messages.Result
}

func loadState(st *store.Store) (*recovered, error) {
	rec := &recovered{}
	err := st.ForEach(tasksBucket, func(k, v []byte) error {
		if len(k) != 16 {
			return fmt.Errorf("task key of %d bytes", len(k))
		}
		r := binrec.Reader{B: v}
		t := &itask{attempt: max(uint32(r.Uvarint()), 1), payload: r.Bytes()}
		if r.Err != nil {
			return fmt.Errorf("task %x: %w", k, r.Err)
		}
		copy(t.id[:], k)
		rec.tasks = append(rec.tasks, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = st.ForEach(resultsBucket, func(k, v []byte) error {
		if len(k) != 16 {
			return fmt.Errorf("result key of %d bytes", len(k))
		}
		r := binrec.Reader{B: v}
		res := messages.Result{Attempt: uint32(r.Uvarint()), Code: messages.TaskStatusCode(r.Uvarint()), Error: r.String(),
			Started: r.Varint(), Finished: r.Varint(), Payload: r.Bytes()}
		if r.Err != nil {
			return fmt.Errorf("result %x: %w", k, r.Err)
		}
		copy(res.ID[:], k)
		if !res.Code.Terminal() {
			return fmt.Errorf("result %x with code %d", k, res.Code)
		}
		rec.results = append(rec.results, res)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// persist writes ops and runs then on the loop once they are durable.
func (l *loop) persist(ops []store.Op, then func(*loop)) {
	st := l.ix.store
	if st == nil || len(ops) == 0 {
		if then != nil {
			then(l)
		}
		return
	}
	st.Write(ops, func(err error) {
		if err != nil {
			l.ix.log.WithError(err).Warn("state not stored; acknowledgement held back")
			return
		}
		if then != nil {
			l.ix.mbox.Post(event{kind: evDurable, then: then})
		}
	})
}

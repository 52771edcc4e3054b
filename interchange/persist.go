package interchange

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The interchange stores the tasks it acknowledged upward and the results
// the forwarder has not acknowledged yet, so a restart loses neither.
const (
	tasksBucket   = "tasks"
	resultsBucket = "results"
)

type taskRecord struct {
	_msgpack struct{} `msgpack:",as_array"`
	Attempt  uint32
	Payload  []byte
}

type resultRecord struct {
	_msgpack struct{} `msgpack:",as_array"`
	Attempt  uint32
	Code     uint8
	Error    string
	Started  int64
	Finished int64
	Payload  []byte
}

func taskOp(t *itask) store.Op {
	v, _ := msgpack.Marshal(&taskRecord{Attempt: t.attempt, Payload: t.payload})
	return store.Op{Bucket: tasksBucket, Key: append([]byte(nil), t.id[:]...), Value: v}
}

func taskDeleteOp(id messages.TaskID) store.Op {
	return store.Op{Bucket: tasksBucket, Key: append([]byte(nil), id[:]...)}
}

func resultOp(r *messages.Result) store.Op {
	v, _ := msgpack.Marshal(&resultRecord{Attempt: r.Attempt, Code: uint8(r.Code), Error: r.Error,
		Started: r.Started, Finished: r.Finished, Payload: r.Payload})
	return store.Op{Bucket: resultsBucket, Key: append([]byte(nil), r.ID[:]...), Value: v}
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
		var r taskRecord
		if len(k) != 16 {
			return fmt.Errorf("task key of %d bytes", len(k))
		}
		if err := msgpack.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("task %x: %w", k, err)
		}
		t := &itask{attempt: max(r.Attempt, 1), payload: r.Payload}
		copy(t.id[:], k)
		rec.tasks = append(rec.tasks, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = st.ForEach(resultsBucket, func(k, v []byte) error {
		var r resultRecord
		if len(k) != 16 {
			return fmt.Errorf("result key of %d bytes", len(k))
		}
		if err := msgpack.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("result %x: %w", k, err)
		}
		res := messages.Result{Attempt: r.Attempt, Code: messages.TaskStatusCode(r.Code), Error: r.Error,
			Started: r.Started, Finished: r.Finished, Payload: r.Payload}
		copy(res.ID[:], k)
		if !res.Code.Terminal() {
			return fmt.Errorf("result %x with code %d", k, r.Code)
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

package bench

import (
	"errors"
	"fmt"
	"sort"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// NoopTaskBytes is what one no-op task costs on the wire inside a packed
// TaskBatch of batch tasks: both frames, divided by batch.
func NoopTaskBytes(batch int) (float64, error) {
	tasks := make([]messages.Task, batch)
	for i := range tasks {
		tasks[i] = messages.Task{ID: messages.TaskID{byte(i >> 8), byte(i), 0x4d, 1}, Attempt: 1, Payload: []byte(`{"kind":"noop"}`)}
	}
	frames, err := (&messages.TaskBatch{Tasks: tasks}).Pack()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	return float64(n) / float64(batch), nil
}

// rawTimeout ends a relay run that stops making progress.
const rawTimeout = 10 * time.Second

// RawResult is one relay measurement.
type RawResult struct {
	Messages     int     `json:"messages"`
	MessageBytes int     `json:"message_bytes"`
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"messages_per_second"`
}

// RawRelay sends n messages of size bytes from a DEALER through a ROUTER
// relay to a second DEALER, over loopback TCP with the same socket options
// as the daemons, each socket owned by its own goroutine; it times the
// first send to the last receive.
func RawRelay(n, size int) (RawResult, error) {
	res := RawResult{Messages: n, MessageBytes: size}
	if n <= 0 {
		return res, errors.New("raw relay: no messages")
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return res, err
	}
	defer func() { _ = zctx.Term() }()
	router, addr, err := zsock.NewRouter(zctx, "tcp://127.0.0.1:*")
	if err != nil {
		return res, err
	}
	src, err := zsock.NewDealer(zctx, "src", addr)
	if err != nil {
		zsock.Close(router)
		return res, err
	}
	sink, err := zsock.NewDealer(zctx, "sink", addr)
	if err != nil {
		zsock.Close(router)
		zsock.Close(src)
		return res, err
	}
	// A lost message must end the run with an error, not hang it.
	for _, s := range []*zmq.Socket{router, src, sink} {
		if err = s.SetRcvtimeo(rawTimeout); err == nil {
			err = s.SetSndtimeo(rawTimeout)
		}
		if err != nil {
			break
		}
	}
	// The sink says hello so the ROUTER can route to it.
	if err == nil {
		_, err = sink.SendBytes([]byte("hello"), 0)
	}
	if err != nil {
		zsock.Close(router)
		zsock.Close(src)
		zsock.Close(sink)
		return res, err
	}
	ready := make(chan error, 1)
	relayDone := make(chan error, 1)
	// The relay goroutine owns the ROUTER until it returns; it is closed
	// only after the sink has everything (LINGER 0 would drop what is
	// still queued for the sink).
	go func() { relayDone <- relay(router, n, ready) }()
	if err := <-ready; err != nil {
		zsock.Close(src)
		zsock.Close(sink)
		<-relayDone
		zsock.Close(router)
		return res, err
	}
	sinkDone := make(chan error, 1)
	var end time.Time
	go func() {
		defer zsock.Close(sink)
		for i := 0; i < n; i++ {
			if _, err := sink.RecvBytes(0); err != nil {
				sinkDone <- fmt.Errorf("sink: message %d of %d: %w", i+1, n, err)
				return
			}
		}
		end = time.Now()
		sinkDone <- nil
	}()
	payload := make([]byte, size)
	start := time.Now()
	var sendErr error
	for i := 0; i < n; i++ {
		if _, err := src.SendBytes(payload, 0); err != nil {
			sendErr = fmt.Errorf("source: %w", err)
			break
		}
	}
	err = <-sinkDone
	zsock.Close(src)
	if sendErr != nil {
		err = sendErr
	}
	if rerr := <-relayDone; err == nil {
		err = rerr
	}
	zsock.Close(router)
	if err != nil {
		return res, err
	}
	res.Seconds = end.Sub(start).Seconds()
	res.PerSecond = float64(n) / res.Seconds
	return res, nil
}

// relay forwards n messages from "src" to "sink" with blocking calls; the
// ROUTER's mandatory routing makes a full sink pipe block the relay, so
// nothing is dropped.
func relay(router *zmq.Socket, n int, ready chan<- error) error {
	// Wait for the sink's hello; the routing id is the first frame.
	for {
		frames, err := router.RecvMessageBytes(0)
		if err != nil {
			ready <- fmt.Errorf("relay: %w", err)
			return nil
		}
		if string(frames[0]) == "sink" {
			break
		}
	}
	ready <- nil
	sink := []byte("sink")
	for i := 0; i < n; i++ {
		frames, err := router.RecvMessageBytes(0)
		if err != nil {
			return fmt.Errorf("relay recv %d of %d: %w", i+1, n, err)
		}
		if _, err := router.SendMessage(sink, frames[1]); err != nil {
			return fmt.Errorf("relay send: %w", err)
		}
	}
	return nil
}

// RawBaseline runs RawRelay repeat times and keeps the median run.
func RawBaseline(n, size, repeat int) (RawResult, []float64, error) {
	var runs []RawResult
	var rates []float64
	for i := 0; i < max(repeat, 1); i++ {
		r, err := RawRelay(n, size)
		if err != nil {
			return RawResult{}, nil, err
		}
		runs = append(runs, r)
		rates = append(rates, r.PerSecond)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].PerSecond < runs[j].PerSecond })
	return runs[len(runs)/2], rates, nil
}

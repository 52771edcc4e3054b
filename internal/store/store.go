// Package store keeps the daemons' durable state in Pebble (DB, in
// pebble.go: group commit, a disk reserve, Check and Repair in repair.go).
// The forwarder and the interchange each keep one.
//
// Earlier versions kept state in an append-only log (log.go) and before
// that in a bbolt B+tree file (bolt.go). Such files are only read, once,
// to copy their records into a new store (OpenDBFrom, in migrate.go);
// nothing writes those formats any more.
package store

import "errors"

// Op is one put, or a delete when Value is nil.
type Op struct {
	Bucket string
	Key    []byte
	Value  []byte
	// SetOnce marks a delete of a key put exactly once since it was last
	// deleted (never overwritten): the put and the delete then vanish
	// together when they meet in a flush or compaction, where an ordinary
	// delete is kept (and compacted) until the bottom level.
	SetOnce bool
}

// ErrForeign means the file is not a store of this kind.
var ErrForeign = errors.New("not a switchyard state file of this kind")

// Durability says what a commit survives.
type Durability int

const (
	// SurviveProcessCrash writes each commit to the OS before callbacks
	// run: a killed process loses nothing; a host crash may lose the last
	// commits. No fsync, so commits take microseconds.
	SurviveProcessCrash Durability = iota
	// SurviveHostCrash also fsyncs each commit (milliseconds on most
	// disks; group commit shares one fsync among many writes).
	SurviveHostCrash
)

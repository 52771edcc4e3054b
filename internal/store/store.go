// Package store keeps the daemons' durable state: an append-only log with
// an index in memory and group commit (Log, in log.go). The forwarder and
// the interchange each keep one.
//
// Earlier versions kept state in a bbolt B+tree file. Such a file is only
// read, once, to copy its records into a new log (OpenLogFrom, in
// migrate.go, reading with bolt.go); nothing writes that format any more.
package store

import "errors"

// Op is one put, or a delete when Value is nil.
type Op struct {
	Bucket string
	Key    []byte
	Value  []byte
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

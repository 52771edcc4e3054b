package store

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The layout of the bbolt files of earlier versions: a "meta" bucket whose
// "format" key names the file's format, and one bucket per name the
// daemon used.
const (
	oldMetaBucket = "meta"
	oldFormatKey  = "format"
)

// readOld reads every record of the given buckets from a bbolt state file
// of an earlier version, opened read-only: the file is not changed. A
// bucket the file lacks reads as empty; a file of another format, or not
// of Switchyard's, is refused with ErrForeign.
func readOld(path, format string, buckets []string) ([]Op, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (the file may be corrupt or not a switchyard state file; move it aside to start empty)", path, err)
	}
	defer db.Close()
	var ops []Op
	err = db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(oldMetaBucket))
		if mb == nil {
			return fmt.Errorf("%w: %s has no switchyard metadata", ErrForeign, path)
		}
		if got := mb.Get([]byte(oldFormatKey)); !bytes.Equal(got, []byte(format)) {
			return fmt.Errorf("%w: %s holds %q, want %q", ErrForeign, path, got, format)
		}
		for _, name := range buckets {
			b := tx.Bucket([]byte(name))
			if b == nil {
				continue
			}
			if err := b.ForEach(func(k, v []byte) error {
				ops = append(ops, Op{Bucket: name, Key: bytes.Clone(k), Value: bytes.Clone(v)})
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ops, nil
}

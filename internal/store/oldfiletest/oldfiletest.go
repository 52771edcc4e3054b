// Package oldfiletest writes state files in the bbolt format of earlier
// versions, so tests can check that a daemon migrates them into its log.
// It is for tests only: the daemons never write this format, and package
// store only reads it.
package oldfiletest

import (
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is one key and value of a bucket; a store.Op converts to it.
type Record struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// Write creates path as an earlier version did: a "meta" bucket naming
// format, the given buckets (empty ones too), and records in them.
func Write(path, format string, buckets []string, recs ...Record) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists already", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		mb, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := mb.Put([]byte("format"), []byte(format)); err != nil {
			return err
		}
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		for _, r := range recs {
			b := tx.Bucket([]byte(r.Bucket))
			if b == nil {
				return fmt.Errorf("record in bucket %q, which is not in %v", r.Bucket, buckets)
			}
			if err := b.Put(r.Key, r.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

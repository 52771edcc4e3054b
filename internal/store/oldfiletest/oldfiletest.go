// Package oldfiletest writes state files in the formats of earlier
// versions (the bbolt file, the append-only log), so tests can check that
// a daemon migrates them into its store. It is for tests only: the
// daemons never write these formats, and package store only reads them.
package oldfiletest

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
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

// Op is one record of a log: a put, or a delete when Delete is set.
type Op struct {
	Record
	Delete bool
}

// WriteLog creates path as the append-only log of earlier versions was
// written: a header naming format, then each op as one checksummed
// record (bucket by its index in buckets).
func WriteLog(path, format string, buckets []string, ops ...Op) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists already", path)
	}
	buf := []byte("switchyard-log 1 " + format + "\n")
	for _, op := range ops {
		b := slices.Index(buckets, op.Bucket)
		if b < 0 {
			return fmt.Errorf("record in bucket %q, which is not in %v", op.Bucket, buckets)
		}
		code := byte(1)
		if op.Delete {
			code = 2
		}
		body := append([]byte{code, byte(b)}, binary.AppendUvarint(nil, uint64(len(op.Key)))...)
		body = append(append(body, op.Key...), op.Value...)
		buf = binary.AppendUvarint(buf, uint64(len(body)))
		buf = append(buf, body...)
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	}
	return os.WriteFile(path, buf, 0o600)
}

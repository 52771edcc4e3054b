package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Old is a state file of an earlier version: an append-only log, or
// (Bolt) a bbolt file. Both are only read.
type Old struct {
	Path, Format string
	Bolt         bool
}

// OpenDBFrom opens the Pebble store in dir like OpenDB. When there is none
// yet, the first of olds that exists is copied into a new one, once: the
// store is built beside dir and moved into place when complete, then the
// old file is renamed to Path+".migrated" (its content is never changed).
// It also returns which file it copied and how many records.
func OpenDBFrom(dir string, buckets []string, o DBOptions, olds ...Old) (*DB, bool, *Old, int, error) {
	var from *Old
	copied := 0
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		for i := range olds {
			if _, err := os.Stat(olds[i].Path); err == nil {
				from = &olds[i]
				break
			}
		}
	}
	if from != nil {
		var err error
		if copied, err = migrateDB(*from, dir, buckets, o); err != nil {
			return nil, false, nil, 0, fmt.Errorf("copy %s into %s: %w", from.Path, dir, err)
		}
	}
	d, existed, err := OpenDB(dir, buckets, o)
	return d, existed || from != nil, from, copied, err
}

func migrateDB(old Old, dir string, buckets []string, o DBOptions) (int, error) {
	var ops []Op
	var err error
	if old.Bolt {
		ops, err = readOld(old.Path, old.Format, buckets)
	} else {
		ops, err = ReadLog(old.Path, old.Format, buckets)
	}
	if err != nil {
		return 0, err
	}
	tmp := dir + ".tmp"
	// A copy a crash interrupted is redone from the old file.
	if err := os.RemoveAll(tmp); err != nil {
		return 0, err
	}
	d, _, err := OpenDB(tmp, buckets, DBOptions{Durability: SurviveHostCrash, Log: o.Log})
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(ops) && err == nil; i += 10000 {
		err = d.WriteSync(ops[i:min(i+10000, len(ops))])
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dir))
	}
	if err != nil {
		os.RemoveAll(tmp)
		return 0, err
	}
	return len(ops), os.Rename(old.Path, old.Path+".migrated")
}

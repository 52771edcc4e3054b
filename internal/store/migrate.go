package store

import (
	"errors"
	"fmt"
	"os"
)

// OpenLogFrom opens the log at path like OpenLog. When there is no log yet
// but a bbolt file old of an earlier version (format oldFormat, the same
// buckets), its records are first copied into a new log, once, and old is
// renamed to old+".migrated"; its content is only read. It also returns
// how many records it copied.
func OpenLogFrom(path, format string, buckets []string, o LogOptions, old, oldFormat string) (*Log, bool, int, error) {
	copied := 0
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(old); err == nil {
			if copied, err = migrate(old, oldFormat, path, format, buckets, o); err != nil {
				return nil, false, 0, fmt.Errorf("copy %s into %s: %w", old, path, err)
			}
		}
	}
	l, existed, err := OpenLog(path, format, buckets, o)
	return l, existed, copied, err
}

func migrate(old, oldFormat, path, format string, buckets []string, o LogOptions) (int, error) {
	ops, err := readOld(old, oldFormat, buckets)
	if err != nil {
		return 0, err
	}
	l, _, err := OpenLog(path, format, buckets, o)
	if err != nil {
		return 0, err
	}
	err = l.WriteSync(ops)
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return 0, err
	}
	return len(ops), os.Rename(old, old+".migrated")
}

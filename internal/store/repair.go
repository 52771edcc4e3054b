package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sirupsen/logrus"
)

// CheckReport is what Check found: the readable records of each bucket
// and the first damage met (nil when clean).
type CheckReport struct {
	Counts map[string]int
	Damage error
}

// Check opens the store in dir read-only and reads every record, which
// verifies the checksum of every block read; it changes nothing. An error
// is returned only when it cannot look (no store there).
func Check(dir string, buckets []string) (*CheckReport, error) {
	rep := &CheckReport{Counts: map[string]int{}}
	if ms, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*")); len(ms) == 0 {
		return nil, fmt.Errorf("%s: no store there", dir)
	}
	d, _, err := OpenDB(dir, buckets, DBOptions{ReadOnly: true, Log: quietLog()})
	if err != nil {
		rep.Damage = err
		return rep, nil
	}
	defer d.Close()
	for _, b := range buckets {
		n := 0
		err := d.ForEach(b, func(_, _ []byte) error { n++; return nil })
		rep.Counts[b] = n
		if err != nil && rep.Damage == nil {
			rep.Damage = err
		}
	}
	return rep, nil
}

// LostRange is a span of keys Repair left out: every key of one bucket
// from From to To, both included, held by a damaged table.
type LostRange struct {
	Bucket   string
	From, To string // keys as FormatKey shows them
	File     string
	Why      string
}

// RepairReport is what Repair did.
type RepairReport struct {
	Copied map[string]int
	Lost   []LostRange
	// KeptAs is where the damaged store now is.
	KeptAs string
}

// Repair copies every readable record of the store in dir into a fresh
// store, leaving out the whole key range of each damaged table: a record
// in such a range may be older than the one the damaged table held (a
// revoked token, a deleted task), so none of the range comes back. The
// damaged store is kept beside, renamed with a timestamp; the fresh one
// takes its place.
func Repair(dir string, buckets []string, now time.Time) (*RepairReport, error) {
	scratch := dir + ".repair-read"
	if err := os.RemoveAll(scratch); err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := copyDir(dir, scratch); err != nil {
		return nil, fmt.Errorf("copy %s to read it: %w", dir, err)
	}
	db, sized, err := openForRepair(scratch)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	levels, err := db.SSTables()
	if err != nil {
		return nil, err
	}
	type table struct {
		name     string
		lo, hi   []byte
		damaged  bool
		why      string
		fileNums string
	}
	var tables []*table
	for _, l := range levels {
		for _, t := range l {
			tables = append(tables, &table{name: fmt.Sprintf("%s.sst", t.FileNum), lo: bytes.Clone(t.Smallest.UserKey),
				hi: bytes.Clone(t.Largest.UserKey), fileNums: t.FileNum.String()})
		}
	}
	for _, n := range sized {
		for _, t := range tables {
			if t.name == n {
				t.damaged, t.why = true, "cut short or grown (its size differs from the MANIFEST's)"
			}
		}
	}
	bidx := map[byte]string{}
	for i, b := range buckets {
		bidx[byte(i+1)] = b
	}
	fileRe := regexp.MustCompile(`\b0*(\d+)(\.sst)?\b`)
	// Read everything outside damaged ranges; a read error names the table
	// it met, whose range is then left out too, and the reading starts over.
	for attempt := 0; ; attempt++ {
		var skip [][2][]byte
		for _, t := range tables {
			if t.damaged {
				skip = append(skip, [2][]byte{t.lo, t.hi})
			}
		}
		ops, rerr := readOutside(db, skip, bidx)
		if rerr == nil {
			rep := &RepairReport{Copied: map[string]int{}}
			for _, op := range ops {
				rep.Copied[op.Bucket]++
			}
			for _, t := range tables {
				if t.damaged {
					rep.Lost = append(rep.Lost, lostRanges(t.lo, t.hi, bidx, t.name, t.why)...)
				}
			}
			kept, err := replace(dir, buckets, ops, now)
			rep.KeptAs = kept
			return rep, err
		}
		found := false
		for _, m := range fileRe.FindAllStringSubmatch(rerr.Error(), -1) {
			num, _ := strconv.ParseUint(m[1], 10, 64)
			for _, t := range tables {
				if n, _ := strconv.ParseUint(t.fileNums, 10, 64); n == num && !t.damaged {
					t.damaged, t.why, found = true, rerr.Error(), true
				}
			}
			if found {
				break
			}
		}
		if !found || attempt > len(tables) {
			return nil, fmt.Errorf("read %s: %w (no table to leave out found in the error; nothing was changed)", dir, rerr)
		}
	}
}

// openForRepair opens a copy read-only; tables whose size differs from
// the MANIFEST's are padded or cut to it first (they then fail their
// checksums and are left out) and named.
func openForRepair(dir string) (*pebble.DB, []string, error) {
	sizeRe := regexp.MustCompile(`\(([^()]+\.sst)\): (\d+) \(disk\) != (\d+) \(MANIFEST\)`)
	var sized []string
	for range 64 {
		db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: pebbleLogger{quietLog()},
			EventListener: &pebble.EventListener{DataCorruption: func(pebble.DataCorruptionInfo) {}}})
		if err == nil {
			return db, sized, nil
		}
		ms := sizeRe.FindAllStringSubmatch(err.Error(), -1)
		if len(ms) == 0 {
			return nil, nil, fmt.Errorf("open %s: %w (the MANIFEST or a WAL may be damaged; nothing was changed)", dir, err)
		}
		for _, m := range ms {
			want, _ := strconv.ParseInt(m[3], 10, 64)
			if err := os.Truncate(m[1], want); err != nil {
				return nil, nil, err
			}
			sized = append(sized, filepath.Base(m[1]))
		}
	}
	return nil, nil, errors.New("open: too many tables of the wrong size")
}

// readOutside reads every key outside the skipped ranges (inclusive).
func readOutside(db *pebble.DB, skip [][2][]byte, bidx map[byte]string) ([]Op, error) {
	slices.SortFunc(skip, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	var ops []Op
	var lo []byte
	span := func(lo, hi []byte) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			k := it.Key()
			if b, ok := bidx[k[0]]; ok && len(k) > 0 {
				ops = append(ops, Op{Bucket: b, Key: bytes.Clone(k[1:]), Value: bytes.Clone(v)})
			}
		}
		return it.Close()
	}
	for _, s := range skip {
		if lo == nil || bytes.Compare(lo, s[0]) < 0 {
			if err := span(lo, s[0]); err != nil {
				return nil, err
			}
		}
		if next := append(bytes.Clone(s[1]), 0); lo == nil || bytes.Compare(next, lo) > 0 {
			lo = next
		}
	}
	if err := span(lo, nil); err != nil {
		return nil, err
	}
	return ops, nil
}

// lostRanges splits a table's range by bucket.
func lostRanges(lo, hi []byte, bidx map[byte]string, file, why string) []LostRange {
	var out []LostRange
	for b := lo[0]; b <= hi[0]; b++ {
		name, ok := bidx[b]
		if !ok {
			continue
		}
		from, to := "(first)", "(last)"
		if b == lo[0] {
			from = FormatKey(lo[1:])
		}
		if b == hi[0] {
			to = FormatKey(hi[1:])
		}
		out = append(out, LostRange{Bucket: name, From: from, To: to, File: file, Why: why})
		if b == 255 {
			break
		}
	}
	return out
}

// FormatKey shows a key: a sequence number for 8 bytes, text when
// printable, hex otherwise.
func FormatKey(k []byte) string {
	if len(k) == 8 {
		return "seq " + strconv.FormatUint(binary.BigEndian.Uint64(k), 10)
	}
	for _, r := range string(k) {
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("%x", k)
		}
	}
	return strconv.Quote(string(k))
}

// replace writes ops into a fresh store beside dir, moves the damaged
// store aside and the fresh one into its place.
func replace(dir string, buckets []string, ops []Op, now time.Time) (string, error) {
	tmp := dir + ".repaired"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	d, _, err := OpenDB(tmp, buckets, DBOptions{Durability: SurviveHostCrash, Log: quietLog()})
	if err != nil {
		return "", err
	}
	for i := 0; i < len(ops) && err == nil; i += 10000 {
		err = d.WriteSync(ops[i:min(i+10000, len(ops))])
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	kept := dir + ".damaged-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, kept); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return kept, err
	}
	return kept, syncDir(filepath.Dir(dir))
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	es, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := vfs.Default.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// quietLog drops Pebble's own messages (the caller reports).
func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

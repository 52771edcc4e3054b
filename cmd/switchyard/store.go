package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// storeKind is a daemon's store as found in a state dir.
type storeKind struct {
	daemon  string
	dir     string
	buckets []string
}

// findStore says whose state dir it is by the store it holds, and takes
// the dir's lock so no daemon runs on it meanwhile.
func findStore(stateDir string) (*storeKind, *statedir.Dir, error) {
	kinds := []storeKind{
		{"forwarder", taskstore.PebbleDir, taskstore.PebbleBuckets()},
		{"interchange", interchange.StoreDir, interchange.StoreBuckets()},
	}
	for i := range kinds {
		k := &kinds[i]
		if _, err := os.Stat(filepath.Join(stateDir, k.dir)); err != nil {
			continue
		}
		sd, err := statedir.Open(stateDir, "store")
		if err != nil {
			return nil, nil, err
		}
		k.dir = filepath.Join(stateDir, k.dir)
		return k, sd, nil
	}
	return nil, nil, &exitError{code: exitUsage, err: fmt.Errorf("%s holds no store (neither %s nor %s)", stateDir, taskstore.PebbleDir, interchange.StoreDir)}
}

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Check or repair a forwarder's or interchange's store (the daemon stopped)",
	}
	var checkDir string
	check := &cobra.Command{
		Use:   "check --state-dir DIR",
		Short: "Read every record of the store and verify its checksums; change nothing",
		Long: `Open the store of a stopped forwarder or interchange read-only (which one is
told by what the state dir holds), read every record, verifying the checksum
of every block, and print how many records each kind has. The first damage
found is printed naming the file and the block (offset/length). Exit status 0
when clean, 5 when damaged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, sd, err := findStore(checkDir)
			if err != nil {
				return err
			}
			defer sd.Close()
			rep, err := store.Check(k.dir, k.buckets)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s store %s\n", k.daemon, k.dir)
			printCounts(out, k.buckets, rep.Counts, "records")
			if rep.Damage != nil {
				fmt.Fprintf(out, "DAMAGED: %v\n", rep.Damage)
				return &exitError{code: exitDamaged, err: fmt.Errorf("the store is damaged; stop here to keep it as it is, or run `switchyard store repair --state-dir %s`", checkDir)}
			}
			fmt.Fprintln(out, "clean: every record read and every checksum verified")
			return nil
		},
	}
	check.Flags().StringVar(&checkDir, "state-dir", "", "the daemon's state directory (required)")
	_ = check.MarkFlagRequired("state-dir")

	var repairDir string
	repair := &cobra.Command{
		Use:   "repair --state-dir DIR",
		Short: "Copy every readable record into a fresh store; keep the damaged one aside",
		Long: `Copy every readable record of a stopped daemon's store into a fresh store
that takes its place. The whole key range of each damaged table is left out,
also where an older table has records in it: an older version of a key (a
token since revoked, a task since pruned) never comes back. The damaged store
is kept beside, renamed DIR.damaged-TIMESTAMP. Prints what was copied and, by
key range, what was lost. Tasks in a lost range are unknown to the forwarder
after the repair; their submitters see 404.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, sd, err := findStore(repairDir)
			if err != nil {
				return err
			}
			defer sd.Close()
			rep, err := store.Repair(k.dir, k.buckets, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s store %s repaired\n", k.daemon, k.dir)
			printCounts(out, k.buckets, rep.Copied, "records copied")
			if len(rep.Lost) == 0 {
				fmt.Fprintln(out, "nothing lost")
			}
			for _, l := range rep.Lost {
				fmt.Fprintf(out, "lost: %s from %s to %s (table %s)\n", l.Bucket, l.From, l.To, l.File)
			}
			fmt.Fprintf(out, "the damaged store is kept as %s\n", rep.KeptAs)
			return nil
		},
	}
	repair.Flags().StringVar(&repairDir, "state-dir", "", "the daemon's state directory (required)")
	_ = repair.MarkFlagRequired("state-dir")
	cmd.AddCommand(check, repair)
	return cmd
}

func printCounts(out io.Writer, buckets []string, counts map[string]int, what string) {
	bs := append([]string(nil), buckets...)
	sort.Strings(bs)
	for _, b := range bs {
		fmt.Fprintf(out, "  %-10s %d %s\n", b, counts[b], what)
	}
}

package forwarder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// Migrated counts what MigrateStore copied.
type Migrated struct {
	Tasks, Unfinished, Tokens, Endpoints int
}

// migrateBatch is how many tasks one Add copies.
const migrateBatch = 5000

// MigrateStore copies everything of the embedded store in a stopped
// forwarder's state dir (tasks with their results, tokens, endpoints with
// their keys, owners and shares) into the store toURL names, which must
// hold no task yet. It reads and writes through the taskstore interface
// only, so any pair of implementations works. The state dir is locked
// meanwhile: a running forwarder makes it fail.
func MigrateStore(stateDir, fromURL, toURL string, log *logrus.Entry) (Migrated, error) {
	var n Migrated
	if log == nil {
		log = logx.Discard()
	}
	if fromURL == "" {
		fromURL = "pebble"
	}
	dir, err := statedir.Open(stateDir, "forwarder")
	if err != nil {
		return n, fmt.Errorf("%w (stop the forwarder first)", err)
	}
	defer dir.Close()
	src, _, err := taskstore.Open(taskstore.Config{URL: fromURL, Dir: dir.Path, Log: log})
	if err != nil {
		return n, fmt.Errorf("open %s: %w", fromURL, err)
	}
	defer src.Close()
	dst, _, err := taskstore.Open(taskstore.Config{URL: toURL, Dir: dir.Path, Log: log})
	if err != nil {
		return n, fmt.Errorf("open %s: %w", taskstore.Scheme(toURL), err)
	}
	defer dst.Close()
	has := false
	if err := dst.List(taskstore.Filter{}, 0, func(*taskstore.Task) bool { has = true; return false }); err != nil {
		return n, err
	}
	if has {
		return n, errors.New(dst.Describe() + " holds tasks already; migrate into an empty store")
	}
	var batch []*taskstore.Task
	var werr error
	flush := func() {
		if werr == nil && len(batch) > 0 {
			werr = dst.Add(batch)
		}
		batch = batch[:0]
	}
	err = src.Recover(func(t *taskstore.Task) {
		if werr != nil {
			return
		}
		c := *t
		batch = append(batch, &c)
		n.Tasks++
		if !t.State.Terminal() {
			n.Unfinished++
		}
		if len(batch) == migrateBatch {
			flush()
			if n.Tasks%100000 == 0 {
				log.WithField("tasks", n.Tasks).Info("copying tasks")
			}
		}
	})
	flush()
	if err = errors.Join(err, werr); err != nil {
		return n, fmt.Errorf("copy tasks: %w", err)
	}
	toks, err := src.Tokens()
	if err != nil {
		return n, err
	}
	for _, t := range toks {
		if err := dst.PutToken(t); err != nil {
			return n, err
		}
		n.Tokens++
	}
	eps, err := src.Endpoints()
	if err != nil {
		return n, err
	}
	for _, e := range eps {
		if err := dst.PutEndpoint(e); err != nil {
			return n, err
		}
		n.Endpoints++
	}
	if sh, ok := dst.(taskstore.Shared); ok {
		// The key the endpoints' credentials name is the one every
		// forwarder on the database presents.
		if _, err := os.Stat(dir.File("curve.key")); err == nil {
			kp, _, err := curve.LoadOrCreate(dir.File("curve.key"))
			if err != nil {
				return n, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if pub, _, err := sh.ServerKey(ctx, kp.Public, kp.Secret); err != nil {
				return n, err
			} else if pub != kp.Public {
				return n, errors.New(dst.Describe() + " holds another CURVE server key already; migrate into a database no forwarder has used")
			}
		}
	}
	return n, nil
}

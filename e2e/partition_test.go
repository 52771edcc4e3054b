package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// partition drops every packet to and from a loopback TCP port until heal
// is called, using an nftables table of its own.
type partition struct {
	t     *testing.T
	table string
}

func nftPath(t *testing.T) string {
	for _, p := range []string{"/usr/sbin/nft", "/sbin/nft"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("nft")
	if err != nil {
		t.Fatalf("nft is needed for partitions (make test installs nftables): %v", err)
	}
	return p
}

func startPartition(t *testing.T, port int) *partition {
	t.Helper()
	p := &partition{t: t, table: fmt.Sprintf("switchyard_e2e_%d", port)}
	nft := nftPath(t)
	script := fmt.Sprintf(`table inet %[1]s {
	chain input { type filter hook input priority -10; policy accept; tcp dport %[2]d drop; tcp sport %[2]d drop; }
	chain output { type filter hook output priority -10; policy accept; tcp dport %[2]d drop; tcp sport %[2]d drop; }
}`, p.table, port)
	cmd := exec.Command(nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft (the test needs root): %v: %s", err, out)
	}
	t.Cleanup(p.heal)
	return p
}

func (p *partition) heal() {
	_ = exec.Command(nftPath(p.t), "delete", "table", "inet", p.table).Run()
}

// TestPartitionForwarderInterchange cuts the forwarder-interchange link
// for 2x and then 10x the heartbeat threshold. Both sides must notice,
// tasks submitted meanwhile must wait, and everything must finish once the
// link is back.
func TestPartitionForwarderInterchange(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.addManager("m1", 2, 2)
	var all []string
	for _, factor := range []int{2, 10} {
		before := c.submit(manyOf(noop(), 100), 100)
		c.waitTerminal(before, 30*time.Second)
		ixLost := len(c.ix.GrepLog("forwarder lost"))
		fwdLost := len(c.fwd.GrepLog("endpoint lost"))

		p := startPartition(t, c.fwdZMQ)
		cut := time.Now()
		c.waitEndpoint(10*time.Second, func(v endpointView) error {
			if v.Connected {
				return errors.New("forwarder still sees the endpoint")
			}
			return nil
		})
		fwdDetect := time.Since(cut)
		waitFor(t, 10*time.Second, func() error {
			if len(c.ix.GrepLog("forwarder lost")) == ixLost {
				return errors.New("interchange has not declared the forwarder lost")
			}
			return nil
		})
		ixDetect := time.Since(cut)
		during := c.submit(manyOf(noop(), 100), 100)
		waitFor(t, time.Duration(factor)*c.threshold+5*time.Second, func() error {
			if time.Since(cut) < time.Duration(factor)*c.threshold {
				return errors.New("partition still on")
			}
			return nil
		})
		s := c.mustStatuses(during)
		for _, id := range during {
			if terminal(s[id].State) {
				t.Fatalf("task %s ended (%s) while the endpoint was cut off", id, s[id].State)
			}
		}
		p.heal()
		healed := time.Now()
		c.waitEndpoint(30*time.Second, func(v endpointView) error {
			if !v.Connected || v.Managers != 1 {
				return fmt.Errorf("connected=%v managers=%d", v.Connected, v.Managers)
			}
			return nil
		})
		recovery := time.Since(healed)
		final := c.waitTerminal(during, 30*time.Second)
		for _, id := range during {
			if final[id].State != "success" {
				t.Fatalf("task %s submitted during the partition ended %s", id, final[id].State)
			}
		}
		if len(c.fwd.GrepLog("endpoint lost")) == fwdLost {
			t.Fatalf("the forwarder never logged the endpoint lost")
		}
		all = append(all, before...)
		all = append(all, during...)
		t.Logf("PARTITION %dx threshold (%s): forwarder detected in %s, interchange in %s, recovered %s after healing",
			factor, time.Duration(factor)*c.threshold, fwdDetect.Round(time.Millisecond), ixDetect.Round(time.Millisecond), recovery.Round(time.Millisecond))
	}
	for id, v := range c.mustStatuses(all) {
		if v.State != "success" {
			t.Fatalf("task %s: %s", id, v.State)
		}
	}
}

func manyOf(x task, n int) []task {
	out := make([]task, n)
	for i := range out {
		out[i] = x
	}
	return out
}

// TestPartitionInterchangeManager cuts the interchange-manager link while
// the manager runs tasks, for 2x and then 10x the threshold. Both sides
// must notice; the tasks must end success once the link is back.
func TestPartitionInterchangeManager(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	m := c.addManager("m1", 2, 2)
	for _, factor := range []int{2, 10} {
		ixLost := len(c.ix.GrepLog("manager lost"))
		mLost := len(m.GrepLog("interchange lost"))
		ids := c.submit(manyOf(sleepTask("0.3"), 8), 8)
		waitFor(t, 10*time.Second, func() error {
			s, err := c.statuses(ids)
			if err != nil {
				return err
			}
			for _, v := range s {
				if v.State == "running" {
					return nil
				}
			}
			return fmt.Errorf("nothing running yet: %v", countStates(s))
		})
		p := startPartition(t, c.ixManager)
		cut := time.Now()
		waitFor(t, 10*time.Second, func() error {
			if len(c.ix.GrepLog("manager lost")) == ixLost {
				return errors.New("interchange has not declared the manager lost")
			}
			return nil
		})
		ixDetect := time.Since(cut)
		waitFor(t, 10*time.Second, func() error {
			if len(m.GrepLog("interchange lost")) == mLost {
				return errors.New("manager has not declared the interchange lost")
			}
			return nil
		})
		mDetect := time.Since(cut)
		waitFor(t, time.Duration(factor)*c.threshold+5*time.Second, func() error {
			if time.Since(cut) < time.Duration(factor)*c.threshold {
				return errors.New("partition still on")
			}
			return nil
		})
		p.heal()
		healed := time.Now()
		c.waitManagerListed("m1", 30*time.Second)
		recovery := time.Since(healed)
		final := c.waitTerminal(ids, 30*time.Second)
		for _, id := range ids {
			if final[id].State != "success" {
				t.Fatalf("task %s ended %s after the partition", id, final[id].State)
			}
		}
		t.Logf("PARTITION manager link %dx threshold (%s): interchange detected in %s, manager in %s, re-registered %s after healing",
			factor, time.Duration(factor)*c.threshold, ixDetect.Round(time.Millisecond), mDetect.Round(time.Millisecond), recovery.Round(time.Millisecond))
	}
}

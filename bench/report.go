package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteText prints a report for people.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	persist := "on"
	switch {
	case r.Mode == "targeted":
		persist = "as the endpoint was started"
	case !r.Persist:
		persist = "off (--no-persist)"
	case r.Mode == "cli":
		persist = "on (endpoint up's defaults)"
	}
	fmt.Fprintf(&b, "switchyard bench %s — %s endpoint, persistence %s, %v CPUs\n", r.Version, r.Mode, persist, r.Host["cpus"])
	if len(r.Config) > 0 {
		keys := make([]string, 0, len(r.Config))
		for k := range r.Config {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%v", k, r.Config[k])
		}
		fmt.Fprintf(&b, "config: %s\n", strings.Join(parts, " "))
	}
	if tp := r.Throughput; tp != nil {
		fmt.Fprintf(&b, "\nThroughput (%d no-op tasks, batches of %d, %d submitters)\n", tp.Tasks, tp.Batch, tp.Submitters)
		fmt.Fprintf(&b, "  end to end:  %.0f tasks/s  (%.2fs from first submit until all terminal; %d failed)\n", tp.TasksPerSec, tp.Seconds, tp.Failed)
		fmt.Fprintf(&b, "  accepted:    %.0f tasks/s  (all POSTs answered after %.2fs)\n", tp.AcceptedPerSec, tp.SubmitSeconds)
		fmt.Fprintf(&b, "  following:   %d GET /v1/tasks/ended calls; bench client used %.2fs CPU\n", tp.EndedRequests, tp.BenchCPUSeconds)
	}
	if it, st := r.Insecure, r.Secure; it != nil && st != nil {
		fmt.Fprintf(&b, "  secure (tokens, CurveZMQ) vs --insecure, alternating runs, medians: %.0f vs %.0f tasks/s", st.TasksPerSec, it.TasksPerSec)
		if r.SecurityCost != nil {
			fmt.Fprintf(&b, "; security costs %.1f%%", 100**r.SecurityCost)
		}
		fmt.Fprintln(&b)
	}
	if raw := r.Raw; raw != nil {
		fmt.Fprintf(&b, "\nRaw ZMQ baseline (DEALER -> ROUTER -> DEALER over loopback TCP, median of 3)\n")
		fmt.Fprintf(&b, "  one message per task (%d B):   %.0f msgs/s", raw.PerTask.MessageBytes, raw.PerTask.PerSecond)
		if r.FractionOfRaw > 0 {
			fmt.Fprintf(&b, "  -> the endpoint reaches %.1f%% of it", 100*r.FractionOfRaw)
		}
		fmt.Fprintf(&b, "\n  batches of 1000 tasks (%d B):  %.0f tasks/s", raw.Batched.MessageBytes, raw.BatchedTasksPerSec)
		if r.FractionOfBatched > 0 {
			fmt.Fprintf(&b, "  -> the endpoint reaches %.1f%% of it", 100*r.FractionOfBatched)
		}
		b.WriteString("\n")
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(&b, "\nRound trip (%d sequential single tasks: POST, then GET ?wait=10s)\n", l.Tasks)
		fmt.Fprintf(&b, "  median %.3f ms, p99 %.3f ms (min %.3f, max %.3f); the POST alone: median %.3f ms, p99 %.3f ms\n",
			l.MedianMS, l.P99MS, l.MinMS, l.MaxMS, l.SubmitMedianMS, l.SubmitP99MS)
	}
	if r.CLI != nil {
		writeCLI(&b, r.CLI)
	}
	if len(r.Processes) > 0 {
		if r.CLI != nil {
			b.WriteString("\nProcesses (daemons: CPU from starting submit until wait exited, memory then; clients: their whole life, from rusage)\n")
		} else {
			b.WriteString("\nProcesses (CPU over the throughput run; memory at the end)\n")
		}
		tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  process\tpid\tCPU s\tCPU/task\t% of a core\tpeak RSS\tRSS")
		for _, p := range r.Processes {
			peak := "-"
			if p.PeakRSS > 0 {
				peak = mib(p.PeakRSS)
			}
			pid := "-"
			if p.PID > 0 {
				pid = fmt.Sprint(p.PID)
			}
			rss := "-"
			if p.RSS > 0 {
				rss = mib(p.RSS)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.2f\t%.1f µs\t%.0f%%\t%s\t%s\n", p.Name, pid, p.CPUSeconds, p.CPUMicrosPerTk, p.CPUPercent, peak, rss)
		}
		if tp := r.Throughput; tp != nil && tp.AllCPUMicrosPerTk > 0 {
			fmt.Fprintf(tw, "  all + bench client\t\t\t%.1f µs\n", tp.AllCPUMicrosPerTk)
		}
		tw.Flush()
	}
	if s := r.Sims; s != nil {
		fmt.Fprintf(&b, "\nSimulated managers: %d idle, heartbeat interval %gs, measured for %.1fs (registered in %.1fs)\n",
			s.Managers, s.IntervalSeconds, s.Seconds, s.RegisterSeconds)
		fmt.Fprintf(&b, "  interchange: %.2f%% of one core, RSS %s", s.InterchangeCPUPercent, mib(s.InterchangeRSS))
		if s.InterchangeHWM > 0 {
			fmt.Fprintf(&b, " (peak %s)", mib(s.InterchangeHWM))
		}
		fmt.Fprintf(&b, "; forwarder: %.2f%% of one core\n", s.ForwarderCPUPercent)
		link := func(name string, lr LinkRates) {
			keys := make([]string, 0, len(lr.By))
			for k := range lr.By {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%s %.1f", k, lr.By[k])
			}
			fmt.Fprintf(&b, "  %-26s %8.1f msgs/s  (%s)\n", name, lr.Total, strings.Join(parts, ", "))
		}
		link("managers -> interchange", s.ManagersToInterchange)
		link("interchange -> managers", s.InterchangeToManagers)
		link("interchange -> forwarder", s.InterchangeToForwarder)
		link("forwarder -> interchange", s.ForwarderToInterchange)
		fmt.Fprintf(&b, "  per manager: %.2f msgs/s both ways; managers lost %g, re-registrations %d, send failures %d\n",
			s.PerManagerPerSecond, s.ManagersLost, s.SimReconnects, s.SimSendFailures)
		keys := make([]string, 0, len(s.InterchangeCounters))
		for k := range s.InterchangeCounters {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s +%g", k, s.InterchangeCounters[k])
		}
		fmt.Fprintf(&b, "  interchange /metrics over the window: %s\n", strings.Join(parts, ", "))
	}
	if q := r.Queued; q != nil {
		fmt.Fprintf(&b, "\nQueued: %d tasks at an interchange with no managers (accepted in %.1fs, all queued after %.1fs)\n",
			q.Tasks, q.SubmitSeconds, q.QueueSeconds)
		mem := func(name string, m MemPerTask) {
			fmt.Fprintf(&b, "  %-12s RSS %s -> %s: %.0f bytes/task", name, mib(m.RSSBefore), mib(m.RSSAfter), m.RSSPerTask)
			if m.AnonPerTask != 0 {
				fmt.Fprintf(&b, " (anonymous %.0f, mapped files %s)", m.AnonPerTask, mib(m.FileRSSAfter))
			}
			fmt.Fprintf(&b, "; Go heap in use %.0f bytes/task\n", m.HeapPerTask)
		}
		mem("interchange", q.Interchange)
		mem("forwarder", q.Forwarder)
	}
	if len(r.Targets) > 0 {
		b.WriteString("\nTargets\n")
		for _, t := range r.Targets {
			mark := "MET   "
			if !t.Met {
				mark = "MISSED"
			}
			fmt.Fprintf(&b, "  %s %-36s %.3g %s (goal %s)", mark, t.Name, t.Value, t.Unit, t.Goal)
			if t.Remark != "" {
				fmt.Fprintf(&b, "; %s", t.Remark)
			}
			b.WriteString("\n")
		}
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "\nstate and logs kept in %s\n", r.Dir)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"
)

// startProfile writes a CPU profile of the whole run to
// $SWITCHYARD_CPUPROFILE/<command>.<pid>.pprof when that variable names a
// directory, and with $SWITCHYARD_HEAPPROFILE the heap profile of the
// moment the heap was largest to <command>.<pid>.heap there. They are
// inherited by child processes, so one setting profiles every process of
// 'endpoint up' or 'bench' and the CLI commands alike.
func startProfile(args []string) func() {
	name := "switchyard"
	if len(args) > 0 {
		name = filepath.Base(args[0])
	}
	if dir := os.Getenv("SWITCHYARD_HEAPPROFILE"); dir != "" {
		go peakHeap(filepath.Join(dir, fmt.Sprintf("%s.%d.heap", name, os.Getpid())))
	}
	dir := os.Getenv("SWITCHYARD_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.%d.pprof", name, os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchyard: SWITCHYARD_CPUPROFILE:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "switchyard: SWITCHYARD_CPUPROFILE:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// peakHeap writes the heap profile to path whenever the heap in use is
// larger than at the last write, checking every 200ms.
func peakHeap(path string) {
	var most uint64
	var ms runtime.MemStats
	for range time.Tick(200 * time.Millisecond) {
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse <= most+most/10 {
			continue
		}
		most = ms.HeapInuse
		if f, err := os.Create(path); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
}

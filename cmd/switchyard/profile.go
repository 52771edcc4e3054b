package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole run to
// $SWITCHYARD_CPUPROFILE/<command>.<pid>.pprof when that variable names a
// directory. It is inherited by child processes, so one setting profiles
// every process of 'endpoint up' or 'bench' and the CLI commands alike.
func startProfile(args []string) func() {
	dir := os.Getenv("SWITCHYARD_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	name := "switchyard"
	if len(args) > 0 {
		name = filepath.Base(args[0])
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

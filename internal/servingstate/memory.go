package servingstate

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// MemoryPercent is this process's memory in use as a share of its cgroup
// limit when one is set, else of host memory.
func MemoryPercent() float64 {
	if used, limit, ok := cgroupMemory(); ok && limit > 0 {
		return 100 * float64(used) / float64(limit)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	total := hostMemory()
	if total == 0 {
		return 0
	}
	return 100 * float64(ms.Sys) / float64(total)
}

func cgroupMemory() (used, limit uint64, ok bool) {
	lb, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0, 0, false
	}
	ls := strings.TrimSpace(string(lb))
	if ls == "max" {
		return 0, 0, false
	}
	limit, err = strconv.ParseUint(ls, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	ub, err := os.ReadFile("/sys/fs/cgroup/memory.current")
	if err != nil {
		return 0, 0, false
	}
	used, err = strconv.ParseUint(strings.TrimSpace(string(ub)), 10, 64)
	return used, limit, err == nil
}

func hostMemory() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(fs[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

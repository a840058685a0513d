package host

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// StatusKB is a kB field of /proc/PID/status, such as "VmRSS" (resident
// memory now) or "VmHWM" (its peak); 0 when the process or field is gone.
func StatusKB(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return statusKB(string(b), field)
}

func statusKB(status, field string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}

// Children are the process's direct children, from every one of its
// threads' /proc/PID/task/TID/children.
func Children(pid int) []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, c := range strings.Fields(string(b)) {
			if cp, err := strconv.Atoi(c); err == nil {
				pids = append(pids, cp)
			}
		}
	}
	return pids
}

// TreeRSS is the resident memory (bytes) of the process and of all its
// living descendants, summed: a proxy's nft or iptables-restore children
// hold memory on its behalf while they run.
func TreeRSS(pid int) int64 {
	sum := StatusKB(pid, "VmRSS") * 1024
	for _, c := range Children(pid) {
		sum += TreeRSS(c)
	}
	return sum
}

// CPUSeconds is utime+stime+cutime+cstime of the process and of its living
// descendants (/proc/PID/stat fields 14–17, in clock ticks of 1/100 s): a
// child such as nft or iptables-restore counts while it runs and, through
// cutime/cstime, once it has been waited for.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	sec := float64(statTicks(string(b))) / 100
	for _, c := range Children(pid) {
		sec += CPUSeconds(c)
	}
	return sec
}

// statTicks sums fields 14–17 of a /proc/PID/stat line. The fields are
// counted after the last ')': the command name in field 2 may hold spaces
// and parentheses.
func statTicks(stat string) int64 {
	i := strings.LastIndexByte(stat, ')')
	f := strings.Fields(stat[i+2:]) // f[0] is field 3 (state)
	var ticks int64
	for _, k := range []int{11, 12, 13, 14} { // fields 14..17
		v, _ := strconv.ParseInt(f[k], 10, 64)
		ticks += v
	}
	return ticks
}

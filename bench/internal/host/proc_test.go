package host

import (
	"os"
	"testing"
)

func TestStatusKB(t *testing.T) {
	status := "Name:\tkube-proxy\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
	for field, want := range map[string]int64{"VmRSS": 40960, "VmHWM": 51200, "VmSwap": 0, "Name": 0} {
		if got := statusKB(status, field); got != want {
			t.Errorf("statusKB(%s) = %d, want %d", field, got, want)
		}
	}
}

func TestStatTicks(t *testing.T) {
	// A command name with a space and a ')' must not shift the fields.
	stat := "4242 (nft )x) S 1 4242 4242 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 123 456 789"
	if got := statTicks(stat); got != 11+22+33+44 {
		t.Errorf("statTicks = %d, want 110", got)
	}
}

// This process is alive and resident: the readers must find it.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	if StatusKB(pid, "VmRSS") <= 0 || TreeRSS(pid) <= 0 {
		t.Errorf("no resident memory for this process")
	}
	if StatusKB(1<<30, "VmRSS") != 0 || CPUSeconds(1<<30) != 0 {
		t.Errorf("a missing process should read as 0")
	}
}

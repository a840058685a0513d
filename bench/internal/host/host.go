// Package host is what the benchmarks ask of the machine they run on:
// commands, named network namespaces, the kernel's release, and (proc.go)
// the memory and CPU time of a process read from /proc.
package host

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Sh runs a command to completion; on failure the error carries the command
// line and its combined output, since that is all a benchmark run leaves to
// diagnose a failed setup step.
func Sh(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// NetnsAdd makes the named network namespace with `ip netns add`, so that it
// is visible to `ip netns exec` and iperf3 runs, as the benchmarks' own
// namespaces have always been.
func NetnsAdd(name string) error { return Sh("ip", "netns", "add", name) }

// NetnsDel removes the named network namespace. It is a best-effort clean-up
// on the way out, so its error is dropped.
func NetnsDel(name string) { exec.Command("ip", "netns", "del", name).Run() }

// InNetns is this program again, with the same arguments, run by `ip netns
// exec` inside the named namespace, with env=1 in its environment so that it
// knows it is the inner run, and its output passed through.
func InNetns(name, env string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

// Kernel is the running kernel's release, as `uname -r` prints it.
func Kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

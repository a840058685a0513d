// Package pause is the program of a pod's sandbox container: it does nothing
// but hold the pod's namespaces open, reap the zombies that are reparented to
// it (it is PID 1 when the pod shares one PID namespace), and exit with
// status 0 when the runtime stops it with SIGINT or SIGTERM.
package pause

import (
	"errors"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/version"
)

// Main runs the pause program and returns its exit status.
func Main(args []string) int {
	if len(args) == 1 && (args[0] == "-v" || args[0] == "--version") {
		fmt.Println("sluice-pause", version.Version)
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "usage: sluice-pause [--version]")
		return 2
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	if os.Getpid() != 1 {
		// Not the namespace's init: become a subreaper, so that orphans
		// below us are still reparented to us and reaped here.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	Reap()
	for s := range sigs {
		if s == unix.SIGCHLD {
			Reap()
			continue
		}
		return 0
	}
	return 0
}

// Reap collects every child that has exited, without blocking, and returns
// their process IDs.
func Reap() []int {
	var pids []int
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return pids
		}
		pids = append(pids, pid)
	}
}

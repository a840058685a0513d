// Package netns runs code and programs inside Linux network namespaces.
//
// A network namespace is a property of an OS thread, not of a process, so Go
// code that enters one must own its thread. Do locks a fresh goroutine to its
// thread, switches that thread into the namespace and never unlocks it: when
// the goroutine returns, the Go runtime throws the thread away instead of
// handing a thread in a foreign namespace to other goroutines. Sockets keep
// the namespace they were created in, so a connection dialled inside Do can be
// used from any goroutine afterwards.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunDir is where iproute2 keeps named network namespaces (`ip netns add`).
const RunDir = "/var/run/netns"

// Path returns the bind-mount path of the named namespace.
func Path(name string) string { return filepath.Join(RunDir, name) }

// Exists reports whether the named namespace's bind mount is present.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Do runs fn on a dedicated OS thread that has joined the network namespace
// at path. The thread is discarded afterwards.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: see the package comment.
		f, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Exec replaces the current process with argv[0] running inside the network
// namespace at path. Only the network namespace changes: mounts stay those of
// the caller, so namespaces that the new program creates with `ip netns add`
// are visible to everyone (unlike `ip netns exec`, which gives its child a
// private mount namespace).
func Exec(path string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	f.Close()
	// execve from the locked thread: the new image inherits this thread's
	// namespace; the runtime's other threads are destroyed by the kernel.
	return syscall.Exec(bin, argv, os.Environ())
}

// Dial connects from inside the network namespace at path.
func Dial(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(path, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Inode identifies a network namespace.
func Inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Pids lists the processes whose network namespace is the one at path.
func Pids(path string) ([]int, error) {
	ino, err := Inode(path)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if st.Ino == ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// RunDirMounted reports whether RunDir is a mount point. `ip netns add`
// makes it one (a shared bind mount of itself) the first time it runs, and
// nothing removes it afterwards.
func RunDirMounted() bool {
	real, err := filepath.EvalSymlinks(RunDir)
	if err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == real {
			return true
		}
	}
	return false
}

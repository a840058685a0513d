// Package proc starts the lab's long-running processes detached from the
// command that started them, and finds and stops them again later.
//
// Each process gets a pid file holding its pid and its start time in clock
// ticks since boot (field 22 of /proc/PID/stat). The pair identifies the
// process even after the pid is reused, so `down` never signals a stranger.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec describes one detached process.
type Spec struct {
	Name    string   // for messages
	Argv    []string // program and arguments
	Env     []string // extra environment, appended to ours
	Dir     string   // working directory; empty for the caller's
	LogFile string   // stdout and stderr, appended
	PidFile string
}

// Start launches the process in its own session (so it survives the caller
// and its terminal) and records it in its pid file.
func Start(s Spec) (int, error) {
	if err := os.MkdirAll(filepath.Dir(s.LogFile), 0o755); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(s.PidFile), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	pid := cmd.Process.Pid
	st, err := startTime(pid)
	if err != nil {
		cmd.Process.Kill()
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	if err := os.WriteFile(s.PidFile, fmt.Appendf(nil, "%d %d\n", pid, st), 0o644); err != nil {
		cmd.Process.Kill()
		return 0, err
	}
	// Reap it if it dies while we are still around; once we exit, init does.
	go cmd.Wait()
	return pid, nil
}

// Running returns the pid recorded in pidFile if that very process is still
// alive, or 0.
func Running(pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, err1 := strconv.Atoi(f[0])
	st, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	now, err := startTime(pid)
	if err != nil || now != st {
		return 0
	}
	if zombie(pid) {
		return 0
	}
	return pid
}

// Stop sends SIGTERM to the recorded process, waits up to grace for it to
// exit, then SIGKILLs it, and removes the pid file.
func Stop(pidFile string, grace time.Duration) error {
	defer os.Remove(pidFile)
	pid := Running(pidFile)
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if Running(pidFile) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if Running(pidFile) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %d (%s) did not exit after SIGKILL", pid, pidFile)
}

// startTime reads the start time of pid in clock ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after the last ')'
	// are fixed. Start time is field 22, the 20th after the ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && (s[i+2] == 'Z' || s[i+2] == 'X')
}

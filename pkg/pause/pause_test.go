package pause

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_PAUSE_TEST_MAIN") == "1" {
		os.Exit(Main(nil))
	}
	os.Exit(m.Run())
}

// TestReap starts children that exit at once and checks that Reap collects
// them (an unreaped child stays a zombie and Reap would not return its pid).
func TestReap(t *testing.T) {
	var want []int
	for range 3 {
		c := exec.Command("/bin/true")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		want = append(want, c.Process.Pid)
	}
	var got []int
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		got = append(got, Reap()...)
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("reaped %v, want %v", got, want)
	}
	for _, p := range want {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("process %d still exists after Reap (err %v)", p, err)
		}
	}
}

// TestExitOnSignal runs Main in a child process and checks that SIGTERM and
// SIGINT each end it with status 0, and that it keeps running until then.
func TestExitOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c := exec.Command(os.Args[0], "-test.run=^$")
			c.Env = append(os.Environ(), "SLUICE_PAUSE_TEST_MAIN=1")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Wait() }()
			// Give Main time to start listening (the Go runtime catches
			// SIGTERM from the start, so /proc shows no difference), and
			// check that it does not exit by itself meanwhile.
			select {
			case err := <-done:
				t.Fatalf("pause exited before it was signalled: %v", err)
			case <-time.After(500 * time.Millisecond):
			}
			if err := c.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause after %v: %v, want exit status 0", sig, err)
				}
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				t.Fatalf("pause did not exit after %v", sig)
			}
		})
	}
}

//go:build e2e

// End-to-end tests in the lab: a 3-node lab with the real control plane and
// Sluice's controller and agents, driven through the sluice-lab command as a
// user drives it. Needs root. Each lab lives in a temporary state directory
// with its own namespace prefix and API port, so it never touches a lab the
// user runs, and is always taken down, also when tests fail.
package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/lab"
)

var (
	tmpRoot string
	binDir  string
	labBin  string
	sl      *labEnv // the main lab: 3 nodes, Sluice pod network
)

// labEnv is one lab under test.
type labEnv struct {
	stateDir string
	cfg      *lab.Config
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e tests need root (network namespaces)")
		os.Exit(1)
	}
	var err error
	if tmpRoot, err = os.MkdirTemp("", "sluice-e2e-"); err != nil {
		panic(err)
	}
	binDir = filepath.Join(tmpRoot, "bin")
	labBin = filepath.Join(binDir, "sluice-lab")
	build := exec.Command("go", "build", "-o", binDir+"/", "github.com/sluice-net/sluice/cmd/...")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	sl = &labEnv{stateDir: filepath.Join(tmpRoot, "lab")}
	code := func() int {
		defer sl.down()
		if err := sl.up("--nodes", "3"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	if err := sl.checkNothingLeft(); err != nil {
		fmt.Fprintln(os.Stderr, "after down:", err)
		code = 1
	}
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// startLab brings up another lab for one test and takes it down after.
func startLab(t *testing.T, name string, args ...string) *labEnv {
	t.Helper()
	e := &labEnv{stateDir: filepath.Join(tmpRoot, name)}
	t.Cleanup(func() {
		e.down()
		if err := e.checkNothingLeft(); err != nil {
			t.Errorf("after down: %v", err)
		}
	})
	if err := e.up(args...); err != nil {
		t.Fatal(err)
	}
	return e
}

// addNode grows the lab by one node, whatever its size, and returns the new node's name
// once it has a HostSubnet. Tests that join or delete a node add one of their own, so that
// they do not depend on the order the tests run in.
func (e *labEnv) addNode(t *testing.T) string {
	t.Helper()
	cfg, err := lab.LoadConfig(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Nodes + 1
	node := fmt.Sprintf("node%d", n)
	if out := e.must(t, "up", "--nodes", fmt.Sprint(n)); !strings.Contains(out, "kubelet-"+node) {
		t.Fatalf("up --nodes %d did not start %s:\n%s", n, node, out)
	}
	if e.cfg, err = lab.LoadConfig(e.stateDir); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "HostSubnet for "+node, func() error {
		if _, ok := e.hostSubnets(t)[node]; !ok {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	return node
}

func (e *labEnv) up(args ...string) error {
	t0 := time.Now()
	out, code := e.sh(append([]string{"up", "--api-port", fmt.Sprint(freePort())}, args...)...)
	fmt.Printf("sluice-lab up %s (%s):\n%s\n", strings.Join(args, " "), time.Since(t0).Round(time.Second), out)
	if code != 0 {
		e.dumpLogs()
		return fmt.Errorf("sluice-lab up: exit %d", code)
	}
	var err error
	e.cfg, err = lab.LoadConfig(e.stateDir)
	return err
}

// sh runs sluice-lab against the lab and returns combined output and exit
// status.
func (e *labEnv) sh(args ...string) (string, int) {
	cmd := exec.Command(labBin, append([]string{"--state-dir", e.stateDir}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return b.String(), ee.ExitCode()
	}
	if err != nil {
		return b.String() + err.Error(), -1
	}
	return b.String(), 0
}

func (e *labEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := e.sh(args...)
	if code != 0 {
		t.Fatalf("sluice-lab %s: exit %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (e *labEnv) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return e.must(t, append([]string{"kubectl", "--"}, args...)...)
}

func (e *labEnv) down() {
	out, code := e.sh("down")
	fmt.Printf("sluice-lab down: exit %d\n%s\n", code, out)
}

func (e *labEnv) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(e.stateDir, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Printf("=== %s (tail)\n%s\n", l, b)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// checkNothingLeft verifies that down removed every namespace, process and
// file of the lab.
func (e *labEnv) checkNothingLeft() error {
	if e.cfg == nil {
		return nil
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, e.cfg.Prefix+"-") {
			return fmt.Errorf("namespace %q left behind", l)
		}
	}
	if _, err := os.Stat(e.stateDir); !os.IsNotExist(err) {
		return fmt.Errorf("state directory %s left behind", e.stateDir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(e.stateDir+"/")) || bytes.HasSuffix(bytes.TrimRight(b, "\x00"), []byte(e.stateDir)) {
			return fmt.Errorf("process %s left behind: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	return nil
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

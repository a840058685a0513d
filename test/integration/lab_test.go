//go:build integration

// Integration tests of the lab's building blocks on the real kernel: network
// namespaces, the test server across a veth, the loopback forwarder, detached
// processes. Needs root; every namespace a test makes is removed by the test,
// also when it fails.
package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubelet"
	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/lab/testserver"
	"github.com/sluice-net/sluice/pkg/netns"
)

var labBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (network namespaces)")
		os.Exit(1)
	}
	dir, _ := os.MkdirTemp("", "sluice-it-")
	labBin = filepath.Join(dir, "sluice-lab")
	if out, err := exec.Command("go", "build", "-o", labBin, "github.com/sluice-net/sluice/cmd/sluice-lab").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	mounted := netns.RunDirMounted()
	code := m.Run()
	// `ip netns add` makes /run/netns a mount point; leave none behind.
	if ents, _ := os.ReadDir(netns.RunDir); !mounted && netns.RunDirMounted() && len(ents) == 0 {
		syscall.Unmount(netns.RunDir, syscall.MNT_DETACH)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// pair makes two namespaces joined by a veth, 10.99.0.1 and 10.99.0.2.
func pair(t *testing.T) (a, b string) {
	t.Helper()
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1e6)
	a, b = "sluice-it-a"+suffix, "sluice-it-b"+suffix
	t.Cleanup(func() {
		for _, n := range []string{a, b} {
			if pids, _ := netns.Pids(netns.Path(n)); len(pids) > 0 {
				for _, p := range pids {
					if pr, err := os.FindProcess(p); err == nil {
						pr.Kill()
					}
				}
			}
			exec.Command("ip", "netns", "del", n).Run()
		}
	})
	ip(t, "netns", "add", a)
	ip(t, "netns", "add", b)
	ip(t, "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b)
	ip(t, "-n", a, "addr", "add", "10.99.0.1/24", "dev", "eth0")
	ip(t, "-n", b, "addr", "add", "10.99.0.2/24", "dev", "eth0")
	for _, n := range []string{a, b} {
		ip(t, "-n", n, "link", "set", "eth0", "up")
		ip(t, "-n", n, "link", "set", "lo", "up")
	}
	return a, b
}

func probeFrom(ns, proto, addr string) (string, error) {
	var line string
	err := netns.Do(netns.Path(ns), func() error {
		var err error
		line, err = testserver.Probe(context.Background(), proto, addr, time.Second)
		return err
	})
	return line, err
}

func TestServerAcrossNamespaces(t *testing.T) {
	a, b := pair(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "srv.pid")
	_, err := proc.Start(proc.Spec{
		Name:    "srv",
		Argv:    []string{labBin, "nsexec", netns.Path(a), "--", labBin, "serve", "--name=srv-a", "--tcp=80,81", "--udp=80"},
		LogFile: filepath.Join(dir, "srv.log"), PidFile: pidFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Stop(pidFile, time.Second)
	var line string
	for range 100 {
		if line, err = probeFrom(b, "tcp", "10.99.0.1:80"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(line, "srv-a 10.99.0.2:") {
		t.Fatalf("tcp from b: %q %v", line, err)
	}
	for _, c := range []struct{ proto, addr string }{{"tcp", "10.99.0.1:81"}, {"udp", "10.99.0.1:80"}} {
		if line, err := probeFrom(b, c.proto, c.addr); err != nil || !strings.HasPrefix(line, "srv-a 10.99.0.2:") {
			t.Errorf("%s %s from b: %q %v", c.proto, c.addr, line, err)
		}
	}
	// Not served: refused, not answered.
	if line, err := probeFrom(b, "tcp", "10.99.0.1:82"); err == nil {
		t.Errorf("tcp to an unserved port answered %q", line)
	}
	// The server really runs in namespace a: from the host, 10.99.0.1 does not exist.
	if _, err := testserver.Probe(context.Background(), "tcp", "10.99.0.1:80", 300*time.Millisecond); err == nil {
		t.Error("the host reached a server inside a namespace")
	}
	// The probe command's contract: exit 0 and the line; exit 1 otherwise.
	out, err := exec.Command(labBin, "nsexec", netns.Path(b), "--", labBin, "probe", "tcp", "10.99.0.1:80").Output()
	if err != nil || !strings.HasPrefix(string(out), "srv-a 10.99.0.2:") {
		t.Errorf("sluice-lab probe: %q %v", out, err)
	}
	if err := exec.Command(labBin, "nsexec", netns.Path(b), "--", labBin, "probe", "tcp", "10.99.0.1:82", "--timeout=300ms").Run(); err == nil {
		t.Error("sluice-lab probe of an unserved port exited 0")
	}
	// Pids finds the server inside a; Stop ends it.
	pids, _ := netns.Pids(netns.Path(a))
	if len(pids) != 1 {
		t.Errorf("processes in namespace a: %v, want the server", pids)
	}
	if err := proc.Stop(pidFile, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if proc.Running(pidFile) != 0 {
		t.Error("server still running after Stop")
	}
}

func TestForwarder(t *testing.T) {
	a, _ := pair(t)
	srvDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A TCP server inside a, listening on 10.99.0.1 only.
	var ln net.Listener
	if err := netns.Do(netns.Path(a), func() error {
		var err error
		ln, err = net.Listen("tcp", "10.99.0.1:6443")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				srvDone <- err
				return
			}
			fmt.Fprintf(c, "api %s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	defer ln.Close()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	listen := l.Addr().String()
	l.Close()
	go lab.Forward(ctx, listen, netns.Path(a), "10.99.0.1:6443")
	var line string
	var err error
	for range 50 {
		if line, err = testserver.Probe(ctx, "tcp", listen, time.Second); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(line, "api 10.99.0.1:") {
		t.Fatalf("through the forwarder: %q %v (want the server to see a connection from inside a)", line, err)
	}
}

func TestSandboxes(t *testing.T) {
	s := kubelet.IPNetns{}
	name := fmt.Sprintf("sluice-it-sb%d", time.Now().UnixNano()%1e6)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ctx := context.Background()
	path, err := s.Create(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.Create(ctx, name); err != nil || again != path {
		t.Errorf("second Create: %q %v", again, err)
	}
	names, _ := s.List(ctx)
	found := false
	for _, n := range names {
		found = found || n == name
	}
	if !found {
		t.Errorf("List does not show %s: %v", name, names)
	}
	// Loopback is up inside: a server on 127.0.0.1 answers.
	err = netns.Do(path, func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Errorf("loopback in a new sandbox: %v", err)
	}
	if err := s.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if netns.Exists(name) {
		t.Error("namespace exists after Delete")
	}
	if err := s.Delete(ctx, name); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

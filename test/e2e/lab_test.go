//go:build e2e

// End-to-end tests of sluice-lab itself: a 3-node lab with the real control
// plane, driven through the sluice-lab command exactly as a user drives it.
// Needs root. The lab lives in a temporary state directory with its own
// namespace prefix and API port, so it never touches a lab the user runs.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

var (
	labBin   string
	stateDir string
	cfg      *lab.Config
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e tests need root (network namespaces)")
		os.Exit(1)
	}
	tmp, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		panic(err)
	}
	labBin = filepath.Join(tmp, "sluice-lab")
	build := exec.Command("go", "build", "-o", labBin, "github.com/sluice-net/sluice/cmd/sluice-lab")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sluice-lab:", err)
		os.Exit(1)
	}
	stateDir = filepath.Join(tmp, "lab")
	code := func() int {
		// Always tear down, also when a test fails or up itself fails.
		defer down()
		port := freePort()
		t0 := time.Now()
		out, code := sh("up", "--nodes", "3", "--api-port", fmt.Sprint(port))
		fmt.Printf("sluice-lab up (%s):\n%s\n", time.Since(t0).Round(time.Second), out)
		if code != 0 {
			dumpLogs()
			return 1
		}
		if cfg, err = lab.LoadConfig(stateDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	if code == 0 {
		if err := checkNothingLeft(); err != nil {
			fmt.Fprintln(os.Stderr, "after down:", err)
			code = 1
		}
	}
	os.RemoveAll(tmp)
	os.Exit(code)
}

// sh runs sluice-lab against the test lab and returns combined output and
// exit status.
func sh(args ...string) (string, int) {
	cmd := exec.Command(labBin, append([]string{"--state-dir", stateDir}, args...)...)
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

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := sh(args...)
	if code != 0 {
		t.Fatalf("sluice-lab %s: exit %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return must(t, append([]string{"kubectl", "--"}, args...)...)
}

func down() {
	out, code := sh("down")
	fmt.Printf("sluice-lab down: exit %d\n%s\n", code, out)
}

func dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(stateDir, "logs", "*.log"))
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
func checkNothingLeft() error {
	if cfg == nil {
		return nil
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, cfg.Prefix+"-") {
			return fmt.Errorf("namespace %q left behind", l)
		}
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		return fmt.Errorf("state directory %s left behind", stateDir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(stateDir)) {
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

func TestControlPlane(t *testing.T) {
	st := must(t, "status")
	for _, n := range []string{"node1", "node2", "node3"} {
		if !strings.Contains(st, n+"  Ready") {
			t.Errorf("status does not show %s Ready:\n%s", n, st)
		}
	}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "external", "kubelet-node1"} {
		if !strings.Contains(st, c) || strings.Contains(st, c+"  stopped") {
			t.Errorf("status: component %s not running:\n%s", c, st)
		}
	}
	if !strings.Contains(st, cfg.External().Addr.String()) {
		t.Errorf("status does not show the external host's address %s", cfg.External().Addr)
	}
	if got := strings.TrimSpace(kubectl(t, "get", "--raw", "/readyz")); got != "ok" {
		t.Fatalf("/readyz = %q, want ok", got)
	}
	// RBAC is on: an unprivileged service account may not list secrets.
	if out, code := sh("kubectl", "--", "auth", "can-i", "list", "secrets", "--as=system:serviceaccount:default:default"); code == 0 || !strings.Contains(out, "no") {
		t.Errorf("RBAC: default service account may list secrets: %s", out)
	}
	// Service-account tokens are issued.
	if tok := strings.TrimSpace(kubectl(t, "create", "token", "default")); strings.Count(tok, ".") != 2 {
		t.Errorf("token %q is not a JWT", tok)
	}
	// Controllers: service account and EndpointSlice in a new namespace.
	kubectl(t, "create", "namespace", "e2e-ctl")
	eventually(t, 30*time.Second, "service account controller", func() error {
		_, code := sh("kubectl", "--", "-n", "e2e-ctl", "get", "sa", "default")
		if code != 0 {
			return fmt.Errorf("no default service account")
		}
		return nil
	})
	kubectl(t, "-n", "e2e-ctl", "create", "service", "clusterip", "web", "--tcp=80:8080")
	eventually(t, 30*time.Second, "EndpointSlice controller", func() error {
		out, _ := sh("kubectl", "--", "-n", "e2e-ctl", "get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name")
		if !strings.Contains(out, "endpointslice") {
			return fmt.Errorf("no EndpointSlice for service web: %s", out)
		}
		return nil
	})
	// Garbage collector: a Deployment's ReplicaSet goes with it.
	kubectl(t, "-n", "e2e-ctl", "create", "deployment", "gc", "--image=x", "--replicas=0")
	eventually(t, 30*time.Second, "ReplicaSet created", func() error {
		out, _ := sh("kubectl", "--", "-n", "e2e-ctl", "get", "rs", "-o", "name")
		if !strings.Contains(out, "replicaset") {
			return fmt.Errorf("no ReplicaSet")
		}
		return nil
	})
	kubectl(t, "-n", "e2e-ctl", "delete", "deployment", "gc", "--cascade=background")
	eventually(t, 60*time.Second, "garbage collector", func() error {
		out, _ := sh("kubectl", "--", "-n", "e2e-ctl", "get", "rs", "-o", "name")
		if strings.Contains(out, "replicaset") {
			return fmt.Errorf("ReplicaSet still there: %s", out)
		}
		return nil
	})
	// Namespace controller: deleting a namespace completes.
	kubectl(t, "delete", "namespace", "e2e-ctl", "--wait=true", "--timeout=90s")
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"up", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"exec", "default/no-such-pod", "--", "true"}, "pod default/no-such-pod does not exist"},
		{[]string{"exec", "node/node9", "--", "true"}, `node "node9": no such node`},
		{[]string{"up", "--nodes", "2"}, "--nodes 2: the lab at"},
		{[]string{"probe", "tcp", "127.0.0.1:1", "--timeout", "200ms"}, "sluice-lab probe: tcp 127.0.0.1:1"},
		{[]string{"matrix", "--protocol", "icmp"}, `--protocol "icmp"`},
	}
	for _, c := range cases {
		out, code := sh(c.args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("sluice-lab %s: exit %d, output %q; want non-zero and %q", strings.Join(c.args, " "), code, out, c.want)
		}
		if n := strings.Count(strings.TrimSpace(out), "\n"); n > 0 {
			t.Errorf("sluice-lab %s: error is %d lines, want one:\n%s", strings.Join(c.args, " "), n+1, out)
		}
	}
	// A second up on the running lab is a no-op.
	if out := must(t, "up"); !strings.Contains(out, "already running") {
		t.Errorf("second up did not report a running lab:\n%s", out)
	}
	// A port already taken: a new lab refuses before making anything.
	other := filepath.Join(filepath.Dir(stateDir), "other")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command(labBin, "up", "--state-dir", other, "--api-port", fmt.Sprint(port))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already in use") {
		t.Errorf("up with a taken port: err %v, output %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(other, "lab.json")); err == nil {
		t.Errorf("up with a taken port left a lab behind in %s", other)
		exec.Command(labBin, "down", "--state-dir", other).Run()
	}
	// Not root: a clear refusal.
	if setpriv, err := exec.LookPath("setpriv"); err == nil {
		out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", labBin, "up", "--state-dir", other).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "must run as root") {
			t.Errorf("up as nobody: err %v, output %s", err, out)
		}
	}
}

type podStatus struct {
	Metadata struct{ Name, UID string }
	Spec     struct{ NodeName string }
	Status   struct {
		Phase      string
		PodIP      string
		Conditions []struct{ Type, Status, Reason, Message string }
	}
}

func getPod(t *testing.T, ns, name string) podStatus {
	t.Helper()
	var p podStatus
	if err := json.Unmarshal([]byte(kubectl(t, "-n", ns, "get", "pod", name, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p podStatus) cond(typ string) (string, string) {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Message
		}
	}
	return "", ""
}

const podTmpl = `apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: sluice-lab/testserver
    ports:
    - {name: http, containerPort: 80}
    - {name: dgram, containerPort: 81, protocol: UDP}
    readinessProbe:
      tcpSocket: {port: %s}
      periodSeconds: 1
`

func applyPod(t *testing.T, ns, name, node, probePort string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name+".yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(podTmpl, name, ns, node, probePort)), 0o644)
	kubectl(t, "apply", "-f", f)
}

// TestPods runs pods first without any pod network (they must fail clearly),
// then with the reference bridge + host-local CNI plugins installed on node1.
func TestPods(t *testing.T) {
	ns := "e2e-pods"
	kubectl(t, "create", "namespace", ns)
	eventually(t, 30*time.Second, "default service account", func() error {
		if _, code := sh("kubectl", "--", "-n", ns, "get", "sa", "default"); code != 0 {
			return fmt.Errorf("missing")
		}
		return nil
	})
	applyPod(t, ns, "a", "node1", "http")
	eventually(t, 30*time.Second, "pod a fails clearly without a CNI configuration", func() error {
		p := getPod(t, ns, "a")
		st, msg := p.cond("PodReadyToStartContainers")
		if p.Status.Phase != "Pending" || st != "False" || !strings.Contains(msg, "no CNI network configuration in") {
			return fmt.Errorf("phase %s, PodReadyToStartContainers %s %q", p.Status.Phase, st, msg)
		}
		return nil
	})
	ev := kubectl(t, "-n", ns, "get", "events", "--field-selector", "reason=FailedCreatePodSandBox", "-o", "name")
	if !strings.Contains(ev, "event") {
		t.Errorf("no FailedCreatePodSandBox event for pod a")
	}

	// Install the reference plugins on node1, as a network's DaemonSet would.
	plugins, err := kubebuild.EnsureReferencePlugins(context.Background(), os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		b, err := os.ReadFile(filepath.Join(plugins, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.CNIBinDir("node1"), p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ipamDir := filepath.Join(cfg.NodeDir("node1"), "host-local")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"e2e-bridge","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.1.0/24"}]],"dataDir":%q}}]}`, ipamDir)
	if err := os.WriteFile(filepath.Join(cfg.CNIConfDir("node1"), "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	applyPod(t, ns, "b", "node1", "http")
	applyPod(t, ns, "unready", "node1", "82") // probes a port nobody serves
	for _, name := range []string{"a", "b"} {
		eventually(t, 60*time.Second, "pod "+name+" Running and Ready", func() error {
			p := getPod(t, ns, name)
			if st, _ := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" || !strings.HasPrefix(p.Status.PodIP, "10.88.1.") {
				return fmt.Errorf("phase %s ready %s ip %q", p.Status.Phase, st, p.Status.PodIP)
			}
			return nil
		})
	}
	eventually(t, 30*time.Second, "pod unready Running", func() error {
		if p := getPod(t, ns, "unready"); p.Status.Phase != "Running" {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	if st, _ := getPod(t, ns, "unready").cond("Ready"); st != "False" {
		t.Errorf("pod unready, whose probe port is not served, is Ready=%s", st)
	}
	a, b := getPod(t, ns, "a"), getPod(t, ns, "b")

	// Real packets: a → b over TCP and UDP; the server names itself and sees a's address.
	for _, proto := range []struct{ p, port string }{{"tcp", "80"}, {"udp", "81"}} {
		out := must(t, "exec", ns+"/a", "--", labBin, "probe", proto.p, b.Status.PodIP+":"+proto.port)
		if !strings.HasPrefix(out, "b "+a.Status.PodIP+":") {
			t.Errorf("a → b %s: got %q, want \"b %s:PORT\"", proto.p, out, a.Status.PodIP)
		}
	}
	// The node reaches its pod.
	if out := must(t, "exec", "node/node1", "--", labBin, "probe", "tcp", a.Status.PodIP+":80"); !strings.HasPrefix(out, "a ") {
		t.Errorf("node1 → a: %q", out)
	}
	// The matrix sees the truth: a and b reach each other and themselves,
	// and unready (which serves port 80 too) as well.
	var m lab.Matrix
	if err := json.Unmarshal([]byte(must(t, "matrix", "-n", ns, "--json")), &m); err != nil {
		t.Fatal(err)
	}
	if ok, total := m.Reachable(); total != 9 || ok != 9 {
		t.Errorf("matrix: %d of %d reachable, want 9 of 9: %+v", ok, total, m.Cells)
	}

	// Kubelet crash: kill it, pods keep running; `up` resumes it and
	// adopts the pods without a second CNI ADD.
	pid := pidOf(t, "kubelet-node1")
	syscall.Kill(pid, syscall.SIGKILL)
	if out := must(t, "exec", ns+"/a", "--", labBin, "probe", "tcp", b.Status.PodIP+":80"); !strings.HasPrefix(out, "b ") {
		t.Errorf("a → b with the kubelet down: %q", out)
	}
	if out := must(t, "up"); !strings.Contains(out, "kubelet-node1") || !strings.Contains(out, "started") {
		t.Errorf("up did not restart the killed kubelet:\n%s", out)
	}
	time.Sleep(3 * time.Second)
	if b2 := getPod(t, ns, "b"); b2.Status.PodIP != b.Status.PodIP || b2.Status.Phase != "Running" {
		t.Errorf("after kubelet restart pod b is %s with %s, was Running with %s", b2.Status.Phase, b2.Status.PodIP, b.Status.PodIP)
	}
	if leases, _ := os.ReadDir(filepath.Join(ipamDir, "e2e-bridge")); countIPs(leases) != 3 {
		t.Errorf("host-local holds %d addresses after the restart, want 3 (a, b, unready)", countIPs(leases))
	}

	// Deletion with a grace period: the pod goes, and with it its namespace
	// and its address (CNI DEL ran).
	podNetns := cfg.PodNetnsPrefix("node1") + a.Metadata.UID[:8]
	kubectl(t, "-n", ns, "delete", "pod", "a", "--wait=true", "--timeout=60s")
	if _, err := os.Stat("/var/run/netns/" + podNetns); !os.IsNotExist(err) {
		t.Errorf("pod a's namespace %s still exists after deletion", podNetns)
	}
	if _, err := os.Stat(filepath.Join(ipamDir, "e2e-bridge", a.Status.PodIP)); !os.IsNotExist(err) {
		t.Errorf("host-local still holds a's address %s: CNI DEL did not run", a.Status.PodIP)
	}
	kubectl(t, "delete", "namespace", ns, "--wait=true", "--timeout=90s")
	if leases, _ := os.ReadDir(filepath.Join(ipamDir, "e2e-bridge")); countIPs(leases) != 0 {
		t.Errorf("host-local holds %d addresses after every pod is gone", countIPs(leases))
	}
}

func countIPs(ents []os.DirEntry) int {
	n := 0
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			n++
		}
	}
	return n
}

func pidOf(t *testing.T, comp string) int {
	t.Helper()
	b, err := os.ReadFile(cfg.PidFile(comp))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	return pid
}

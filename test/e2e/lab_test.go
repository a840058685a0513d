//go:build e2e

package e2e

import (
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

func TestControlPlane(t *testing.T) {
	st := sl.must(t, "status")
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
	if !strings.Contains(st, sl.cfg.External().Addr.String()) {
		t.Errorf("status does not show the external host's address %s", sl.cfg.External().Addr)
	}
	if got := strings.TrimSpace(sl.kubectl(t, "get", "--raw", "/readyz")); got != "ok" {
		t.Fatalf("/readyz = %q, want ok", got)
	}
	// RBAC is on: an unprivileged service account may not list secrets.
	if out, code := sl.sh("kubectl", "--", "auth", "can-i", "list", "secrets", "--as=system:serviceaccount:default:default"); code == 0 || !strings.Contains(out, "no") {
		t.Errorf("RBAC: default service account may list secrets: %s", out)
	}
	// Service-account tokens are issued.
	if tok := strings.TrimSpace(sl.kubectl(t, "create", "token", "default")); strings.Count(tok, ".") != 2 {
		t.Errorf("token %q is not a JWT", tok)
	}
	// Controllers: service account and EndpointSlice in a new namespace.
	sl.kubectl(t, "create", "namespace", "e2e-ctl")
	eventually(t, 30*time.Second, "service account controller", func() error {
		_, code := sl.sh("kubectl", "--", "-n", "e2e-ctl", "get", "sa", "default")
		if code != 0 {
			return fmt.Errorf("no default service account")
		}
		return nil
	})
	sl.kubectl(t, "-n", "e2e-ctl", "create", "service", "clusterip", "web", "--tcp=80:8080")
	eventually(t, 30*time.Second, "EndpointSlice controller", func() error {
		out, _ := sl.sh("kubectl", "--", "-n", "e2e-ctl", "get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name")
		if !strings.Contains(out, "endpointslice") {
			return fmt.Errorf("no EndpointSlice for service web: %s", out)
		}
		return nil
	})
	// Garbage collector: a Deployment's ReplicaSet goes with it.
	sl.kubectl(t, "-n", "e2e-ctl", "create", "deployment", "gc", "--image=x", "--replicas=0")
	eventually(t, 30*time.Second, "ReplicaSet created", func() error {
		out, _ := sl.sh("kubectl", "--", "-n", "e2e-ctl", "get", "rs", "-o", "name")
		if !strings.Contains(out, "replicaset") {
			return fmt.Errorf("no ReplicaSet")
		}
		return nil
	})
	sl.kubectl(t, "-n", "e2e-ctl", "delete", "deployment", "gc", "--cascade=background")
	eventually(t, 60*time.Second, "garbage collector", func() error {
		out, _ := sl.sh("kubectl", "--", "-n", "e2e-ctl", "get", "rs", "-o", "name")
		if strings.Contains(out, "replicaset") {
			return fmt.Errorf("ReplicaSet still there: %s", out)
		}
		return nil
	})
	// Namespace controller: deleting a namespace completes.
	sl.kubectl(t, "delete", "namespace", "e2e-ctl", "--wait=true", "--timeout=90s")
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
		out, code := sl.sh(c.args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("sluice-lab %s: exit %d, output %q; want non-zero and %q", strings.Join(c.args, " "), code, out, c.want)
		}
		if n := strings.Count(strings.TrimSpace(out), "\n"); n > 0 {
			t.Errorf("sluice-lab %s: error is %d lines, want one:\n%s", strings.Join(c.args, " "), n+1, out)
		}
	}
	// A second up on the running lab is a no-op.
	if out := sl.must(t, "up"); !strings.Contains(out, "already running") {
		t.Errorf("second up did not report a running lab:\n%s", out)
	}
	// A port already taken: a new lab refuses before making anything.
	other := filepath.Join(tmpRoot, "other")
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

func (e *labEnv) getPod(t *testing.T, ns, name string) podStatus {
	t.Helper()
	var p podStatus
	if err := json.Unmarshal([]byte(e.kubectl(t, "-n", ns, "get", "pod", name, "-o", "json")), &p); err != nil {
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

func (e *labEnv) applyPod(t *testing.T, ns, name, node, probePort string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name+".yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(podTmpl, name, ns, node, probePort)), 0o644)
	e.kubectl(t, "apply", "-f", f)
}

// TestPods runs pods in a lab without a pod network: first with no CNI
// configuration at all (they must fail clearly), then with the reference
// bridge + host-local CNI plugins installed on node1, which shows the lab
// kubelet driving a CNI plugin exactly as a runtime does.
func TestPods(t *testing.T) {
	e := startLab(t, "nocni", "--nodes", "1", "--pod-network", "none")
	ns := "e2e-pods"
	e.kubectl(t, "create", "namespace", ns)
	eventually(t, 30*time.Second, "default service account", func() error {
		if _, code := e.sh("kubectl", "--", "-n", ns, "get", "sa", "default"); code != 0 {
			return fmt.Errorf("missing")
		}
		return nil
	})
	e.applyPod(t, ns, "a", "node1", "http")
	eventually(t, 30*time.Second, "pod a fails clearly without a CNI configuration", func() error {
		p := e.getPod(t, ns, "a")
		st, msg := p.cond("PodReadyToStartContainers")
		if p.Status.Phase != "Pending" || st != "False" || !strings.Contains(msg, "no CNI network configuration in") {
			return fmt.Errorf("phase %s, PodReadyToStartContainers %s %q", p.Status.Phase, st, msg)
		}
		return nil
	})
	ev := e.kubectl(t, "-n", ns, "get", "events", "--field-selector", "reason=FailedCreatePodSandBox", "-o", "name")
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
		if err := os.WriteFile(filepath.Join(e.cfg.CNIBinDir("node1"), p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ipamDir := filepath.Join(e.cfg.NodeDir("node1"), "host-local")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"e2e-bridge","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.1.0/24"}]],"dataDir":%q}}]}`, ipamDir)
	if err := os.WriteFile(filepath.Join(e.cfg.CNIConfDir("node1"), "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.applyPod(t, ns, "b", "node1", "http")
	e.applyPod(t, ns, "unready", "node1", "82") // probes a port nobody serves
	for _, name := range []string{"a", "b"} {
		eventually(t, 60*time.Second, "pod "+name+" Running and Ready", func() error {
			p := e.getPod(t, ns, name)
			if st, _ := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" || !strings.HasPrefix(p.Status.PodIP, "10.88.1.") {
				return fmt.Errorf("phase %s ready %s ip %q", p.Status.Phase, st, p.Status.PodIP)
			}
			return nil
		})
	}
	eventually(t, 30*time.Second, "pod unready Running", func() error {
		if p := e.getPod(t, ns, "unready"); p.Status.Phase != "Running" {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	if st, _ := e.getPod(t, ns, "unready").cond("Ready"); st != "False" {
		t.Errorf("pod unready, whose probe port is not served, is Ready=%s", st)
	}
	a, b := e.getPod(t, ns, "a"), e.getPod(t, ns, "b")

	// Real packets: a → b over TCP and UDP; the server names itself and sees a's address.
	for _, proto := range []struct{ p, port string }{{"tcp", "80"}, {"udp", "81"}} {
		out := e.must(t, "exec", ns+"/a", "--", labBin, "probe", proto.p, b.Status.PodIP+":"+proto.port)
		if !strings.HasPrefix(out, "b "+a.Status.PodIP+":") {
			t.Errorf("a → b %s: got %q, want \"b %s:PORT\"", proto.p, out, a.Status.PodIP)
		}
	}
	// The node reaches its pod.
	if out := e.must(t, "exec", "node/node1", "--", labBin, "probe", "tcp", a.Status.PodIP+":80"); !strings.HasPrefix(out, "a ") {
		t.Errorf("node1 → a: %q", out)
	}
	// The matrix sees the truth: a and b reach each other and themselves,
	// and unready (which serves port 80 too) as well.
	var m lab.Matrix
	if err := json.Unmarshal([]byte(e.must(t, "matrix", "-n", ns, "--json")), &m); err != nil {
		t.Fatal(err)
	}
	if ok, total := m.Reachable(); total != 9 || ok != 9 {
		t.Errorf("matrix: %d of %d reachable, want 9 of 9: %+v", ok, total, m.Cells)
	}

	// Kubelet crash: kill it, pods keep running; `up` resumes it and
	// adopts the pods without a second CNI ADD.
	pid := e.pidOf(t, "kubelet-node1")
	syscall.Kill(pid, syscall.SIGKILL)
	if out := e.must(t, "exec", ns+"/a", "--", labBin, "probe", "tcp", b.Status.PodIP+":80"); !strings.HasPrefix(out, "b ") {
		t.Errorf("a → b with the kubelet down: %q", out)
	}
	if out := e.must(t, "up"); !strings.Contains(out, "kubelet-node1") || !strings.Contains(out, "started") {
		t.Errorf("up did not restart the killed kubelet:\n%s", out)
	}
	time.Sleep(3 * time.Second)
	if b2 := e.getPod(t, ns, "b"); b2.Status.PodIP != b.Status.PodIP || b2.Status.Phase != "Running" {
		t.Errorf("after kubelet restart pod b is %s with %s, was Running with %s", b2.Status.Phase, b2.Status.PodIP, b.Status.PodIP)
	}
	if leases, _ := os.ReadDir(filepath.Join(ipamDir, "e2e-bridge")); countIPs(leases) != 3 {
		t.Errorf("host-local holds %d addresses after the restart, want 3 (a, b, unready)", countIPs(leases))
	}

	// Deletion with a grace period: the pod goes, and with it its namespace
	// and its address (CNI DEL ran).
	podNetns := e.cfg.PodNetnsPrefix("node1") + a.Metadata.UID[:8]
	e.kubectl(t, "-n", ns, "delete", "pod", "a", "--wait=true", "--timeout=60s")
	if _, err := os.Stat("/var/run/netns/" + podNetns); !os.IsNotExist(err) {
		t.Errorf("pod a's namespace %s still exists after deletion", podNetns)
	}
	if _, err := os.Stat(filepath.Join(ipamDir, "e2e-bridge", a.Status.PodIP)); !os.IsNotExist(err) {
		t.Errorf("host-local still holds a's address %s: CNI DEL did not run", a.Status.PodIP)
	}
	e.kubectl(t, "delete", "namespace", ns, "--wait=true", "--timeout=90s")
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

func (e *labEnv) pidOf(t *testing.T, comp string) int {
	t.Helper()
	b, err := os.ReadFile(e.cfg.PidFile(comp))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	return pid
}

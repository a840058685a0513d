//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

// realPodTmpl is a test-server pod on a real node (name, namespace, node, image), labelled
// app=web and name=NAME, serving TCP 8080 and UDP 8081.
const realPodTmpl = `apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: %[2]s, labels: {app: web, name: %[1]s}}
spec:
  nodeSelector: {kubernetes.io/hostname: %[3]s}
  terminationGracePeriodSeconds: 2
  containers:
  - name: server
    image: %[4]s
    imagePullPolicy: Never
    args: ["--tcp=8080", "--udp=8081"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ports: [{containerPort: 8080}, {containerPort: 8081, protocol: UDP}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
`

// TestRealNodes runs a lab whose nodes are real — kubelet, containerd and
// runc — with Sluice as the pod network, and shows that real containers on
// two nodes are networked and reach each other over TCP, and that kubectl
// logs and exec reach the real kubelets. Its images are made here from a
// static sluice-lab: the test server image runs `sluice-lab serve`, and the
// pause image `sluice-lab serve` without ports (it holds the sandbox's
// namespaces and exits on SIGTERM).
func TestRealNodes(t *testing.T) {
	dir := t.TempDir()
	pause, server, testImage := realNodeImages(t, dir)

	e := startLab(t, "real", "--runtime", "containerd", "--nodes", "2", "--image-archive", pause, "--image-archive", server)
	st := e.must(t, "status")
	for _, c := range []string{"mountns-node1", "containerd-node1", "kubelet-node2", "sluice-agent-node2"} {
		if !strings.Contains(st, c) || strings.Contains(st, c+"  stopped") {
			t.Errorf("status: %s not running:\n%s", c, st)
		}
	}
	nodes := e.kubectl(t, "get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}{\"\\n\"}{end}")
	kube, _ := kubebuild.Versions()
	for _, n := range []string{"node1", "node2"} {
		if want := fmt.Sprintf("%s %s containerd://%s", n, kube, strings.TrimPrefix(kubebuild.ContainerdVersion, "v")); !strings.Contains(nodes, want) {
			t.Errorf("nodes:\n%s\nwant a line %q", nodes, want)
		}
	}

	ns := "e2e-real"
	e.kubectl(t, "create", "namespace", ns)
	eventually(t, 30*time.Second, "default service account", func() error {
		if _, code := e.sh("kubectl", "--", "-n", ns, "get", "sa", "default"); code != 0 {
			return fmt.Errorf("missing")
		}
		return nil
	})
	f := filepath.Join(dir, "pods.yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(realPodTmpl, "a", ns, "node1", testImage)+"---\n"+fmt.Sprintf(realPodTmpl, "b", ns, "node2", testImage)), 0o644)
	e.kubectl(t, "apply", "-f", f)
	for _, name := range []string{"a", "b"} {
		eventually(t, 90*time.Second, "pod "+name+" Running and Ready", func() error {
			p := e.getPod(t, ns, name)
			if st, _ := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" || !strings.HasPrefix(p.Status.PodIP, "10.") {
				return fmt.Errorf("phase %s ready %s ip %q", p.Status.Phase, st, p.Status.PodIP)
			}
			return nil
		})
	}
	a, b := e.getPod(t, ns, "a"), e.getPod(t, ns, "b")
	if a.Spec.NodeName != "node1" || b.Spec.NodeName != "node2" {
		t.Fatalf("pods on %s and %s, want node1 and node2", a.Spec.NodeName, b.Spec.NodeName)
	}

	// Real containers: a's server is a process of its own, in the pod's
	// cgroup under node1's cgroup root, with the image's root file system.
	pid, err := lab.PodProcess(a.Metadata.UID, "serve")
	if err != nil {
		t.Fatal(err)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(string(cg), e.cfg.NodeCgroupRoot("node1")+"/kubepods") {
		t.Errorf("pod a's process %d is not under node1's cgroup root %s:\n%s", pid, e.cfg.NodeCgroupRoot("node1"), cg)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/usr/local/bin/sluice-lab", pid)); err != nil {
		t.Errorf("pod a's process %d does not see the image's /usr/local/bin/sluice-lab: %v", pid, err)
	}

	// Across nodes over TCP, each way, from inside the containers
	// (kubectl exec through the real kubelets): the server names itself
	// and sees the client's pod address, not a NATed one.
	for _, c := range []struct{ from, to podStatus }{{a, b}, {b, a}} {
		out := e.kubectl(t, "-n", ns, "exec", c.from.Metadata.Name, "--", "sluice-lab", "probe", "tcp", c.to.Status.PodIP+":8080")
		if want := c.to.Metadata.Name + " " + c.from.Status.PodIP + ":"; !strings.HasPrefix(out, want) {
			t.Errorf("%s → %s: got %q, want %q…", c.from.Metadata.Name, c.to.Metadata.Name, out, want)
		}
	}
	// The lab's own exec finds a real pod's namespace too.
	if out := e.must(t, "exec", ns+"/a", "--", labBin, "probe", "tcp", b.Status.PodIP+":8080"); !strings.HasPrefix(out, "b "+a.Status.PodIP+":") {
		t.Errorf("sluice-lab exec %s/a → b: %q", ns, out)
	}
	// kubectl logs through the real kubelet.
	if out := e.kubectl(t, "-n", ns, "logs", "b"); !strings.Contains(out, `"Serving" name="b" tcp=[8080]`) {
		t.Errorf("kubectl logs b: %q, want the server's start line", out)
	}

	// down leaves nothing of the real nodes behind.
	e.down()
	if err := e.checkNothingLeft(); err != nil {
		t.Error(err)
	}
	if err := realNodesLeft(e.cfg); err != nil {
		t.Error(err)
	}
}

// realNodeImages skips the test where real nodes cannot run, builds their runtime, and
// makes the lab's pause and test-server images (`sluice-lab images`' own, built from this
// source tree) in dir. The test server's entrypoint is `sluice-lab serve`; its pods run
// `sluice-lab probe` too.
func realNodeImages(t *testing.T, dir string) (pause, server, testImage string) {
	t.Helper()
	if _, err := os.Stat("/usr/include/seccomp.h"); err != nil && !kubebuild.NodeRuntimeBuilt() {
		t.Skip("real nodes need runc built with seccomp, and libseccomp's headers are missing: apt-get install libseccomp-dev")
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("real nodes need %s (util-linux)", tool)
		}
	}
	if _, err := kubebuild.EnsureNodeRuntime(context.Background(), os.Stdout); err != nil {
		t.Fatal(err)
	}
	imgs, err := image.EnsureLabImages(context.Background(), image.LabOptions{OutDir: dir, BinDir: dir, Version: "e2e", Log: os.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	if imgs.Pause.Ref != lab.DefaultSandboxImage {
		t.Fatalf("the pause image is %s, but real nodes' containerd runs %s", imgs.Pause.Ref, lab.DefaultSandboxImage)
	}
	return imgs.Pause.Archive, imgs.TestServer.Archive, imgs.TestServer.Ref
}

// realNodesLeft looks for what real nodes make outside the state
// directory: cgroups, socket directories, mounts, containers.
func realNodesLeft(c *lab.Config) error {
	for _, n := range c.NodeNames() {
		if cgs, _ := filepath.Glob("/sys/fs/cgroup/*" + c.NodeCgroupRoot(n)); len(cgs) > 0 {
			return fmt.Errorf("cgroups left behind: %v", cgs)
		}
		if _, err := os.Stat(c.NodeRunDir(n)); !os.IsNotExist(err) {
			return fmt.Errorf("%s left behind", c.NodeRunDir(n))
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mi, []byte(c.StateDir+"/")) {
		return fmt.Errorf("mounts under %s left behind:\n%s", c.StateDir, mi)
	}
	// Killed containers whose shim died first are reaped by whoever
	// inherits them, a moment later: only living processes count.
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if !bytes.Contains(b, []byte(c.Prefix+"-node")) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && (st[i+2] == 'Z' || st[i+2] == 'X') {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		return fmt.Errorf("process %s (%q) is still in a node's cgroup:\n%s", filepath.Dir(p), bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}), b)
	}
	return nil
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/netns"
)

// buildSluiceImage builds Sluice's image archive as `make images` does (static binaries,
// `sluice-lab images`) with the given version, and returns the archive's path.
func buildSluiceImage(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -X github.com/sluice-net/sluice/pkg/version.Version=" + version, "-o", bin + "/"}
	for _, c := range []string{"sluice-agent", "sluice-controller", "sluice-cni", "sluicectl", "sluice-lab", "sluice-pause"} {
		args = append(args, "github.com/sluice-net/sluice/cmd/"+c)
	}
	build := exec.Command("go", args...)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static binaries: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "images")
	cmd := exec.Command(filepath.Join(bin, "sluice-lab"), "images", "--bin-dir", bin, "--out", out, "--version", version)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sluice-lab images: %v\n%s", err, b)
	}
	return filepath.Join(out, "sluice.tar")
}

// TestHelmInstall installs Sluice onto three real nodes (kubelet, containerd, runc) with
// its Helm chart only — the lab starts no agent or controller — and checks what a user
// would: real containers on every node reach each other over TCP and UDP and the external
// host, a Service answers, a NetworkPolicy isolates (with its control), logs and exec work;
// the controller's leader is killed and the other replica takes over; and `helm uninstall`
// leaves the nodes without Sluice's conflist, table and VXLAN device.
func TestHelmInstall(t *testing.T) {
	dir := t.TempDir()
	pause, server, testImage := realNodeImages(t, dir)
	sluiceImage := buildSluiceImage(t, "e2e-1")

	e := startLab(t, "helm", "--runtime", "containerd", "--nodes", "3", "--install", "helm",
		"--sluice-image", sluiceImage, "--image-archive", pause, "--image-archive", server)

	// Sluice runs as the chart's pods, not as lab processes.
	for _, line := range strings.Split(e.must(t, "status"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (f[1] == "running" || f[1] == "stopped") &&
			(strings.HasPrefix(f[0], "sluice-agent") || strings.HasPrefix(f[0], "sluice-controller")) {
			t.Errorf("--install helm: the lab runs a Sluice process itself: %s", line)
		}
	}
	ds := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "ds", "sluice-agent", "-o", "jsonpath={.status.numberReady}/{.status.desiredNumberScheduled}")
	if ds != "3/3" {
		t.Errorf("agent DaemonSet ready %s, want 3/3", ds)
	}
	dep := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "deploy", "sluice-controller", "-o", "jsonpath={.status.readyReplicas}")
	if dep != "2" {
		t.Errorf("controller Deployment ready replicas %q, want 2", dep)
	}

	ns := "e2e-helm"
	e.kubectl(t, "create", "namespace", ns)
	eventually(t, 30*time.Second, "default service account", func() error {
		if _, code := e.sh("kubectl", "--", "-n", ns, "get", "sa", "default"); code != 0 {
			return fmt.Errorf("missing")
		}
		return nil
	})
	var docs []string
	for i, name := range []string{"a", "b", "c"} {
		docs = append(docs, fmt.Sprintf(realPodTmpl, name, ns, fmt.Sprintf("node%d", i+1), testImage))
	}
	f := filepath.Join(dir, "pods.yaml")
	os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o644)
	e.kubectl(t, "apply", "-f", f)
	pods := map[string]podStatus{}
	for _, name := range []string{"a", "b", "c"} {
		eventually(t, 90*time.Second, "pod "+name+" Running and Ready", func() error {
			p := e.getPod(t, ns, name)
			if st, _ := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" || !strings.HasPrefix(p.Status.PodIP, "10.") {
				return fmt.Errorf("phase %s ready %s ip %q", p.Status.Phase, st, p.Status.PodIP)
			}
			return nil
		})
		pods[name] = e.getPod(t, ns, name)
	}
	probe := func(from, proto, addr string) (string, int) {
		return e.sh("kubectl", "--", "-n", ns, "exec", from, "--", "sluice-lab", "probe", proto, addr, "--timeout", "2s")
	}
	// Every pod reaches every other, across nodes, over TCP and UDP, with its own address.
	for _, from := range []string{"a", "b", "c"} {
		for _, to := range []string{"a", "b", "c"} {
			if from == to {
				continue
			}
			for _, p := range []struct{ proto, port string }{{"tcp", "8080"}, {"udp", "8081"}} {
				out, code := probe(from, p.proto, pods[to].Status.PodIP+":"+p.port)
				if want := to + " " + pods[from].Status.PodIP + ":"; code != 0 || !strings.HasPrefix(out, want) {
					t.Errorf("%s → %s %s: exit %d %q, want %q…", from, to, p.proto, code, out, want)
				}
			}
		}
	}
	// The external host, NATed to the node's address.
	ext := e.cfg.External().Addr.String() + ":8080"
	if out, code := probe("a", "tcp", ext); code != 0 || !strings.HasPrefix(out, "external 172.28.0.11:") {
		t.Errorf("a → external: exit %d %q, want the node's address 172.28.0.11", code, out)
	}
	// A ClusterIP Service, load-balanced by the agents (no kube-proxy runs).
	e.kubectl(t, "-n", ns, "create", "service", "clusterip", "web", "--tcp=80:8080")
	e.kubectl(t, "-n", ns, "set", "selector", "service", "web", "app=web")
	vip := e.kubectl(t, "-n", ns, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	eventually(t, 30*time.Second, "Service web answers", func() error {
		out, code := probe("a", "tcp", vip+":80")
		if code != 0 || !regexp.MustCompile(`^[abc] `).MatchString(out) {
			return fmt.Errorf("exit %d %q", code, out)
		}
		return nil
	})
	// A NetworkPolicy: b admits only c. Control: c still reaches b.
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-c, namespace: `+ns+`}
spec:
  podSelector: {matchLabels: {name: b}}
  ingress: [{from: [{podSelector: {matchLabels: {name: c}}}]}]
`), 0o644)
	e.kubectl(t, "apply", "-f", pol)
	eventually(t, 30*time.Second, "a → b isolated", func() error {
		if out, code := probe("a", "tcp", pods["b"].Status.PodIP+":8080"); code == 0 {
			return fmt.Errorf("still reached: %q", out)
		}
		return nil
	})
	if out, code := probe("c", "tcp", pods["b"].Status.PodIP+":8080"); code != 0 || !strings.HasPrefix(out, "b ") {
		t.Errorf("c → b (allowed by the policy): exit %d %q", code, out)
	}
	// logs and exec through the real kubelets.
	if out := e.kubectl(t, "-n", ns, "logs", "b"); !strings.Contains(out, `"Serving" name="b"`) {
		t.Errorf("kubectl logs b: %q", out)
	}
	if out := e.kubectl(t, "-n", lab.ReleaseNamespace, "logs", "ds/sluice-agent"); !strings.Contains(out, `"Node initialised"`) {
		t.Errorf("kubectl logs ds/sluice-agent: %q, want the agent's start", out)
	}

	t.Run("rolling upgrade", func(t *testing.T) { helmRollingUpgrade(t, e, dir, ns, testImage, pods) })
	t.Run("bad values", func(t *testing.T) {
		before := e.kubectl(t, "get", "clusternetwork", "default", "-o", "jsonpath={.metadata.resourceVersion} {.spec.clusterNetworks}")
		bad := filepath.Join(dir, "bad-values.yaml")
		os.WriteFile(bad, []byte("clusterNetworks:\n- {cidr: 10.128.0.0/14, hostSubnetLength: 9}\n- {cidr: 10.129.0.0/16}\n"), 0o644)
		out, code := e.sh("helm", "--", "upgrade", lab.ReleaseName, e.cfg.Path("chart", "sluice"), "--namespace", lab.ReleaseNamespace,
			"--reuse-values", "-f", bad)
		if code == 0 || !strings.Contains(out, `clusterNetworks[1].cidr "10.129.0.0/16" overlaps clusterNetworks[0].cidr "10.128.0.0/14"`) {
			t.Errorf("helm upgrade with an overlapping cluster network: exit %d\n%s", code, out)
		}
		if after := e.kubectl(t, "get", "clusternetwork", "default", "-o", "jsonpath={.metadata.resourceVersion} {.spec.clusterNetworks}"); after != before {
			t.Errorf("the refused upgrade changed the ClusterNetwork: %s → %s", before, after)
		}
	})
	t.Run("missing privileges", func(t *testing.T) { helmMissingPrivileges(t, e) })
	t.Run("leader failover", func(t *testing.T) { helmLeaderFailover(t, e) })
	t.Run("uninstall", func(t *testing.T) { helmUninstall(t, e) })
}

// helmRollingUpgrade upgrades the release to an agent image with another digest while a TCP
// connection from c (node3) to b (node2), which b's policy admits, carries a round trip every
// 50 ms: the
// DaemonSet rolls node by node, no round trip is lost, no pod changes address, and a pod
// created during the rollout starts.
func helmRollingUpgrade(t *testing.T, e *labEnv, dir, ns, testImage string, pods map[string]podStatus) {
	next := buildSluiceImage(t, "e2e-2")
	e.must(t, "up", "--image-archive", next)
	pidOf := func(name string) string {
		pid, err := lab.PodProcess(pods[name].Metadata.UID, "serve")
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("/proc/%d/ns/net", pid)
	}
	ec := openEchoAt(t, pidOf("c"), pidOf("b"), pods["b"].Status.PodIP, 9000)
	if err := ec.roundTrip("before"); err != nil {
		t.Fatalf("echo c → b before the upgrade: %v", err)
	}
	oldImages := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "pods", "-l", "app.kubernetes.io/component=agent", "-o", "jsonpath={.items[*].status.containerStatuses[0].imageID}")
	stop := make(chan struct{})
	type result struct {
		ok   int
		errs []string
	}
	done := make(chan result)
	go func() {
		var r result
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- r
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := ec.roundTrip(fmt.Sprintf("msg-%d", i)); err != nil {
				r.errs = append(r.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				if len(r.errs) > 5 {
					done <- r
					<-stop
					return
				}
				continue
			}
			r.ok++
		}
	}()
	upgrade := make(chan string, 1)
	go func() {
		out, code := e.sh("helm", "--", "upgrade", lab.ReleaseName, e.cfg.Path("chart", "sluice"), "--namespace", lab.ReleaseNamespace,
			"--reuse-values", "--set", "image.tag=e2e-2", "--wait", "--timeout", "5m")
		upgrade <- fmt.Sprintf("exit %d: %s", code, out)
	}()
	// A pod created while the agents roll starts and is networked.
	time.Sleep(2 * time.Second)
	f := filepath.Join(dir, "pod-d.yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(realPodTmpl, "d", ns, "node3", testImage)), 0o644)
	e.kubectl(t, "apply", "-f", f)
	up := <-upgrade
	if !strings.HasPrefix(up, "exit 0") {
		t.Errorf("helm upgrade: %s", up)
	}
	eventually(t, 90*time.Second, "pod d (created during the rollout) Running and Ready", func() error {
		p := e.getPod(t, ns, "d")
		if st, _ := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" || p.Status.PodIP == "" {
			return fmt.Errorf("phase %s ready %s ip %q", p.Status.Phase, st, p.Status.PodIP)
		}
		return nil
	})
	time.Sleep(time.Second)
	close(stop)
	r := <-done
	fmt.Printf("rolling upgrade: %d round trips c → b during the rollout, %d failed\n", r.ok, len(r.errs))
	if len(r.errs) > 0 || r.ok < 20 {
		t.Errorf("during the rollout: %d round trips, failures %v; want none lost", r.ok, r.errs)
	}
	newImages := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "pods", "-l", "app.kubernetes.io/component=agent", "-o", "jsonpath={.items[*].status.containerStatuses[0].imageID}")
	if strings.Count(newImages, "sha256:") != 3 || strings.Contains(newImages, strings.Fields(oldImages)[0]) {
		t.Errorf("agent images after the upgrade %q, before %q: want three, none the old", newImages, oldImages)
	}
	// The new agents keep b isolated from a (the policy was never opened).
	if out, code := e.sh("kubectl", "--", "-n", ns, "exec", "a", "--", "sluice-lab", "probe", "tcp", pods["b"].Status.PodIP+":8080", "--timeout", "2s"); code == 0 {
		t.Errorf("a → b after the upgrade: reached (%q), but b admits only c", out)
	}
	for name, p := range pods {
		if now := e.getPod(t, ns, name); now.Status.PodIP != p.Status.PodIP || now.Metadata.UID != p.Metadata.UID {
			t.Errorf("pod %s: %s %s before the upgrade, %s %s after", name, p.Metadata.UID, p.Status.PodIP, now.Metadata.UID, now.Status.PodIP)
		}
	}
}

// openEchoAt listens on port in the network namespace toNS (a path) and connects to it
// from fromNS.
func openEchoAt(t *testing.T, fromNS, toNS, toIP string, port int) *echoConn {
	t.Helper()
	var ec echoConn
	if err := netns.Do(toNS, func() error {
		var err error
		ec.l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", toNS, err)
	}
	t.Cleanup(func() { ec.l.Close() })
	go func() {
		for {
			c, err := ec.l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte("echo " + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := netns.Dial(ctx, fromNS, "tcp", fmt.Sprintf("%s:%d", toIP, port))
	if err != nil {
		t.Fatalf("dial %s:%d from %s: %v", toIP, port, fromNS, err)
	}
	t.Cleanup(func() { c.Close() })
	ec.c, ec.r = c, bufio.NewReader(c)
	return &ec
}

// helmMissingPrivileges upgrades the agents to a pod without CAP_SYS_ADMIN: the first
// replaced agent logs what it lacks, records a Warning event on its Node naming it, and is
// never Ready, so the rollout stops there; a rollback brings every agent back Ready.
func helmMissingPrivileges(t *testing.T, e *labEnv) {
	chart := e.cfg.Path("chart", "sluice")
	out, code := e.sh("helm", "--", "upgrade", lab.ReleaseName, chart, "--namespace", lab.ReleaseNamespace,
		"--reuse-values", "--set", "agent.capabilities={NET_ADMIN}", "--wait", "--timeout", "20s")
	if code == 0 {
		t.Errorf("helm upgrade to agents without CAP_SYS_ADMIN succeeded (--wait): %s", out)
	}
	var node string
	eventually(t, 30*time.Second, "a Node event naming the missing capability", func() error {
		ev := e.kubectl(t, "get", "events", "-A", "--field-selector", "reason=SluiceAgentMissingPrivileges",
			"-o", "jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name}: {.message}{\"\\n\"}{end}")
		for _, line := range strings.Split(ev, "\n") {
			if strings.HasPrefix(line, "Node/") && strings.Contains(line, "CAP_SYS_ADMIN") {
				node = strings.TrimPrefix(strings.SplitN(line, ":", 2)[0], "Node/")
				return nil
			}
		}
		return fmt.Errorf("events: %q", ev)
	})
	pod := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "pods", "-l", "app.kubernetes.io/component=agent",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	if ready := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "pod", pod, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"); ready != "False" {
		t.Errorf("agent %s without CAP_SYS_ADMIN: Ready=%q, want False", pod, ready)
	}
	if logs := e.kubectl(t, "-n", lab.ReleaseNamespace, "logs", pod); !strings.Contains(logs, "CAP_SYS_ADMIN") {
		t.Errorf("agent %s's log does not name CAP_SYS_ADMIN:\n%s", pod, logs)
	}
	e.must(t, "helm", "--", "rollback", lab.ReleaseName, "--namespace", lab.ReleaseNamespace, "--wait", "--timeout", "2m")
	eventually(t, 90*time.Second, "every agent Ready after the rollback", func() error {
		if ds := e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "ds", "sluice-agent", "-o", "jsonpath={.status.numberReady}/{.status.updatedNumberScheduled}/{.status.desiredNumberScheduled}"); ds != "3/3/3" {
			return fmt.Errorf("ready/updated/desired %s", ds)
		}
		return nil
	})
}

// helmLeaderFailover kills the leading controller's process (its container dies; the
// kubelet restarts it) and measures how long until another process holds the Lease.
func helmLeaderFailover(t *testing.T, e *labEnv) {
	holder := func() string {
		return e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "lease", "sluice-controller", "-o", "jsonpath={.spec.holderIdentity}")
	}
	leader := holder()
	pod, _, ok := strings.Cut(leader, "_")
	if !ok {
		t.Fatalf("lease holder %q is not POD_SUFFIX", leader)
	}
	var p podStatus
	if err := json.Unmarshal([]byte(e.kubectl(t, "-n", lab.ReleaseNamespace, "get", "pod", pod, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	pid, err := lab.PodProcess(p.Metadata.UID, "sluice-controller")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now string
	eventually(t, 60*time.Second, "another replica leads", func() error {
		now = holder()
		// A new process leads: usually the other replica; sometimes the killed
		// container, restarted by the kubelet under a new identity, wins the race for the
		// expired lease. Either way the dead process no longer holds it.
		if now == "" || now == leader {
			return fmt.Errorf("holder %q", now)
		}
		return nil
	})
	// The takeover waits for the lease to expire (15 s, leader-elect-lease-duration): a
	// killed leader cannot release it.
	who := "the other replica"
	if strings.HasPrefix(now, pod+"_") {
		who = "the killed pod's restarted container"
	}
	fmt.Printf("controller failover: leader %s killed; %s (%s) holds the lease after %s\n", leader, now, who, time.Since(t0).Round(100*time.Millisecond))
}

// helmUninstall checks that each node has Sluice's conflist, table and VXLAN device (the
// control), uninstalls the release, and checks that the agents removed all three.
func helmUninstall(t *testing.T, e *labEnv) {
	installed := func(n string) []string {
		var have []string
		if _, err := os.Stat(filepath.Join(e.cfg.CNIConfDir(n), "10-sluice.conflist")); err == nil {
			have = append(have, "conflist")
		}
		if _, code := e.sh("exec", "node/"+n, "--", "nft", "list", "table", "inet", "sluice"); code == 0 {
			have = append(have, "nftables table")
		}
		if _, code := e.sh("exec", "node/"+n, "--", "ip", "link", "show", "vxlan.sluice"); code == 0 {
			have = append(have, "VXLAN device")
		}
		return have
	}
	nodes := e.cfg.NodeNames()
	for _, n := range nodes {
		if got := installed(n); len(got) != 3 {
			t.Fatalf("before uninstall, %s has %v: want the conflist, the table and the VXLAN device", n, got)
		}
	}
	e.must(t, "helm", "--", "uninstall", lab.ReleaseName, "--namespace", lab.ReleaseNamespace, "--wait", "--timeout", "2m")
	eventually(t, 60*time.Second, "agent pods gone", func() error {
		out, _ := e.sh("kubectl", "--", "-n", lab.ReleaseNamespace, "get", "pods", "-o", "name")
		if strings.Contains(out, "sluice-agent") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	for _, n := range nodes {
		if got := installed(n); len(got) != 0 {
			t.Errorf("after helm uninstall, %s still has %v", n, got)
		}
	}
}

//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/lab"
)

type hostSubnet struct {
	Metadata struct{ Name string }
	Spec     struct{ Host, HostIP, Subnet string }
}

func (e *labEnv) hostSubnets(t *testing.T) map[string]hostSubnet {
	t.Helper()
	var l struct{ Items []hostSubnet }
	if err := json.Unmarshal([]byte(e.kubectl(t, "get", "hostsubnets", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	m := map[string]hostSubnet{}
	for _, h := range l.Items {
		m[h.Metadata.Name] = h
	}
	return m
}

func (e *labEnv) namespace(t *testing.T, ns string) {
	t.Helper()
	e.kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { e.sh("kubectl", "--", "delete", "namespace", ns, "--wait=true", "--timeout=180s") })
	eventually(t, 30*time.Second, "default service account in "+ns, func() error {
		if _, code := e.sh("kubectl", "--", "-n", ns, "get", "sa", "default"); code != 0 {
			return fmt.Errorf("missing")
		}
		return nil
	})
}

func (e *labEnv) waitReady(t *testing.T, ns string, names ...string) map[string]podStatus {
	t.Helper()
	got := map[string]podStatus{}
	for _, n := range names {
		eventually(t, 90*time.Second, "pod "+ns+"/"+n+" Ready", func() error {
			p := e.getPod(t, ns, n)
			if st, msg := p.cond("Ready"); p.Status.Phase != "Running" || st != "True" {
				_, sbx := p.cond("PodReadyToStartContainers")
				return fmt.Errorf("phase %s ready %s %s %s", p.Status.Phase, st, msg, sbx)
			}
			got[n] = p
			return nil
		})
	}
	return got
}

func TestPodNetwork(t *testing.T) {
	e := sl
	subnets := e.hostSubnets(t)
	seen := map[netip.Prefix]string{}
	cluster := netip.MustParsePrefix(lab.LabClusterCIDR)
	for _, n := range e.cfg.NodeNames() {
		h, ok := subnets[n]
		if !ok {
			t.Fatalf("no HostSubnet for %s", n)
		}
		p, err := netip.ParsePrefix(h.Spec.Subnet)
		if err != nil || p.Bits() != 23 || !cluster.Contains(p.Addr()) {
			t.Errorf("%s: subnet %q, want a /23 inside %s", n, h.Spec.Subnet, cluster)
		}
		m, _ := e.cfg.Node(n)
		if h.Spec.HostIP != m.Addr.String() {
			t.Errorf("%s: hostIP %s, want %s", n, h.Spec.HostIP, m.Addr)
		}
		for q, other := range seen {
			if q.Overlaps(p) {
				t.Errorf("%s and %s share %s / %s", n, other, p, q)
			}
		}
		seen[p] = n
	}

	ns := "e2e-net"
	e.namespace(t, ns)
	place := map[string]string{"a1": "node1", "a2": "node1", "b1": "node2", "c1": "node3"}
	for name, node := range place {
		e.applyPod(t, ns, name, node, "http")
	}
	pods := e.waitReady(t, ns, "a1", "a2", "b1", "c1")
	for name, p := range pods {
		sub, _ := netip.ParsePrefix(subnets[place[name]].Spec.Subnet)
		if ip, err := netip.ParseAddr(p.Status.PodIP); err != nil || !sub.Contains(ip) {
			t.Errorf("pod %s on %s has %s, outside the node's %s", name, place[name], p.Status.PodIP, sub)
		}
	}

	// Every pod reaches every pod, same node and across nodes, TCP and UDP.
	for _, c := range []struct {
		proto string
		port  int
	}{{"tcp", 80}, {"udp", 81}} {
		var m lab.Matrix
		out := e.must(t, "matrix", "-n", ns, "--protocol", c.proto, "--port", fmt.Sprint(c.port), "--json")
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		if ok, total := m.Reachable(); ok != 16 || total != 16 {
			t.Errorf("%s matrix: %d of %d reachable:\n%s", c.proto, ok, total, e.must(t, "matrix", "-n", ns, "--protocol", c.proto, "--port", fmt.Sprint(c.port)))
		}
		// Between pods there is no NAT: each server saw its client's own address.
		for _, row := range m.Cells {
			for _, cell := range row {
				from := pods[strings.TrimPrefix(cell.From, ns+"/")]
				if cell.OK && !strings.Contains(cell.Reply, " "+from.Status.PodIP+":") {
					t.Errorf("%s → %s: reply %q does not show the client's address %s", cell.From, cell.To, cell.Reply, from.Status.PodIP)
				}
			}
		}
	}
	// SCTP: this kernel may lack it; then the probe says so and we skip that part.
	if out, code := e.sh("exec", ns+"/a1", "--", labBin, "probe", "sctp", pods["b1"].Status.PodIP+":80"); code != 0 {
		if strings.Contains(out, "does not support SCTP") {
			t.Logf("SCTP not checked: %s", strings.TrimSpace(out))
		} else {
			t.Errorf("sctp a1 → b1: %s", out)
		}
	}

	// Nodes reach their own pods and other nodes' pods.
	for _, c := range []struct{ node, pod string }{{"node1", "a1"}, {"node1", "b1"}, {"node3", "a2"}} {
		out := e.must(t, "exec", "node/"+c.node, "--", labBin, "probe", "tcp", pods[c.pod].Status.PodIP+":80")
		if !strings.HasPrefix(out, c.pod+" ") {
			t.Errorf("%s → %s: %q", c.node, c.pod, out)
		}
	}

	// Pods reach the external host, which sees the node's address.
	ext := e.cfg.External().Addr.String() + ":8080"
	for _, c := range []struct{ pod, node string }{{"a1", "node1"}, {"b1", "node2"}} {
		m, _ := e.cfg.Node(c.node)
		for _, proto := range []string{"tcp", "udp"} {
			out := e.must(t, "exec", ns+"/"+c.pod, "--", labBin, "probe", proto, ext)
			if !strings.HasPrefix(out, "external "+m.Addr.String()+":") {
				t.Errorf("%s → external (%s): %q, want the node address %s as source", c.pod, proto, out, m.Addr)
			}
		}
	}
	// The external host cannot reach pod addresses.
	if out, code := e.sh("exec", "external", "--", labBin, "probe", "tcp", pods["a1"].Status.PodIP+":80", "--timeout", "1s"); code == 0 {
		t.Errorf("external host reached pod a1 directly: %s", out)
	}

	// Anti-spoofing: a pod sending with an address that is not its own gets nowhere.
	spoof := netip.MustParseAddr(pods["a1"].Status.PodIP).Next().Next().Next().String()
	e.must(t, "exec", ns+"/a1", "--", "ip", "addr", "add", spoof+"/32", "dev", "eth0")
	if out, code := e.sh("exec", ns+"/a1", "--", labBin, "probe", "tcp", pods["b1"].Status.PodIP+":80", "--source", spoof, "--timeout", "1s"); code == 0 {
		t.Errorf("a1 spoofing %s reached b1: %s", spoof, out)
	}
	if out := e.must(t, "exec", ns+"/a1", "--", labBin, "probe", "tcp", pods["b1"].Status.PodIP+":80"); !strings.HasPrefix(out, "b1 ") {
		t.Errorf("a1 with its own address: %q", out)
	}

	// MTU accounts for VXLAN.
	if out := e.must(t, "exec", ns+"/b1", "--", "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1450") {
		t.Errorf("pod MTU: %s", out)
	}

	// Bad input: a ClusterNetwork whose service network overlaps the pod
	// network is refused with the field named, and nothing running changes.
	bad := filepath.Join(t.TempDir(), "cn.yaml")
	os.WriteFile(bad, []byte(strings.Replace(e.cfg.ClusterNetworkManifest(), "serviceNetwork: "+e.cfg.ServiceCIDR.String(), "serviceNetwork: 10.130.0.0/16", 1)), 0o644)
	if out, code := e.sh("kubectl", "--", "apply", "-f", bad); code == 0 || !strings.Contains(out, "spec.serviceNetwork") {
		t.Errorf("overlapping serviceNetwork: exit %d, %s", code, out)
	}
	if out := e.must(t, "exec", ns+"/a1", "--", labBin, "probe", "tcp", pods["c1"].Status.PodIP+":80"); !strings.HasPrefix(out, "c1 ") {
		t.Errorf("a1 → c1 after a refused ClusterNetwork change: %q", out)
	}

	// Deleting a pod returns its address and removes its interface.
	a2 := pods["a2"]
	e.kubectl(t, "-n", ns, "delete", "pod", "a2", "--wait=true", "--timeout=60s")
	if leaked := e.ipamHolds(t, "node1", a2.Status.PodIP); leaked {
		t.Errorf("node1's IPAM still holds a2's address %s", a2.Status.PodIP)
	}
}

// ipamHolds reports whether the node's agent IPAM state mentions ip.
func (e *labEnv) ipamHolds(t *testing.T, node, ip string) bool {
	t.Helper()
	dir := filepath.Join(e.cfg.NodeDir(node), "agent", "ipam")
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(filepath.Base(p), ip) {
			found = true
		}
		return nil
	})
	return found
}

// ipamCount counts the addresses a node's IPAM holds.
func (e *labEnv) ipamCount(node string) int {
	dir := filepath.Join(e.cfg.NodeDir(node), "agent", "ipam")
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if _, perr := netip.ParseAddr(filepath.Base(p)); perr == nil {
				n++
			}
		}
		return nil
	})
	return n
}

const deployTmpl = `apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: sluice-lab/testserver
        ports: [{containerPort: 80}]
`

func (e *labEnv) deploy(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "d.yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(deployTmpl, name, ns, replicas, name, name)), 0o644)
	e.kubectl(t, "apply", "-f", f)
}

type podList struct {
	Items []podStatus
}

func (e *labEnv) pods(t *testing.T, ns string) []podStatus {
	t.Helper()
	var l podList
	if err := json.Unmarshal([]byte(e.kubectl(t, "-n", ns, "get", "pods", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func (e *labEnv) countRunning(t *testing.T, ns string) (running int, ips map[string]string) {
	ips = map[string]string{}
	for _, p := range e.pods(t, ns) {
		if p.Status.Phase == "Running" && p.Status.PodIP != "" {
			running++
			if other, dup := ips[p.Status.PodIP]; dup {
				t.Errorf("pods %s and %s share %s", other, p.Metadata.Name, p.Status.PodIP)
			}
			ips[p.Status.PodIP] = p.Metadata.Name
		}
	}
	return running, ips
}

// TestChurn creates and deletes 200 pods across the nodes at once: every
// pod gets a unique address, every address returns to the pool, and no
// interface, route or namespace is left behind.
func TestChurn(t *testing.T) {
	e := sl
	before := map[string]int{}
	for _, n := range e.cfg.NodeNames() {
		before[n] = e.ipamCount(n)
	}
	ns := "e2e-churn"
	e.namespace(t, ns)
	t0 := time.Now()
	e.deploy(t, ns, "churn", 200)
	eventually(t, 6*time.Minute, "200 pods running", func() error {
		if n, _ := e.countRunning(t, ns); n < 200 {
			return fmt.Errorf("%d running", n)
		}
		return nil
	})
	_, ips := e.countRunning(t, ns)
	t.Logf("200 pods running after %s, %d distinct addresses", time.Since(t0).Round(time.Second), len(ips))
	e.kubectl(t, "-n", ns, "delete", "deployment", "churn")
	eventually(t, 4*time.Minute, "every pod gone", func() error {
		if n := len(e.pods(t, ns)); n > 0 {
			return fmt.Errorf("%d pods left", n)
		}
		return nil
	})
	eventually(t, 30*time.Second, "addresses and interfaces returned", func() error {
		for _, n := range e.cfg.NodeNames() {
			if got := e.ipamCount(n); got != before[n] {
				return fmt.Errorf("%s IPAM holds %d addresses, %d before", n, got, before[n])
			}
			out, _ := e.sh("exec", "node/"+n, "--", "ip", "-o", "link")
			slp := strings.Count(out, ": slp")
			out, _ = e.sh("exec", "node/"+n, "--", "ip", "route")
			if r := strings.Count(out, " dev slp"); r != slp {
				return fmt.Errorf("%s: %d pod routes for %d pod interfaces", n, r, slp)
			}
			if slp != before[n] {
				return fmt.Errorf("%s: %d pod interfaces left, %d before", n, slp, before[n])
			}
		}
		return nil
	})
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	podNS := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, e.cfg.Prefix+"-") && strings.Contains(l, "-p-") {
			podNS++
		}
	}
	sum := 0
	for _, n := range before {
		sum += n
	}
	if podNS != sum {
		t.Errorf("%d pod namespaces remain, %d before", podNS, sum)
	}
}

// TestAgentCrash kills an agent with SIGKILL while pods are being created on
// its node and restarts it: pods that had connectivity keep it, pending CNI
// calls succeed on retry, no address is lost or given twice.
func TestAgentCrash(t *testing.T) {
	e := sl
	ns := "e2e-crash"
	e.namespace(t, ns)
	e.applyPod(t, ns, "steady", "node2", "http")
	e.applyPod(t, ns, "client", "node1", "http")
	pods := e.waitReady(t, ns, "steady", "client")
	target := pods["steady"].Status.PodIP + ":80"

	// Keep probing steady from client while the agent is down.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fails, probes int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, code := e.sh("exec", ns+"/client", "--", labBin, "probe", "tcp", target, "--timeout", "1s")
			probes++
			if code != 0 {
				fails++
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	f := filepath.Join(t.TempDir(), "burst.yaml")
	os.WriteFile(f, []byte(strings.Replace(fmt.Sprintf(deployTmpl, "burst", ns, 20, "burst", "burst"),
		"    spec:\n", "    spec:\n      nodeSelector: {kubernetes.io/hostname: node2}\n", 1)), 0o644)
	e.kubectl(t, "apply", "-f", f)
	time.Sleep(1500 * time.Millisecond)
	syscall.Kill(e.pidOf(t, "sluice-agent-node2"), syscall.SIGKILL)
	time.Sleep(3 * time.Second)
	if out := e.must(t, "up"); !strings.Contains(out, "sluice-agent-node2") {
		t.Errorf("up did not restart the agent:\n%s", out)
	}
	eventually(t, 3*time.Minute, "all 22 pods running", func() error {
		if n, _ := e.countRunning(t, ns); n < 22 {
			return fmt.Errorf("%d running", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if fails > 0 {
		t.Errorf("client → steady failed %d of %d probes while the agent restarted", fails, probes)
	}
	_, ips := e.countRunning(t, ns) // reports duplicates itself
	if got := e.ipamCount("node2"); got < 21 {
		t.Errorf("node2 IPAM holds %d addresses for 21 pods", got)
	}
	for ip := range ips {
		if !strings.HasPrefix(ip, "10.") {
			t.Errorf("unexpected pod address %s", ip)
		}
	}
}

// TestNodeJoin grows the lab by one node: it gets a subnet, and a pod on it is
// reachable from existing pods within seconds.
func TestNodeJoin(t *testing.T) {
	e := sl
	ns := "e2e-join"
	e.namespace(t, ns)
	e.applyPod(t, ns, "old", "node1", "http")
	old := e.waitReady(t, ns, "old")["old"]
	t0 := time.Now()
	node := e.addNode(t)
	e.applyPod(t, ns, "new", node, "http")
	fresh := e.waitReady(t, ns, "new")["new"]
	eventually(t, 30*time.Second, "old pod reaches the new node's pod", func() error {
		out, code := e.sh("exec", ns+"/old", "--", labBin, "probe", "tcp", fresh.Status.PodIP+":80", "--timeout", "1s")
		if code != 0 || !strings.HasPrefix(out, "new "+old.Status.PodIP+":") {
			return fmt.Errorf("%q", out)
		}
		return nil
	})
	t.Logf("%s joined and its pod was reachable from node1 %s after `up --nodes` began", node, time.Since(t0).Round(100*time.Millisecond))
}

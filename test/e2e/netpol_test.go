//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/policy/netpolcases"
)

// The upstream Kubernetes NetworkPolicy e2e cases (pkg/policy/netpolcases, the same table
// pkg/policy's unit test checks the reference model against), replayed in the main lab with
// real packets: namespaces x, y, z with pods a, b, c spread over the three nodes, each case's
// policies applied, every pod probed from every pod on each of the case's ports and protocols,
// and the answers compared with the case's truth table (loopback ignored, as upstream does).

const (
	// enforceDeadline is how long the agents may take to make a change of policies real.
	enforceDeadline = 10 * time.Second
	// probeTimeout is how long a probe waits for an answer; allowed pairs answer in
	// milliseconds, so this is what a denied pair costs.
	probeTimeout = 700 * time.Millisecond
	// settle is how long after a table first matches it is checked again.
	settle = 1500 * time.Millisecond
)

// testPod is a lab pod serving ports, pinned to node, Ready when it answers on readyPort.
func testPod(ns, name, node string, labels map[string]string, ports []corev1.ContainerPort, readyPort int) corev1.Pod {
	return corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name:  "c",
				Image: "sluice-lab/testserver",
				Ports: ports,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(readyPort))}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// writeList writes objects as one v1 List for kubectl apply / delete -f and returns the file.
func writeList(t *testing.T, name string, objs ...any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// createNamespaces applies namespaces, deletes them when the test ends, and waits for their
// default service accounts (pods need them).
func (e *labEnv) createNamespaces(t *testing.T, nss ...corev1.Namespace) {
	t.Helper()
	objs := make([]any, len(nss))
	for i := range nss {
		nss[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}
		objs[i] = nss[i]
	}
	e.kubectl(t, "apply", "-f", writeList(t, "namespaces", objs...))
	t.Cleanup(func() {
		args := []string{"kubectl", "--", "delete", "namespace", "--wait=true", "--timeout=180s", "--ignore-not-found"}
		for _, ns := range nss {
			args = append(args, ns.Name)
		}
		e.sh(args...)
	})
	for _, ns := range nss {
		eventually(t, 30*time.Second, "default service account in "+ns.Name, func() error {
			if _, code := e.sh("kubectl", "--", "-n", ns.Name, "get", "sa", "default"); code != 0 {
				return fmt.Errorf("missing")
			}
			return nil
		})
	}
}

// matrix probes every running pod of nss from every one with `sluice-lab matrix`.
func (e *labEnv) matrix(nss []string, port int, proto string, timeout time.Duration) (*lab.Matrix, error) {
	out, code := e.sh("matrix", "-n", strings.Join(nss, ","), "--port", strconv.Itoa(port), "--protocol", proto,
		"--timeout", timeout.String(), "--json")
	if code != 0 {
		return nil, fmt.Errorf("sluice-lab matrix -n %s %s/%d: exit %d: %s", strings.Join(nss, ","), proto, port, code, out)
	}
	var m lab.Matrix
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("sluice-lab matrix: %v: %s", err, out)
	}
	return &m, nil
}

// diffMatrix lists the pairs of want the matrix gets wrong (or did not probe), sorted;
// pairs not in want (loopback, other pods) are ignored.
func diffMatrix(m *lab.Matrix, want map[[2]string]bool) []string {
	got := map[[2]string]lab.Cell{}
	for _, row := range m.Cells {
		for _, c := range row {
			got[[2]string{c.From, c.To}] = c
		}
	}
	var wrong []string
	for k, w := range want {
		c, ok := got[k]
		switch {
		case !ok:
			wrong = append(wrong, fmt.Sprintf("%s → %s: not probed (pod not running?)", k[0], k[1]))
		case c.OK != w && w:
			wrong = append(wrong, fmt.Sprintf("%s → %s: want allowed, got denied (%s)", k[0], k[1], c.Error))
		case c.OK != w:
			wrong = append(wrong, fmt.Sprintf("%s → %s: want denied, got allowed (%q)", k[0], k[1], c.Reply))
		}
	}
	sort.Strings(wrong)
	return wrong
}

type tableProbe struct {
	port  int
	proto string
	want  map[[2]string]bool
}

// checkTables probes every table in parallel once and returns the mismatches, each line
// prefixed with its port/protocol.
func (e *labEnv) checkTables(nss []string, tables []tableProbe) []string {
	res := make([][]string, len(tables))
	var wg sync.WaitGroup
	for i, tp := range tables {
		wg.Go(func() {
			m, err := e.matrix(nss, tp.port, tp.proto, probeTimeout)
			if err != nil {
				res[i] = []string{err.Error()}
				return
			}
			for _, w := range diffMatrix(m, tp.want) {
				res[i] = append(res[i], fmt.Sprintf("%s/%d %s", tp.proto, tp.port, w))
			}
		})
	}
	wg.Wait()
	var all []string
	for _, r := range res {
		all = append(all, r...)
	}
	return all
}

// waitTables probes until every table holds or deadline passes; it returns the mismatches
// of the last round (nil: all hold) and how long it took.
func (e *labEnv) waitTables(nss []string, tables []tableProbe, deadline time.Duration) ([]string, time.Duration) {
	t0 := time.Now()
	for {
		wrong := e.checkTables(nss, tables)
		if len(wrong) == 0 || time.Since(t0) > deadline {
			return wrong, time.Since(t0)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestNetworkPolicyUpstreamCases(t *testing.T) {
	e := sl
	nss := netpolcases.Namespaces
	nodes := e.cfg.NodeNames()
	if len(nodes) < 3 {
		t.Fatalf("want a 3-node lab, have %v", nodes)
	}
	e.createNamespaces(t, netpolcases.NamespaceObjects()...)

	// Pods: a, b, c in every namespace, rotated over the nodes so that every pod name and
	// every namespace has a pod on every node (x: a b c on node1 2 3, y: on node2 3 1, …).
	var pods []any
	for i, ns := range nss {
		for j, p := range netpolcases.PodNames {
			node := nodes[(i+j)%3]
			pods = append(pods, testPod(ns, p, node, map[string]string{netpolcases.PodLabel: p}, netpolcases.ContainerPorts(), 80))
		}
	}
	e.kubectl(t, "apply", "-f", writeList(t, "pods", pods...))
	ips := map[string]netip.Addr{}
	for _, ns := range nss {
		for name, p := range e.waitReady(t, ns, netpolcases.PodNames...) {
			a, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil {
				t.Fatalf("pod %s/%s: IP %q: %v", ns, name, p.Status.PodIP, err)
			}
			ips[ns+"/"+name] = a
			t.Logf("pod %s/%s on %s: %s", ns, name, p.Spec.NodeName, a)
		}
	}

	// SCTP: probe once; a kernel without SCTP cannot carry it, so those tables are skipped.
	sctpOK := true
	if out, _ := e.sh("exec", "x/a", "--", labBin, "probe", "sctp", ips["x/b"].String()+":80", "--timeout", "1s"); strings.Contains(out, "does not support SCTP") {
		sctpOK = false
		t.Logf("this kernel has no SCTP (%s): SCTP probes are skipped", strings.TrimSpace(out))
	}

	// Before any policy: everything reaches everything on every port and protocol probed.
	base := []tableProbe{}
	for _, port := range []int{80, 81} {
		for _, proto := range []string{"tcp", "udp", "sctp"} {
			if proto != "sctp" || sctpOK {
				base = append(base, tableProbe{port, proto, netpolcases.NewTruth(true)})
			}
		}
	}
	if wrong, took := e.waitTables(nss, base, enforceDeadline); len(wrong) > 0 {
		t.Fatalf("without policies not everything is reachable (after %s):\n  %s", took.Round(time.Millisecond), strings.Join(wrong, "\n  "))
	}

	t0 := time.Now()
	cases := netpolcases.Cases(ips)
	var ran, passed, skipped, sctpSkipped, probed int
	var failed []string
	for _, c := range cases {
		var tables []tableProbe
		for _, p := range c.Probes {
			if p.Proto == corev1.ProtocolSCTP && !sctpOK {
				sctpSkipped++
				continue
			}
			tables = append(tables, tableProbe{p.Port, strings.ToLower(string(p.Proto)), p.Want})
		}
		if len(tables) == 0 {
			skipped++
			t.Logf("SKIP %s: every probe is SCTP", c.Name)
			continue
		}
		ran++
		probed += len(tables)
		objs := make([]any, len(c.Policies))
		for i := range c.Policies {
			objs[i] = c.Policies[i]
		}
		f := writeList(t, "policies", objs...)
		tc := time.Now()
		e.kubectl(t, "apply", "-f", f)
		wrong, took := e.waitTables(nss, tables, enforceDeadline)
		if len(wrong) == 0 {
			// A table that equals the policy-free state (every pair allowed) matches before the
			// agents have done anything, and any table could match a passing state: look again
			// once the agents have surely caught up.
			time.Sleep(settle)
			if again := e.checkTables(nss, tables); len(again) > 0 {
				wrong = append([]string{fmt.Sprintf("matched after %s but not %s later:", took.Round(time.Millisecond), settle)}, again...)
			}
		}

		// Back to all-allowed before the next case.
		e.kubectl(t, "delete", "-f", f, "--ignore-not-found", "--wait=true")
		var open []tableProbe
		for _, tp := range tables {
			open = append(open, tableProbe{tp.port, tp.proto, netpolcases.NewTruth(true)})
		}
		stale, tookOpen := e.waitTables(nss, open, enforceDeadline)
		if len(stale) > 0 {
			wrong = append(wrong, fmt.Sprintf("after deleting the policies, not all-allowed within %s:", enforceDeadline))
			for _, s := range stale {
				wrong = append(wrong, "  "+s)
			}
		}
		if len(wrong) == 0 {
			passed++
			t.Logf("PASS %s (%d tables, matched after %s and again %s later, reopened in %s)", c.Name, len(tables), took.Round(time.Millisecond), settle, tookOpen.Round(time.Millisecond))
			continue
		}
		failed = append(failed, c.Name)
		t.Errorf("FAIL %s (%s after applying):\n  %s", c.Name, time.Since(tc).Round(time.Millisecond), strings.Join(wrong, "\n  "))
		if len(stale) > 0 {
			// The next cases would see this one's leftovers; give the agents more time.
			if stale, _ = e.waitTables(nss, open, 30*time.Second); len(stale) > 0 {
				t.Fatalf("the cluster does not return to all-allowed; stopping:\n  %s", strings.Join(stale, "\n  "))
			}
		}
	}
	sctpNote := "kernel supports SCTP, SCTP probes ran"
	if !sctpOK {
		sctpNote = fmt.Sprintf("%d SCTP tables skipped, this kernel has no SCTP", sctpSkipped)
	}
	t.Logf("netpol upstream cases: %d ran, %d passed, %d skipped (SCTP: %s); %d truth tables probed (%d pairs each) in %s",
		ran, passed, skipped, sctpNote, probed, len(netpolcases.NewTruth(true)), time.Since(t0).Round(time.Second))
	if len(failed) > 0 {
		t.Errorf("%d of %d upstream cases failed: %s", len(failed), ran, strings.Join(failed, "; "))
	}
}

//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/netns"
	"github.com/sluice-net/sluice/pkg/policy/netpolcases"
)

// Isolation modes live in the lab: Multitenant (VNIDs, join / isolate / make-global through
// sluicectl), an established connection across a mode switch, and Subnet ignoring policy.

// setMode patches the ClusterNetwork's isolation mode.
func (e *labEnv) setMode(t *testing.T, mode string) {
	t.Helper()
	e.kubectl(t, "patch", "clusternetwork", "default", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"mode":%q}}`, mode))
	t.Logf("ClusterNetwork mode: %s", mode)
}

// mtWant is the expected reachability among pods ("ns/pod") given each namespace's VNID:
// same VNID or either global (0).
func mtWant(pods []string, vnid map[string]uint32) map[[2]string]bool {
	want := map[[2]string]bool{}
	for _, a := range pods {
		for _, b := range pods {
			if a == b {
				continue
			}
			va, vb := vnid[strings.SplitN(a, "/", 2)[0]], vnid[strings.SplitN(b, "/", 2)[0]]
			want[[2]string{a, b}] = va == vb || va == 0 || vb == 0
		}
	}
	return want
}

// echoConn is a long-lived TCP connection between two pods, both ends held by the test
// process in the pods' network namespaces; the server end echoes lines.
type echoConn struct {
	l net.Listener
	c net.Conn
	r *bufio.Reader
}

func (e *labEnv) openEcho(t *testing.T, from, to podStatus, fromNode, toNode string, port int) *echoConn {
	t.Helper()
	toNS := netns.Path(e.cfg.PodNetnsPrefix(toNode) + to.Metadata.UID[:8])
	fromNS := netns.Path(e.cfg.PodNetnsPrefix(fromNode) + from.Metadata.UID[:8])
	return openEchoAt(t, fromNS, toNS, to.Status.PodIP, port)
}

// roundTrip sends a line and waits for its echo.
func (ec *echoConn) roundTrip(msg string) error {
	ec.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := ec.c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	got, err := ec.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != "echo "+msg+"\n" {
		return fmt.Errorf("echo %q, want %q", got, "echo "+msg+"\n")
	}
	return nil
}

func TestMultitenantIsolation(t *testing.T) {
	e := sl
	nodes := e.cfg.NodeNames()
	if len(nodes) < 3 {
		t.Fatalf("want a 3-node lab, have %v", nodes)
	}
	orig := strings.TrimSpace(e.kubectl(t, "get", "clusternetwork", "default", "-o", "jsonpath={.spec.mode}"))
	if orig == "" {
		orig = "NetworkPolicy"
	}
	t.Cleanup(func() {
		e.sh("kubectl", "--", "patch", "clusternetwork", "default", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"mode":%q}}`, orig))
	})

	e.createNamespaces(t,
		corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "p1"}},
		corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "p2"}},
		corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "p3"}})
	ports := []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}
	place := []struct{ ns, name, node string }{
		{"p1", "a", nodes[0]}, {"p1", "b", nodes[1]}, {"p2", "a", nodes[1]}, {"p3", "a", nodes[2]}, {"default", "mt-global", nodes[2]},
	}
	var objs []any
	var pods []string
	for _, p := range place {
		objs = append(objs, testPod(p.ns, p.name, p.node, map[string]string{"app": "mt"}, ports, 80))
		pods = append(pods, p.ns+"/"+p.name)
	}
	e.kubectl(t, "apply", "-f", writeList(t, "mt-pods", objs...))
	t.Cleanup(func() {
		e.sh("kubectl", "--", "-n", "default", "delete", "pod", "mt-global", "--wait=true", "--ignore-not-found")
	})
	st := map[string]podStatus{}
	for _, p := range place {
		st[p.ns+"/"+p.name] = e.waitReady(t, p.ns, p.name)[p.name]
	}
	nss := []string{"p1", "p2", "p3", "default"}
	check := func(what string, want map[[2]string]bool) {
		t.Helper()
		wrong, took := e.waitTables(nss, []tableProbe{{80, "tcp", want}}, enforceDeadline)
		if len(wrong) > 0 {
			t.Errorf("%s: after %s:\n  %s", what, took.Round(time.Millisecond), strings.Join(wrong, "\n  "))
			return
		}
		t.Logf("%s: as expected (%s)", what, took.Round(time.Millisecond))
	}
	// pairUntil measures how long until from reaches (or stops reaching) to.
	pairUntil := func(from, to string, reach bool, limit time.Duration) (time.Duration, bool) {
		t0 := time.Now()
		for {
			out, _ := e.sh("exec", from, "--", labBin, "probe", "tcp", st[to].Status.PodIP+":80", "--timeout", "300ms")
			if strings.HasPrefix(out, strings.SplitN(to, "/", 2)[1]+" ") == reach {
				return time.Since(t0), true
			}
			if time.Since(t0) > limit {
				return time.Since(t0), false
			}
		}
	}

	// NetworkPolicy mode, no policies: everything open. Open a long-lived connection between
	// the two p1 pods (different nodes), which stays allowed in Multitenant.
	check("NetworkPolicy mode, no policies", mtWant(pods, map[string]uint32{}))
	ec := e.openEcho(t, st["p1/a"], st["p1/b"], nodes[0], nodes[1], 9080)
	if err := ec.roundTrip("before the switch"); err != nil {
		t.Fatalf("long-lived connection p1/a → p1/b: %v", err)
	}

	e.setMode(t, "Multitenant")
	var vnid map[string]uint32
	eventually(t, 30*time.Second, "NetNamespaces for p1, p2, p3", func() error {
		vnid = map[string]uint32{}
		for name, n := range e.netNamespaces(t) {
			vnid[name] = n.Spec.NetID
		}
		for _, ns := range []string{"p1", "p2", "p3"} {
			if vnid[ns] == 0 {
				return fmt.Errorf("%s has netID %d", ns, vnid[ns])
			}
		}
		return nil
	})
	if vnid["default"] != 0 || vnid["p1"] == vnid["p2"] || vnid["p1"] == vnid["p3"] || vnid["p2"] == vnid["p3"] {
		t.Fatalf("unexpected netIDs: %v", vnid)
	}
	check("Multitenant: own VNIDs", mtWant(pods, vnid))
	// The established connection survived the switch (the pair stays allowed).
	if err := ec.roundTrip("after the switch"); err != nil {
		t.Errorf("long-lived connection p1/a → p1/b after NetworkPolicy → Multitenant: %v", err)
	} else {
		t.Logf("long-lived TCP connection p1/a → p1/b (%s → %s) still carries data after NetworkPolicy → Multitenant", nodes[0], nodes[1])
	}

	// join p2 to p1: p2 ↔ p1 within a second of sluicectl returning.
	vnid = mergeIDs(vnid, e.podNetwork(t, "join-projects", "--to=p1", "p2"))
	if took, ok := pairUntil("p2/a", "p1/a", true, 5*time.Second); !ok || took > time.Second {
		t.Errorf("join-projects --to=p1 p2: p2/a → p1/a reachable after %s (ok=%v), want within 1s", took.Round(time.Millisecond), ok)
	} else {
		t.Logf("join-projects: p2/a → p1/a reachable after %s", took.Round(time.Millisecond))
	}
	check("after join-projects --to=p1 p2", mtWant(pods, vnid))

	vnid = mergeIDs(vnid, e.podNetwork(t, "isolate-projects", "p2"))
	if took, ok := pairUntil("p2/a", "p1/a", false, 5*time.Second); !ok || took > time.Second+probeTimeout {
		t.Errorf("isolate-projects p2: p2/a → p1/a still reachable after %s (ok=%v)", took.Round(time.Millisecond), ok)
	}
	check("after isolate-projects p2", mtWant(pods, vnid))

	vnid = mergeIDs(vnid, e.podNetwork(t, "make-projects-global", "p3"))
	if vnid["p3"] != 0 {
		t.Errorf("make-projects-global p3: netID %d, want 0", vnid["p3"])
	}
	check("after make-projects-global p3", mtWant(pods, vnid))

	// Subnet: a default-deny policy in p1 holds in NetworkPolicy mode and is ignored in Subnet.
	e.setMode(t, "NetworkPolicy")
	deny := netpolcases.Policy("p1", "deny-all", netpolcases.Sel(), netpolcases.Ingress(), netpolcases.Egress())
	f := writeList(t, "deny", deny)
	e.kubectl(t, "apply", "-f", f)
	t.Cleanup(func() { e.sh("kubectl", "--", "delete", "-f", f, "--ignore-not-found") })
	denied := mtWant(pods, map[string]uint32{})
	for k := range denied {
		if strings.HasPrefix(k[0], "p1/") || strings.HasPrefix(k[1], "p1/") {
			denied[k] = false
		}
	}
	check("NetworkPolicy mode, deny-all in p1", denied)
	e.setMode(t, "Subnet")
	check("Subnet mode, deny-all in p1", mtWant(pods, map[string]uint32{}))
}

// mergeIDs returns ids updated with the netIDs sluicectl printed.
func mergeIDs(ids, changed map[string]uint32) map[string]uint32 {
	out := map[string]uint32{}
	for k, v := range ids {
		out[k] = v
	}
	for k, v := range changed {
		out[k] = v
	}
	return out
}

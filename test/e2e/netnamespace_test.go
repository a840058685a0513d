//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type netNamespace struct {
	Metadata struct {
		Name        string
		Annotations map[string]string
	}
	Spec struct {
		NetName string `json:"netname"`
		NetID   uint32 `json:"netID"`
	}
}

func (e *labEnv) netNamespaces(t *testing.T) map[string]netNamespace {
	t.Helper()
	var l struct{ Items []netNamespace }
	if err := json.Unmarshal([]byte(e.kubectl(t, "get", "netnamespaces", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	m := map[string]netNamespace{}
	for _, n := range l.Items {
		m[n.Metadata.Name] = n
	}
	return m
}

// sluicectl runs the built sluicectl against the lab's kubeconfig and returns stdout, stderr
// and the exit status.
func (e *labEnv) sluicectl(args ...string) (string, string, int) {
	cmd := exec.Command(filepath.Join(binDir, "sluicectl"), append([]string{"--kubeconfig", e.cfg.Kubeconfig()}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		return out.String(), errb.String() + err.Error(), -1
	}
	return out.String(), errb.String(), 0
}

// changeDeadline is how long sluicectl may wait for the controller to apply a change: the
// controller reacts to the request's watch event, so a second is plenty.
const changeDeadline = time.Second

// podNetwork runs a sluicectl pod-network command that must succeed within changeDeadline,
// and returns the netIDs it printed.
func (e *labEnv) podNetwork(t *testing.T, args ...string) map[string]uint32 {
	t.Helper()
	t0 := time.Now()
	out, stderr, code := e.sluicectl(append([]string{"pod-network"}, append(args, "--timeout", changeDeadline.String())...)...)
	t.Logf("sluicectl pod-network %s (%v):\n%s%s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond), out, stderr)
	if code != 0 {
		t.Fatalf("sluicectl pod-network %s: exit %d:\n%s%s", strings.Join(args, " "), code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAMESPACE NETID" {
		t.Fatalf("sluicectl output is not a NAMESPACE NETID table:\n%s", out)
	}
	got := map[string]uint32{}
	for _, l := range lines[1:] {
		var name string
		var id uint32
		if _, err := fmt.Sscanf(l, "%s %d", &name, &id); err != nil {
			t.Fatalf("sluicectl output line %q: %v", l, err)
		}
		got[name] = id
	}
	return got
}

// TestNetNamespace follows namespaces' VNIDs in the lab: the controller gives each
// namespace a NetNamespace (default global, the others distinct), sluicectl joins, isolates
// and makes global through the API, and a deleted namespace's NetNamespace goes.
func TestNetNamespace(t *testing.T) {
	a, b, c := "e2e-vnid-a", "e2e-vnid-b", "e2e-vnid-c"
	for _, ns := range []string{a, b, c} {
		sl.kubectl(t, "create", "namespace", ns)
		t.Cleanup(func() { sl.sh("kubectl", "--", "delete", "namespace", ns, "--wait=false", "--ignore-not-found") })
	}

	var nns map[string]netNamespace
	eventually(t, 30*time.Second, "a NetNamespace for every namespace", func() error {
		nns = sl.netNamespaces(t)
		var l struct {
			Items []struct {
				Metadata struct{ Name string }
				Status   struct{ Phase string }
			}
		}
		if err := json.Unmarshal([]byte(sl.kubectl(t, "get", "namespaces", "-o", "json")), &l); err != nil {
			return err
		}
		for _, ns := range l.Items {
			if _, ok := nns[ns.Metadata.Name]; !ok && ns.Status.Phase != "Terminating" {
				return fmt.Errorf("namespace %s has no NetNamespace", ns.Metadata.Name)
			}
		}
		return nil
	})
	if d := nns["default"]; d.Spec.NetID != 0 {
		t.Errorf("NetNamespace default: netID %d, want 0 (global)", d.Spec.NetID)
	}
	// Every namespace's own netID is its own: no NetNamespace shares a non-zero netID
	// (nothing in the lab joined any yet), and the new ones got one each.
	holder := map[uint32]string{}
	for name, nn := range nns {
		if nn.Spec.NetName != name {
			t.Errorf("NetNamespace %s: spec.netname %q", name, nn.Spec.NetName)
		}
		if nn.Spec.NetID == 0 {
			continue
		}
		if other, dup := holder[nn.Spec.NetID]; dup {
			t.Errorf("NetNamespaces %s and %s share netID %d", name, other, nn.Spec.NetID)
		}
		holder[nn.Spec.NetID] = name
	}
	for _, ns := range []string{a, b, c} {
		if id := nns[ns].Spec.NetID; id == 0 || id > 1<<24-1 {
			t.Errorf("NetNamespace %s: netID %d, want a VNID of its own (1 to 16777215)", ns, id)
		}
	}

	// Join: b and c get a's netID.
	idA := nns[a].Spec.NetID
	got := sl.podNetwork(t, "join-projects", "--to="+a, b, c)
	if got[a] != idA || got[b] != idA || got[c] != idA {
		t.Errorf("join-projects --to=%s %s %s printed %v; want all %d", a, b, c, got, idA)
	}
	nns = sl.netNamespaces(t)
	for _, ns := range []string{b, c} {
		if nns[ns].Spec.NetID != idA {
			t.Errorf("after join: NetNamespace %s has netID %d, want %s's %d", ns, nns[ns].Spec.NetID, a, idA)
		}
		if r := nns[ns].Metadata.Annotations["sluice.dev/multitenant-change"]; r != "" {
			t.Errorf("after join: NetNamespace %s still has the request %q", ns, r)
		}
	}

	// Isolate b: a netID no other NetNamespace holds; a and c stay joined.
	got = sl.podNetwork(t, "isolate-projects", b)
	nns = sl.netNamespaces(t)
	idB := nns[b].Spec.NetID
	if idB == 0 || idB == idA || got[b] != idB {
		t.Errorf("after isolate: %s has netID %d (printed %d), %s has %d", b, idB, got[b], a, idA)
	}
	for name, nn := range nns {
		if name != b && nn.Spec.NetID == idB {
			t.Errorf("after isolate: %s shares %s's netID %d", name, b, idB)
		}
	}
	if nns[c].Spec.NetID != idA || nns[a].Spec.NetID != idA {
		t.Errorf("after isolating %s: %s has %d, %s has %d; want both %d", b, a, nns[a].Spec.NetID, c, nns[c].Spec.NetID, idA)
	}

	// Make global: c gets 0.
	got = sl.podNetwork(t, "make-projects-global", c)
	if nns = sl.netNamespaces(t); nns[c].Spec.NetID != 0 || got[c] != 0 {
		t.Errorf("after make-projects-global: %s has netID %d (printed %d), want 0", c, nns[c].Spec.NetID, got[c])
	}

	// Bad input: the error names the namespace; nothing changes.
	out, stderr, code := sl.sluicectl("pod-network", "join-projects", "--to="+a, "e2e-no-such-namespace")
	if code != 2 || !strings.Contains(stderr, `unknown project "e2e-no-such-namespace"`) {
		t.Errorf("join an unknown namespace: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	out, stderr, code = sl.sluicectl("pod-network", "isolate-projects", "default")
	if code != 1 || !strings.Contains(stderr, "namespace default") || !strings.Contains(stderr, "cannot be isolated") {
		t.Errorf("isolate default: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if nns = sl.netNamespaces(t); nns["default"].Spec.NetID != 0 {
		t.Errorf("default's netID changed to %d", nns["default"].Spec.NetID)
	}

	// A deleted namespace's NetNamespace goes, and its netID is free again.
	sl.kubectl(t, "delete", "namespace", b, "--wait=true", "--timeout=120s")
	eventually(t, 30*time.Second, "NetNamespace "+b+" deleted with its namespace", func() error {
		if _, ok := sl.netNamespaces(t)[b]; ok {
			return fmt.Errorf("still there")
		}
		return nil
	})
	d := "e2e-vnid-d"
	sl.kubectl(t, "create", "namespace", d)
	t.Cleanup(func() { sl.sh("kubectl", "--", "delete", "namespace", d, "--wait=false", "--ignore-not-found") })
	eventually(t, 30*time.Second, "NetNamespace "+d, func() error {
		nns = sl.netNamespaces(t)
		nn, ok := nns[d]
		if !ok {
			return fmt.Errorf("none")
		}
		for name, o := range nns {
			if name != d && o.Spec.NetID == nn.Spec.NetID {
				return fmt.Errorf("%s shares netID %d with %s", d, nn.Spec.NetID, name)
			}
		}
		if nn.Spec.NetID == 0 {
			return fmt.Errorf("netID 0")
		}
		return nil
	})
	t.Logf("%s got netID %d (%s had %d)", d, nns[d].Spec.NetID, b, idB)
}

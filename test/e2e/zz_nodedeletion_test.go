//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file's name sorts last on purpose: go test runs files in name
// order, and deleting node3 must come after every test that schedules
// pods on it.

// TestNodeDeletion: a deleted node's subnet is released and its routes
// disappear from the other nodes. Runs last: it removes node3 for good.
func TestNodeDeletionZ(t *testing.T) {
	e := sl
	sub := e.hostSubnets(t)["node3"].Spec.Subnet
	if out, _ := e.sh("exec", "node/node1", "--", "ip", "route"); !strings.Contains(out, sub) {
		t.Fatalf("node1 has no route to node3's %s:\n%s", sub, out)
	}
	// Stop node3's kubelet first, or it would register its node again.
	syscall.Kill(e.pidOf(t, "kubelet-node3"), syscall.SIGTERM)
	e.kubectl(t, "delete", "node", "node3")
	eventually(t, 30*time.Second, "node3's HostSubnet released and its route gone", func() error {
		if _, ok := e.hostSubnets(t)["node3"]; ok {
			return fmt.Errorf("HostSubnet node3 still exists")
		}
		if out, _ := e.sh("exec", "node/node1", "--", "ip", "route"); strings.Contains(out, sub) {
			return fmt.Errorf("node1 still routes %s", sub)
		}
		return nil
	})
}

//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeDeletion: a deleted node's subnet is released and its routes disappear from the
// other nodes. It deletes a node it adds itself and brings that node back at the end, so
// that it runs in any order with the other tests: their nodes are never touched, and the
// lab is whole again for the tests after it (`up` is a no-op, every node is Ready).
func TestNodeDeletion(t *testing.T) {
	e := sl
	node := e.addNode(t)
	sub := e.hostSubnets(t)[node].Spec.Subnet
	eventually(t, 30*time.Second, "node1's route to "+node+"'s "+sub, func() error {
		if out, _ := e.sh("exec", "node/node1", "--", "ip", "route"); !strings.Contains(out, sub) {
			return fmt.Errorf("node1 has no route to %s:\n%s", sub, out)
		}
		return nil
	})

	t.Cleanup(func() {
		// `up` starts the stopped kubelet, which registers the node again. Its HostSubnet is
		// the same: the lowest free one, as no other node was deleted; its agent, which kept
		// running, keeps serving that subnet.
		if out, code := e.sh("up"); code != 0 {
			t.Errorf("sluice-lab up, to bring %s back: exit %d:\n%s", node, code, out)
			return
		}
		eventually(t, 30*time.Second, node+"'s HostSubnet back", func() error {
			if got := e.hostSubnets(t)[node].Spec.Subnet; got != sub {
				return fmt.Errorf("HostSubnet %s has subnet %q, want %s", node, got, sub)
			}
			return nil
		})
	})
	// Stop the node's kubelet first, or it would register its node again.
	if err := syscall.Kill(e.pidOf(t, "kubelet-"+node), syscall.SIGTERM); err != nil {
		t.Fatalf("stop kubelet-%s: %v", node, err)
	}
	e.kubectl(t, "delete", "node", node)
	eventually(t, 30*time.Second, node+"'s HostSubnet released and its route gone", func() error {
		if _, ok := e.hostSubnets(t)[node]; ok {
			return fmt.Errorf("HostSubnet %s still exists", node)
		}
		if out, _ := e.sh("exec", "node/node1", "--", "ip", "route"); strings.Contains(out, sub) {
			return fmt.Errorf("node1 still routes %s", sub)
		}
		return nil
	})
}

//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/lab/testserver"
	"github.com/sluice-net/sluice/pkg/netns"
)

// twoNodes makes node namespaces A and B on an underlay veth (10.99.1.1 and
// 10.99.1.2) and a pod namespace on each.
func twoNodes(t *testing.T) (nodeA, nodeB, podA, podB string) {
	t.Helper()
	s := fmt.Sprintf("%d", time.Now().UnixNano()%1e6)
	nodeA, nodeB, podA, podB = "sluice-it-na"+s, "sluice-it-nb"+s, "sluice-it-pa"+s, "sluice-it-pb"+s
	t.Cleanup(func() {
		for _, n := range []string{podA, podB, nodeA, nodeB} {
			exec.Command("ip", "netns", "del", n).Run()
		}
	})
	for _, n := range []string{nodeA, nodeB, podA, podB} {
		ip(t, "netns", "add", n)
		ip(t, "-n", n, "link", "set", "lo", "up")
	}
	ip(t, "link", "add", "eth0", "netns", nodeA, "type", "veth", "peer", "name", "eth0", "netns", nodeB)
	ip(t, "-n", nodeA, "addr", "add", "10.99.1.1/24", "dev", "eth0")
	ip(t, "-n", nodeB, "addr", "add", "10.99.1.2/24", "dev", "eth0")
	ip(t, "-n", nodeA, "link", "set", "eth0", "up")
	ip(t, "-n", nodeB, "link", "set", "eth0", "up")
	return
}

func TestPodsAcrossVXLAN(t *testing.T) {
	nodeA, nodeB, podA, podB := twoNodes(t)
	A := netip.MustParseAddr("10.99.1.1")
	B := netip.MustParseAddr("10.99.1.2")
	subA, subB := netip.MustParsePrefix("10.128.0.0/23"), netip.MustParsePrefix("10.128.2.0/23")
	setup := func(node, pod string, self netip.Addr, sub netip.Prefix, peer netip.Addr, peerSub netip.Prefix, podIP netip.Addr) {
		t.Helper()
		err := netns.Do(netns.Path(node), func() error {
			if err := link.EnableForwarding(); err != nil {
				return err
			}
			dev, mtu, err := link.UnderlayFor(self)
			if err != nil || dev != "eth0" || mtu != 1500 {
				return fmt.Errorf("underlay: %s %d %v", dev, mtu, err)
			}
			o := &link.Overlay{VNI: 1, Port: 4789, LocalIP: self, LocalSubnet: sub, UnderlayMTU: mtu}
			if err := o.Ensure(); err != nil {
				return err
			}
			if err := o.Ensure(); err != nil { // idempotent
				return fmt.Errorf("second Ensure: %w", err)
			}
			if err := o.SyncRemotes([]link.Remote{{Node: "peer", NodeIP: peer, Subnet: peerSub}}); err != nil {
				return err
			}
			_, err = link.SetupPod(link.Pod{ContainerID: "c-" + pod, NetnsPath: netns.Path(pod), IfName: "eth0",
				IP: podIP, Gateway: sub.Addr().Next(), MTU: mtu - link.VXLANOverhead})
			return err
		})
		if err != nil {
			t.Fatalf("set up %s: %v", node, err)
		}
	}
	pa, pb := netip.MustParseAddr("10.128.0.2"), netip.MustParseAddr("10.128.2.2")
	setup(nodeA, podA, A, subA, B, subB, pa)
	setup(nodeB, podB, B, subB, A, subA, pb)

	// A server in pod B; pod A reaches it across the overlay and is seen
	// with its own address (no NAT between pods).
	var ln net.Listener
	if err := netns.Do(netns.Path(podB), func() error {
		var err error
		ln, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			c.Write([]byte(testserver.Reply("pod-b", ap)))
			c.Close()
		}
	}()
	line, err := probeFrom(podA, "tcp", "10.128.2.2:8080")
	if err != nil || !strings.HasPrefix(line, "pod-b 10.128.0.2:") {
		t.Fatalf("pod A → pod B across VXLAN: %q %v", line, err)
	}
	// Node A reaches pod B too (from its VTEP address).
	if line, err := probeFrom(nodeA, "tcp", "10.128.2.2:8080"); err != nil || !strings.HasPrefix(line, "pod-b 10.128.0.0:") {
		t.Errorf("node A → pod B: %q %v", line, err)
	}
	// The pod's MTU accounts for VXLAN.
	out, _ := exec.Command("ip", "-n", podA, "-o", "link", "show", "eth0").CombinedOutput()
	if !strings.Contains(string(out), "mtu 1450") {
		t.Errorf("pod MTU: %s", out)
	}
	// CHECK sees the pod as set up.
	if err := netns.Do(netns.Path(nodeA), func() error {
		return link.CheckPod(link.Pod{ContainerID: "c-" + podA, NetnsPath: netns.Path(podA), IfName: "eth0", IP: pa})
	}); err != nil {
		t.Errorf("CheckPod: %v", err)
	}

	// The remote disappears: its route goes, and pod B is unreachable.
	if err := netns.Do(netns.Path(nodeA), func() error {
		o := &link.Overlay{VNI: 1, Port: 4789, LocalIP: A, LocalSubnet: subA, UnderlayMTU: 1500}
		return o.SyncRemotes(nil)
	}); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "-n", nodeA, "route").CombinedOutput()
	if strings.Contains(string(out), "10.128.2.0/23") {
		t.Errorf("route to the removed subnet remains:\n%s", out)
	}
	if _, err := testProbe(podA, "10.128.2.2:8080", 300*time.Millisecond); err == nil {
		t.Error("pod B still reachable after its node was removed")
	}
	// Teardown removes the veth pair, and is idempotent.
	if err := netns.Do(netns.Path(nodeA), func() error {
		if err := link.TeardownPod("c-" + podA); err != nil {
			return err
		}
		return link.TeardownPod("c-" + podA)
	}); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "-n", podA, "link").CombinedOutput()
	if strings.Contains(string(out), "eth0") {
		t.Errorf("pod interface remains after teardown:\n%s", out)
	}
}

func testProbe(ns, addr string, timeout time.Duration) (string, error) {
	var line string
	err := netns.Do(netns.Path(ns), func() error {
		var err error
		line, err = testserver.Probe(context.Background(), "tcp", addr, timeout)
		return err
	})
	return line, err
}

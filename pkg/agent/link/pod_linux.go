// Package link programs the node's kernel links and routes through netlink:
// pods' veth pairs and their addresses and routes, and the overlay (VXLAN
// device, static FDB and neighbour entries, a route per remote host subnet)
// or direct routes between L2-adjacent nodes.
package link

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// HostIfName is the host-side interface of a container's veth: the
// dataplane's prefix and a hash of the container ID, 15 bytes in all.
func HostIfName(containerID string) string {
	h := sha256.Sum256([]byte(containerID))
	return dataplane.PodIfPrefix + hex.EncodeToString(h[:])[:12]
}

// Pod is a pod's interface as the agent configures it: routed, no bridge.
// The pod has IP/32 and a default route via Gateway, which sits on the
// host-side veth (the same address on every pod's host side, like the ptp
// plugin), so every packet leaves the pod through the host's IP stack.
type Pod struct {
	ContainerID string
	NetnsPath   string
	IfName      string // inside the pod, usually eth0
	IP          netip.Addr
	Gateway     netip.Addr
	MTU         int
}

// SetupPod creates the veth pair and configures both ends. A leftover pair
// from an earlier attempt for the same container is replaced. It returns the
// pod-side MAC address.
func SetupPod(p Pod) (string, error) {
	hostIf := HostIfName(p.ContainerID)
	if old, err := netlink.LinkByName(hostIf); err == nil {
		netlink.LinkDel(old)
	}
	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return "", fmt.Errorf("open pod network namespace %s: %w", p.NetnsPath, err)
	}
	defer ns.Close()
	podH, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", err
	}
	defer podH.Close()
	if l, err := podH.LinkByName(p.IfName); err == nil {
		podH.LinkDel(l)
	}
	// Create the pair in the host namespace with a temporary peer name (the
	// pod's ifName, usually eth0, may well exist on the host), then move the
	// peer into the pod and rename it there.
	tmp := "slt" + hostIf[len(dataplane.PodIfPrefix):]
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf, MTU: p.MTU}, PeerName: tmp}
	if err := netlink.LinkAdd(veth); err != nil {
		return "", fmt.Errorf("create veth %s: %w", hostIf, err)
	}
	ok := false
	defer func() {
		if !ok {
			netlink.LinkDel(veth)
		}
	}()
	peer, err := netlink.LinkByName(tmp)
	if err != nil {
		return "", err
	}
	if err := netlink.LinkSetMTU(peer, p.MTU); err != nil {
		return "", err
	}
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		return "", fmt.Errorf("move %s into %s: %w", tmp, p.NetnsPath, err)
	}
	podLink, err := podH.LinkByName(tmp)
	if err != nil {
		return "", err
	}
	if err := podH.LinkSetName(podLink, p.IfName); err != nil {
		return "", fmt.Errorf("rename pod interface to %s: %w", p.IfName, err)
	}
	if err := podH.LinkSetUp(podLink); err != nil {
		return "", err
	}
	if lo, err := podH.LinkByName("lo"); err == nil {
		podH.LinkSetUp(lo)
	}
	if err := podH.AddrAdd(podLink, &netlink.Addr{IPNet: hostPrefix(p.IP)}); err != nil {
		return "", fmt.Errorf("address %s on the pod's %s: %w", p.IP, p.IfName, err)
	}
	gw := hostPrefix(p.Gateway)
	if err := podH.RouteAdd(&netlink.Route{LinkIndex: podLink.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
		return "", fmt.Errorf("route to the gateway in the pod: %w", err)
	}
	if err := podH.RouteAdd(&netlink.Route{LinkIndex: podLink.Attrs().Index, Gw: gw.IP}); err != nil {
		return "", fmt.Errorf("default route in the pod: %w", err)
	}

	host, err := netlink.LinkByName(hostIf)
	if err != nil {
		return "", err
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: hostPrefix(p.Gateway)}); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("gateway address on %s: %w", hostIf, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return "", err
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostPrefix(p.IP), Scope: netlink.SCOPE_LINK,
		Src: p.Gateway.AsSlice(), Protocol: RouteProtocol}); err != nil {
		return "", fmt.Errorf("route to the pod via %s: %w", hostIf, err)
	}
	ok = true
	return podLink.Attrs().HardwareAddr.String(), nil
}

// TeardownPod deletes the container's veth pair (both ends go together, and
// the host route with them). It succeeds if there is none.
func TeardownPod(containerID string) error { return DeleteInterface(HostIfName(containerID)) }

// CheckPod verifies that the pod's interfaces, address and routes are as
// SetupPod left them.
func CheckPod(p Pod) error {
	hostIf := HostIfName(p.ContainerID)
	if _, err := netlink.LinkByName(hostIf); err != nil {
		return fmt.Errorf("host interface %s: %w", hostIf, err)
	}
	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return fmt.Errorf("pod network namespace %s: %w", p.NetnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(p.IfName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", p.IfName, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == p.IP {
			return nil
		}
	}
	return fmt.Errorf("pod interface %s lacks address %s", p.IfName, p.IP)
}

// PodInterfaces lists host-side pod interfaces present on the node.
func PodInterfaces() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		if n := l.Attrs().Name; len(n) > len(dataplane.PodIfPrefix) && n[:len(dataplane.PodIfPrefix)] == dataplane.PodIfPrefix {
			names = append(names, n)
		}
	}
	return names, nil
}

// DeleteInterface removes a link by name; a missing one is not an error.
func DeleteInterface(name string) error {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

func hostPrefix(a netip.Addr) *net.IPNet {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}
}

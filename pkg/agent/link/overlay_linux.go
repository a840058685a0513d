package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the routes the agent owns (rtnetlink protocol number),
// so that it can find and remove its stale routes and no one else's.
const RouteProtocol netlink.RouteProtocol = 0x5c

// VXLANDevice is the overlay's device on every node.
const VXLANDevice = "vxlan.sluice"

// VXLANOverhead is what the encapsulation costs in MTU: outer Ethernet 14,
// IPv4 20, UDP 8, VXLAN 8.
const VXLANOverhead = 50

// Remote is another node's host subnet and where to reach it.
type Remote struct {
	Node   string
	NodeIP netip.Addr
	Subnet netip.Prefix
}

// Overlay is this node's end of the VXLAN overlay.
type Overlay struct {
	VNI         int
	Port        int
	LocalIP     netip.Addr   // the node's InternalIP, tunnel source
	LocalSubnet netip.Prefix // this node's host subnet
	UnderlayMTU int
}

// VTEPMAC derives a node's VXLAN MAC address from its IP: locally
// administered, stable, and computable by every other node.
func VTEPMAC(nodeIP netip.Addr) net.HardwareAddr {
	a := nodeIP.Unmap().As4()
	return net.HardwareAddr{0x0e, 0x5c, a[0], a[1], a[2], a[3]}
}

// vtepIP is a node's address on its VXLAN device: the network address of its
// host subnet, which IPAM never hands to a pod.
func vtepIP(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr() }

// Ensure creates or updates the VXLAN device: no learning (every FDB and
// neighbour entry is static, from HostSubnets), the node's address as
// source, the VTEP address of the local subnet.
func (o *Overlay) Ensure() error {
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: o.UnderlayMTU - VXLANOverhead, HardwareAddr: VTEPMAC(o.LocalIP)},
		VxlanId:   o.VNI,
		SrcAddr:   o.LocalIP.AsSlice(),
		Port:      o.Port,
		Learning:  false,
	}
	l, err := netlink.LinkByName(VXLANDevice)
	if err == nil {
		if v, ok := l.(*netlink.Vxlan); !ok || v.VxlanId != o.VNI || v.Port != o.Port || !v.SrcAddr.Equal(want.SrcAddr) {
			// Parameters cannot change in place: recreate.
			if err := netlink.LinkDel(l); err != nil {
				return err
			}
			l = nil
		}
	}
	if l == nil || err != nil {
		if err := netlink.LinkAdd(want); err != nil {
			return fmt.Errorf("create %s: %w", VXLANDevice, err)
		}
		if l, err = netlink.LinkByName(VXLANDevice); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetMTU(l, o.UnderlayMTU-VXLANOverhead); err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: hostPrefix(vtepIP(o.LocalSubnet))}
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		if !a.IP.Equal(addr.IP) {
			netlink.AddrDel(l, &a)
		}
	}
	if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("address on %s: %w", VXLANDevice, err)
	}
	return netlink.LinkSetUp(l)
}

// SyncRemotes makes the overlay reach exactly the given remote subnets: for
// each, a permanent neighbour (remote VTEP IP → remote VTEP MAC), an FDB
// entry (remote MAC → remote node IP) and a route (subnet via remote VTEP
// IP, onlink); entries for nodes no longer listed are removed.
func (o *Overlay) SyncRemotes(remotes []Remote) error {
	l, err := netlink.LinkByName(VXLANDevice)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	var errs []error
	wantRoutes := map[string]bool{}
	wantNeigh := map[string]bool{}
	wantFDB := map[string]bool{}
	for _, r := range remotes {
		mac := VTEPMAC(r.NodeIP)
		vtep := vtepIP(r.Subnet)
		wantRoutes[r.Subnet.Masked().String()] = true
		wantNeigh[vtep.String()] = true
		wantFDB[mac.String()] = true
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
			IP: vtep.AsSlice(), HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s for %s: %w", vtep, r.Node, err))
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: r.NodeIP.AsSlice(), HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("fdb %s → %s for %s: %w", mac, r.NodeIP, r.Node, err))
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixNet(r.Subnet), Gw: vtep.AsSlice(),
			Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol, Src: vtepIP(o.LocalSubnet).AsSlice()}); err != nil {
			errs = append(errs, fmt.Errorf("route to %s (%s): %w", r.Subnet, r.Node, err))
		}
	}
	routes, _ := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Protocol: RouteProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	for _, rt := range routes {
		if rt.Dst != nil && !wantRoutes[rt.Dst.String()] {
			netlink.RouteDel(&rt)
		}
	}
	neighs, _ := netlink.NeighList(idx, unix.AF_INET)
	for _, n := range neighs {
		if n.State == netlink.NUD_PERMANENT && !wantNeigh[n.IP.String()] {
			netlink.NeighDel(&n)
		}
	}
	fdb, _ := netlink.NeighList(idx, unix.AF_BRIDGE)
	for _, n := range fdb {
		if n.HardwareAddr != nil && !wantFDB[n.HardwareAddr.String()] && !slices.Equal(n.HardwareAddr, net.HardwareAddr{0, 0, 0, 0, 0, 0}) {
			netlink.NeighDel(&n)
		}
	}
	return errors.Join(errs...)
}

// SyncDirectRoutes programs the agent's routes on the underlay device: for
// encapsulation None, each remote subnet via the remote node's address;
// and the service networks as on-link routes, so that the node's own
// connections to a service address find a route before the service proxy
// DNATs them (a node without a default route would otherwise refuse to
// send). Stale agent routes on the device are removed.
func SyncDirectRoutes(underlay string, remotes []Remote, services []netip.Prefix) error {
	l, err := netlink.LinkByName(underlay)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	want := map[string]bool{}
	var errs []error
	for _, r := range remotes {
		want[r.Subnet.Masked().String()] = true
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixNet(r.Subnet), Gw: r.NodeIP.AsSlice(), Protocol: RouteProtocol}); err != nil {
			errs = append(errs, fmt.Errorf("route to %s via %s (%s): %w", r.Subnet, r.NodeIP, r.Node, err))
		}
	}
	for _, p := range services {
		want[p.Masked().String()] = true
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixNet(p), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}); err != nil {
			errs = append(errs, fmt.Errorf("route to the service network %s: %w", p, err))
		}
	}
	routes, _ := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Protocol: RouteProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	for _, rt := range routes {
		if rt.Dst != nil && !want[rt.Dst.String()] {
			netlink.RouteDel(&rt)
		}
	}
	return errors.Join(errs...)
}

// RemoveOverlay deletes the VXLAN device (switching to encapsulation None).
func RemoveOverlay() error { return DeleteInterface(VXLANDevice) }

// UnderlayFor finds the interface holding ip and its MTU.
func UnderlayFor(ip netip.Addr) (string, int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return "", 0, err
	}
	for _, l := range links {
		addrs, _ := netlink.AddrList(l, unix.AF_INET)
		for _, a := range addrs {
			if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip {
				return l.Attrs().Name, l.Attrs().MTU, nil
			}
		}
	}
	return "", 0, fmt.Errorf("no interface has the node address %s", ip)
}

// EnableForwarding turns on IPv4 forwarding in the node's namespace. It writes only when
// forwarding is off: in an unprivileged container /proc/sys is read-only, and a node that
// already forwards (as kubeadm requires) needs nothing.
func EnableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return os.WriteFile(p, []byte("1"), 0o644)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

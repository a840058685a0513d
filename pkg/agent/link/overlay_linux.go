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
	_, err := o.EnsureDevice()
	return err
}

// EnsureDevice is Ensure, and reports whether it made the device anew (then
// it holds no forwarding entry, neighbour or route: a full SyncRemotes is
// needed).
func (o *Overlay) EnsureDevice() (created bool, err error) {
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
				return false, err
			}
			l = nil
		}
	}
	if l == nil || err != nil {
		if err := netlink.LinkAdd(want); err != nil {
			return false, fmt.Errorf("create %s: %w", VXLANDevice, err)
		}
		if l, err = netlink.LinkByName(VXLANDevice); err != nil {
			return true, err
		}
		created = true
	}
	if l.Attrs().MTU != o.UnderlayMTU-VXLANOverhead {
		if err := netlink.LinkSetMTU(l, o.UnderlayMTU-VXLANOverhead); err != nil {
			return created, err
		}
	}
	addr := &netlink.Addr{IPNet: hostPrefix(vtepIP(o.LocalSubnet))}
	addrs, _ := netlink.AddrList(l, unix.AF_INET)
	for _, a := range addrs {
		if !a.IP.Equal(addr.IP) {
			netlink.AddrDel(l, &a)
		}
	}
	if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, os.ErrExist) {
		return created, fmt.Errorf("address on %s: %w", VXLANDevice, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return created, netlink.LinkSetUp(l)
	}
	return created, nil
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
		wantRoutes[r.Subnet.Masked().String()] = true
		wantNeigh[vtepIP(r.Subnet).String()] = true
		wantFDB[VTEPMAC(r.NodeIP).String()] = true
		errs = append(errs, o.setNeigh(idx, r), o.setFDB(idx, r), o.setRoute(idx, r))
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

// overlayEntries are the kernel entries a list of remotes asks for, by key:
// routes by subnet (via the subnet's VTEP address), neighbours by VTEP
// address (its MAC) and FDB entries by MAC (the node's address). When two
// remotes ask for one key the later wins, as in SyncRemotes, which writes
// them in order.
type overlayEntries struct {
	routes map[netip.Prefix]Remote
	neighs map[netip.Addr]Remote
	fdb    map[string]Remote
}

func entriesOf(remotes []Remote) overlayEntries {
	e := overlayEntries{routes: make(map[netip.Prefix]Remote, len(remotes)),
		neighs: make(map[netip.Addr]Remote, len(remotes)), fdb: make(map[string]Remote, len(remotes))}
	for _, r := range remotes {
		e.routes[r.Subnet.Masked()] = r
		e.neighs[vtepIP(r.Subnet)] = r
		e.fdb[VTEPMAC(r.NodeIP).String()] = r
	}
	return e
}

// remoteDiff is what turns the entries of one list of remotes into
// another's: entries to write (new, or of another value) and entries to
// delete (the key is gone), each carrying the remote that asked for it.
type remoteDiff struct {
	setRoutes, delRoutes []Remote
	setNeighs, delNeighs []Remote
	setFDB, delFDB       []Remote
}

func (d remoteDiff) empty() bool {
	return len(d.setRoutes)+len(d.delRoutes)+len(d.setNeighs)+len(d.delNeighs)+len(d.setFDB)+len(d.delFDB) == 0
}

// diffRemotes compares the entries of prev and want. A route's value is
// fixed by its key (the subnet's VTEP address); a neighbour's is the MAC of
// the remote's node, an FDB entry's the node's address.
func diffRemotes(prev, want []Remote) remoteDiff {
	p, w := entriesOf(prev), entriesOf(want)
	var d remoteDiff
	for k, r := range w.routes {
		if _, ok := p.routes[k]; !ok {
			d.setRoutes = append(d.setRoutes, r)
		}
	}
	for k, r := range p.routes {
		if _, ok := w.routes[k]; !ok {
			d.delRoutes = append(d.delRoutes, r)
		}
	}
	for k, r := range w.neighs {
		if o, ok := p.neighs[k]; !ok || VTEPMAC(o.NodeIP).String() != VTEPMAC(r.NodeIP).String() {
			d.setNeighs = append(d.setNeighs, r)
		}
	}
	for k, r := range p.neighs {
		if _, ok := w.neighs[k]; !ok {
			d.delNeighs = append(d.delNeighs, r)
		}
	}
	for k, r := range w.fdb {
		if o, ok := p.fdb[k]; !ok || o.NodeIP != r.NodeIP {
			d.setFDB = append(d.setFDB, r)
		}
	}
	for k, r := range p.fdb {
		if o, ok := w.fdb[k]; !ok || o.NodeIP != r.NodeIP {
			// The entry for the old address goes (an FDB entry is keyed by MAC
			// and destination; writing the new one does not replace it).
			d.delFDB = append(d.delFDB, r)
		}
	}
	return d
}

// UpdateRemotes changes the overlay from prev, the remotes the last
// successful SyncRemotes or UpdateRemotes programmed, to want: it writes
// only the entries that are new or changed and deletes only those want no
// longer asks for, so that a node joining or leaving costs a few netlink
// messages instead of a pass over every remote. An entry already gone is
// not an error. It trusts that the kernel holds prev's entries: after an
// error, or when that may not hold, call SyncRemotes.
func (o *Overlay) UpdateRemotes(prev, want []Remote) error {
	d := diffRemotes(prev, want)
	if d.empty() {
		return nil
	}
	l, err := netlink.LinkByName(VXLANDevice)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	var errs []error
	// A deletion names the entry's key (a route of any scope: NOWHERE); it
	// is gone already when the kernel finds none.
	gone := func(err error) bool { return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) }
	// Deletions first: a moved node's old FDB entry goes before its new one
	// is written.
	for _, r := range d.delRoutes {
		if err := netlink.RouteDel(&netlink.Route{LinkIndex: idx, Dst: prefixNet(r.Subnet), Protocol: RouteProtocol, Scope: netlink.SCOPE_NOWHERE}); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete the route to %s (%s): %w", r.Subnet, r.Node, err))
		}
	}
	for _, r := range d.delNeighs {
		if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: vtepIP(r.Subnet).AsSlice()}); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete neighbour %s (%s): %w", vtepIP(r.Subnet), r.Node, err))
		}
	}
	for _, r := range d.delFDB {
		if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			IP: r.NodeIP.AsSlice(), HardwareAddr: VTEPMAC(r.NodeIP)}); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("delete fdb %s → %s (%s): %w", VTEPMAC(r.NodeIP), r.NodeIP, r.Node, err))
		}
	}
	for _, r := range d.setNeighs {
		errs = append(errs, o.setNeigh(idx, r))
	}
	for _, r := range d.setFDB {
		errs = append(errs, o.setFDB(idx, r))
	}
	for _, r := range d.setRoutes {
		errs = append(errs, o.setRoute(idx, r))
	}
	return errors.Join(errs...)
}

func (o *Overlay) setNeigh(idx int, r Remote) error {
	vtep := vtepIP(r.Subnet)
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		IP: vtep.AsSlice(), HardwareAddr: VTEPMAC(r.NodeIP)}); err != nil {
		return fmt.Errorf("neighbour %s for %s: %w", vtep, r.Node, err)
	}
	return nil
}

func (o *Overlay) setFDB(idx int, r Remote) error {
	mac := VTEPMAC(r.NodeIP)
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: r.NodeIP.AsSlice(), HardwareAddr: mac}); err != nil {
		return fmt.Errorf("fdb %s → %s for %s: %w", mac, r.NodeIP, r.Node, err)
	}
	return nil
}

func (o *Overlay) setRoute(idx int, r Remote) error {
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixNet(r.Subnet), Gw: vtepIP(r.Subnet).AsSlice(),
		Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol, Src: vtepIP(o.LocalSubnet).AsSlice()}); err != nil {
		return fmt.Errorf("route to %s (%s): %w", r.Subnet, r.Node, err)
	}
	return nil
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

// directRoute is one of the agent's routes on the underlay: to a remote
// subnet via its node (gw valid), or to a service network on link.
type directRoute struct {
	gw   netip.Addr
	what string // for errors
}

// directRoutes are the routes SyncDirectRoutes writes, by destination (the
// later wins, as it writes them in order).
func directRoutes(remotes []Remote, services []netip.Prefix) map[netip.Prefix]directRoute {
	m := make(map[netip.Prefix]directRoute, len(remotes)+len(services))
	for _, r := range remotes {
		m[r.Subnet.Masked()] = directRoute{gw: r.NodeIP, what: fmt.Sprintf("route to %s via %s (%s)", r.Subnet, r.NodeIP, r.Node)}
	}
	for _, p := range services {
		m[p.Masked()] = directRoute{what: fmt.Sprintf("route to the service network %s", p)}
	}
	return m
}

// UpdateDirectRoutes changes the agent's routes on the underlay from those
// of (prevRemotes, prevServices), which the last successful
// SyncDirectRoutes or UpdateDirectRoutes programmed, to those of (remotes,
// services), writing and deleting only the routes that differ (see
// UpdateRemotes).
func UpdateDirectRoutes(underlay string, prevRemotes []Remote, prevServices []netip.Prefix, remotes []Remote, services []netip.Prefix) error {
	prev, want := directRoutes(prevRemotes, prevServices), directRoutes(remotes, services)
	var del, set []netip.Prefix
	for dst := range prev {
		if _, ok := want[dst]; !ok {
			del = append(del, dst)
		}
	}
	for dst, r := range want {
		if o, ok := prev[dst]; !ok || o.gw != r.gw {
			set = append(set, dst)
		}
	}
	if len(del)+len(set) == 0 {
		return nil
	}
	l, err := netlink.LinkByName(underlay)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	var errs []error
	for _, dst := range del {
		if err := netlink.RouteDel(&netlink.Route{LinkIndex: idx, Dst: prefixNet(dst), Protocol: RouteProtocol, Scope: netlink.SCOPE_NOWHERE}); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete the %s: %w", prev[dst].what, err))
		}
	}
	for _, dst := range set {
		errs = append(errs, replaceDirect(idx, dst, want[dst]))
	}
	return errors.Join(errs...)
}

func replaceDirect(idx int, dst netip.Prefix, r directRoute) error {
	rt := &netlink.Route{LinkIndex: idx, Dst: prefixNet(dst), Protocol: RouteProtocol}
	if r.gw.IsValid() {
		rt.Gw = r.gw.AsSlice()
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("%s: %w", r.what, err)
	}
	return nil
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

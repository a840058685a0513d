//go:build integration

package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/netns"
)

// overlayNode is a namespace with a veth underlay (10.99.2.1/16) and the
// overlay's VXLAN device.
func overlayNode(t *testing.T, name string) *link.Overlay {
	t.Helper()
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "netns", "add", name)
	ip(t, "-n", name, "link", "set", "lo", "up")
	ip(t, "-n", name, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	ip(t, "-n", name, "addr", "add", "10.99.2.1/16", "dev", "u0")
	ip(t, "-n", name, "link", "set", "u1", "up")
	ip(t, "-n", name, "link", "set", "u0", "up")
	o := &link.Overlay{VNI: 1, Port: 4789, LocalIP: netip.MustParseAddr("10.99.2.1"),
		LocalSubnet: netip.MustParsePrefix("10.128.0.0/23"), UnderlayMTU: 1500}
	if err := netns.Do(netns.Path(name), func() error {
		created, err := o.EnsureDevice()
		if err == nil && !created {
			err = fmt.Errorf("EnsureDevice made no device in a new namespace")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return o
}

// overlayState is the agent's kernel state in a namespace, one line per
// entry, sorted: its routes on the VXLAN device and the underlay, the
// permanent neighbours and the FDB entries.
func overlayState(name string) ([]string, error) {
	var out []string
	err := netns.Do(netns.Path(name), func() error {
		vx, err := netlink.LinkByName(link.VXLANDevice)
		if err != nil {
			return err
		}
		u0, err := netlink.LinkByName("u0")
		if err != nil {
			return err
		}
		for _, l := range []netlink.Link{vx, u0} {
			rs, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: l.Attrs().Index, Protocol: link.RouteProtocol},
				netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
			if err != nil {
				return err
			}
			for _, r := range rs {
				out = append(out, fmt.Sprintf("route %s dev %s via %v scope %v flags %v src %v", r.Dst, l.Attrs().Name, r.Gw, r.Scope, r.Flags, r.Src))
			}
		}
		ns, err := netlink.NeighList(vx.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if n.State == netlink.NUD_PERMANENT {
				out = append(out, fmt.Sprintf("neigh %s lladdr %s", n.IP, n.HardwareAddr))
			}
		}
		fdb, err := netlink.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, n := range fdb {
			if n.HardwareAddr.String() != (net.HardwareAddr{0, 0, 0, 0, 0, 0}).String() {
				out = append(out, fmt.Sprintf("fdb %s dst %s", n.HardwareAddr, n.IP))
			}
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// TestUpdateRemotesMatchesSync applies random changes of the remotes (joins,
// leaves, nodes moving to another address, a subnet handed to another
// node) as differences (UpdateRemotes, UpdateDirectRoutes) in one
// namespace and from scratch (SyncRemotes, SyncDirectRoutes) in another:
// after every change both hold the same entries, and as many as wanted.
func TestUpdateRemotesMatchesSync(t *testing.T) {
	s := fmt.Sprintf("%d", time.Now().UnixNano()%1e6)
	inc, full := "sluice-it-inc"+s, "sluice-it-full"+s
	oi, of := overlayNode(t, inc), overlayNode(t, full)

	r := rand.New(rand.NewPCG(13, 5000))
	remote := func(i, gen int) link.Remote {
		return link.Remote{Node: fmt.Sprintf("node%04d", i),
			NodeIP: netip.AddrFrom4([4]byte{10, 99, byte(3 + gen), byte(1 + i%250)}),
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>7), byte(i<<1) & 0xfe, 0}), 23)}
	}
	nodes := map[int]link.Remote{}
	for i := 1; i <= 300; i++ {
		nodes[i] = remote(i, 0)
	}
	list := func() []link.Remote {
		var out []link.Remote
		for _, rm := range nodes {
			out = append(out, rm)
		}
		slices.SortFunc(out, func(a, b link.Remote) int { return strings.Compare(a.Node, b.Node) })
		return out
	}
	services := []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")}
	apply := func(prev, want []link.Remote, prevSvc, svc []netip.Prefix, first bool) {
		t.Helper()
		err := netns.Do(netns.Path(inc), func() error {
			if first {
				return errJoin(oi.SyncRemotes(want), link.SyncDirectRoutes("u0", nil, svc))
			}
			return errJoin(oi.UpdateRemotes(prev, want), link.UpdateDirectRoutes("u0", nil, prevSvc, nil, svc))
		})
		if err != nil {
			t.Fatalf("incremental: %v", err)
		}
		if err := netns.Do(netns.Path(full), func() error {
			return errJoin(of.SyncRemotes(want), link.SyncDirectRoutes("u0", nil, svc))
		}); err != nil {
			t.Fatalf("from scratch: %v", err)
		}
	}
	// entries is how many kernel entries remotes ask for: a route per
	// subnet, a neighbour per VTEP address, an FDB entry per MAC, and the
	// service route.
	entries := func(remotes []link.Remote) int {
		subnets, macs := map[netip.Prefix]bool{}, map[string]bool{}
		for _, rm := range remotes {
			subnets[rm.Subnet] = true
			macs[link.VTEPMAC(rm.NodeIP).String()] = true
		}
		return 2*len(subnets) + len(macs) + 1
	}
	compare := func(step string, want int) {
		t.Helper()
		a, err := overlayState(inc)
		if err != nil {
			t.Fatal(err)
		}
		b, err := overlayState(full)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a, b) {
			var onlyA, onlyB []string
			for _, x := range a {
				if !slices.Contains(b, x) {
					onlyA = append(onlyA, x)
				}
			}
			for _, x := range b {
				if !slices.Contains(a, x) {
					onlyB = append(onlyB, x)
				}
			}
			t.Fatalf("%s: the namespaces differ\nonly incremental: %v\nonly from scratch: %v", step, onlyA, onlyB)
		}
		if n := want; len(a) != n {
			t.Fatalf("%s: %d entries, want %d:\n%s", step, len(a), n, strings.Join(a, "\n"))
		}
	}

	prev := list()
	apply(nil, prev, nil, services, true)
	compare("start", entries(prev))
	prevSvc := services
	for step := range 60 {
		switch op := r.IntN(10); {
		case op < 3: // join
			i := 301 + r.IntN(200)
			nodes[i] = remote(i, 0)
		case op < 6: // leave
			for i := range nodes {
				delete(nodes, i)
				break
			}
		case op < 8: // a node moves to another address
			for i, rm := range nodes {
				nodes[i] = remote(i, 1+r.IntN(3))
				_ = rm
				break
			}
		case op < 9: // a subnet freed and handed to a new node
			for i, rm := range nodes {
				delete(nodes, i)
				j := 600 + r.IntN(100)
				rm.Node = fmt.Sprintf("node%04d", j)
				rm.NodeIP = netip.AddrFrom4([4]byte{10, 99, 7, byte(1 + j%250)})
				nodes[j] = rm
				break
			}
		default: // several at once
			for range 5 {
				i := 1 + r.IntN(500)
				if _, ok := nodes[i]; ok {
					delete(nodes, i)
				} else {
					nodes[i] = remote(i, 0)
				}
			}
		}
		svc := prevSvc
		if step == 30 {
			svc = []netip.Prefix{netip.MustParsePrefix("172.31.0.0/16")}
		}
		want := list()
		apply(prev, want, prevSvc, svc, false)
		compare(fmt.Sprintf("step %d", step), entries(want))
		prev, prevSvc = want, svc
	}

	// An entry already gone (someone deleted it) is not an error.
	victim := prev[0]
	ip(t, "-n", inc, "route", "del", victim.Subnet.String(), "dev", link.VXLANDevice)
	rest := prev[1:]
	if err := netns.Do(netns.Path(inc), func() error { return oi.UpdateRemotes(prev, rest) }); err != nil {
		t.Errorf("removing a remote whose route was gone: %v", err)
	}
}

func errJoin(errs ...error) error {
	var msgs []string
	for _, err := range errs {
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

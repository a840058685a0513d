package proxy

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// KernelConntrack clears entries from the kernel's connection-tracking
// table over netlink, in the calling process's network namespace.
type KernelConntrack struct{}

// ClearUDP implements Conntrack.
func (KernelConntrack) ClearUDP(endpoints, destinations []netip.AddrPort) error {
	f := udpFilter{endpoints: map[netip.AddrPort]bool{}, dests: map[netip.AddrPort]bool{}}
	for _, e := range endpoints {
		f.endpoints[e] = true
	}
	for _, d := range destinations {
		f.dests[d] = true
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	return err
}

// udpFilter matches UDP flows DNATed to a stale endpoint (the reply comes
// from it while the original destination was something else) or sent to a
// service destination that had no endpoint.
type udpFilter struct {
	endpoints map[netip.AddrPort]bool
	dests     map[netip.AddrPort]bool
}

func (f udpFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	origDst := addrPort(flow.Forward.DstIP, flow.Forward.DstPort)
	replySrc := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	if f.endpoints[replySrc] && replySrc != origDst {
		return true
	}
	return f.dests[origDst]
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

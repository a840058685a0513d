// Package overlay keeps a node's routes to the other nodes' pod subnets in
// step with the HostSubnets and the ClusterNetwork: over VXLAN (the device,
// its forwarding entries, neighbours and routes) or, with encapsulation
// None, as direct routes through the underlay; and the on-link route to the
// service network. The kernel work is package link's; this is the loop.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/agent/loop"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
)

// ResyncPeriod re-asserts the routes even when nothing changed (someone
// may have deleted one). Between re-assertions a sync whose desired state
// is what the last successful sync programmed does nothing, and one that
// differs writes only the difference: the loop is kicked by every
// HostSubnet and ClusterNetwork event, status writes included, and
// programming every remote subnet costs three netlink writes each
// (bench/scale: 0.75 s for a full programming at 5,000 nodes), while a node
// joining or leaving changes one route, one neighbour and one FDB entry.
const ResyncPeriod = 30 * time.Second

// Node is what the overlay found out about this node.
type Node struct {
	Subnet netip.Prefix // the node's pod subnet
	HostIP netip.Addr   // its address on the underlay
	PodMTU int          // the pods' MTU: the underlay's, less VXLAN's overhead
}

// Overlay is the loop.
type Overlay struct {
	NodeName    string
	HostSubnets listers.HostSubnetLister
	Networks    listers.ClusterNetworkLister
	Log         logr.Logger

	self     *v1alpha1.HostSubnet
	dev      *link.Overlay
	underlay string
	// loop is made by Init while informer handlers may already call
	// Request from other goroutines.
	loop atomic.Pointer[loop.Loop]

	// program writes a desired state to the kernel (link; a fake in
	// tests): everything when prev is nil, else only what differs from
	// prev, which the kernel holds. now is the clock (time.Now by default).
	program func(prev *desired, want desired) error
	now     func() time.Time
	// last is what the kernel holds after the last sync, if it succeeded;
	// lastFull is when the last full programming started.
	last     *desired
	lastFull time.Time
}

// desired is what the overlay programs: the remote subnets (sorted by node,
// then subnet) over VXLAN or as direct routes, and the service networks.
type desired struct {
	vxlan    bool
	remotes  []link.Remote
	services []netip.Prefix
}

func (d desired) equal(o desired) bool {
	return d.vxlan == o.vxlan && slices.Equal(d.remotes, o.remotes) && slices.Equal(d.services, o.services)
}

// Encapsulation is the ClusterNetwork's encapsulation, VXLAN by default.
func Encapsulation(cn *v1alpha1.ClusterNetwork) string {
	if cn.Spec.Encapsulation == "" {
		return v1alpha1.EncapsulationVXLAN
	}
	return cn.Spec.Encapsulation
}

// Init prepares the node for pod traffic (IP forwarding, the underlay, the
// MTU) from its HostSubnet and the ClusterNetwork, and returns what it
// found. Run it before Run.
func (o *Overlay) Init(self *v1alpha1.HostSubnet, cn *v1alpha1.ClusterNetwork) (Node, error) {
	subnet, err := netip.ParsePrefix(self.Spec.Subnet)
	if err != nil {
		return Node{}, fmt.Errorf("HostSubnet %s: spec.subnet %q: %w", self.Name, self.Spec.Subnet, err)
	}
	nodeIP, err := netip.ParseAddr(self.Spec.HostIP)
	if err != nil {
		return Node{}, fmt.Errorf("HostSubnet %s: spec.hostIP %q: %w", self.Name, self.Spec.HostIP, err)
	}
	if err := link.EnableForwarding(); err != nil {
		return Node{}, fmt.Errorf("enable IP forwarding: %w", err)
	}
	underlay, mtu, err := link.UnderlayFor(nodeIP)
	if err != nil {
		return Node{}, err
	}
	if cn.Spec.MTU > 0 {
		mtu = int(cn.Spec.MTU)
	}
	podMTU := mtu
	if Encapsulation(cn) == v1alpha1.EncapsulationVXLAN {
		podMTU = mtu - link.VXLANOverhead
	}
	port := int(cn.Spec.VXLANPort)
	if port == 0 {
		port = 4789
	}
	o.self, o.underlay = self, underlay
	o.dev = &link.Overlay{VNI: 1, Port: port, LocalIP: nodeIP, LocalSubnet: subnet, UnderlayMTU: mtu}
	o.program = o.programKernel
	l := loop.New("overlay", o.Sync, o.Log)
	l.Period = ResyncPeriod
	o.loop.Store(l)
	return Node{Subnet: subnet, HostIP: nodeIP, PodMTU: podMTU}, nil
}

// Run syncs on every request, and every ResyncPeriod, until ctx ends.
func (o *Overlay) Run(ctx context.Context) { o.loop.Load().Run(ctx) }

// Request asks for a sync (HostSubnet and ClusterNetwork handlers).
func (o *Overlay) Request() {
	if l := o.loop.Load(); l != nil {
		l.Request()
	}
}

// Sync brings the routes in line with the HostSubnets and the
// ClusterNetwork. Within ResyncPeriod of the last full programming, and
// while every sync since succeeded, it writes only what changed since the
// last sync (nothing when nothing did); otherwise — at start, after a
// failure, when the encapsulation changes, every ResyncPeriod — it
// programs everything and removes what it does not want.
func (o *Overlay) Sync(context.Context) error {
	want, err := o.desired()
	if err != nil {
		return err
	}
	now := time.Now
	if o.now != nil {
		now = o.now
	}
	if prev := o.last; prev != nil && prev.vxlan == want.vxlan && now().Sub(o.lastFull) < ResyncPeriod {
		if want.equal(*prev) {
			return nil
		}
		o.last = nil // until the kernel is known to hold want
		if err := o.program(prev, want); err != nil {
			return err
		}
		o.last = &want
		return nil
	}
	o.last = nil
	start := now()
	if err := o.program(nil, want); err != nil {
		return err
	}
	o.last, o.lastFull = &want, start
	return nil
}

// desired reads what the overlay should program from the listers.
func (o *Overlay) desired() (desired, error) {
	cn, err := o.Networks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return desired{}, fmt.Errorf("ClusterNetwork: %w", err)
	}
	all, err := o.HostSubnets.List(labels.Everything())
	if err != nil {
		return desired{}, err
	}
	var remotes []link.Remote
	for _, hs := range all {
		if hs.Name == o.NodeName {
			if hs.Spec.Subnet != o.self.Spec.Subnet {
				o.Log.Error(nil, "This node's HostSubnet changed under running pods; restart the agent after draining the node",
					"was", o.self.Spec.Subnet, "now", hs.Spec.Subnet)
			}
			continue
		}
		sub, err1 := netip.ParsePrefix(hs.Spec.Subnet)
		ip, err2 := netip.ParseAddr(hs.Spec.HostIP)
		if err1 != nil || err2 != nil {
			o.Log.Info("Ignoring malformed HostSubnet", "name", hs.Name, "subnet", hs.Spec.Subnet, "hostIP", hs.Spec.HostIP)
			continue
		}
		remotes = append(remotes, link.Remote{Node: hs.Name, NodeIP: ip, Subnet: sub})
	}
	slices.SortFunc(remotes, func(a, b link.Remote) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return a.Subnet.Addr().Compare(b.Subnet.Addr())
	})
	return desired{vxlan: Encapsulation(cn) == v1alpha1.EncapsulationVXLAN, remotes: remotes, services: ServiceCIDRs(cn)}, nil
}

// programKernel writes d through link: everything when prev is nil (or
// the encapsulation changed, or the VXLAN device had to be made anew),
// else the difference from prev.
func (o *Overlay) programKernel(prev *desired, d desired) error {
	if prev != nil && prev.vxlan != d.vxlan {
		prev = nil
	}
	if d.vxlan {
		created, err := o.dev.EnsureDevice()
		if err != nil {
			return err
		}
		if prev == nil || created {
			return errors.Join(o.dev.SyncRemotes(d.remotes), link.SyncDirectRoutes(o.underlay, nil, d.services))
		}
		return errors.Join(o.dev.UpdateRemotes(prev.remotes, d.remotes),
			link.UpdateDirectRoutes(o.underlay, nil, prev.services, nil, d.services))
	}
	if prev == nil {
		return errors.Join(link.RemoveOverlay(), link.SyncDirectRoutes(o.underlay, d.remotes, d.services))
	}
	return link.UpdateDirectRoutes(o.underlay, prev.remotes, prev.services, d.remotes, d.services)
}

// ClusterCIDRs are the ClusterNetwork's pod networks that parse.
func ClusterCIDRs(cn *v1alpha1.ClusterNetwork) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cn.Spec.ClusterNetworks {
		if p, err := netip.ParsePrefix(c.CIDR); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ServiceCIDRs is the ClusterNetwork's IPv4 service network, if it parses.
func ServiceCIDRs(cn *v1alpha1.ClusterNetwork) []netip.Prefix {
	if p, err := netip.ParsePrefix(cn.Spec.ServiceNetwork); err == nil && p.Addr().Is4() {
		return []netip.Prefix{p}
	}
	return nil
}

// Underlay is the interface that carries the node's traffic ("" before Init).
func (o *Overlay) Underlay() string { return o.underlay }

// HostIP is a HostSubnet's host address (invalid when it does not parse).
func HostIP(hs *v1alpha1.HostSubnet) netip.Addr {
	ip, _ := netip.ParseAddr(hs.Spec.HostIP)
	return ip
}

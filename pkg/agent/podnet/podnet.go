// Package podnet is the agent's pod network: what a CNI ADD, DEL, CHECK, GC
// and STATUS do on the node. An address from the node's IPAM, a routed veth
// pair, and the pod admitted into the dataplane — in that order, and undone
// in reverse. It implements cniserver.Handler.
package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/go-logr/logr"

	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/cni"
)

// IPAM is the node IPAM as the pod network uses it.
type IPAM interface {
	Allocate(containerID, ifName, owner string) (netip.Addr, error)
	Release(containerID, ifName string) error
	// Attachments lists every allocation: container ID, interface, address.
	Attachments() ([]Attachment, error)
	// GC releases every allocation not in keep (by container ID + ifName).
	GC(keep []Attachment) error
}

// Attachment is one allocation.
type Attachment struct {
	ContainerID, IfName string
	IP                  netip.Addr
	Owner               string // namespace/name of the pod
}

// Links programs pod interfaces (package link in real life).
type Links interface {
	SetupPod(p link.Pod) (mac string, err error)
	TeardownPod(containerID string) error
	CheckPod(p link.Pod) error
	PodInterfaces() ([]string, error)
	DeleteInterface(name string) error
}

// PodHook is told of every pod the node wires and unwires, before the
// table is synced: the pod network's anti-spoofing (dataplane.Base) and
// isolation (netpol.Isolation) record the pod's interface and address.
type PodHook interface {
	PodAdded(p dataplane.Pod)
	PodRemoved(iface string)
}

// Table programs what the hooks recorded (the table owner, dataplane.Owner).
type Table interface {
	// Sync returns once everything recorded before the call is in the
	// kernel, or with the error that kept it out.
	Sync(ctx context.Context) error
	// Request asks for a sync without waiting.
	Request()
}

// Network is the node's pod network.
type Network struct {
	IPAM  IPAM
	Links Links
	// Hooks admit and forget pods; Table programs them. A CNI ADD records
	// the pod with every hook and waits for one sync: one transaction.
	Hooks  []PodHook
	Table  Table
	Subnet netip.Prefix
	MTU    int
	Log    logr.Logger

	ready atomic.Bool
}

var _ cniserver.Handler = &Network{}

// Gateway is the pods' default gateway: the subnet's first address, which
// sits on every pod's host-side veth.
func (n *Network) Gateway() netip.Addr { return n.Subnet.Masked().Addr().Next() }

// SetReady marks the node's pod network initialised: IPAM, subnet and MTU
// are set (STATUS reports it; DEL needs it).
func (n *Network) SetReady(r bool) { n.ready.Store(r) }

func (n *Network) pod(c *cniserver.Call, ip netip.Addr) link.Pod {
	return link.Pod{ContainerID: c.ContainerID, NetnsPath: c.Netns, IfName: c.IfName, IP: ip, Gateway: n.Gateway(), MTU: n.MTU}
}

// Add gives the pod an address and an interface, and returns only once the
// dataplane admits it. A failure undoes what was done.
func (n *Network) Add(ctx context.Context, c *cniserver.Call) (*current.Result, error) {
	owner := c.PodNamespace + "/" + c.PodName
	ip, err := n.IPAM.Allocate(c.ContainerID, c.IfName, owner)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "no address for "+owner, err.Error())
	}
	hostIf := link.HostIfName(c.ContainerID)
	undo := true
	defer func() {
		if undo {
			n.Links.TeardownPod(c.ContainerID)
			n.forget(hostIf)
			n.Table.Request()
			n.IPAM.Release(c.ContainerID, c.IfName)
		}
	}()
	p := n.pod(c, ip)
	mac, err := n.Links.SetupPod(p)
	if err != nil {
		return nil, fmt.Errorf("set up %s's interface: %w", owner, err)
	}
	for _, h := range n.Hooks {
		h.PodAdded(dataplane.Pod{Iface: hostIf, IP: ip, Owner: owner})
	}
	if err := n.Table.Sync(ctx); err != nil {
		return nil, fmt.Errorf("admit %s into the node's table: %w", owner, err)
	}
	undo = false
	n.Log.V(2).Info("Pod added", "pod", owner, "container", short(c.ContainerID), "ip", ip, "hostIf", hostIf)
	bits := 32
	if ip.Is6() {
		bits = 128
	}
	gw := n.Gateway()
	podIf := 1
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostIf},
			{Name: c.IfName, Mac: mac, Sandbox: c.Netns},
		},
		IPs: []*current.IPConfig{{
			Address:   net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
			Interface: &podIf,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw.AsSlice()}},
	}, nil
}

// Del removes the pod's interface, its dataplane entry and its address.
// Every step succeeds when there is nothing to undo.
func (n *Network) Del(ctx context.Context, c *cniserver.Call) error {
	if !n.ready.Load() {
		// The CNI server lets DEL through before the node is initialised;
		// nothing can be released yet, and the runtime retries DEL.
		return types.NewError(types.ErrTryAgainLater, "the node's pod network is not initialised yet", "")
	}
	hostIf := link.HostIfName(c.ContainerID)
	var errs []error
	if err := n.Links.TeardownPod(c.ContainerID); err != nil {
		errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
	}
	n.forget(hostIf)
	if err := n.Table.Sync(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.IPAM.Release(c.ContainerID, c.IfName); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	n.Log.V(2).Info("Pod deleted", "pod", c.PodNamespace+"/"+c.PodName, "container", short(c.ContainerID))
	return nil
}

// Check verifies the pod still has its address and interface.
func (n *Network) Check(_ context.Context, c *cniserver.Call) error {
	atts, err := n.IPAM.Attachments()
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.ContainerID == c.ContainerID && a.IfName == c.IfName {
			return n.Links.CheckPod(n.pod(c, a.IP))
		}
	}
	return types.NewError(types.ErrUnknownContainer, "no address is allocated to container "+short(c.ContainerID), "")
}

// GC releases every allocation and interface that the runtime no longer
// lists as valid.
func (n *Network) GC(ctx context.Context, valid []types.GCAttachment) error {
	keep := make([]Attachment, 0, len(valid))
	keepIf := map[string]bool{}
	for _, v := range valid {
		keep = append(keep, Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
		keepIf[link.HostIfName(v.ContainerID)] = true
	}
	var errs []error
	ifs, err := n.Links.PodInterfaces()
	if err != nil {
		errs = append(errs, err)
	}
	for _, i := range ifs {
		if !keepIf[i] {
			n.Log.Info("GC: removing interface", "hostIf", i)
			errs = append(errs, n.Links.DeleteInterface(i))
			n.forget(i)
		}
	}
	errs = append(errs, n.Table.Sync(ctx))
	errs = append(errs, n.IPAM.GC(keep))
	return errors.Join(errs...)
}

// Status answers whether the node can take pods.
func (n *Network) Status(context.Context) error {
	if !n.ready.Load() {
		return types.NewError(cni.ErrPluginNotAvailable, "the node's pod network is not initialised yet", "")
	}
	return nil
}

// Pods lists the local pods the dataplane must admit, from IPAM's records:
// after an agent restart this restores anti-spoofing for running pods.
func (n *Network) Pods() ([]dataplane.Pod, error) {
	atts, err := n.IPAM.Attachments()
	if err != nil {
		return nil, err
	}
	pods := make([]dataplane.Pod, 0, len(atts))
	for _, a := range atts {
		pods = append(pods, dataplane.Pod{Iface: link.HostIfName(a.ContainerID), IP: a.IP, Owner: a.Owner})
	}
	return pods, nil
}

func (n *Network) forget(iface string) {
	for _, h := range n.Hooks {
		h.PodRemoved(iface)
	}
}

func short(id string) string { return id[:min(12, len(id))] }

// RealLinks is Links through package link.
type RealLinks struct{}

func (RealLinks) SetupPod(p link.Pod) (string, error)  { return link.SetupPod(p) }
func (RealLinks) TeardownPod(containerID string) error { return link.TeardownPod(containerID) }
func (RealLinks) CheckPod(p link.Pod) error            { return link.CheckPod(p) }
func (RealLinks) PodInterfaces() ([]string, error)     { return link.PodInterfaces() }
func (RealLinks) DeleteInterface(name string) error    { return link.DeleteInterface(name) }

package hostsubnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/subnet"
)

// Event reasons.
const (
	ReasonAllocated        = "HostSubnetAllocated"
	ReasonNoInternalIP     = "NoInternalIP"
	ReasonSubnetsExhausted = "SubnetsExhausted"
	ReasonSubnetConflict   = "HostSubnetConflict"
)

// errConflictLost asks for the node to be reconciled again: every HostSubnet allocate
// created for it overlapped an older one and was deleted.
var errConflictLost = errors.New("each new HostSubnet overlapped an older one and was deleted; allocating again")

func everything() labels.Selector { return labels.Everything() }

// syncNode makes the HostSubnet named name match the Node named name: there when the node
// is, with the node's InternalIP, and gone when the node is.
func (c *Controller) syncNode(ctx context.Context, name string) error {
	logger := klog.FromContext(ctx)
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return c.free(ctx, name)
	}
	if err != nil {
		return err
	}

	ip := internalIP(node)
	hs, err := c.subnets.Get(name)
	switch {
	case err == nil:
		if p, ok := c.pendingOf(name); ok && p.uid != "" && p.uid != string(hs.UID) {
			return nil // a stale copy of one we replaced; the cache's next event brings us back
		}
		c.forgetPendingSeen(hs)
		return c.syncExisting(ctx, node, hs, ip)
	case !apierrors.IsNotFound(err):
		return err
	}

	if ip == "" {
		logger.Info("Node has no InternalIP; no host subnet until it has one")
		c.recorder.Event(node, corev1.EventTypeWarning, ReasonNoInternalIP,
			"node has no InternalIP in status.addresses: no host subnet is allocated until it has one (the overlay needs the node's address)")
		return nil
	}
	if c.pendingFor(name) {
		return nil // created a moment ago; the cache will show it
	}
	cn, err := c.networks.Get(sluicev1alpha1.ClusterNetworkName)
	if apierrors.IsNotFound(err) {
		logger.V(2).Info("No ClusterNetwork \"default\" yet; nothing to allocate from")
		return nil
	}
	if err != nil {
		return err
	}
	alloc, err := subnet.New(cn.Spec.ClusterNetworks, cn.Spec.ServiceNetwork)
	if err != nil {
		// The status says why (InvalidSpec); existing HostSubnets stay as they are.
		logger.V(2).Info("ClusterNetwork spec is invalid; allocating nothing", "err", err)
		return nil
	}
	return c.allocate(ctx, node, ip, alloc, nil)
}

// syncExisting keeps an existing HostSubnet: its subnet never changes (pods hold addresses
// from it) and its hostIP follows the node. Of two overlapping HostSubnets the younger is
// deleted and its node allocated again; that needs a valid spec to allocate from, so with an
// invalid one existing HostSubnets are left as they are.
func (c *Controller) syncExisting(ctx context.Context, node *corev1.Node, hs *sluicev1alpha1.HostSubnet, ip string) error {
	logger := klog.FromContext(ctx)
	all, err := c.subnets.List(everything())
	if err != nil {
		return err
	}
	if older := olderOverlapping(hs, all); older != nil {
		if alloc := c.validAllocator(); alloc != nil {
			// The cache may be behind: deleting a HostSubnet whose subnet pods use is not
			// done on its word. Both must still be there, as seen, on the API server.
			confirmed, err := c.confirmOverlap(ctx, hs, older)
			if err != nil || !confirmed {
				return err // not confirmed: the cache's next events bring us back
			}
			if err := c.yield(ctx, node, hs, older); err != nil {
				return err
			}
			fresh, err := c.listFromAPI(ctx)
			if err != nil {
				return err
			}
			if ip == "" {
				return nil // the node gets a subnet once it has an InternalIP
			}
			return c.allocate(ctx, node, ip, alloc, fresh)
		}
		logger.Info("HostSubnet overlaps an older one, but the ClusterNetwork spec is invalid; leaving both", "older", older.Name)
	}
	if ip == "" || hs.Spec.HostIP == ip {
		return nil
	}
	updated := hs.DeepCopy()
	updated.Spec.HostIP = ip
	if _, err := c.sluice.SluiceV1alpha1().HostSubnets().Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update hostIP of HostSubnet %s: %w", hs.Name, err)
	}
	logger.Info("Updated HostSubnet hostIP", "from", hs.Spec.HostIP, "to", ip)
	return nil
}

// confirmOverlap reports whether the API server still has both HostSubnets as the cache
// shows them (same UID and subnet).
func (c *Controller) confirmOverlap(ctx context.Context, mine, older *sluicev1alpha1.HostSubnet) (bool, error) {
	for _, want := range []*sluicev1alpha1.HostSubnet{mine, older} {
		got, err := c.sluice.SluiceV1alpha1().HostSubnets().Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("confirm the overlap of HostSubnets %s and %s: %w", mine.Name, older.Name, err)
		}
		if got.UID != want.UID || got.Spec.Subnet != want.Spec.Subnet {
			return false, nil
		}
	}
	return true, nil
}

// validAllocator is an allocator for the ClusterNetwork in the cache, or nil when there is
// none or its spec is invalid.
func (c *Controller) validAllocator() *subnet.Allocator {
	cn, err := c.networks.Get(sluicev1alpha1.ClusterNetworkName)
	if err != nil {
		return nil
	}
	alloc, err := subnet.New(cn.Spec.ClusterNetworks, cn.Spec.ServiceNetwork)
	if err != nil {
		return nil
	}
	return alloc
}

// maxAttempts bounds how often allocate tries again after losing an overlap in one call.
const maxAttempts = 3

// allocate gives the node the next free host subnet and checks the result against a fresh
// list from the API server. The subnets in use are the cache's (and our pending ones), or
// fresh's when it is not nil. After losing an overlap it allocates again from that list,
// which is authoritative, instead of waiting for the cache.
func (c *Controller) allocate(ctx context.Context, node *corev1.Node, ip string, alloc *subnet.Allocator, fresh []*sluicev1alpha1.HostSubnet) error {
	logger := klog.FromContext(ctx)
	c.allocMu.Lock()
	defer c.allocMu.Unlock()

	var used []netip.Prefix
	if fresh != nil {
		used = c.usedBy(fresh, "")
	} else {
		var err error
		if used, err = c.allocated(); err != nil {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		s, err := alloc.Next(used)
		if errors.Is(err, subnet.ErrExhausted) {
			logger.Info("No free host subnet", "err", err)
			c.recorder.Eventf(node, corev1.EventTypeWarning, ReasonSubnetsExhausted,
				"no host subnet for this node: %v; add a cluster network to ClusterNetwork %q or remove nodes", err, sluicev1alpha1.ClusterNetworkName)
			c.queue.Add(theStatus)
			return nil
		}
		if err != nil {
			return err
		}

		hs := &sluicev1alpha1.HostSubnet{
			ObjectMeta: metav1.ObjectMeta{Name: node.Name},
			Spec:       sluicev1alpha1.HostSubnetSpec{Host: node.Name, HostIP: ip, Subnet: s.String()},
		}
		created, err := c.sluice.SluiceV1alpha1().HostSubnets().Create(ctx, hs, metav1.CreateOptions{})
		if err != nil {
			// AlreadyExists too: our cache is behind; reconcile again once it shows.
			return fmt.Errorf("create HostSubnet %s: %w", node.Name, err)
		}
		c.addPending(created, s)
		c.queue.Add(theStatus)

		// Another controller may have handed the same subnet to another node from its own
		// stale view. Ask the API server, not the cache.
		all, err := c.listFromAPI(ctx)
		if err != nil {
			// The cached path settles any overlap once the cache shows it.
			return fmt.Errorf("list HostSubnets to check %s: %w", created.Name, err)
		}
		older := olderOverlapping(created, all)
		if older == nil {
			logger.Info("Allocated host subnet", "subnet", s, "hostIP", ip)
			c.recorder.Eventf(node, corev1.EventTypeNormal, ReasonAllocated, "allocated host subnet %s (HostSubnet %s)", s, created.Name)
			return nil
		}
		if err := c.yield(ctx, node, created, older); err != nil {
			return err
		}
		if attempt == maxAttempts {
			return errConflictLost
		}
		used = c.usedBy(all, created.Name)
	}
}

// yield deletes mine, which overlaps the older HostSubnet.
func (c *Controller) yield(ctx context.Context, node *corev1.Node, mine, older *sluicev1alpha1.HostSubnet) error {
	klog.FromContext(ctx).Info("HostSubnet overlaps an older one; deleting it to allocate again",
		"subnet", mine.Spec.Subnet, "older", older.Name, "olderSubnet", older.Spec.Subnet)
	if err := c.delete(ctx, mine); err != nil {
		return err
	}
	c.recorder.Eventf(node, corev1.EventTypeWarning, ReasonSubnetConflict,
		"host subnet %s overlapped %s of the older HostSubnet %s (two controllers allocated at once); allocating again",
		mine.Spec.Subnet, older.Spec.Subnet, older.Name)
	return nil
}

// listFromAPI lists HostSubnets from the API server (a quorum read), not from the cache.
func (c *Controller) listFromAPI(ctx context.Context) ([]*sluicev1alpha1.HostSubnet, error) {
	list, err := c.sluice.SluiceV1alpha1().HostSubnets().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	all := make([]*sluicev1alpha1.HostSubnet, len(list.Items))
	for i := range list.Items {
		all[i] = &list.Items[i]
	}
	return all, nil
}

// usedBy is the subnets of hostSubnets other than except, and our pending ones (a pending
// subnet may also be in the list: counting a subnet twice changes nothing).
func (c *Controller) usedBy(hostSubnets []*sluicev1alpha1.HostSubnet, except string) []netip.Prefix {
	var out []netip.Prefix
	for _, hs := range hostSubnets {
		if hs.Name == except {
			continue
		}
		if p, err := subnet.ParseCIDR(hs.Spec.Subnet); err == nil {
			out = append(out, p)
		}
	}
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	for name, p := range c.pending {
		if name != except {
			out = append(out, p.subnet)
		}
	}
	return out
}

// free deletes the HostSubnet of a node that no longer exists.
func (c *Controller) free(ctx context.Context, name string) error {
	logger := klog.FromContext(ctx)
	hs, err := c.subnets.Get(name)
	if apierrors.IsNotFound(err) {
		p, ok := c.pendingOf(name)
		if !ok {
			return nil
		}
		// Created by us and deleted along with its node before the cache showed it.
		hs = &sluicev1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(p.uid)},
			Spec: sluicev1alpha1.HostSubnetSpec{Subnet: p.subnet.String()}}
	} else if err != nil {
		return err
	}
	// The node cache may lag behind the HostSubnet cache (a node that was just created): ask
	// the API server before freeing a subnet that pods may use.
	if _, err := c.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil // the node's own event brings it back here
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("check node %s before freeing its HostSubnet: %w", name, err)
	}
	if err := c.delete(ctx, hs); err != nil {
		return err
	}
	logger.Info("Freed the host subnet of a deleted node", "subnet", hs.Spec.Subnet)
	return nil
}

// delete deletes exactly hs (by UID), forgetting it as pending.
func (c *Controller) delete(ctx context.Context, hs *sluicev1alpha1.HostSubnet) error {
	opts := metav1.DeleteOptions{}
	if hs.UID != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &hs.UID}
	}
	err := c.sluice.SluiceV1alpha1().HostSubnets().Delete(ctx, hs.Name, opts)
	// NotFound or a failed UID precondition (Conflict): the object we meant is gone.
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete HostSubnet %s: %w", hs.Name, err)
	}
	c.forgetPending(hs.Name, string(hs.UID))
	c.queue.Add(theStatus)
	return nil
}

// allocated is every subnet held by a HostSubnet in the cache or created by us since.
// HostSubnets whose subnet does not parse hold nothing (the CRD does not admit them).
func (c *Controller) allocated() ([]netip.Prefix, error) {
	all, err := c.subnets.List(everything())
	if err != nil {
		return nil, err
	}
	return c.usedBy(all, ""), nil
}

// olderOverlapping returns the oldest HostSubnet among all whose subnet overlaps hs's and
// that is older than hs, or nil.
func olderOverlapping(hs *sluicev1alpha1.HostSubnet, all []*sluicev1alpha1.HostSubnet) *sluicev1alpha1.HostSubnet {
	mine, err := subnet.ParseCIDR(hs.Spec.Subnet)
	if err != nil {
		return nil
	}
	var found []*sluicev1alpha1.HostSubnet
	for _, o := range all {
		if o.Name == hs.Name {
			continue
		}
		if p, err := subnet.ParseCIDR(o.Spec.Subnet); err == nil && p.Overlaps(mine) && older(o, hs) {
			found = append(found, o)
		}
	}
	if len(found) == 0 {
		return nil
	}
	sort.Slice(found, func(i, j int) bool { return older(found[i], found[j]) })
	return found[0]
}

// older orders HostSubnets by creationTimestamp, then by name (timestamps have a granularity
// of one second, and two controllers may create in the same second).
func older(a, b *sluicev1alpha1.HostSubnet) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// internalIP is the node's first valid InternalIP, or "".
func internalIP(node *corev1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Zone() == "" {
			return ip.Unmap().String()
		}
	}
	return ""
}

// Pending allocations.

func (c *Controller) addPending(hs *sluicev1alpha1.HostSubnet, s netip.Prefix) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	c.pending[hs.Name] = pendingSubnet{uid: string(hs.UID), subnet: s}
}

func (c *Controller) pendingOf(name string) (pendingSubnet, bool) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	p, ok := c.pending[name]
	return p, ok
}

func (c *Controller) pendingFor(name string) bool {
	_, ok := c.pendingOf(name)
	return ok
}

// forgetPendingSeen drops the pending entry of a HostSubnet the cache now shows (the same
// object: a stale copy of one we deleted does not count).
func (c *Controller) forgetPendingSeen(hs *sluicev1alpha1.HostSubnet) {
	c.forgetPending(hs.Name, string(hs.UID))
}

// forgetPending drops the pending entry of name if it is the object uid (any when uid is "").
func (c *Controller) forgetPending(name, uid string) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	if p, ok := c.pending[name]; ok && (p.uid == "" || p.uid == uid) {
		delete(c.pending, name)
	}
}

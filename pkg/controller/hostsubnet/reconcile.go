package hostsubnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

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
	return c.allocate(ctx, node, ip, alloc, nil, 1)
}

// syncExisting keeps an existing HostSubnet: its subnet never changes (pods hold addresses
// from it) and its hostIP follows the node. Of two overlapping HostSubnets the younger is
// deleted and its node allocated again; that needs a valid spec to allocate from, so with an
// invalid one existing HostSubnets are left as they are.
func (c *Controller) syncExisting(ctx context.Context, node *corev1.Node, hs *sluicev1alpha1.HostSubnet, ip string) error {
	logger := klog.FromContext(ctx)
	if older := c.olderOverlappingCached(hs); older != nil {
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
			return c.allocate(ctx, node, ip, alloc, fresh, 1)
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

// maxAttempts bounds how often a node's allocation is made again after losing overlaps
// one after another; then its key is retried with the queue's backoff.
const maxAttempts = 3

// allocate gives the node the next free host subnet: it reserves the subnet in the index
// (other workers allocate meanwhile), creates the HostSubnet and leaves it to verify to check
// against the API server. The subnets in use are the index's (the cache's and our
// reservations), or fresh's and our reservations when fresh is not nil: after losing an
// overlap it allocates from that list, which is authoritative, instead of waiting for the
// cache. attempt counts the allocations of this node since its last success.
func (c *Controller) allocate(ctx context.Context, node *corev1.Node, ip string, alloc *subnet.Allocator, fresh []*sluicev1alpha1.HostSubnet, attempt int) error {
	logger := klog.FromContext(ctx)
	s, token, err := c.reserve(alloc, fresh, node.Name)
	if errors.Is(err, subnet.ErrExhausted) {
		logger.Info("No free host subnet", "err", err)
		c.recorder.Eventf(node, corev1.EventTypeWarning, ReasonSubnetsExhausted,
			"no host subnet for this node: %v; add a cluster network to ClusterNetwork %q or remove nodes", err, sluicev1alpha1.ClusterNetworkName)
		c.queueStatus()
		return nil
	}
	if err != nil {
		return err
	}
	hs := &sluicev1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: node.Name},
		Spec:       sluicev1alpha1.HostSubnetSpec{Host: node.Name, HostIP: ip, Subnet: s.String()},
	}
	made, err := c.sluice.SluiceV1alpha1().HostSubnets().Create(ctx, hs, metav1.CreateOptions{})
	if err != nil {
		c.mu.Lock()
		c.release(token)
		c.mu.Unlock()
		// AlreadyExists too: our cache is behind; reconcile again once it shows.
		return fmt.Errorf("create HostSubnet %s: %w", node.Name, err)
	}
	c.mu.Lock()
	if old, ok := c.pending[made.Name]; ok && old.token != token {
		c.release(old.token)
	}
	c.pending[made.Name] = pendingSubnet{uid: string(made.UID), subnet: s, token: token}
	c.unverified[made.Name] = created{hs: made, node: node, attempt: attempt}
	c.mu.Unlock()
	logger.Info("Allocated host subnet", "subnet", s, "hostIP", ip)
	// Recorded as the subnet is handed out, at the pace of creation: verify's batch of
	// events at once would overflow client-go's event queue (1,000) in a burst of nodes,
	// and it drops what does not fit.
	c.recorder.Eventf(node, corev1.EventTypeNormal, ReasonAllocated, "allocated host subnet %s (HostSubnet %s)", s, made.Name)
	c.queueStatus()
	c.queueVerify()
	return nil
}

// verify checks every HostSubnet created since the last check against one list from the API
// server (a quorum read): another controller may have handed the same subnet to another node
// from its own stale view. Of two overlapping, the younger is deleted and its node allocated
// again from that list.
func (c *Controller) verify(ctx context.Context) error {
	c.mu.Lock()
	batch := c.unverified
	c.unverified = map[string]created{}
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	all, err := c.listFromAPI(ctx)
	if err != nil {
		c.mu.Lock()
		for name, u := range batch {
			if _, newer := c.unverified[name]; !newer {
				c.unverified[name] = u
			}
		}
		c.mu.Unlock()
		// The cached path settles any overlap once the cache shows it; this retries.
		return fmt.Errorf("list HostSubnets to check %d created ones: %w", len(batch), err)
	}
	ix := subnet.NewIndex(nil)
	byName := make(map[string]*sluicev1alpha1.HostSubnet, len(all))
	for _, hs := range all {
		byName[hs.Name] = hs
		if p, err := subnet.ParseCIDR(hs.Spec.Subnet); err == nil {
			ix.Set(hs.Name, p)
		}
	}
	names := make([]string, 0, len(batch))
	for name := range batch {
		names = append(names, name)
	}
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		u := batch[name]
		logger := klog.FromContext(ctx).WithValues("node", name)
		cur, ok := byName[name]
		if !ok || cur.UID != u.hs.UID {
			continue // deleted since, or replaced: its successor is checked on its own
		}
		older := olderAmong(cur, ix, byName)
		if older == nil {
			continue
		}
		if err := c.yield(klog.NewContext(ctx, logger), u.node, cur, older); err != nil {
			errs = append(errs, err)
			continue
		}
		if u.attempt >= maxAttempts {
			logger.Info("Giving up for now", "err", errConflictLost)
			c.queue.AddRateLimited(key{kind: nodeKey, name: name})
			continue
		}
		node, err := c.nodes.Get(name)
		if err != nil {
			continue // gone: nothing to allocate
		}
		ip, alloc := internalIP(node), c.validAllocator()
		if ip == "" || alloc == nil {
			continue
		}
		if err := c.allocate(klog.NewContext(ctx, logger), node, ip, alloc, all, u.attempt+1); err != nil {
			errs = append(errs, err)
			c.queue.AddRateLimited(key{kind: nodeKey, name: name})
		}
	}
	return errors.Join(errs...)
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
	c.queueStatus()
	return nil
}

// olderOverlappingCached returns the oldest HostSubnet in the cache whose subnet overlaps
// hs's and that is older than hs, or nil.
func (c *Controller) olderOverlappingCached(hs *sluicev1alpha1.HostSubnet) *sluicev1alpha1.HostSubnet {
	mine, err := subnet.ParseCIDR(hs.Spec.Subnet)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	keys := c.index.Overlapping(mine)
	c.mu.Unlock()
	var found *sluicev1alpha1.HostSubnet
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "h/")
		if !ok || name == hs.Name {
			continue
		}
		// The index follows the cache's events: ask the cache for the object itself.
		o, err := c.subnets.Get(name)
		if err != nil {
			continue
		}
		if p, err := subnet.ParseCIDR(o.Spec.Subnet); err == nil && p.Overlaps(mine) && older(o, hs) && (found == nil || older(o, found)) {
			found = o
		}
	}
	return found
}

// olderAmong returns the oldest of byName (indexed by name in ix) whose subnet overlaps hs's
// and that is older than hs, or nil.
func olderAmong(hs *sluicev1alpha1.HostSubnet, ix *subnet.Index, byName map[string]*sluicev1alpha1.HostSubnet) *sluicev1alpha1.HostSubnet {
	mine, err := subnet.ParseCIDR(hs.Spec.Subnet)
	if err != nil {
		return nil
	}
	var found *sluicev1alpha1.HostSubnet
	for _, name := range ix.Overlapping(mine) {
		if o := byName[name]; name != hs.Name && o != nil && older(o, hs) && (found == nil || older(o, found)) {
			found = o
		}
	}
	return found
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

func (c *Controller) pendingOf(name string) (pendingSubnet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[name]
	return p, ok
}

func (c *Controller) pendingFor(name string) bool {
	_, ok := c.pendingOf(name)
	return ok
}

// forgetPendingSeen drops the pending entry of a HostSubnet the cache now shows (the same
// object: a stale copy of one we deleted does not count). The cache's store is updated before
// its event handlers run: the HostSubnet goes into the index here, before its reservation is
// dropped, or another worker could take its subnet in between.
func (c *Controller) forgetPendingSeen(hs *sluicev1alpha1.HostSubnet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pending[hs.Name]; ok && (p.uid == "" || p.uid == string(hs.UID)) {
		c.indexCached(hs, true)
		c.release(p.token)
		delete(c.pending, hs.Name)
	}
}

// forgetPending drops the pending entry of name, and its reservation, if it is the object
// uid (any when uid is "").
func (c *Controller) forgetPending(name, uid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pending[name]; ok && (p.uid == "" || p.uid == uid) {
		c.release(p.token)
		delete(c.pending, name)
	}
}

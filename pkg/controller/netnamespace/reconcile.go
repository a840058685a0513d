package netnamespace

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/vnid"
)

// Event reasons.
const (
	ReasonAllocated       = "NetIDAllocated"
	ReasonChanged         = "NetIDChanged"
	ReasonChangeFailed    = "MultitenantChangeFailed"
	ReasonExhausted       = "NetIDsExhausted"
	ReasonConflict        = "NetIDConflict"
	ReasonInvalidNetID    = "InvalidNetID"
	ReasonNetNameMismatch = "NetNameMismatch"
)

func everything() labels.Selector { return labels.Everything() }

// sync makes the NetNamespace named name match the Namespace named name.
func (c *Controller) sync(ctx context.Context, name string) error {
	ns, err := c.nsLister.Get(name)
	if apierrors.IsNotFound(err) {
		return c.free(ctx, name)
	}
	if err != nil {
		return err
	}
	nn, err := c.netnsList.Get(name)
	if apierrors.IsNotFound(err) {
		if c.pendingLive(name, nil) {
			return nil // created a moment ago; the cache will show it
		}
		if ns.DeletionTimestamp != nil {
			return nil // going away: nothing to allocate
		}
		return c.create(ctx, ns)
	}
	if err != nil {
		return err
	}
	if c.pendingLive(name, nn) {
		return nil // our last write is not in the cache yet; its event brings us back
	}
	return c.syncExisting(ctx, nn)
}

// create gives the namespace a NetNamespace: netID 0 for a global namespace, else the
// lowest free one, recorded in AnnotationAllocatedNetID.
func (c *Controller) create(ctx context.Context, ns *corev1.Namespace) error {
	logger := klog.FromContext(ctx)
	c.allocMu.Lock()
	defer c.allocMu.Unlock()

	nn := &sluicev1alpha1.NetNamespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns.Name},
		Spec:       sluicev1alpha1.NetNamespaceSpec{NetName: ns.Name},
	}
	if !c.global[ns.Name] {
		id, err := c.lowestFree()
		if err != nil {
			logger.Info("No free netID for namespace", "max", c.alloc.Max())
			c.recorder.Eventf(ns, corev1.EventTypeWarning, ReasonExhausted,
				"no NetNamespace for this namespace: all netIDs 1 to %d are held; delete namespaces or join some to others", c.alloc.Max())
			return nil
		}
		nn.Spec.NetID = id
		nn.Annotations = map[string]string{sluicev1alpha1.AnnotationAllocatedNetID: vnid.Format(id)}
	}
	created, err := c.sluice.SluiceV1alpha1().NetNamespaces().Create(ctx, nn, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // made by someone else a moment ago; its add event brings us back
	}
	if err != nil {
		return fmt.Errorf("create NetNamespace %s: %w", ns.Name, err)
	}
	c.addPending(created, nil)
	logger.Info("Allocated netID", "netID", created.Spec.NetID)
	c.recorder.Eventf(created, corev1.EventTypeNormal, ReasonAllocated, "allocated netID %d to namespace %s", created.Spec.NetID, ns.Name)
	return nil
}

// free deletes the NetNamespace of a namespace that no longer exists; its netID is free once
// the deletion is in the cache.
func (c *Controller) free(ctx context.Context, name string) error {
	nn, err := c.netnsList.Get(name)
	if apierrors.IsNotFound(err) {
		p, ok := c.pendingOf(name)
		if !ok {
			return nil
		}
		nn = p.obj // created by us and its namespace deleted before the cache showed it
	} else if err != nil {
		return err
	}
	// The namespace cache may be behind the NetNamespace cache (a namespace just created):
	// ask the API server before freeing a netID that pods may use.
	if _, err := c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil // the namespace's own event brings it back here
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("check namespace %s before deleting its NetNamespace: %w", name, err)
	}
	opts := metav1.DeleteOptions{}
	if nn.UID != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &nn.UID}
	}
	err = c.sluice.SluiceV1alpha1().NetNamespaces().Delete(ctx, name, opts)
	// NotFound or a failed UID precondition (Conflict): the object we meant is gone.
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete NetNamespace %s: %w", name, err)
	}
	c.forgetPending(name)
	klog.FromContext(ctx).Info("Deleted the NetNamespace of a deleted namespace", "netID", nn.Spec.NetID)
	return nil
}

// syncExisting checks an existing NetNamespace: bad fields are reported (and an out-of-range
// netID replaced), a requested change is applied, a stale allocation record is dropped and a
// duplicate allocation is settled. A netID set by a join or by hand is kept.
func (c *Controller) syncExisting(ctx context.Context, nn *sluicev1alpha1.NetNamespace) error {
	if nn.Spec.NetName != nn.Name {
		// The CRD refuses this; an object from before the rule can only be reported.
		c.recorder.Eventf(nn, corev1.EventTypeWarning, ReasonNetNameMismatch,
			"spec.netname %q is not metadata.name %q: a NetNamespace is named after its namespace; the netID applies to namespace %s",
			nn.Spec.NetName, nn.Name, nn.Name)
	}
	if req, ok := nn.Annotations[sluicev1alpha1.AnnotationMultitenantChange]; ok {
		return c.applyChange(ctx, nn, req)
	}
	if !c.alloc.Valid(nn.Spec.NetID) {
		return c.replaceInvalid(ctx, nn)
	}
	if a, ok := nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID]; ok && a != vnid.Format(nn.Spec.NetID) {
		// spec.netID was changed by hand since we allocated: the operator's value is kept,
		// and sharing it with others is on purpose.
		updated := nn.DeepCopy()
		delete(updated.Annotations, sluicev1alpha1.AnnotationAllocatedNetID)
		return c.update(ctx, nn, updated)
	}
	return c.settleDuplicate(ctx, nn)
}

// applyChange carries out the multitenant change req asked for on nn and removes the request
// in the same update, or answers with AnnotationMultitenantChangeError.
func (c *Controller) applyChange(ctx context.Context, nn *sluicev1alpha1.NetNamespace, req string) error {
	logger := klog.FromContext(ctx)
	c.allocMu.Lock()
	defer c.allocMu.Unlock()

	updated := nn.DeepCopy()
	delete(updated.Annotations, sluicev1alpha1.AnnotationMultitenantChange)
	delete(updated.Annotations, sluicev1alpha1.AnnotationMultitenantChangeError)
	fail := func(why string) error {
		msg := fmt.Sprintf("%s=%q: %s", sluicev1alpha1.AnnotationMultitenantChange, req, why)
		updated.Annotations[sluicev1alpha1.AnnotationMultitenantChangeError] = msg
		c.recorder.Event(nn, corev1.EventTypeWarning, ReasonChangeFailed, msg)
		logger.Info("Refused a multitenant change", "request", req, "reason", why)
		return c.update(ctx, nn, updated)
	}

	id := nn.Spec.NetID
	switch {
	case req == sluicev1alpha1.MultitenantChangeGlobal:
		id = 0
		delete(updated.Annotations, sluicev1alpha1.AnnotationAllocatedNetID)
	case req == sluicev1alpha1.MultitenantChangeIsolate:
		if c.global[nn.Name] {
			return fail(fmt.Sprintf("namespace %s is global by the controller's configuration and cannot be isolated", nn.Name))
		}
		var err error
		if id, err = c.alloc.Isolate(id, len(c.holders(id, nn.Name)) > 0, c.used()); err != nil {
			return fail(fmt.Sprintf("all netIDs 1 to %d are held", c.alloc.Max()))
		}
		updated.Annotations[sluicev1alpha1.AnnotationAllocatedNetID] = vnid.Format(id)
	case strings.HasPrefix(req, sluicev1alpha1.MultitenantChangeJoinPrefix):
		to := strings.TrimPrefix(req, sluicev1alpha1.MultitenantChangeJoinPrefix)
		if c.global[nn.Name] {
			return fail(fmt.Sprintf("namespace %s is global by the controller's configuration and cannot join namespace %s", nn.Name, to))
		}
		if to == "" {
			return fail("no namespace to join after " + sluicev1alpha1.MultitenantChangeJoinPrefix)
		}
		target, ok := c.effective(to)
		if !ok {
			return fail(fmt.Sprintf("namespace %s has no NetNamespace to join", to))
		}
		if !c.alloc.Valid(target.Spec.NetID) {
			return fail(fmt.Sprintf("NetNamespace %s has an invalid spec.netID %d", to, target.Spec.NetID))
		}
		if to != nn.Name {
			id = target.Spec.NetID
			delete(updated.Annotations, sluicev1alpha1.AnnotationAllocatedNetID) // shared on purpose
		}
	default:
		return fail(fmt.Sprintf("unknown request; want %q, %q or %q followed by a namespace", sluicev1alpha1.MultitenantChangeGlobal, sluicev1alpha1.MultitenantChangeIsolate, sluicev1alpha1.MultitenantChangeJoinPrefix))
	}

	updated.Spec.NetID = id
	if err := c.update(ctx, nn, updated); err != nil {
		return err
	}
	logger.Info("Applied multitenant change", "request", req, "from", nn.Spec.NetID, "to", id)
	c.recorder.Eventf(nn, corev1.EventTypeNormal, ReasonChanged, "%s: spec.netID %d -> %d", req, nn.Spec.NetID, id)
	return nil
}

// replaceInvalid gives a NetNamespace whose netID is not a 24-bit VNID (one the CRD's rule
// would refuse) the lowest free netID: no dataplane can carry it.
func (c *Controller) replaceInvalid(ctx context.Context, nn *sluicev1alpha1.NetNamespace) error {
	c.allocMu.Lock()
	defer c.allocMu.Unlock()
	id, err := c.lowestFree()
	if err != nil {
		c.recorder.Eventf(nn, corev1.EventTypeWarning, ReasonInvalidNetID,
			"spec.netID %d is out of range (0 to %d), and no netID is free to replace it", nn.Spec.NetID, c.alloc.Max())
		return nil
	}
	updated := nn.DeepCopy()
	updated.Spec.NetID = id
	setAnnotation(updated, sluicev1alpha1.AnnotationAllocatedNetID, vnid.Format(id))
	if err := c.update(ctx, nn, updated); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Replaced an out-of-range netID", "field", "spec.netID", "value", nn.Spec.NetID, "netID", id)
	c.recorder.Eventf(nn, corev1.EventTypeWarning, ReasonInvalidNetID,
		"spec.netID %d is out of range (0 to %d, 24 bits); replaced with the free netID %d", nn.Spec.NetID, c.alloc.Max(), id)
	return nil
}

// settleDuplicate handles a netID that the controller allocated as unique to two
// NetNamespaces (two controllers at once, or a cache behind the API): the oldest keeps it
// (creationTimestamp, then name), the others get the lowest free netID. Sharing a netID
// that was set on purpose (no AnnotationAllocatedNetID, or one that differs) is left alone.
func (c *Controller) settleDuplicate(ctx context.Context, nn *sluicev1alpha1.NetNamespace) error {
	if nn.Spec.NetID == vnid.Global || !allocated(nn) {
		return nil
	}
	byName := map[string]*sluicev1alpha1.NetNamespace{nn.Name: nn}
	claims := []vnid.Claim{claimOf(nn)}
	for _, o := range c.holders(nn.Spec.NetID, nn.Name) {
		byName[o.Name] = o
		claims = append(claims, claimOf(o))
	}
	keeper, movers, ok := vnid.Duplicates(claims)
	if !ok {
		return nil
	}
	if keeper.Name == nn.Name {
		for _, m := range movers {
			c.queue.Add(m.Name) // the younger ones move
		}
		return nil
	}
	oldest := byName[keeper.Name]
	// The cache may be behind: confirm with the API server that the older one still holds
	// the netID as allocated before changing a netID that pods may use.
	got, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(ctx, oldest.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // its deletion event brings us back
	}
	if err != nil {
		return fmt.Errorf("confirm the duplicate netID %d of NetNamespace %s: %w", nn.Spec.NetID, oldest.Name, err)
	}
	if got.UID != oldest.UID || got.Spec.NetID != nn.Spec.NetID || !allocated(got) {
		return nil // changed since; its update event brings us back
	}

	c.allocMu.Lock()
	defer c.allocMu.Unlock()
	id, err := c.lowestFree()
	if err != nil {
		c.recorder.Eventf(nn, corev1.EventTypeWarning, ReasonConflict,
			"netID %d was also allocated to NetNamespace %s, and no netID is free to move this one to", nn.Spec.NetID, oldest.Name)
		return nil
	}
	updated := nn.DeepCopy()
	updated.Spec.NetID = id
	updated.Annotations[sluicev1alpha1.AnnotationAllocatedNetID] = vnid.Format(id)
	if err := c.update(ctx, nn, updated); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("netID was allocated twice; moved the younger NetNamespace", "netID", nn.Spec.NetID, "older", oldest.Name, "to", id)
	c.recorder.Eventf(nn, corev1.EventTypeWarning, ReasonConflict,
		"netID %d was also allocated to the older NetNamespace %s (two controllers allocated at once); moved to netID %d", nn.Spec.NetID, oldest.Name, id)
	return nil
}

// update writes updated over nn (optimistic concurrency: nn's resourceVersion) and records
// the write as pending until the cache shows it.
func (c *Controller) update(ctx context.Context, nn, updated *sluicev1alpha1.NetNamespace) error {
	got, err := c.sluice.SluiceV1alpha1().NetNamespaces().Update(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		// Conflict too: someone changed it since the cache saw it; the next event or the
		// retry sees their version.
		return fmt.Errorf("update NetNamespace %s: %w", nn.Name, err)
	}
	c.addPending(got, nn)
	return nil
}

func setAnnotation(nn *sluicev1alpha1.NetNamespace, k, v string) {
	if nn.Annotations == nil {
		nn.Annotations = map[string]string{}
	}
	nn.Annotations[k] = v
}

// allocated reports whether nn's netID is the one the controller allocated to it as unique.
func allocated(nn *sluicev1alpha1.NetNamespace) bool {
	a, ok := nn.Annotations[sluicev1alpha1.AnnotationAllocatedNetID]
	return ok && a == vnid.Format(nn.Spec.NetID)
}

func claimOf(nn *sluicev1alpha1.NetNamespace) vnid.Claim {
	return vnid.Claim{Name: nn.Name, ID: nn.Spec.NetID, Allocated: allocated(nn), Created: nn.CreationTimestamp.Time}
}

// The allocator's view: the cache, overlaid with our writes the cache does not show yet.

// used are the netIDs held as we know them: every cached NetNamespace's and those of our
// writes. Call with allocMu held.
func (c *Controller) used() []uint32 {
	all, _ := c.netnsList.List(everything()) // a lister's List never fails
	ids := make([]uint32, 0, len(all))
	for _, nn := range all {
		ids = append(ids, nn.Spec.NetID)
	}
	c.pendingMu.Lock()
	for _, p := range c.pending {
		ids = append(ids, p.obj.Spec.NetID)
	}
	c.pendingMu.Unlock()
	return ids
}

// lowestFree is the lowest netID from 1 that no NetNamespace holds. Call with allocMu held.
func (c *Controller) lowestFree() (uint32, error) { return c.alloc.Next(c.used()) }

// effective is the NetNamespace named name as we know it: our pending write, else the cache.
func (c *Controller) effective(name string) (*sluicev1alpha1.NetNamespace, bool) {
	cached, err := c.netnsList.Get(name)
	if err != nil {
		cached = nil // absent (a lister returns NotFound, nothing else)
	}
	if c.pendingLive(name, cached) {
		p, _ := c.pendingOf(name)
		return p.obj, true
	}
	return cached, cached != nil
}

// holders are the NetNamespaces other than except that hold netID, as we know them.
func (c *Controller) holders(netID uint32, except string) []*sluicev1alpha1.NetNamespace {
	seen := map[string]bool{except: true}
	var out []*sluicev1alpha1.NetNamespace
	objs, _ := c.netnsIdx.ByIndex(netIDIndex, vnid.Format(netID))
	for _, o := range objs {
		nn := netNamespaceFrom(o)
		if nn == nil || seen[nn.Name] {
			continue
		}
		seen[nn.Name] = true
		if e, ok := c.effective(nn.Name); ok && e.Spec.NetID == netID {
			out = append(out, e)
		}
	}
	c.pendingMu.Lock()
	var names []string
	for name, p := range c.pending {
		if !seen[name] && p.obj.Spec.NetID == netID {
			names = append(names, name)
		}
	}
	c.pendingMu.Unlock()
	for _, name := range names {
		if e, ok := c.effective(name); ok && e.Spec.NetID == netID {
			out = append(out, e)
		}
	}
	return out
}

// Pending writes.

// addPending records a create (replaced is nil) or an update of replaced.
func (c *Controller) addPending(nn, replaced *sluicev1alpha1.NetNamespace) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	p := pendingNetID{obj: nn, created: replaced == nil}
	if replaced != nil {
		p.replacedRV = replaced.ResourceVersion
	}
	c.pending[nn.Name] = p
}

func (c *Controller) pendingOf(name string) (pendingNetID, bool) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	p, ok := c.pending[name]
	return p, ok
}

// pendingLive reports whether our last write of name is still ahead of the cache, which
// shows cached (nil: no object): a create while the cache shows no object, an update while
// it shows the version we replaced. Once the cache has moved on — to our write, or past it —
// the entry is dropped.
func (c *Controller) pendingLive(name string, cached *sluicev1alpha1.NetNamespace) bool {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	p, ok := c.pending[name]
	if !ok {
		return false
	}
	if p.created && cached == nil || !p.created && cached != nil && p.replacedRV != "" && cached.ResourceVersion == p.replacedRV {
		return true
	}
	delete(c.pending, name)
	return false
}

func (c *Controller) forgetPending(name string) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	delete(c.pending, name)
}

// Package netnamespace gives every Namespace a NetNamespace: a cluster-scoped object named
// after it that carries the namespace's VNID (spec.netID) for Multitenant isolation. Namespace
// "default" (and any other name in Options.GlobalNamespaces) gets netID 0, global; every
// other namespace gets the lowest VNID from 1 to MaxNetID that no NetNamespace holds. Which
// VNID to hand out is decided by pkg/vnid; this package reads the caches and writes the API.
//
// It is an informer + workqueue controller like pkg/controller/hostsubnet: handlers queue
// namespace names (a Namespace and its NetNamespace share the name), a worker reconciles each
// name from the caches. The NetNamespaces in the API are the only record of which VNIDs are
// taken, so a restarted controller or the other replica rebuilds the allocator from the
// informer's initial list before it allocates anything.
//
// Multitenant operations (join, isolate, make global) are asked for with the annotation
// v1alpha1.AnnotationMultitenantChange on a NetNamespace; the controller applies them one at
// a time, under the same lock as allocation, so that a fresh VNID is never handed out twice.
// Operators may also edit spec.netID by hand: the controller keeps what they wrote. See
// README.md.
package netnamespace

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions/sluice/v1alpha1"
	sluicelisters "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/controller/workers"
	"github.com/sluice-net/sluice/pkg/informer"
	"github.com/sluice-net/sluice/pkg/vnid"
)

// ControllerName is the component name of events and logs.
const ControllerName = "sluice-netnamespace-controller"

// netIDIndex indexes the NetNamespace cache by spec.netID.
const netIDIndex = "netID"

// Controller keeps one NetNamespace per Namespace.
type Controller struct {
	kube      kubernetes.Interface
	sluice    versioned.Interface
	nsLister  corelisters.NamespaceLister
	netnsList sluicelisters.NetNamespaceLister
	netnsIdx  cache.Indexer
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
	recorder  record.EventRecorder
	global    map[string]bool
	alloc     *vnid.Allocator // tests lower its maximum to reach exhaustion

	// allocMu serialises every write that chooses a netID (creation, isolation, joins,
	// duplicates): choosing and writing are one step, whatever the number of workers.
	allocMu sync.Mutex
	// pending are netIDs this controller wrote that its cache does not show yet, by name.
	pendingMu sync.Mutex
	pending   map[string]pendingNetID
}

// pendingNetID is a write of ours the cache has not caught up with: it counts instead of the
// cached object while the cache still shows what it replaced (no object for a create, the
// object at replacedRV for an update).
type pendingNetID struct {
	obj        *sluicev1alpha1.NetNamespace // as the API server returned it
	created    bool
	replacedRV string
}

// Options tune a Controller; the zero value is the production setting.
type Options struct {
	// GlobalNamespaces get netID 0 when their NetNamespace is created; default ["default"].
	GlobalNamespaces []string
	// RateLimiter of the queue; the default backs off per key from 5 ms to 5 minutes.
	RateLimiter workqueue.TypedRateLimiter[string]
}

// New wires a Controller to its informers. The informers must be started by the caller
// (after New: it adds an index to the NetNamespace informer); Run waits for their caches.
func New(kube kubernetes.Interface, sluice versioned.Interface,
	nsInformer coreinformers.NamespaceInformer,
	netnsInformer sluiceinformers.NetNamespaceInformer,
	recorder record.EventRecorder, opts Options) (*Controller, error) {
	rl := opts.RateLimiter
	if rl == nil {
		rl = workqueue.DefaultTypedControllerRateLimiter[string]()
	}
	globals := opts.GlobalNamespaces
	if globals == nil {
		globals = []string{"default"}
	}
	inf := netnsInformer.Informer()
	if err := inf.AddIndexers(cache.Indexers{netIDIndex: func(obj any) ([]string, error) {
		nn, ok := obj.(*sluicev1alpha1.NetNamespace)
		if !ok {
			return nil, nil
		}
		return []string{vnid.Format(nn.Spec.NetID)}, nil
	}}); err != nil {
		return nil, fmt.Errorf("netnamespace index: %w", err)
	}
	c := &Controller{
		kube:      kube,
		sluice:    sluice,
		nsLister:  nsInformer.Lister(),
		netnsList: netnsInformer.Lister(),
		netnsIdx:  inf.GetIndexer(),
		synced:    []cache.InformerSynced{nsInformer.Informer().HasSynced, inf.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(rl,
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "netnamespace"}),
		recorder: recorder,
		global:   map[string]bool{},
		alloc:    vnid.New(vnid.Max),
		pending:  map[string]pendingNetID{},
	}
	for _, g := range globals {
		c.global[g] = true
	}

	if _, err := nsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueNamespace,
		UpdateFunc: func(oldObj, newObj any) {
			// Labels and annotations do not matter here; deletion (the timestamp) and
			// resyncs (same resourceVersion) do, and namespaces change rarely anyway.
			c.enqueueNamespace(newObj)
		},
		DeleteFunc: c.enqueueNamespace,
	}); err != nil {
		return nil, fmt.Errorf("namespace event handler: %w", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueNetNamespace,
		UpdateFunc: func(oldObj, newObj any) {
			c.enqueueNetNamespace(newObj)
			// The namespaces that shared the old netID may be alone on it now, or a
			// duplicate of the new one may need settling: look at both groups again.
			if o, n := netNamespaceFrom(oldObj), netNamespaceFrom(newObj); o != nil && n != nil && o.Spec.NetID != n.Spec.NetID {
				c.enqueueHolders(o.Spec.NetID)
				c.enqueueHolders(n.Spec.NetID)
			}
		},
		DeleteFunc: func(obj any) {
			c.enqueueNetNamespace(obj)
			// A freed netID may be what a waiting namespace needs (exhaustion).
			c.enqueueWaiting()
		},
	}); err != nil {
		return nil, fmt.Errorf("netnamespace event handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueNamespace(obj any) {
	if ns, ok := informer.Object[*corev1.Namespace](obj); ok {
		c.queue.Add(ns.Name)
	}
}

func netNamespaceFrom(obj any) *sluicev1alpha1.NetNamespace {
	nn, _ := informer.Object[*sluicev1alpha1.NetNamespace](obj)
	return nn
}

func (c *Controller) enqueueNetNamespace(obj any) {
	if nn := netNamespaceFrom(obj); nn != nil {
		c.queue.Add(nn.Name)
	}
}

// enqueueHolders queues the NetNamespaces that hold netID (0 is everyone's and is skipped:
// it never conflicts).
func (c *Controller) enqueueHolders(netID uint32) {
	if netID == 0 {
		return
	}
	objs, _ := c.netnsIdx.ByIndex(netIDIndex, vnid.Format(netID))
	for _, o := range objs {
		if nn := netNamespaceFrom(o); nn != nil {
			c.queue.Add(nn.Name)
		}
	}
}

// enqueueWaiting queues the namespaces without a NetNamespace.
func (c *Controller) enqueueWaiting() {
	nss, _ := c.nsLister.List(everything())
	for _, ns := range nss {
		if _, err := c.netnsList.Get(ns.Name); err != nil {
			c.queue.Add(ns.Name)
		}
	}
}

// enqueueAll queues every namespace and NetNamespace.
func (c *Controller) enqueueAll() {
	nss, _ := c.nsLister.List(everything())
	for _, ns := range nss {
		c.queue.Add(ns.Name)
	}
	nns, _ := c.netnsList.List(everything())
	for _, nn := range nns {
		c.queue.Add(nn.Name)
	}
}

// Run waits for the caches, then reconciles with the given number of workers until ctx ends.
// The allocator is the cache: every NetNamespace in the API is listed before any worker
// runs, and enqueueAll makes sure every name is looked at whatever the handler order.
func (c *Controller) Run(ctx context.Context, workers int) error {
	ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithValues("controller", "netnamespace"))
	return c.loop().Run(ctx, workers)
}

func (c *Controller) loop() *workers.Loop[string] {
	return &workers.Loop[string]{Queue: c.queue, Synced: c.synced, EnqueueAll: c.enqueueAll,
		Sync: func(ctx context.Context, name string) error {
			return c.sync(klog.NewContext(ctx, klog.FromContext(ctx).WithValues("namespace", name)), name)
		}}
}

// processNextWorkItem reconciles one key (tests drive the controller with it).
func (c *Controller) processNextWorkItem(ctx context.Context) bool { return c.loop().ProcessNext(ctx) }

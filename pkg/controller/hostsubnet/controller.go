// Package hostsubnet gives every Node a HostSubnet: a host subnet carved from the
// ClusterNetwork by pkg/subnet, the node's InternalIP as the overlay's endpoint, and the
// ClusterNetwork's status (Ready, SubnetsExhausted, InvalidSpec, allocated and capacity).
//
// It is an informer + workqueue controller (sample-controller style): event handlers put
// keys on a typed queue, and a worker reconciles each key from the caches to the level the
// objects ask for. The HostSubnets in the API are the only record of what is allocated, so a
// restarted controller keeps every allocation.
//
// Two controllers must never hand one subnet to two nodes. Leader election (in
// cmd/sluice-controller) keeps one active; for the moments when two are (a lease handed over
// while the old leader still works, a cache behind the API), every HostSubnet this controller
// creates is checked against a fresh list from the API server, and of two overlapping
// HostSubnets the younger (creationTimestamp, then name) is deleted and its node allocated
// again. The same rule settles overlaps found in the cache, so the cluster converges whichever
// controller sees the conflict first.
package hostsubnet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
)

// ControllerName is the component name of events and logs.
const ControllerName = "sluice-hostsubnet-controller"

// keyKind says what a queue key stands for.
type keyKind int

const (
	nodeKey   keyKind = iota // a node and its HostSubnet, both named name
	statusKey                // the ClusterNetwork's status
)

// key is what the queue holds: a name, never an object.
type key struct {
	kind keyKind
	name string
}

func (k key) String() string {
	if k.kind == statusKey {
		return "clusternetwork/" + k.name + "/status"
	}
	return "node/" + k.name
}

var theStatus = key{kind: statusKey, name: sluicev1alpha1.ClusterNetworkName}

// Controller allocates HostSubnets to Nodes.
type Controller struct {
	kube     kubernetes.Interface
	sluice   versioned.Interface
	nodes    corelisters.NodeLister
	subnets  sluicelisters.HostSubnetLister
	networks sluicelisters.ClusterNetworkLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[key]
	recorder record.EventRecorder

	// allocMu serialises allocation: choosing a free subnet and creating the HostSubnet that
	// takes it are one step, whatever the number of workers.
	allocMu sync.Mutex
	// pending are HostSubnets this controller created that its cache has not shown yet, by
	// name. They count as allocated so that the next node does not get the same subnet from
	// a stale cache.
	pendingMu sync.Mutex
	pending   map[string]pendingSubnet
}

type pendingSubnet struct {
	uid    string
	subnet netip.Prefix
}

// Options tune a Controller; the zero value is the production setting.
type Options struct {
	// RateLimiter of the queue; the default backs off per key from 5 ms to 5 minutes.
	RateLimiter workqueue.TypedRateLimiter[key]
}

// New wires a Controller to its informers. The informers must be started by the caller
// (after New, so that the handlers see the initial list); Run waits for their caches.
func New(kube kubernetes.Interface, sluice versioned.Interface,
	nodeInformer coreinformers.NodeInformer,
	subnetInformer sluiceinformers.HostSubnetInformer,
	networkInformer sluiceinformers.ClusterNetworkInformer,
	recorder record.EventRecorder, opts Options) (*Controller, error) {
	rl := opts.RateLimiter
	if rl == nil {
		rl = workqueue.DefaultTypedControllerRateLimiter[key]()
	}
	c := &Controller{
		kube:     kube,
		sluice:   sluice,
		nodes:    nodeInformer.Lister(),
		subnets:  subnetInformer.Lister(),
		networks: networkInformer.Lister(),
		synced: []cache.InformerSynced{
			nodeInformer.Informer().HasSynced,
			subnetInformer.Informer().HasSynced,
			networkInformer.Informer().HasSynced,
		},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(rl,
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "hostsubnet"}),
		recorder: recorder,
		pending:  map[string]pendingSubnet{},
	}

	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueNode(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Node), newObj.(*corev1.Node)
			// Kubelets post status every few seconds; only the addresses matter here, and
			// resyncs (same resourceVersion) keep the reconcile level-based.
			if o.ResourceVersion == n.ResourceVersion || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
				c.enqueueNode(newObj)
			}
		},
		DeleteFunc: func(obj any) { c.enqueueNode(obj) },
	}); err != nil {
		return nil, fmt.Errorf("node event handler: %w", err)
	}
	if _, err := subnetInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueueSubnet(obj) },
		UpdateFunc: func(_, newObj any) { c.enqueueSubnet(newObj) },
		DeleteFunc: func(obj any) {
			c.enqueueSubnet(obj)
			if hs := subnetFrom(obj); hs != nil {
				c.forgetPending(hs.Name, string(hs.UID))
			}
			// A freed subnet may be what a waiting node needs.
			c.enqueueWaitingNodes()
		},
	}); err != nil {
		return nil, fmt.Errorf("hostsubnet event handler: %w", err)
	}
	if _, err := networkInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueNetwork(nil, obj) },
		UpdateFunc: func(oldObj, newObj any) {
			c.enqueueNetwork(oldObj, newObj)
		},
		DeleteFunc: func(obj any) { c.queue.Add(theStatus) },
	}); err != nil {
		return nil, fmt.Errorf("clusternetwork event handler: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueNode(obj any) {
	if n, ok := informer.Object[*corev1.Node](obj); ok {
		c.queue.Add(key{kind: nodeKey, name: n.Name})
	}
}

func subnetFrom(obj any) *sluicev1alpha1.HostSubnet {
	hs, _ := informer.Object[*sluicev1alpha1.HostSubnet](obj)
	return hs
}

func (c *Controller) enqueueSubnet(obj any) {
	if hs := subnetFrom(obj); hs != nil {
		c.queue.Add(key{kind: nodeKey, name: hs.Name})
		c.queue.Add(theStatus)
	}
}

// enqueueNetwork queues the status, and every node and HostSubnet when the spec changed
// (a new generation): a valid spec may let waiting nodes have a subnet.
func (c *Controller) enqueueNetwork(oldObj, newObj any) {
	n, ok := newObj.(*sluicev1alpha1.ClusterNetwork)
	if !ok || n.Name != sluicev1alpha1.ClusterNetworkName {
		return
	}
	c.queue.Add(theStatus)
	if o, ok := oldObj.(*sluicev1alpha1.ClusterNetwork); ok && o.Generation == n.Generation && o.ResourceVersion != n.ResourceVersion {
		return // a status update, ours most likely
	}
	c.enqueueAll()
}

// enqueueAll queues every node and HostSubnet, in name order (so that, other things equal,
// nodes get subnets in the order of their names), and the status.
func (c *Controller) enqueueAll() {
	var names []string
	nodes, _ := c.nodes.List(everything())
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	subnets, _ := c.subnets.List(everything())
	for _, hs := range subnets {
		names = append(names, hs.Name)
	}
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		c.queue.Add(key{kind: nodeKey, name: n})
	}
	c.queue.Add(theStatus)
}

// enqueueWaitingNodes queues the nodes that have no HostSubnet.
func (c *Controller) enqueueWaitingNodes() {
	nodes, _ := c.nodes.List(everything())
	for _, n := range nodes {
		if _, err := c.subnets.Get(n.Name); err != nil {
			c.queue.Add(key{kind: nodeKey, name: n.Name})
		}
	}
}

// Run waits for the caches, then reconciles with the given number of workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	return c.loop().Run(ctx, workers)
}

func (c *Controller) loop() *workers.Loop[key] {
	return &workers.Loop[key]{Queue: c.queue, Synced: c.synced, EnqueueAll: c.enqueueAll, Sync: c.sync}
}

// processNextWorkItem reconciles one key (tests drive the controller with it).
func (c *Controller) processNextWorkItem(ctx context.Context) bool { return c.loop().ProcessNext(ctx) }

func (c *Controller) sync(ctx context.Context, k key) error {
	switch k.kind {
	case nodeKey:
		return c.syncNode(klog.NewContext(ctx, klog.FromContext(ctx).WithValues("node", k.name)), k.name)
	case statusKey:
		return c.syncStatus(ctx)
	}
	return nil
}

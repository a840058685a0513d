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
// creates is checked against a fresh list from the API server (one list checks every
// HostSubnet created since the previous one), and of two overlapping HostSubnets the younger
// (creationTimestamp, then name) is deleted and its node allocated again. The same rule
// settles overlaps found in the cache, so the cluster converges whichever controller sees the
// conflict first.
//
// The subnets in use are kept in a subnet.Index fed by the HostSubnet informer's events and
// by this controller's own allocations, so that choosing a subnet, checking overlaps and
// counting the use cost O(address bits), not a pass over every HostSubnet: workers allocate
// in parallel, each reserving its subnet in the index before it creates the HostSubnet.
package hostsubnet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

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
	"github.com/sluice-net/sluice/pkg/subnet"
)

// ControllerName is the component name of events and logs.
const ControllerName = "sluice-hostsubnet-controller"

// keyKind says what a queue key stands for.
type keyKind int

const (
	nodeKey    keyKind = iota // a node and its HostSubnet, both named name
	statusKey                 // the ClusterNetwork's status
	verifyKey                 // check the HostSubnets created since the last check against the API server
	waitingKey                // queue the nodes that have no HostSubnet (a subnet was freed)
)

// key is what the queue holds: a name, never an object.
type key struct {
	kind keyKind
	name string
}

func (k key) String() string {
	switch k.kind {
	case statusKey:
		return "clusternetwork/" + k.name + "/status"
	case verifyKey:
		return "verify-created-hostsubnets"
	case waitingKey:
		return "waiting-nodes"
	}
	return "node/" + k.name
}

var (
	theStatus  = key{kind: statusKey, name: sluicev1alpha1.ClusterNetworkName}
	theVerify  = key{kind: verifyKey}
	theWaiting = key{kind: waitingKey}
)

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

	statusInterval, verifyInterval time.Duration

	// mu guards everything below.
	mu sync.Mutex
	// index holds the subnet of every HostSubnet in the cache (key "h/<name>") and every
	// subnet this controller reserved or created that the cache does not show yet (key
	// "r/<token>"), over the pools of the ClusterNetwork it was last built for.
	index *subnet.Index
	// reserved are the subnets of the "r/" keys, by token; tokens are never reused.
	reserved map[string]netip.Prefix
	tokens   uint64
	// pending are HostSubnets this controller created that its cache has not shown yet, by
	// name. Their reservations count as allocated so that the next node does not get the
	// same subnet from a stale cache.
	pending map[string]pendingSubnet
	// unverified are HostSubnets created since the last check against the API server.
	unverified map[string]created
}

type pendingSubnet struct {
	uid    string
	subnet netip.Prefix
	token  string
}

// created is a HostSubnet this controller created and has not checked yet.
type created struct {
	hs      *sluicev1alpha1.HostSubnet
	node    *corev1.Node
	attempt int // 1 for the first allocation of this reconcile, more after losing overlaps
}

// Default intervals (Options).
const (
	// DefaultStatusInterval is the least time between two writes of the ClusterNetwork's
	// status: while nodes join, every allocation changes allocatedSubnets, and every agent
	// watches the ClusterNetwork.
	DefaultStatusInterval = time.Second
	// DefaultVerifyInterval is the longest a created HostSubnet waits for its check against
	// the API server; one list checks every HostSubnet created in the meantime.
	DefaultVerifyInterval = time.Second
)

// Options tune a Controller; the zero value is the production setting.
type Options struct {
	// RateLimiter of the queue; the default backs off per key from 5 ms to 5 minutes.
	RateLimiter workqueue.TypedRateLimiter[key]
	// StatusInterval is the least time between two status writes (0: DefaultStatusInterval;
	// negative: none, every change is written at once).
	StatusInterval time.Duration
	// VerifyInterval is how long created HostSubnets wait to be checked against the API
	// server together (0: DefaultVerifyInterval; negative: checked at once).
	VerifyInterval time.Duration
}

func interval(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
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
		recorder:       recorder,
		statusInterval: interval(opts.StatusInterval, DefaultStatusInterval),
		verifyInterval: interval(opts.VerifyInterval, DefaultVerifyInterval),
		index:          subnet.NewIndex(nil),
		reserved:       map[string]netip.Prefix{},
		pending:        map[string]pendingSubnet{},
		unverified:     map[string]created{},
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
		AddFunc: func(obj any) {
			c.indexSubnet(subnetFrom(obj), true)
			c.enqueueSubnet(obj)
		},
		UpdateFunc: func(_, newObj any) {
			c.indexSubnet(subnetFrom(newObj), true)
			c.enqueueSubnet(newObj)
		},
		DeleteFunc: func(obj any) {
			hs := subnetFrom(obj)
			c.indexSubnet(hs, false)
			c.enqueueSubnet(obj)
			if hs != nil {
				c.forgetPending(hs.Name, string(hs.UID))
			}
			// A freed subnet may be what a waiting node needs (one pass over the nodes
			// for a burst of deletions).
			c.queue.Add(theWaiting)
		},
	}); err != nil {
		return nil, fmt.Errorf("hostsubnet event handler: %w", err)
	}
	if _, err := networkInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueNetwork(nil, obj) },
		UpdateFunc: func(oldObj, newObj any) {
			c.enqueueNetwork(oldObj, newObj)
		},
		DeleteFunc: func(obj any) { c.queueStatus() },
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
		c.queueStatus()
	}
}

// queueStatus asks for a status sync, at most one per statusInterval.
func (c *Controller) queueStatus() { c.addAfter(theStatus, c.statusInterval) }

// queueVerify asks for a check of the created HostSubnets, within verifyInterval.
func (c *Controller) queueVerify() { c.addAfter(theVerify, c.verifyInterval) }

func (c *Controller) addAfter(k key, d time.Duration) {
	if d <= 0 {
		c.queue.Add(k)
		return
	}
	c.queue.AddAfter(k, d)
}

// indexSubnet records a HostSubnet of the cache in the index (present), or forgets it.
func (c *Controller) indexSubnet(hs *sluicev1alpha1.HostSubnet, present bool) {
	if hs == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexCached(hs, present)
}

// indexCached is indexSubnet with mu held. A subnet that does not parse holds nothing (the
// CRD does not admit it).
func (c *Controller) indexCached(hs *sluicev1alpha1.HostSubnet, present bool) {
	p, err := subnet.ParseCIDR(hs.Spec.Subnet)
	if !present || err != nil {
		c.index.Delete("h/" + hs.Name)
		return
	}
	c.index.Set("h/"+hs.Name, p)
}

// reindex rebuilds the index from the cache and this controller's reservations, over the
// pools of the ClusterNetwork in the cache (none when it is missing or invalid).
func (c *Controller) reindex() {
	var pools []subnet.Pool
	if alloc := c.validAllocator(); alloc != nil {
		pools = alloc.Pools()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rebuild(pools)
}

// rebuild is reindex with mu held and the pools given.
func (c *Controller) rebuild(pools []subnet.Pool) {
	all, _ := c.subnets.List(everything())
	c.index = subnet.NewIndex(pools)
	for _, hs := range all {
		c.indexCached(hs, true)
	}
	for token, p := range c.reserved {
		c.index.Set("r/"+token, p)
	}
}

// indexFor is the index over alloc's pools, rebuilt when the pools changed (mu held).
func (c *Controller) indexFor(alloc *subnet.Allocator) *subnet.Index {
	if !slices.Equal(c.index.Pools(), alloc.Pools()) {
		c.rebuild(alloc.Pools())
	}
	return c.index
}

// reserve takes the next free subnet for a node and holds it in the index under a new token
// until the HostSubnet is created and shown by the cache, or release. The subnets in use are
// the index's, and with fresh (a list from the API server) also fresh's: the index knows
// what was created since the list, fresh what the cache has not shown yet. The node's own
// HostSubnet, which it replaces, is not counted.
func (c *Controller) reserve(alloc *subnet.Allocator, fresh []*sluicev1alpha1.HostSubnet, name string) (netip.Prefix, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s netip.Prefix
	var err error
	if fresh == nil {
		s, err = c.indexFor(alloc).Next()
	} else {
		var used []netip.Prefix
		for _, hs := range fresh {
			if p, perr := subnet.ParseCIDR(hs.Spec.Subnet); perr == nil && hs.Name != name {
				used = append(used, p)
			}
		}
		c.index.Each(func(k string, p netip.Prefix) {
			if k != "h/"+name {
				used = append(used, p)
			}
		})
		s, err = alloc.Next(used)
	}
	if err != nil {
		return netip.Prefix{}, "", err
	}
	c.tokens++
	token := strconv.FormatUint(c.tokens, 10)
	c.reserved[token] = s
	c.index.Set("r/"+token, s)
	return s, token, nil
}

// release drops a reservation (mu held).
func (c *Controller) release(token string) {
	delete(c.reserved, token)
	c.index.Delete("r/" + token)
}

// enqueueNetwork queues the status, and every node and HostSubnet when the spec changed
// (a new generation): a valid spec may let waiting nodes have a subnet.
func (c *Controller) enqueueNetwork(oldObj, newObj any) {
	n, ok := newObj.(*sluicev1alpha1.ClusterNetwork)
	if !ok || n.Name != sluicev1alpha1.ClusterNetworkName {
		return
	}
	c.queueStatus()
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
	c.reindex()
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
	case verifyKey:
		return c.verify(ctx)
	case waitingKey:
		c.enqueueWaitingNodes()
	}
	return nil
}

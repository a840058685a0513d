// This file holds the bench's API side: clients that dial the API server
// from the lab's control-plane namespace, the simulated Nodes, the
// ClusterNetwork, and an observer that records when each HostSubnet event
// reaches the bench.

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/sluice-net/sluice/bench/internal/labrun"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	"github.com/sluice-net/sluice/pkg/informer"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/netns"
)

// benchLabel marks every Node the bench makes, with its phase as value.
const benchLabel = "sluice.dev/bench-scale"

// agentNode is the simulated node whose agent the bench runs.
const agentNode = "sim-00000"

// The growth runs' ClusterNetwork: /23 host subnets (hostSubnetLength 9, as
// the lab's) from a /10, room for 8192 nodes.
var (
	growthNetwork  = []v1alpha1.ClusterNetworkEntry{{CIDR: "10.64.0.0/10", HostSubnetLength: 9}}
	exhaustNetwork = []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}
)

type bench struct {
	cfg    *lab.Config
	rest   *rest.Config // admin, dialled from the control-plane namespace, not rate limited
	kube   kubernetes.Interface
	sluice versioned.Interface
	obs    *observer
	ctrl   *runningController
	stop   context.CancelFunc
	sims   int // sim-00000 … sim-(sims-1) exist
}

// restConfig is the lab's admin identity at the API server's fabric
// address, each connection dialled from inside the control-plane namespace
// (no forwarder in the way). A config with its own Dial gets a transport of
// its own: every client made from it is a connection of its own, as separate
// processes have.
func restConfig(cfg *lab.Config) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.AdminKubeconfigFabric())
	if err != nil {
		return nil, err
	}
	path := netns.Path(cfg.ControlPlane().Netns)
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.Dial(ctx, path, network, addr)
	}
	return rc, nil
}

// unlimited is rc without client-side rate limit, for the bench's own
// writes.
func unlimited(rc *rest.Config) *rest.Config {
	c := rest.CopyConfig(rc)
	c.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	return c
}

func newBench(ctx context.Context, cfg *lab.Config) (*bench, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, rest: rc}
	mine := unlimited(rc)
	mine.UserAgent = "bench-scale"
	if b.kube, err = kubernetes.NewForConfig(mine); err != nil {
		return nil, err
	}
	if b.sluice, err = versioned.NewForConfig(mine); err != nil {
		return nil, err
	}
	ctx, b.stop = context.WithCancel(ctx)
	b.obs, err = newObserver(ctx, b.sluice)
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

func (b *bench) close() {
	if b.ctrl != nil {
		b.ctrl.stop()
		b.ctrl = nil
	}
	b.stop()
}

// nodeIP is node i's InternalIP in address generation gen (0–15: every
// fan-out run moves every node to a new one); block (0–3) separates the
// kinds of node (simulated, joining, exhaustion, shipped-rate). All lie in
// 100.64.0.0/10.
func nodeIP(block, gen, i int) netip.Addr {
	i++
	return netip.AddrFrom4([4]byte{100, byte(64 + 16*block + gen%16), byte(i >> 8), byte(i)})
}

// generations is how many addresses a node can move through.
const generations = 16

const (
	blockSim = iota
	blockJoin
	blockExhaust
	blockShipped
)

func simName(i int) string { return fmt.Sprintf("sim-%05d", i) }

func newNode(name, phase string, ip netip.Addr) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: phase}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip.String()},
			{Type: corev1.NodeHostName, Address: name},
		}},
	}
}

// createNodes creates nodes [from, to) of a kind on 16 workers.
func (b *bench) createNodes(ctx context.Context, phase string, block, from, to int, name func(int) string) error {
	return labrun.Parallel(ctx, 16, from, to, func(i int) error {
		_, err := b.kube.CoreV1().Nodes().Create(ctx, newNode(name(i), phase, nodeIP(block, 0, i)), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

// setNodeIP moves a node's InternalIP (the status subresource, as a kubelet
// reports it).
func (b *bench) setNodeIP(ctx context.Context, name string, ip netip.Addr) error {
	patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q},{"type":"Hostname","address":%q}]}}`, ip, name)
	_, err := b.kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	return err
}

// deleteNodes deletes the bench's nodes of a phase and waits for them to be
// gone.
func (b *bench) deleteNodes(ctx context.Context, phase string) error {
	sel := metav1.ListOptions{LabelSelector: benchLabel + "=" + phase}
	if err := b.kube.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return err
	}
	for range 600 {
		l, err := b.kube.CoreV1().Nodes().List(ctx, sel)
		if err == nil && len(l.Items) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("nodes %s=%s not gone after 60s", benchLabel, phase)
}

// clearSubnets deletes every HostSubnet (the controller stopped) and waits
// until the observer has seen them go.
func (b *bench) clearSubnets(ctx context.Context) error {
	if b.ctrl != nil {
		return fmt.Errorf("clearSubnets with the controller running")
	}
	if err := b.sluice.SluiceV1alpha1().HostSubnets().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return err
	}
	_, err := b.obs.wait(ctx, 2*time.Minute, func(o *observer) bool { return len(o.subnets) == 0 })
	return err
}

func (b *bench) startController(ctx context.Context, clientGoDefault bool) error {
	if b.ctrl != nil {
		return nil
	}
	rc, err := startController(ctx, b.rest, clientGoDefault)
	if err != nil {
		return err
	}
	b.ctrl = rc
	return nil
}

func (b *bench) stopController() error {
	if b.ctrl == nil {
		return nil
	}
	err := b.ctrl.stop()
	b.ctrl = nil
	return err
}

// setNetwork sets the ClusterNetwork's pod networks.
func (b *bench) setNetwork(ctx context.Context, nets []v1alpha1.ClusterNetworkEntry) error {
	cn, err := b.sluice.SluiceV1alpha1().ClusterNetworks().Get(ctx, v1alpha1.ClusterNetworkName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cn.Spec.ClusterNetworks = nets
	_, err = b.sluice.SluiceV1alpha1().ClusterNetworks().Update(ctx, cn, metav1.UpdateOptions{})
	return err
}

// nodeCount is the number of Nodes in the API.
func (b *bench) nodeCount(ctx context.Context) (int, error) {
	l, err := b.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	return len(l.Items), nil
}

// observed is what the observer knows of one HostSubnet.
type observed struct {
	subnet, hostIP string
	added, changed time.Time // when its add, and its latest hostIP change, reached the bench
}

// observer watches HostSubnets with an informer of its own and records when
// each add, hostIP change and delete reached it.
type observer struct {
	mu      sync.Mutex
	subnets map[string]observed
	deleted map[string]time.Time
}

func newObserver(ctx context.Context, cs versioned.Interface) (*observer, error) {
	o := &observer{subnets: map[string]observed{}, deleted: map[string]time.Time{}}
	f := sluiceinformers.NewSharedInformerFactory(cs, 0)
	inf := f.Sluice().V1alpha1().HostSubnets().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			now := time.Now()
			if hs, ok := informer.Object[*v1alpha1.HostSubnet](obj); ok {
				o.mu.Lock()
				o.subnets[hs.Name] = observed{subnet: hs.Spec.Subnet, hostIP: hs.Spec.HostIP, added: now, changed: now}
				delete(o.deleted, hs.Name)
				o.mu.Unlock()
			}
		},
		UpdateFunc: func(_, obj any) {
			now := time.Now()
			if hs, ok := informer.Object[*v1alpha1.HostSubnet](obj); ok {
				o.mu.Lock()
				s := o.subnets[hs.Name]
				if s.hostIP != hs.Spec.HostIP {
					s.changed = now
				}
				s.subnet, s.hostIP = hs.Spec.Subnet, hs.Spec.HostIP
				o.subnets[hs.Name] = s
				o.mu.Unlock()
			}
		},
		DeleteFunc: func(obj any) {
			now := time.Now()
			if hs, ok := informer.Object[*v1alpha1.HostSubnet](obj); ok {
				o.mu.Lock()
				delete(o.subnets, hs.Name)
				o.deleted[hs.Name] = now
				o.mu.Unlock()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("observer: HostSubnet cache did not sync")
	}
	return o, nil
}

// wait polls cond (called with the lock held) every 5 ms until it holds,
// and returns when it first held; timeout is an error.
func (o *observer) wait(ctx context.Context, timeout time.Duration, cond func(*observer) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		o.mu.Lock()
		ok := cond(o)
		o.mu.Unlock()
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("condition not met within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// lastAdded is the time the latest of the HostSubnets reached the bench, once
// there are n of them, else the zero time (lock held).
func (o *observer) lastAdded(n int) time.Time {
	if len(o.subnets) < n {
		return time.Time{}
	}
	var last time.Time
	for _, s := range o.subnets {
		if s.added.After(last) {
			last = s.added
		}
	}
	return last
}

// waitAll waits until n HostSubnets exist and returns when the last one's
// add reached the bench.
func (o *observer) waitAll(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	var last time.Time
	_, err := o.wait(ctx, timeout, func(o *observer) bool {
		last = o.lastAdded(n)
		return !last.IsZero()
	})
	if err != nil {
		o.mu.Lock()
		err = fmt.Errorf("%d HostSubnets, want %d: %w", len(o.subnets), n, err)
		o.mu.Unlock()
	}
	return last, err
}

// duplicates names HostSubnets that share a subnet, "" when none do.
func (o *observer) duplicates() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]string{}
	var dups []string
	for name, s := range o.subnets {
		if other, dup := seen[s.subnet]; dup {
			dups = append(dups, fmt.Sprintf("%s and %s share %s", other, name, s.subnet))
		}
		seen[s.subnet] = name
	}
	return strings.Join(dups, "; ")
}

func (o *observer) get(name string) (observed, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.subnets[name]
	return s, ok
}

func (o *observer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.subnets)
}

// etcdFsync is the mean of etcd's WAL fsync and backend commit durations
// and their counts since etcd started, from its metrics endpoint (in the
// control-plane namespace): every API write waits for one of each.
func (b *bench) etcdFsync(ctx context.Context) string {
	path := netns.Path(b.cfg.ControlPlane().Netns)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, path, network, addr)
		}}}
	resp, err := c.Get("http://127.0.0.1:2381/metrics")
	if err != nil {
		return "etcd metrics: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	v := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			x, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				v[f[0]] = x
			}
		}
	}
	mean := func(m string) string {
		n := v[m+"_count"]
		if n == 0 {
			return m + ": none"
		}
		return fmt.Sprintf("%.0f, mean %.1f ms", n, v[m+"_sum"]/n*1000)
	}
	return fmt.Sprintf("etcd WAL fsyncs %s; backend commits %s", mean("etcd_disk_wal_fsync_duration_seconds"), mean("etcd_disk_backend_commit_duration_seconds"))
}

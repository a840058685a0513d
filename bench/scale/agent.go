// This file runs one agent's overlay — pkg/agent/overlay, fed by HostSubnet
// and ClusterNetwork informers and kicked by their events as pkg/agent/node
// wires it — inside a throw-away network namespace whose only link is a
// veth pair standing for the underlay, holding the simulated node's address. Nothing leaves the
// namespace: the bench sends no packets. The kernel's side is seen through
// netlink notifications (routes, neighbours, FDB) from that namespace.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/agent/overlay"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	"github.com/sluice-net/sluice/pkg/informer"
	"github.com/sluice-net/sluice/pkg/netns"
)

// agentResult is one agent run.
type agentResult struct {
	informerSync           time.Duration // informers started → caches synced
	cold                   time.Duration // the first overlay sync (the agent's start)
	routes, neighs, fdb    int           // kernel entries after it
	joinEvent, joinWrite   []time.Duration
	leaveEvent, leaveWrite []time.Duration
}

// runAgent starts an agent for agentNode in a namespace of its own, times
// its first sync with remotes remote subnets, then joins and removes nodes.
func (b *bench) runAgent(ctx context.Context, run, remotes int) (agentResult, error) {
	var r agentResult
	name := fmt.Sprintf("sluice-bench-scale-%d-%d", os.Getpid(), run)
	if err := host.NetnsAdd(name); err != nil {
		return r, err
	}
	defer host.NetnsDel(name)
	// The node's address as its HostSubnet has it now (the fan-out moves it).
	mine0, ok := b.obs.get(agentNode)
	if !ok {
		return r, fmt.Errorf("no HostSubnet %s", agentNode)
	}
	self := netip.MustParseAddr(mine0.hostIP)
	for _, cmd := range [][]string{
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "link", "add", "underlay0", "type", "veth", "peer", "name", "underlay1"},
		{"ip", "-n", name, "addr", "add", self.String() + "/10", "dev", "underlay0"},
		{"ip", "-n", name, "link", "set", "underlay0", "up"},
	} {
		if err := host.Sh(cmd...); err != nil {
			return r, err
		}
	}
	kw, err := watchKernel(netns.Path(name))
	if err != nil {
		return r, err
	}
	defer kw.close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The agent's client: a connection of its own, client-go's default rate
	// limit (cmd/sluice-agent sets none).
	rc := rest.CopyConfig(b.rest)
	rc.UserAgent = "sluice-agent/bench-scale"
	cs, err := versioned.NewForConfig(rc)
	if err != nil {
		return r, err
	}
	f := sluiceinformers.NewSharedInformerFactory(cs, 0)
	hs, cn := f.Sluice().V1alpha1().HostSubnets(), f.Sluice().V1alpha1().ClusterNetworks()
	o := &overlay.Overlay{NodeName: agentNode, HostSubnets: hs.Lister(), Networks: cn.Lister(), Log: logr.Discard()}
	for _, inf := range []cache.SharedIndexInformer{hs.Informer(), cn.Informer()} {
		if _, err := inf.AddEventHandler(informer.Kick(o.Request)); err != nil {
			return r, err
		}
	}
	// When each HostSubnet add and delete reached the agent's informer: the
	// API event a join or leave starts from.
	seen := &agentSeen{added: map[string]time.Time{}, deleted: map[string]time.Time{}}
	if _, err := hs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { seen.note(obj, true) },
		DeleteFunc: func(obj any) { seen.note(obj, false) },
	}); err != nil {
		return r, err
	}
	t0 := time.Now()
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), hs.Informer().HasSynced, cn.Informer().HasSynced) {
		return r, errors.New("agent: caches did not sync")
	}
	r.informerSync = time.Since(t0)
	mine, err := hs.Lister().Get(agentNode)
	if err != nil {
		return r, err
	}
	network, err := cn.Lister().Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return r, err
	}

	// As pkg/agent/node: Init, one Sync, then the loop, all on one thread in
	// the namespace.
	started := make(chan error, 1)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		netns.Do(netns.Path(name), func() error {
			if _, err := o.Init(mine, network); err != nil {
				started <- err
				return nil
			}
			t := time.Now()
			if err := o.Sync(ctx); err != nil {
				started <- err
				return nil
			}
			r.cold = time.Since(t)
			var cerr error
			r.routes, r.neighs, r.fdb, cerr = kernelCounts()
			started <- cerr
			o.Run(ctx)
			return nil
		})
	}()
	defer func() { cancel(); <-loopDone }()
	if err := <-started; err != nil {
		return r, fmt.Errorf("agent start: %w", err)
	}
	if r.routes != remotes || r.neighs != remotes || r.fdb != remotes {
		return r, fmt.Errorf("after the first sync: %d routes, %d neighbours, %d FDB entries; want %d each", r.routes, r.neighs, r.fdb, remotes)
	}
	for j := range *joinsF {
		if err := b.joinLeave(ctx, kw, seen, run*100+j, &r); err != nil {
			return r, fmt.Errorf("join/leave %d: %w", j, err)
		}
	}
	if err := kw.err(); err != nil {
		return r, err
	}
	return r, nil
}

// joinLeave adds a node, waits for its overlay entries in the namespace,
// deletes it and waits for them to go.
func (b *bench) joinLeave(ctx context.Context, kw *kernelWatch, seen *agentSeen, k int, r *agentResult) error {
	// Named to sort in the middle of the simulated nodes: the overlay
	// programs remotes in name order, and a join's entries come when the
	// programming reaches its name (join-* would come first: a best case).
	name := fmt.Sprintf("%s-join-%03d", simName(b.sims/2), k)
	ip := nodeIP(blockJoin, 0, k)
	mac := link.VTEPMAC(ip).String()
	kw.reset()
	written := time.Now()
	if _, err := b.kube.CoreV1().Nodes().Create(ctx, newNode(name, "join", ip), metav1.CreateOptions{}); err != nil {
		return err
	}
	var s observed
	if _, err := b.obs.wait(ctx, time.Minute, func(o *observer) bool {
		var ok bool
		s, ok = o.subnets[name]
		return ok
	}); err != nil {
		return fmt.Errorf("HostSubnet %s: %w", name, err)
	}
	sub := netip.MustParsePrefix(s.subnet)
	vtep := sub.Masked().Addr().String()
	present, err := kw.waitAll(ctx, true, sub.Masked().String(), vtep, mac)
	if err != nil {
		return fmt.Errorf("kernel entries for %s (%s): %w", name, sub, err)
	}
	event, ok := seen.at(name, true)
	if !ok {
		return fmt.Errorf("the agent's informer never delivered HostSubnet %s", name)
	}
	r.joinEvent = append(r.joinEvent, present.Sub(event))
	r.joinWrite = append(r.joinWrite, present.Sub(written))

	time.Sleep(200 * time.Millisecond) // let the agent's loop settle
	kw.reset()
	written = time.Now()
	if err := b.kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	absent, err := kw.waitAll(ctx, false, sub.Masked().String(), vtep, mac)
	if err != nil {
		return fmt.Errorf("kernel entries for %s (%s) removed: %w", name, sub, err)
	}
	gone, ok := seen.at(name, false)
	if !ok {
		return fmt.Errorf("the agent's informer never delivered the deletion of HostSubnet %s", name)
	}
	r.leaveEvent = append(r.leaveEvent, absent.Sub(gone))
	r.leaveWrite = append(r.leaveWrite, absent.Sub(written))
	time.Sleep(200 * time.Millisecond)
	return nil
}

// agentSeen records when HostSubnet adds and deletes reached the agent's
// informer.
type agentSeen struct {
	mu             sync.Mutex
	added, deleted map[string]time.Time
}

func (a *agentSeen) note(obj any, added bool) {
	now := time.Now()
	hs, ok := informer.Object[*v1alpha1.HostSubnet](obj)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if added {
		a.added[hs.Name] = now
	} else {
		a.deleted[hs.Name] = now
	}
}

func (a *agentSeen) at(name string, added bool) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.deleted
	if added {
		m = a.added
	}
	t, ok := m[name]
	return t, ok
}

// kernelCounts counts, in the current thread's namespace, the agent's routes
// on the VXLAN device, its permanent neighbours and its FDB entries.
func kernelCounts() (routes, neighs, fdb int, err error) {
	l, err := netlink.LinkByName(link.VXLANDevice)
	if err != nil {
		return 0, 0, 0, err
	}
	idx := l.Attrs().Index
	rs, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Protocol: link.RouteProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, 0, 0, err
	}
	ns, err := netlink.NeighList(idx, unix.AF_INET)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, n := range ns {
		if n.State == netlink.NUD_PERMANENT {
			neighs++
		}
	}
	fs, err := netlink.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return 0, 0, 0, err
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, n := range fs {
		if n.HardwareAddr != nil && n.HardwareAddr.String() != zero.String() {
			fdb++
		}
	}
	return len(rs), neighs, fdb, nil
}

// kernelWatch records when route, neighbour and FDB notifications from a
// namespace reach the bench: the first new and first removed notification
// of each key since the last reset.
type kernelWatch struct {
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	added  map[string]time.Time // "route 10.64.0.0/23", "neigh 10.64.0.0", "fdb 0e:5c:…"
	gone   map[string]time.Time
	failed error
}

func watchKernel(path string) (*kernelWatch, error) {
	h, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	kw := &kernelWatch{done: make(chan struct{}), added: map[string]time.Time{}, gone: map[string]time.Time{}}
	onErr := func(err error) {
		kw.mu.Lock()
		if kw.failed == nil {
			kw.failed = fmt.Errorf("netlink notifications: %w", err)
		}
		kw.mu.Unlock()
	}
	routes := make(chan netlink.RouteUpdate, 1<<16)
	neighs := make(chan netlink.NeighUpdate, 1<<16)
	const buf = 32 << 20 // a full resync replaces every route: room for all its notifications
	if err := netlink.RouteSubscribeWithOptions(routes, kw.done, netlink.RouteSubscribeOptions{
		Namespace: &h, ErrorCallback: onErr, ReceiveBufferSize: buf, ReceiveBufferForceSize: true}); err != nil {
		return nil, err
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, kw.done, netlink.NeighSubscribeOptions{
		Namespace: &h, ErrorCallback: onErr, ReceiveBufferSize: buf, ReceiveBufferForceSize: true}); err != nil {
		close(kw.done)
		return nil, err
	}
	kw.wg.Add(2)
	go func() {
		defer kw.wg.Done()
		for u := range routes {
			if u.Dst != nil {
				kw.note("route "+u.Dst.String(), u.Type == unix.RTM_NEWROUTE)
			}
		}
	}()
	go func() {
		defer kw.wg.Done()
		for u := range neighs {
			switch {
			case u.Family == unix.AF_BRIDGE && u.HardwareAddr != nil:
				kw.note("fdb "+u.HardwareAddr.String(), u.Type == unix.RTM_NEWNEIGH)
			case u.Family == unix.AF_INET && u.IP != nil && (u.Type == unix.RTM_DELNEIGH || u.State == netlink.NUD_PERMANENT):
				kw.note("neigh "+u.IP.String(), u.Type == unix.RTM_NEWNEIGH)
			}
		}
	}()
	return kw, nil
}

func (kw *kernelWatch) note(key string, added bool) {
	now := time.Now()
	kw.mu.Lock()
	defer kw.mu.Unlock()
	m := kw.gone
	if added {
		m = kw.added
	}
	if _, ok := m[key]; !ok {
		m[key] = now
	}
}

func (kw *kernelWatch) reset() {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	clear(kw.added)
	clear(kw.gone)
}

func (kw *kernelWatch) err() error {
	kw.mu.Lock()
	defer kw.mu.Unlock()
	return kw.failed
}

// waitAll waits until the route to subnet, the neighbour vtep and the FDB
// entry mac have all been added (or all removed) since the last reset, and
// returns when the last of the three notifications arrived.
func (kw *kernelWatch) waitAll(ctx context.Context, added bool, subnet, vtep, mac string) (time.Time, error) {
	keys := []string{"route " + subnet, "neigh " + vtep, "fdb " + mac}
	deadline := time.Now().Add(time.Minute)
	for {
		kw.mu.Lock()
		m, failed := kw.gone, kw.failed
		if added {
			m = kw.added
		}
		var last time.Time
		n := 0
		for _, k := range keys {
			if t, ok := m[k]; ok {
				n++
				if t.After(last) {
					last = t
				}
			}
		}
		kw.mu.Unlock()
		if failed != nil {
			return time.Time{}, failed
		}
		if n == len(keys) {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %v seen within a minute", n, keys)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (kw *kernelWatch) close() {
	close(kw.done)
	kw.wg.Wait()
}

package node

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kubeinformers "k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/netpol"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/policy"
)

// isolation keeps the node's isolation rules (pkg/agent/netpol) in step
// with the cluster's mode, namespaces, VNIDs, pods and NetworkPolicies.
// CNI ADD waits in admit until a sync that knows the new pod is in the
// kernel, so a pod that policy isolates is isolated before its first
// packet; until then the pod's interface is closed (netpol fails closed on
// local pods it does not know).
type isolation struct {
	a          *Agent
	nft        knftables.Interface
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	policies   networkinglisters.NetworkPolicyLister
	netns      listers.NetNamespaceLister
	kick       chan struct{}

	mu     sync.Mutex
	local  map[string]dataplane.Pod // host interface → local pod (from CNI / IPAM)
	gen    uint64                   // bumped by every change of local
	synced uint64                   // gen of the last successful sync
	done   *sync.Cond
	err    error // of the last sync

	// Used by the sync loop only.
	prev     netpol.State
	needFull bool
	listed   bool
}

// newIsolation registers the informers isolation reads on the factories;
// the caller starts them.
func newIsolation(a *Agent, kf kubeinformers.SharedInformerFactory, nn listers.NetNamespaceLister, nnInf cache.SharedIndexInformer) (*isolation, error) {
	nft, err := dataplane.NewNFT()
	if err != nil {
		return nil, err
	}
	s := &isolation{a: a, nft: nft, netns: nn, kick: make(chan struct{}, 1), local: map[string]dataplane.Pod{}, needFull: true,
		pods: kf.Core().V1().Pods().Lister(), namespaces: kf.Core().V1().Namespaces().Lister(),
		policies: kf.Networking().V1().NetworkPolicies().Lister()}
	s.done = sync.NewCond(&s.mu)
	h := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.request() }, UpdateFunc: func(any, any) { s.request() }, DeleteFunc: func(any) { s.request() },
	}
	for _, inf := range []cache.SharedIndexInformer{kf.Core().V1().Pods().Informer(), kf.Core().V1().Namespaces().Informer(),
		kf.Networking().V1().NetworkPolicies().Informer(), nnInf} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *isolation) request() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setLocal replaces the local pods (after a restart, from IPAM).
func (s *isolation) setLocal(pods []dataplane.Pod) {
	s.mu.Lock()
	s.local = map[string]dataplane.Pod{}
	for _, p := range pods {
		s.local[p.Iface] = p
	}
	s.gen++
	s.mu.Unlock()
	s.request()
}

// admit registers a new local pod and returns once a sync that includes
// it has been programmed (or ctx ends, or that sync failed).
func (s *isolation) admit(ctx context.Context, p dataplane.Pod) error {
	s.mu.Lock()
	s.local[p.Iface] = p
	s.gen++
	want := s.gen
	s.mu.Unlock()
	s.request()

	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.done.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.synced < want {
		if ctx.Err() != nil {
			return fmt.Errorf("isolation rules for %s not programmed: %w", p.Owner, ctx.Err())
		}
		if s.err != nil {
			return fmt.Errorf("isolation rules for %s: %w", p.Owner, s.err)
		}
		s.done.Wait()
	}
	return nil
}

// forget drops a local pod; no need to wait.
func (s *isolation) forget(iface string) {
	s.mu.Lock()
	delete(s.local, iface)
	s.gen++
	s.mu.Unlock()
	s.request()
}

// run syncs on every change until ctx ends; a failed sync is retried as a
// full sync after a second.
func (s *isolation) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if err := s.sync(ctx); err != nil {
			s.a.Log.Warn("isolation sync failed; a full sync follows", "err", err)
			time.AfterFunc(time.Second, s.request)
		}
	}
}

func (s *isolation) sync(ctx context.Context) error {
	s.mu.Lock()
	gen := s.gen
	local := make([]dataplane.Pod, 0, len(s.local))
	for _, p := range s.local {
		local = append(local, p)
	}
	s.mu.Unlock()

	st, err := s.build(local)
	if err == nil {
		err = s.program(ctx, st)
	}
	s.mu.Lock()
	if err == nil {
		s.synced = max(s.synced, gen)
	}
	s.err = err
	s.done.Broadcast()
	s.mu.Unlock()
	return err
}

func (s *isolation) program(ctx context.Context, st netpol.State) error {
	tx := s.nft.NewTransaction()
	if s.needFull {
		var chains, sets []string
		var err error
		if !s.listed {
			if chains, err = s.nft.List(ctx, "chains"); err != nil && !knftables.IsNotFound(err) {
				return err
			}
			if sets, err = s.nft.List(ctx, "sets"); err != nil && !knftables.IsNotFound(err) {
				return err
			}
			maps, err := s.nft.List(ctx, "maps")
			if err != nil && !knftables.IsNotFound(err) {
				return err
			}
			sets = append(sets, maps...)
		} else {
			chains, sets = netpol.Objects(s.prev)
		}
		netpol.Render(tx, st)
		netpol.Prune(tx, chains, sets, st)
	} else {
		netpol.RenderPartial(tx, s.prev, st)
	}
	if tx.NumOperations() > 0 {
		if err := s.nft.Run(ctx, tx); err != nil {
			s.needFull = true
			return err
		}
	}
	s.prev, s.needFull, s.listed = st, false, true
	return nil
}

// build assembles the policy input from the listers and compiles it. A
// policy the model cannot represent exactly is replaced by one that
// isolates the pods it could select and allows nothing (never widened),
// and reported. Policies are validated once, by netpol.Build; one by one
// only when it refuses.
func (s *isolation) build(local []dataplane.Pod) (netpol.State, error) {
	cn, err := s.a.networks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return netpol.State{}, fmt.Errorf("ClusterNetwork: %w", err)
	}
	in := policy.Input{Mode: policy.Mode(cn.Spec.Mode), VNIDs: map[string]uint32{}}
	nss, err := s.namespaces.List(labels.Everything())
	if err != nil {
		return netpol.State{}, err
	}
	known := map[string]bool{}
	for _, ns := range nss {
		in.Namespaces = append(in.Namespaces, *ns)
		known[ns.Name] = true
	}
	nns, err := s.netns.List(labels.Everything())
	if err != nil {
		return netpol.State{}, err
	}
	for _, n := range nns {
		in.VNIDs[n.Name] = n.Spec.NetID
	}

	// Local pods: the address is what CNI gave (the API learns it only
	// after CNI ADD returns); an API object that claims a local address
	// for another pod (a stale status) is not believed.
	byOwner := map[string]netip.Addr{}
	localIP := map[netip.Addr]string{}
	for _, p := range local {
		byOwner[p.Owner] = p.IP
		localIP[p.IP] = p.Owner
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return netpol.State{}, err
	}
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !known[p.Namespace] {
			continue
		}
		mp, err := policy.PodFromCore(p)
		if err != nil {
			s.a.Log.Warn("pod left out of isolation", "err", err)
			continue
		}
		key := p.Namespace + "/" + p.Name
		if p.Spec.NodeName == s.a.NodeName {
			mp.IP = byOwner[key] // zero when CNI has not wired it (yet)
		} else if owner, ok := localIP[mp.IP]; ok && owner != key {
			mp.IP = netip.Addr{}
		}
		in.Pods = append(in.Pods, mp)
	}

	policies, err := s.policies.List(labels.Everything())
	if err != nil {
		return netpol.State{}, err
	}
	for _, np := range policies {
		in.Policies = append(in.Policies, *np)
	}

	var nodeIPs []netip.Addr
	hss, err := s.a.hostSubnets.List(labels.Everything())
	if err != nil {
		return netpol.State{}, err
	}
	for _, hs := range hss {
		if ip, err := netip.ParseAddr(hs.Spec.HostIP); err == nil {
			nodeIPs = append(nodeIPs, ip)
		}
		if sub, err := netip.ParsePrefix(hs.Spec.Subnet); err == nil {
			nodeIPs = append(nodeIPs, sub.Masked().Addr()) // the node's VXLAN address
		}
	}
	st, err := netpol.Build(in, s.a.NodeName, nodeIPs)
	if err == nil {
		return st, nil
	}
	// Build validated everything and refused something: find the policies
	// it cannot enforce exactly and stand in for them.
	replaced := false
	for i := range in.Policies {
		np := &in.Policies[i]
		if errs := policy.Validate(np); len(errs) > 0 {
			s.a.Log.Warn("NetworkPolicy cannot be enforced exactly: its pods are isolated and nothing is allowed",
				"policy", np.Namespace+"/"+np.Name, "err", errs.ToAggregate().Error())
			in.Policies[i] = denyAll(np)
			replaced = true
		}
	}
	if !replaced {
		return st, err
	}
	return netpol.Build(in, s.a.NodeName, nodeIPs)
}

// denyAll stands in for a policy that cannot be enforced exactly: the pods
// it selects (all of its namespace when its selector is itself invalid)
// are isolated in both directions with no rule allowing anything.
func denyAll(np *networkingv1.NetworkPolicy) networkingv1.NetworkPolicy {
	sel := np.Spec.PodSelector
	if _, err := metav1.LabelSelectorAsSelector(&sel); err != nil {
		sel = metav1.LabelSelector{}
	}
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: np.Namespace, Name: np.Name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: sel,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
	}
}

// admittingDataplane is the dataplane the pod network admits pods through:
// anti-spoofing first, then isolation.
type admittingDataplane struct {
	dp  *dataplane.Dataplane
	iso *isolation
}

func (x admittingDataplane) AddPod(ctx context.Context, p dataplane.Pod) error {
	if err := x.dp.AddPod(ctx, p); err != nil {
		return err
	}
	return x.iso.admit(ctx, p)
}

func (x admittingDataplane) RemovePod(ctx context.Context, iface string) error {
	x.iso.forget(iface)
	return x.dp.RemovePod(ctx, iface)
}

package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/policy"
)

// Listers are what isolation reads: the cluster's mode and nodes, namespaces
// and their VNIDs, pods and NetworkPolicies.
type Listers struct {
	Pods            corelisters.PodLister
	Namespaces      corelisters.NamespaceLister
	Policies        networkinglisters.NetworkPolicyLister
	NetNamespaces   listers.NetNamespaceLister
	HostSubnets     listers.HostSubnetLister
	ClusterNetworks listers.ClusterNetworkLister
}

// Isolation keeps the node's isolation rules in step with the cluster: a
// dataplane.Feature. Informer handlers call Changed; the pod network
// reports its local pods through PodAdded and PodRemoved (the address CNI
// gave, which the API learns only after CNI ADD returns), then waits for
// the table owner's sync, so a pod that policy isolates is isolated before
// its first packet. Until then its interface is closed: the rules fail
// closed on local pods they do not know.
type Isolation struct {
	Listers
	NodeName string
	Log      logr.Logger
	// Request asks the table owner for a sync (informer changes).
	Request func()

	mu      sync.Mutex
	local   map[string]dataplane.Pod // host interface → local pod
	changes dataplane.Changes

	// Used by the owner's sync loop only.
	prev State // what the table holds, valid after a commit
}

// NewIsolation returns isolation for node, with no local pods yet.
func NewIsolation(l Listers, node string, log logr.Logger, request func()) *Isolation {
	return &Isolation{Listers: l, NodeName: node, Log: log, Request: request, local: map[string]dataplane.Pod{}}
}

// Name is "isolation".
func (s *Isolation) Name() string { return "isolation" }

// BaseChains declares isolation's hooks.
func (s *Isolation) BaseChains() []dataplane.BaseChain { return BaseChains }

// Changed records that an input changed and asks for a sync.
func (s *Isolation) Changed() {
	s.mu.Lock()
	s.changes.Bump()
	s.mu.Unlock()
	s.Request()
}

// PodAdded records a new local pod; the caller syncs.
func (s *Isolation) PodAdded(p dataplane.Pod) {
	s.mu.Lock()
	s.local[p.Iface] = p
	s.changes.Bump()
	s.mu.Unlock()
}

// PodRemoved forgets a local pod; the caller syncs.
func (s *Isolation) PodRemoved(iface string) {
	s.mu.Lock()
	if _, ok := s.local[iface]; ok {
		delete(s.local, iface)
		s.changes.Bump()
	}
	s.mu.Unlock()
}

// Contribute compiles the inputs and renders the difference from what the
// table holds (everything, pruned against existing, when full). A policy
// the model cannot represent exactly is replaced by one that isolates the
// pods it could select and allows nothing (never widened), and reported.
func (s *Isolation) Contribute(_ context.Context, tx *knftables.Transaction, full bool, existing func() (dataplane.Objects, error)) (func(bool), error) {
	s.mu.Lock()
	gen, pending := s.changes.Pending()
	if !full && !pending {
		s.mu.Unlock()
		return nil, nil
	}
	local := make([]dataplane.Pod, 0, len(s.local))
	for _, p := range s.local {
		local = append(local, p)
	}
	s.mu.Unlock()

	st, err := s.build(local)
	if err != nil {
		return nil, err
	}
	if full {
		ex, err := existing()
		if err != nil {
			return nil, err
		}
		Render(tx, st)
		Prune(tx, ex.Chains, append(ex.Sets, ex.Maps...), st)
	} else {
		RenderPartial(tx, s.prev, st)
	}
	return func(ok bool) {
		if !ok {
			return
		}
		s.prev = st
		s.mu.Lock()
		s.changes.Commit(gen)
		s.mu.Unlock()
	}, nil
}

// Owned names the per-object chains and sets the table holds.
func (s *Isolation) Owned() dataplane.Objects {
	chains, sets := Objects(s.prev)
	return dataplane.Objects{Chains: chains, Sets: sets}
}

// build assembles the policy input from the listers and compiles it.
// Policies are validated once, by Build; one by one only when it refuses.
func (s *Isolation) build(local []dataplane.Pod) (State, error) {
	cn, err := s.ClusterNetworks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return State{}, fmt.Errorf("ClusterNetwork: %w", err)
	}
	in := policy.Input{Mode: policy.Mode(cn.Spec.Mode), VNIDs: map[string]uint32{}}
	nss, err := s.Namespaces.List(labels.Everything())
	if err != nil {
		return State{}, err
	}
	known := map[string]bool{}
	for _, ns := range nss {
		in.Namespaces = append(in.Namespaces, *ns)
		known[ns.Name] = true
	}
	nns, err := s.NetNamespaces.List(labels.Everything())
	if err != nil {
		return State{}, err
	}
	for _, n := range nns {
		in.VNIDs[n.Name] = n.Spec.NetID
	}

	// Local pods: the address is what CNI gave; an API object that claims
	// a local address for another pod (a stale status) is not believed.
	byOwner := map[string]netip.Addr{}
	localIP := map[netip.Addr]string{}
	for _, p := range local {
		byOwner[p.Owner] = p.IP
		localIP[p.IP] = p.Owner
	}
	pods, err := s.Pods.List(labels.Everything())
	if err != nil {
		return State{}, err
	}
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !known[p.Namespace] {
			continue
		}
		mp, err := policy.PodFromCore(p)
		if err != nil {
			s.Log.Info("Pod left out of isolation", "err", err)
			continue
		}
		key := p.Namespace + "/" + p.Name
		if p.Spec.NodeName == s.NodeName {
			mp.IP = byOwner[key] // zero when CNI has not wired it (yet)
		} else if owner, ok := localIP[mp.IP]; ok && owner != key {
			mp.IP = netip.Addr{}
		}
		in.Pods = append(in.Pods, mp)
	}

	policies, err := s.Policies.List(labels.Everything())
	if err != nil {
		return State{}, err
	}
	for _, np := range policies {
		in.Policies = append(in.Policies, *np)
	}

	var nodeIPs []netip.Addr
	hss, err := s.HostSubnets.List(labels.Everything())
	if err != nil {
		return State{}, err
	}
	for _, hs := range hss {
		if ip, err := netip.ParseAddr(hs.Spec.HostIP); err == nil {
			nodeIPs = append(nodeIPs, ip)
		}
		if sub, err := netip.ParsePrefix(hs.Spec.Subnet); err == nil {
			nodeIPs = append(nodeIPs, sub.Masked().Addr()) // the node's VXLAN address
		}
	}
	st, err := Build(in, s.NodeName, nodeIPs)
	if err == nil {
		return st, nil
	}
	// Build validated everything and refused something: find the policies
	// it cannot enforce exactly and stand in for them.
	replaced := false
	for i := range in.Policies {
		np := &in.Policies[i]
		if errs := policy.Validate(np); len(errs) > 0 {
			s.Log.Info("NetworkPolicy cannot be enforced exactly: its pods are isolated and nothing is allowed",
				"policy", np.Namespace+"/"+np.Name, "err", errs.ToAggregate().Error())
			in.Policies[i] = DenyAll(np)
			replaced = true
		}
	}
	if !replaced {
		return st, err
	}
	return Build(in, s.NodeName, nodeIPs)
}

// DenyAll stands in for a policy that cannot be enforced exactly: the pods
// it selects (all of its namespace when its selector is itself invalid)
// are isolated in both directions with no rule allowing anything.
func DenyAll(np *networkingv1.NetworkPolicy) networkingv1.NetworkPolicy {
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

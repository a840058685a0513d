package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"

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
	comp *Compiler // the inputs as last read, compiled; its Render is the partial contribution
	seen seen      // the objects comp was given, to find what changed in the listers
	// scratch: compile everything from the listers on every change (Build + RenderPartial
	// against prev), as before the Compiler. Set for good when the Compiler disagreed with
	// Build at a full sync; tests and benchmarks set it to compare.
	scratch bool
	prev    State // scratch: what the table holds, valid after a commit
}

// seen is what the listers held at the last contribution, by object identity: an
// informer's cache replaces an object on every change, so an unchanged pointer is an
// unchanged object.
type seen struct {
	mode     string
	nodeIPs  []netip.Addr
	ns       map[string]*corev1.Namespace
	vnids    map[string]*v1alpha1.NetNamespace
	policies map[string]*networkingv1.NetworkPolicy
	pods     map[string]*corev1.Pod // by namespace/name
	podKeys  map[*corev1.Pod]string
	local    map[string]netip.Addr // pod (namespace/name) → the address CNI gave it
}

// NewIsolation returns isolation for node, with no local pods yet. It compiles
// incrementally (the Compiler); a full contribution checks the Compiler against
// Build and falls back to compiling from scratch if they ever differ.
func NewIsolation(l Listers, node string, log logr.Logger, request func()) *Isolation {
	return &Isolation{Listers: l, NodeName: node, Log: log, Request: request, local: map[string]dataplane.Pod{},
		comp: NewCompiler(node), seen: newSeen()}
}

func newSeen() seen {
	return seen{ns: map[string]*corev1.Namespace{}, vnids: map[string]*v1alpha1.NetNamespace{},
		policies: map[string]*networkingv1.NetworkPolicy{}, pods: map[string]*corev1.Pod{}, podKeys: map[*corev1.Pod]string{},
		local: map[string]netip.Addr{}}
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
//
// Only the objects that changed in the listers since the last contribution
// reach the Compiler, which re-evaluates what they touch; the partial
// contribution is what changed since the last commit. A full contribution
// renders Build's State of the Compiler's inputs (the from-scratch path),
// and checks that the Compiler agrees with it: if it ever does not, the
// feature logs it and compiles from scratch on every change from then on.
func (s *Isolation) Contribute(_ context.Context, tx dataplane.Tx, full bool, existing func() (dataplane.Objects, error)) (func(bool), error) {
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

	if s.scratch {
		return s.contributeFromScratch(tx, full, existing, local, gen)
	}
	if err := s.refresh(local); err != nil {
		return nil, err
	}
	if !full {
		s.comp.Render(tx)
		return func(ok bool) {
			if ok {
				s.comp.Commit()
				s.committed(gen)
			}
		}, nil
	}
	in, nodeIPs := s.comp.Input()
	st, err := Build(in, s.NodeName, nodeIPs)
	if err != nil {
		return nil, err
	}
	ex, err := existing()
	if err != nil {
		return nil, err
	}
	Render(tx, st)
	Prune(tx, ex.Chains, append(ex.Sets, ex.Maps...), st)
	if !reflect.DeepEqual(s.comp.State(), st) {
		s.Log.Error(nil, "Incremental isolation state differs from a full compile of the same inputs; compiling every change from scratch from now on")
		s.scratch = true
		return func(ok bool) {
			if ok {
				s.prev = st
				s.committed(gen)
			}
		}, nil
	}
	return func(ok bool) {
		if ok {
			s.comp.Commit()
			s.committed(gen)
		}
	}, nil
}

func (s *Isolation) committed(gen uint64) {
	s.mu.Lock()
	s.changes.Commit(gen)
	s.mu.Unlock()
}

// contributeFromScratch is the path before the Compiler: every input from the
// listers, Build, and RenderPartial against what the last commit programmed.
func (s *Isolation) contributeFromScratch(tx dataplane.Tx, full bool, existing func() (dataplane.Objects, error), local []dataplane.Pod, gen uint64) (func(bool), error) {
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
		if ok {
			s.prev = st
			s.committed(gen)
		}
	}, nil
}

// Owned names the per-object chains and sets the table holds.
func (s *Isolation) Owned() dataplane.Objects {
	if s.scratch {
		chains, sets := Objects(s.prev)
		return dataplane.Objects{Chains: chains, Sets: sets}
	}
	chains, sets := s.comp.Committed()
	return dataplane.Objects{Chains: chains, Sets: sets}
}

// refresh gives the Compiler the objects that changed in the listers (and
// the local pods whose CNI address changed) since the last call.
func (s *Isolation) refresh(local []dataplane.Pod) error {
	cn, err := s.ClusterNetworks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return fmt.Errorf("ClusterNetwork: %w", err)
	}
	if string(cn.Spec.Mode) != s.seen.mode {
		if err := s.comp.SetMode(policy.Mode(cn.Spec.Mode)); err != nil {
			return err
		}
		s.seen.mode = string(cn.Spec.Mode)
	}
	nss, err := s.Namespaces.List(labels.Everything())
	if err != nil {
		return err
	}
	nns, err := s.NetNamespaces.List(labels.Everything())
	if err != nil {
		return err
	}
	pods, err := s.Pods.List(labels.Everything())
	if err != nil {
		return err
	}
	policies, err := s.Policies.List(labels.Everything())
	if err != nil {
		return err
	}
	hss, err := s.HostSubnets.List(labels.Everything())
	if err != nil {
		return err
	}

	listed := map[string]bool{}
	for _, ns := range nss {
		listed[ns.Name] = true
		if s.seen.ns[ns.Name] != ns {
			s.seen.ns[ns.Name] = ns
			s.comp.SetNamespace(ns)
		}
	}
	for name := range s.seen.ns {
		if !listed[name] {
			delete(s.seen.ns, name)
			s.comp.DeleteNamespace(name)
		}
	}
	clear(listed)
	for _, n := range nns {
		listed[n.Name] = true
		if s.seen.vnids[n.Name] != n {
			s.seen.vnids[n.Name] = n
			s.comp.SetVNID(n.Name, n.Spec.NetID)
		}
	}
	for name := range s.seen.vnids {
		if !listed[name] {
			delete(s.seen.vnids, name)
			s.comp.DeleteVNID(name)
		}
	}
	clear(listed)
	for _, np := range policies {
		key := np.Namespace + "/" + np.Name
		listed[key] = true
		if s.seen.policies[key] == np {
			continue
		}
		s.seen.policies[key] = np
		if err := s.comp.SetPolicy(np); err != nil {
			s.Log.Info("NetworkPolicy cannot be enforced exactly: its pods are isolated and nothing is allowed",
				"policy", key, "err", err.Error())
			deny := DenyAll(np)
			if err := s.comp.SetPolicy(&deny); err != nil {
				return err
			}
		}
	}
	for key := range s.seen.policies {
		if !listed[key] {
			delete(s.seen.policies, key)
			s.comp.DeletePolicy(key)
		}
	}

	var nodeIPs []netip.Addr
	for _, hs := range hss {
		if ip, err := netip.ParseAddr(hs.Spec.HostIP); err == nil {
			nodeIPs = append(nodeIPs, ip)
		}
		if sub, err := netip.ParsePrefix(hs.Spec.Subnet); err == nil {
			nodeIPs = append(nodeIPs, sub.Masked().Addr()) // the node's VXLAN address
		}
	}
	slices.SortFunc(nodeIPs, netip.Addr.Compare)
	if !slices.Equal(nodeIPs, s.seen.nodeIPs) {
		s.seen.nodeIPs = nodeIPs
		s.comp.SetNodeIPs(nodeIPs)
	}

	s.refreshPods(local, pods)
	return nil
}

// refreshPods gives the Compiler the pods that changed: new or updated API
// objects, pods gone, and the pods a change of a local address concerns
// (the local pod itself, and a remote pod whose API address it is).
func (s *Isolation) refreshPods(local []dataplane.Pod, pods []*corev1.Pod) {
	byOwner := make(map[string]netip.Addr, len(local))
	localIP := make(map[netip.Addr]string, len(local))
	for _, p := range local {
		byOwner[p.Owner] = p.IP
		localIP[p.IP] = p.Owner
	}
	touched := map[string]bool{}
	changedIPs := map[netip.Addr]bool{}
	for owner, ip := range byOwner {
		if old, ok := s.seen.local[owner]; !ok || old != ip {
			touched[owner] = true
			changedIPs[ip] = true
			if ok {
				changedIPs[old] = true
			}
		}
	}
	for owner, ip := range s.seen.local {
		if _, ok := byOwner[owner]; !ok {
			touched[owner] = true
			changedIPs[ip] = true
		}
	}
	s.seen.local = byOwner

	for _, p := range pods {
		if _, ok := s.seen.podKeys[p]; ok {
			continue
		}
		key := p.Namespace + "/" + p.Name
		if old := s.seen.pods[key]; old != nil {
			delete(s.seen.podKeys, old)
		}
		s.seen.pods[key] = p
		s.seen.podKeys[p] = key
		touched[key] = true
	}
	if len(s.seen.pods) > len(pods) {
		listed := make(map[string]bool, len(pods))
		for _, p := range pods {
			listed[p.Namespace+"/"+p.Name] = true
		}
		for key, p := range s.seen.pods {
			if !listed[key] {
				delete(s.seen.pods, key)
				delete(s.seen.podKeys, p)
				s.comp.DeletePod(key)
				delete(touched, key)
			}
		}
	}
	if len(changedIPs) > 0 {
		// A remote pod whose API address is a local address CNI gave to another pod is not
		// believed: when local addresses change, the remote pods claiming them change too.
		for key, p := range s.seen.pods {
			if p.Spec.NodeName == s.NodeName || p.Status.PodIP == "" {
				continue
			}
			if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil && changedIPs[ip.Unmap()] {
				touched[key] = true
			}
		}
	}
	for key := range touched {
		p := s.seen.pods[key]
		if p == nil {
			continue // a local pod the API does not know (yet)
		}
		mp, ok := s.modelPod(p, byOwner, localIP)
		if !ok {
			s.comp.DeletePod(key)
			continue
		}
		s.comp.SetPod(mp)
	}
}

// modelPod converts an API pod as build does; false: the pod is left out.
func (s *Isolation) modelPod(p *corev1.Pod, byOwner map[string]netip.Addr, localIP map[netip.Addr]string) (policy.Pod, bool) {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return policy.Pod{}, false
	}
	mp, err := policy.PodFromCore(p)
	if err != nil {
		s.Log.Info("Pod left out of isolation", "err", err)
		return policy.Pod{}, false
	}
	key := p.Namespace + "/" + p.Name
	if p.Spec.NodeName == s.NodeName {
		mp.IP = byOwner[key] // zero when CNI has not wired it (yet)
	} else if owner, ok := localIP[mp.IP]; ok && owner != key {
		mp.IP = netip.Addr{}
	}
	return mp, true
}

// build assembles the policy input from the listers and compiles it: the
// from-scratch path (scratch). Policies are validated once, by Build; one by
// one only when it refuses.
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

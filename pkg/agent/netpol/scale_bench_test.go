package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/policy"
)

func benchInput(pods, policies, namespaces int) policy.Input {
	in := policy.Input{Mode: policy.ModeNetworkPolicy}
	for i := range namespaces {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}})
	}
	for i := range pods {
		in.Pods = append(in.Pods, policy.Pod{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50), "tier": fmt.Sprintf("t%d", i%3)},
			IP:     netip.AddrFrom4([4]byte{10, 128 + byte(i>>16), byte(i >> 8), byte(i)}), Node: fmt.Sprintf("node%d", i%3),
			Ports: []policy.ContainerPort{{Name: "http", Port: 8080}}})
	}
	port := intstr.FromInt32(8080)
	for i := range policies {
		in.Policies = append(in.Policies, networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%50)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", i%3)}}, NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}})
	}
	return in
}

func BenchmarkBuild10kPods1kPolicies(b *testing.B) {
	in := benchInput(10000, 1000, 100)
	for b.Loop() {
		if _, err := Build(in, "node0", nil); err != nil {
			b.Fatal(err)
		}
	}
}

// benchIsolation is the isolation feature of node0 over indexers holding in (pods as API
// objects, node0's pods wired by CNI), after its first full contribution. scratch selects
// the from-scratch path (listers → Build → RenderPartial), as before the Compiler.
type benchIsolation struct {
	iso                 *Isolation
	pods, nss, policies cache.Indexer
	ops                 int
}

func newBenchIsolation(b *testing.B, in policy.Input, scratch bool) *benchIsolation {
	b.Helper()
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	e := &benchIsolation{pods: idx(), nss: idx(), policies: idx()}
	cns := idx()
	cns.Add(&v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName}, Spec: v1alpha1.ClusterNetworkSpec{Mode: string(in.Mode)}})
	for i := range in.Namespaces {
		e.nss.Add(&in.Namespaces[i])
	}
	for i := range in.Policies {
		e.policies.Add(&in.Policies[i])
	}
	e.iso = NewIsolation(Listers{Pods: corelisters.NewPodLister(e.pods), Namespaces: corelisters.NewNamespaceLister(e.nss),
		Policies: networkinglisters.NewNetworkPolicyLister(e.policies), NetNamespaces: listers.NewNetNamespaceLister(idx()),
		HostSubnets: listers.NewHostSubnetLister(idx()), ClusterNetworks: listers.NewClusterNetworkLister(cns)}, "node0", logr.Discard(), func() {})
	e.iso.scratch = scratch
	for _, p := range in.Pods {
		e.addPod(p)
	}
	e.sync(b, true)
	return e
}

func (e *benchIsolation) addPod(p policy.Pod) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
		Spec: corev1.PodSpec{NodeName: p.Node}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()}}
	c := corev1.Container{Name: "c"}
	for _, cp := range p.Ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.Port, Protocol: cp.Protocol})
	}
	pod.Spec.Containers = []corev1.Container{c}
	e.pods.Add(pod)
	if p.Node == "node0" {
		e.iso.PodAdded(dataplane.Pod{Iface: "slp" + p.Name, IP: p.IP, Owner: p.Key()})
	}
}

func (e *benchIsolation) deletePod(p policy.Pod) {
	e.pods.Delete(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}})
	e.iso.PodRemoved("slp" + p.Name)
}

// sync is one contribution and its successful commit (the transaction is not run: the
// agent's CPU is the contribution).
func (e *benchIsolation) sync(b *testing.B, full bool) {
	e.iso.Changed()
	tx := knftables.NewFake(knftables.InetFamily, dataplane.Table).NewTransaction()
	commit, err := e.iso.Contribute(context.Background(), tx, full, func() (dataplane.Objects, error) { return dataplane.Objects{}, nil })
	if err != nil {
		b.Fatal(err)
	}
	commit(true)
	e.ops = tx.NumOperations()
}

// One change at 10k pods × 1k policies (100 namespaces, node0 holds a third of the pods),
// as the agent's isolation feature handles it: from the listers to its contribution to the
// owner's transaction. "scratch" compiles everything again (the path before the Compiler),
// "incremental" re-evaluates what the change touches. nftops/op is the size of the
// contribution.
func BenchmarkIsolationChange10kPods1kPolicies(b *testing.B) {
	for _, path := range []string{"scratch", "incremental"} {
		b.Run("policy/"+path, func(b *testing.B) {
			in := benchInput(10000, 1000, 100)
			e := newBenchIsolation(b, in, path == "scratch")
			np := in.Policies[0].DeepCopy() // ns0, selects app=a0 (node0 pods among them)
			ports := []int32{9090, 8080}
			i := 0
			for b.Loop() {
				np = np.DeepCopy()
				p := intstr.FromInt32(ports[i%2])
				np.Spec.Ingress[0].Ports[0].Port = &p
				e.policies.Update(np)
				e.sync(b, false)
				i++
			}
			b.ReportMetric(float64(e.ops), "nftops/op")
		})
		b.Run("podAdd/"+path, func(b *testing.B) {
			in := benchInput(10000, 1000, 100)
			e := newBenchIsolation(b, in, path == "scratch")
			p := in.Pods[300] // ns0, app a0, node0: selected by policies, in peer and port sets
			p.Name, p.IP = "new", netip.MustParseAddr("10.200.0.1")
			benchPodAdd(b, e, p)
		})
		b.Run("namespaceLabels/"+path, func(b *testing.B) {
			in := benchInput(10000, 1000, 100)
			e := newBenchIsolation(b, in, path == "scratch")
			teams := []string{"t4", "t3"}
			i := 0
			for b.Loop() {
				e.nss.Update(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns3", Labels: map[string]string{"team": teams[i%2]}}})
				e.sync(b, false)
				i++
			}
			b.ReportMetric(float64(e.ops), "nftops/op")
		})
	}
}

// labInput is bench-netpol's workload (bench/netpol): pods load pods in 100 namespaces
// g0…g99 (labelled team t0…t9) on other nodes, labelled app a0…a49 and tier t0…t2 with a
// named port http; in namespace bench, node0's real pods (one per app a0…a3) and policies
// policies, policy i selecting app a(i%4) and admitting tier t(i%3) from team t(i%10)'s
// namespaces on port http. Every policy is in one namespace: each local pod is selected by
// a quarter of them.
func labInput(pods, policies int) policy.Input {
	in := policy.Input{Mode: policy.ModeNetworkPolicy}
	in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}})
	for i := range 100 {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("g%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}})
	}
	http := []policy.ContainerPort{{Name: "http", Port: 8080}}
	for i := range pods {
		in.Pods = append(in.Pods, policy.Pod{Namespace: fmt.Sprintf("g%d", i%100), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50), "tier": fmt.Sprintf("t%d", i%3)},
			IP:     netip.AddrFrom4([4]byte{10, 131, byte(i >> 8), byte(i)}), Node: fmt.Sprintf("ghost%d", 1+i%3), Ports: http})
	}
	for a := range 4 {
		in.Pods = append(in.Pods, policy.Pod{Namespace: "bench", Name: fmt.Sprintf("real-a%d", a),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", a)}, IP: netip.AddrFrom4([4]byte{10, 128, 0, byte(10 + a)}),
			Node: "node0", Ports: http})
	}
	for i := range policies {
		in.Policies = append(in.Policies, labPolicy(i))
	}
	return in
}

func labPolicy(i int) networkingv1.NetworkPolicy {
	port := intstr.FromString("http")
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("np%d", i)},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%4)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", i%3)}},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}}
}

// The lab's workload (bench-netpol at 10k pods × 1k policies, every policy in one
// namespace), as node0's isolation feature handles it:
//   - policy: one policy created and deleted again (each op is one of the two syncs), the
//     change bench-netpol times;
//   - localPod: a new pod on node0 selected by 250 policies (what a CNI ADD waits for);
//   - loadPod: a new pod on another node, in the peer and named-port sets;
//   - load: 1,000 policies arriving in one sync over 10k pods (the agent's first sync after
//     the policies were created, or a resync).
func BenchmarkIsolationLab10kPods1kPolicies(b *testing.B) {
	for _, path := range []string{"scratch", "incremental"} {
		b.Run("policy/"+path, func(b *testing.B) {
			e := newBenchIsolation(b, labInput(10000, 1000), path == "scratch")
			np := labPolicy(1000)
			i := 0
			for b.Loop() {
				if i%2 == 0 {
					e.policies.Add(np.DeepCopy())
				} else {
					e.policies.Delete(&np)
				}
				e.sync(b, false)
				i++
			}
			b.ReportMetric(float64(e.ops), "nftops/op")
		})
		b.Run("localPod/"+path, func(b *testing.B) {
			e := newBenchIsolation(b, labInput(10000, 1000), path == "scratch")
			p := policy.Pod{Namespace: "bench", Name: "new", Labels: map[string]string{"app": "a1"},
				IP: netip.MustParseAddr("10.128.0.99"), Node: "node0", Ports: []policy.ContainerPort{{Name: "http", Port: 8080}}}
			benchPodAdd(b, e, p)
		})
		b.Run("loadPod/"+path, func(b *testing.B) {
			e := newBenchIsolation(b, labInput(10000, 1000), path == "scratch")
			p := policy.Pod{Namespace: "g3", Name: "new", Labels: map[string]string{"app": "a3", "tier": "t0"},
				IP: netip.MustParseAddr("10.131.200.1"), Node: "ghost1", Ports: []policy.ContainerPort{{Name: "http", Port: 8080}}}
			benchPodAdd(b, e, p)
		})
		b.Run("load/"+path, func(b *testing.B) {
			in := labInput(10000, 1000)
			policies := in.Policies
			in.Policies = nil
			e := newBenchIsolation(b, in, path == "scratch")
			for b.Loop() {
				for i := range policies {
					e.policies.Add(policies[i].DeepCopy())
				}
				e.sync(b, false)
				b.StopTimer()
				for i := range policies {
					e.policies.Delete(&policies[i])
				}
				e.sync(b, false)
				b.StartTimer()
			}
		})
	}
}

// benchPodAdd times the sync that admits p (its removal is not timed).
func benchPodAdd(b *testing.B, e *benchIsolation, p policy.Pod) {
	ops := 0
	for b.Loop() {
		e.addPod(p)
		e.sync(b, false)
		ops = e.ops
		b.StopTimer()
		e.deletePod(p)
		e.sync(b, false)
		b.StartTimer()
	}
	b.ReportMetric(float64(ops), "nftops/op")
}

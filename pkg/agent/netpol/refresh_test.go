package netpol

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/policy"
)

// twin is one node's isolation feature under an owner over its own fake table.
type twin struct {
	nft   *refusing
	owner *dataplane.Owner
	base  *dataplane.Base
	iso   *Isolation
}

// The isolation feature fed by listers (objects changed by identity, CNI addresses through
// the pod hooks, invalid policies standing in as deny-all) programs, through its partial
// contributions, the same table as the from-scratch path over the same listers, after
// every sync of random sequences of API changes (some transactions refused).
func TestIsolationIncrementalEqualsScratch(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	syncs, refused := 0, 0
	for seed := int64(1); seed <= int64(seeds); seed++ {
		r := rand.New(rand.NewSource(seed))
		g := &gen{r: r}
		idx := func() cache.Indexer {
			return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		}
		pods, nss, nps, nns, hss, cns := idx(), idx(), idx(), idx(), idx(), idx()
		cns.Add(&v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName}, Spec: v1alpha1.ClusterNetworkSpec{Mode: "NetworkPolicy"}})
		l := Listers{Pods: corelisters.NewPodLister(pods), Namespaces: corelisters.NewNamespaceLister(nss),
			Policies: networkinglisters.NewNetworkPolicyLister(nps), NetNamespaces: listers.NewNetNamespaceLister(nns),
			HostSubnets: listers.NewHostSubnetLister(hss), ClusterNetworks: listers.NewClusterNetworkLister(cns)}
		var twins [2]*twin
		for i := range twins {
			tw := &twin{nft: &refusing{Fake: knftables.NewFake(knftables.InetFamily, dataplane.Table)}}
			tw.iso = NewIsolation(l, nodeName(0), logr.Discard(), func() {})
			tw.iso.scratch = i == 1
			tw.base = dataplane.NewBase()
			tw.base.SetNetworks([]netip.Prefix{clusterCIDR}, nil)
			tw.owner = dataplane.NewOwner(tw.nft, logr.Discard())
			tw.owner.Register(tw.base)
			tw.owner.Register(tw.iso)
			twins[i] = tw
		}
		nsNames := []string{"red", "green", "blue"}
		wired := map[string]dataplane.Pod{} // local pod key → its CNI wiring
		for step := 0; step < 40; step++ {
			// gen's ipBlocks pick pod addresses from g.in.
			g.in.Pods = nil
			for _, k := range sortedStrings(pods.ListKeys()) {
				o, _, _ := pods.GetByKey(k)
				g.in.Pods = append(g.in.Pods, podOf(o.(*corev1.Pod)))
			}
			var did string
			switch r.Intn(10) {
			case 0:
				ns := g.pick(nsNames...)
				nss.Update(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": g.pick("a", "b")}}})
				did = "namespace " + ns
			case 1:
				ns := g.pick(nsNames...)
				nss.Delete(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
				did = "namespace gone " + ns
			case 2, 3, 4: // an API pod, local or not, sometimes claiming a local pod's address
				node := r.Intn(2)
				name := fmt.Sprintf("p%d", r.Intn(12))
				ip := podAddr(node, r.Intn(12))
				if r.Intn(6) == 0 {
					ip = podAddr(0, r.Intn(12))
				}
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: g.pick(nsNames...), Name: name, Labels: map[string]string{"app": g.pick("web", "db")}},
					Spec:   corev1.PodSpec{NodeName: nodeName(node), Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: g.pick("http", "dns"), ContainerPort: 80}}}}},
					Status: corev1.PodStatus{Phase: corev1.PodPhase(g.pick("Running", "Running", "Running", "Succeeded")), PodIP: ip.String()}}
				pods.Update(pod)
				did = "pod " + pod.Namespace + "/" + name
			case 5: // CNI wires a local pod (the API object may come later, or never)
				key := fmt.Sprintf("%s/p%d", g.pick(nsNames...), r.Intn(12))
				p := dataplane.Pod{Iface: fmt.Sprintf("slp%012x", r.Intn(1<<20)), IP: podAddr(0, r.Intn(12)), Owner: key}
				if old, ok := wired[key]; ok {
					for _, tw := range twins {
						tw.iso.PodRemoved(old.Iface)
						tw.base.PodRemoved(old.Iface)
					}
				}
				wired[key] = p
				for _, tw := range twins {
					tw.base.PodAdded(p)
					tw.iso.PodAdded(p)
				}
				did = "CNI ADD " + key
			case 6:
				for _, key := range sortedKeys(wired) {
					p := wired[key]
					delete(wired, key)
					for _, tw := range twins {
						tw.iso.PodRemoved(p.Iface)
						tw.base.PodRemoved(p.Iface)
					}
					did = "CNI DEL " + key
					break
				}
			case 7: // a policy, sometimes one the model cannot represent
				if len(g.in.Pods) == 0 {
					break
				}
				ns := g.pick(nsNames...)
				np := g.policy(fmt.Sprintf("np%d", r.Intn(4)), ns)
				if r.Intn(5) == 0 {
					np.Spec.PodSelector = *expr("app", "In")
				}
				nps.Update(&np)
				did = "policy " + ns + "/" + np.Name
			case 8:
				for _, k := range sortedStrings(nps.ListKeys()) {
					o, _, _ := nps.GetByKey(k)
					nps.Delete(o)
					did = "policy gone"
					break
				}
			case 9:
				mode := g.pick("NetworkPolicy", "Multitenant", "Subnet")
				cns.Update(&v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName}, Spec: v1alpha1.ClusterNetworkSpec{Mode: mode}})
				ns := g.pick(nsNames...)
				nns.Update(&v1alpha1.NetNamespace{ObjectMeta: metav1.ObjectMeta{Name: ns}, Spec: v1alpha1.NetNamespaceSpec{NetID: uint32(r.Intn(3))}})
				hss.Update(&v1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: nodeName(1)}, Spec: v1alpha1.HostSubnetSpec{HostIP: hostIP(r.Intn(2)).String(), Subnet: "10.128.1.0/24"}})
				did = "mode " + mode
			}
			refuse := r.Intn(10) == 0
			twins[0].iso.Changed()
			twins[1].iso.Changed()
			twins[0].nft.refuse = refuse
			err0 := twins[0].owner.SyncNow(context.Background())
			twins[0].nft.refuse = false
			if err1 := twins[1].owner.SyncNow(context.Background()); err1 != nil {
				t.Fatalf("seed %d step %d (%s): scratch sync: %v", seed, step, did, err1)
			}
			if refuse && err0 != nil {
				refused++
				continue // the next sync of this owner is a full one
			}
			if err0 != nil {
				t.Fatalf("seed %d step %d (%s): sync: %v", seed, step, did, err0)
			}
			if twins[0].iso.scratch {
				t.Fatalf("seed %d step %d (%s): the Compiler disagreed with Build at a full sync", seed, step, did)
			}
			syncs++
			if got, want := sortedDump(twins[0].nft.Fake), sortedDump(twins[1].nft.Fake); got != want {
				t.Fatalf("seed %d step %d (%s): incremental table differs from scratch:\n--- incremental\n%s\n--- scratch\n%s", seed, step, did, got, want)
			}
		}
	}
	t.Logf("%d syncs (and %d refused transactions): the incremental feature's table equals the from-scratch path's", syncs, refused)
}

func podOf(p *corev1.Pod) (out policy.Pod) {
	out.Namespace, out.Name, out.IP = p.Namespace, p.Name, netip.MustParseAddr(p.Status.PodIP)
	return out
}

func sortedStrings(s []string) []string {
	slices.Sort(s)
	return s
}

// A remote pod whose API address CNI gave to a local pod is not believed; once the local pod
// goes, it is, without any change to the remote pod's object.
func TestIsolationBelievesRemotePodOnceLocalAddressFrees(t *testing.T) {
	e := newIsoEnv(t)
	np := netpol("ns", "from-r", sel("app", "a"), ingressOnly, []inR{{From: peers{peerPods(sel("app", "r"))}}}, nil)
	e.policies.Add(&np)
	remote := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r", Labels: map[string]string{"app": "r"}},
		Spec: corev1.PodSpec{NodeName: "n2"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.128.0.2"}}
	e.pods.Add(remote)
	local := dataplane.Pod{Iface: "slp0000000000a1", IP: netip.MustParseAddr("10.128.0.2"), Owner: "ns/a"}
	e.base.PodAdded(local)
	e.iso.PodAdded(local)
	// Another local pod the policy isolates keeps the peer set in use.
	e.pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}})
	other := dataplane.Pod{Iface: "slp0000000000b1", IP: netip.MustParseAddr("10.128.0.3"), Owner: "ns/b"}
	e.base.PodAdded(other)
	e.iso.PodAdded(other)
	e.sync()
	inPeers := func() bool {
		for name, s := range e.nft.Table.Sets {
			if strings.HasPrefix(name, prefixPeers) {
				for _, el := range s.Elements {
					if el.Key[0] == "10.128.0.2" {
						return true
					}
				}
			}
		}
		return false
	}
	if inPeers() {
		t.Fatal("a remote pod claiming a local pod's address was believed")
	}
	e.base.PodRemoved(local.Iface)
	e.iso.PodRemoved(local.Iface)
	e.sync()
	if !inPeers() {
		t.Error("after the local pod went, the remote pod holding its address in the API is still not in the peer set")
	}
}

//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/netpol"
	"github.com/sluice-net/sluice/pkg/agent/nftnl"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/netns"
)

// TestNetlinkMatchesNFT programs the same syncs of the three features (pod
// network, service proxy, isolation in NetworkPolicy and Multitenant mode)
// twice: through the nft binary in one namespace and over netlink
// (pkg/agent/nftnl) in another. Every batch must succeed or fail alike, and
// after each sync the two kernels must hold the same table: chains with
// their hooks, every rule's expressions (the bytecode nft compiled against
// ours), sets with their types and flags, and every element.
func TestNetlinkMatchesNFT(t *testing.T) {
	for _, mode := range []string{v1alpha1.ModeNetworkPolicy, v1alpha1.ModeMultitenant} {
		t.Run(mode, func(t *testing.T) { testNetlinkMatchesNFT(t, mode) })
	}
}

func testNetlinkMatchesNFT(t *testing.T, mode string) {
	nsA := fmt.Sprintf("sluice-it-nfa%d", time.Now().UnixNano()%1e6)
	nsB := fmt.Sprintf("sluice-it-nfb%d", time.Now().UnixNano()%1e6)
	for _, ns := range []string{nsA, nsB} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	fdA, fdB := openNS(t, nsA), openNS(t, nsB)

	in := newCorpus(mode)
	err := netns.Do(netns.Path(nsA), func() error {
		ctx := context.Background()
		exe, err := knftables.New(knftables.InetFamily, dataplane.Table)
		if err != nil {
			return err
		}
		nl, err := nftnl.New(dataplane.Table, nftnl.InNetNS(fdB))
		if err != nil {
			return err
		}
		defer nl.Close()
		tee := &teeBackend{t: t, a: dataplane.FromKnftables(exe), b: nl}
		own := dataplane.NewOwnerOn(tee, logr.Discard())
		base, iso, px := in.features()
		own.Register(base)
		own.Register(iso)
		own.Register(px)
		// No t.Fatal in here: it would end this goroutine, not the test.
		step := func(what string) error {
			tee.batches = 0
			if err := own.SyncNow(ctx); err != nil {
				return fmt.Errorf("%s: sync: %w", what, err)
			}
			if tee.batches == 0 {
				return fmt.Errorf("%s: no batch ran", what)
			}
			return compareTables(t, what, fdA, fdB)
		}
		if err := step("first full sync"); err != nil {
			return err
		}
		// Operators read the table with nft: it must list what netlink wrote.
		listB, err := exec.Command("ip", "netns", "exec", nsB, "nft", "list", "table", "inet", dataplane.Table).CombinedOutput()
		if err != nil {
			t.Errorf("nft cannot list the table programmed over netlink: %v\n%s", err, lastLines(listB, 5))
		}
		listA, err := exec.Command("nft", "list", "table", "inet", dataplane.Table).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft list: %v\n%s", err, listA)
		}
		if a, b := strings.Split(string(listA), "\n"), strings.Split(string(listB), "\n"); !slices.Equal(a, b) {
			var diff []string
			for i := range max(len(a), len(b)) {
				if i >= len(a) || i >= len(b) || a[i] != b[i] {
					diff = append(diff, fmt.Sprintf("line %d:\n    nft:     %q\n    netlink: %q", i+1, at(a, i), at(b, i)))
				}
			}
			t.Errorf("nft lists the two tables differently (%d lines):\n  %s", len(diff), strings.Join(diff[:min(len(diff), 10)], "\n  "))
		}

		// Partial syncs: endpoints change, a service and a policy go, a pod
		// goes, a namespace's labels change.
		es := in.slice("web", "10.128.0.2", "10.128.0.3", "10.129.0.9")
		in.slices.Update(es)
		px.SliceChanged(es)
		in.services.Delete(in.svc["udp-dns"])
		px.ServiceChanged("a", "udp-dns")
		if err := step("services changed"); err != nil {
			return err
		}
		if mode == v1alpha1.ModeNetworkPolicy {
			in.policies.Delete(in.pol["from-ns"])
		}
		in.namespaces.Update(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{"team": "other"}}})
		gone := in.pods[len(in.pods)-1]
		in.podIdx.Delete(gone)
		base.PodRemoved(podIface(gone))
		iso.PodRemoved(podIface(gone))
		iso.Changed()
		if err := step("policy, pod and labels changed"); err != nil {
			return err
		}

		// A restarted agent: a new owner and a new netlink table, which
		// learns the existing sets from the kernel; its first full sync
		// prunes against the listed table.
		nl2, err := nftnl.New(dataplane.Table, nftnl.InNetNS(fdB))
		if err != nil {
			return err
		}
		defer nl2.Close()
		for _, kind := range []string{"chains", "sets", "maps"} {
			want, err := exe.List(ctx, kind)
			if err != nil {
				return err
			}
			got, err := nl2.List(ctx, kind)
			if err != nil {
				return fmt.Errorf("a new netlink table lists the existing %s: %w", kind, err)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("after a restart, List(%s) over netlink = %v, nft lists %v", kind, got, want)
			}
		}
		tee = &teeBackend{t: t, a: dataplane.FromKnftables(exe), b: nl2}
		own2 := dataplane.NewOwnerOn(tee, logr.Discard())
		base2, iso2, px2 := in.features()
		own2.Register(base2)
		own2.Register(iso2)
		own2.Register(px2)
		tee.batches = 0
		if err := own2.SyncNow(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		if err := compareTables(t, "restarted owner", fdA, fdB); err != nil {
			return err
		}

		// A batch the kernel refuses (an element for a set that does not
		// exist) fails on both sides and changes nothing.
		bad := tee.NewBatch()
		bad.Add(&knftables.Element{Set: "no-such-set", Key: []string{"10.0.0.1"}})
		if err := bad.Run(ctx); err == nil {
			t.Error("a batch adding to a missing set succeeded")
		}
		if err := compareTables(t, "after a refused batch", fdA, fdB); err != nil {
			return err
		}

		// Listing through netlink names what nft names.
		for _, kind := range []string{"chains", "sets", "maps"} {
			want, err := exe.List(ctx, kind)
			if err != nil {
				return err
			}
			got, err := nl.List(ctx, kind)
			if err != nil {
				return err
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("List(%s) over netlink = %v, nft lists %v", kind, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func at(l []string, i int) string {
	if i < len(l) {
		return l[i]
	}
	return ""
}

func lastLines(b []byte, n int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func openNS(t *testing.T, name string) int {
	f, err := os.Open(netns.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// teeBackend sends every batch to both backends; they must agree on the
// outcome.
type teeBackend struct {
	t       *testing.T
	a, b    dataplane.Backend
	batches int
}

func (tb *teeBackend) NewBatch() dataplane.Batch {
	return &teeBatch{tb: tb, a: tb.a.NewBatch(), b: tb.b.NewBatch()}
}

func (tb *teeBackend) List(ctx context.Context, kind string) ([]string, error) {
	return tb.a.List(ctx, kind)
}

type teeBatch struct {
	tb   *teeBackend
	a, b dataplane.Batch
	ops  []func(dataplane.Tx)
}

func (x *teeBatch) Add(o knftables.Object) {
	x.a.Add(o)
	x.b.Add(o)
	x.ops = append(x.ops, func(tx dataplane.Tx) { tx.Add(o) })
}

func (x *teeBatch) Delete(o knftables.Object) {
	x.a.Delete(o)
	x.b.Delete(o)
	x.ops = append(x.ops, func(tx dataplane.Tx) { tx.Delete(o) })
}

func (x *teeBatch) Flush(o knftables.Object) {
	x.a.Flush(o)
	x.b.Flush(o)
	x.ops = append(x.ops, func(tx dataplane.Tx) { tx.Flush(o) })
}
func (x *teeBatch) Len() int { return x.a.Len() }

func (x *teeBatch) Run(ctx context.Context) error {
	x.tb.batches++
	errA, errB := x.a.Run(ctx), x.b.Run(ctx)
	if (errA == nil) != (errB == nil) {
		x.tb.t.Errorf("nft: %v; netlink: %v%s", errA, errB, x.culprit(ctx))
	}
	return errA
}

// culprit replays the batch over netlink in a namespace of its own, one
// operation per transaction, and names the first one the kernel refuses.
func (x *teeBatch) culprit(ctx context.Context) string {
	ns := fmt.Sprintf("sluice-it-nfc%d", time.Now().UnixNano()%1e6)
	if err := exec.Command("ip", "netns", "add", ns).Run(); err != nil {
		return ""
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	f, err := os.Open(netns.Path(ns))
	if err != nil {
		return ""
	}
	defer f.Close()
	nl, err := nftnl.New(dataplane.Table, nftnl.InNetNS(int(f.Fd())))
	if err != nil {
		return ""
	}
	defer nl.Close()
	for i, op := range x.ops {
		b := nl.NewBatch()
		op(b)
		if err := b.Run(ctx); err != nil {
			rec := &recorder{}
			op(rec)
			return fmt.Sprintf("\n    operation %d alone fails: %s: %v", i, rec.s, err)
		}
	}
	return "\n    every operation succeeds alone"
}

type recorder struct{ s string }

func (r *recorder) Add(o knftables.Object)    { r.s = fmt.Sprintf("add %#v", o) }
func (r *recorder) Delete(o knftables.Object) { r.s = fmt.Sprintf("delete %#v", o) }
func (r *recorder) Flush(o knftables.Object)  { r.s = fmt.Sprintf("flush %#v", o) }

// compareTables reads table sluice from both namespaces over netlink and
// reports every difference; the error is for what stops the test.
func compareTables(t *testing.T, what string, fdA, fdB int) error {
	t.Helper()
	a, err := readTable(fdA)
	if err != nil {
		return err
	}
	b, err := readTable(fdB)
	if err != nil {
		return err
	}
	if len(a) < 10 {
		return fmt.Errorf("%s: the nft side holds only %d objects", what, len(a))
	}
	var diffs []string
	for k, va := range a {
		vb, ok := b[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("only via nft: %s\n    %s", k, va))
		case va != vb:
			diffs = append(diffs, fmt.Sprintf("%s\n    nft:     %s\n    netlink: %s", k, va, vb))
		}
	}
	for k, vb := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("only via netlink: %s\n    %s", k, vb))
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s: %d differences between the nft and the netlink table:\n  %s", what, len(diffs), strings.Join(diffs[:min(len(diffs), 40)], "\n  "))
	}
	return nil
}

// readTable describes every object of the table as a string keyed by kind
// and name: chains (hook, priority, type, rules' expressions and comments),
// sets (type, flags, elements).
func readTable(fd int) (map[string]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return nil, err
	}
	table := &nftables.Table{Name: dataplane.Table, Family: nftables.TableFamilyINet}
	out := map[string]string{}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Table.Name != dataplane.Table {
			continue
		}
		var b strings.Builder
		if ch.Hooknum != nil {
			fmt.Fprintf(&b, "hook %d prio %d type %s; ", *ch.Hooknum, *ch.Priority, ch.Type)
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			fmt.Fprintf(&b, "[%s udata=%q] ", exprString(r.Exprs), r.UserData)
		}
		out["chain "+ch.Name] = b.String()
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		if s.Anonymous {
			continue // compared through the rules that refer to them
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, err
		}
		var es []string
		for _, e := range els {
			if s.Interval && e.IntervalEnd && len(e.KeyEnd) == 0 && !slices.ContainsFunc(e.Key, func(b byte) bool { return b != 0 }) {
				// nft sometimes (after a flush and refill) writes an end
				// element at 0.0.0.0, marking [0, first) outside the set,
				// which it is anyway: not a difference.
				continue
			}
			v := ""
			if e.VerdictData != nil {
				v = fmt.Sprintf("%d %s", e.VerdictData.Kind, e.VerdictData.Chain)
			}
			es = append(es, fmt.Sprintf("{%x-%x end=%v val=%x %s %q}", e.Key, e.KeyEnd, e.IntervalEnd, e.Val, v, e.Comment))
		}
		slices.Sort(es)
		out["set "+s.Name] = fmt.Sprintf("key=%d/%d data=%d/%d map=%v interval=%v concat=%v timeout=%v/%v dynamic=%v comment=%q elements=%s",
			s.KeyType.GetNFTMagic(), s.KeyType.Bytes, s.DataType.GetNFTMagic(), s.DataType.Bytes, s.IsMap, s.Interval, s.Concatenation,
			s.HasTimeout, s.Timeout, s.Dynamic, s.Comment, strings.Join(es, " "))
	}
	return out, nil
}

// exprString prints expressions with their fields, counters zeroed and
// anonymous set names kept (their numbering follows creation order).
func exprString(es []expr.Any) string {
	var b bytes.Buffer
	for _, e := range es {
		if c, ok := e.(*expr.Counter); ok {
			c.Bytes, c.Packets = 0, 0
		}
		if l, ok := e.(*expr.Lookup); ok {
			l.SetID = 0
		}
		v := reflect.ValueOf(e).Elem()
		fmt.Fprintf(&b, "%s%+v ", v.Type().Name(), v.Interface())
	}
	return b.String()
}

// corpus: the inputs of one node, exercising every rule form the features
// write.
type corpus struct {
	mode                                     string
	cn                                       *v1alpha1.ClusterNetwork
	podIdx, namespaces, policies, services   cache.Indexer
	slices, netNamespaces, hostSubnets, nets cache.Indexer
	pods                                     []*corev1.Pod
	svc                                      map[string]*corev1.Service
	pol                                      map[string]*networkingv1.NetworkPolicy
}

const corpusNode = "node-a"

func newCorpus(mode string) *corpus {
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	cn := &v1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{Mode: mode, ServiceNetwork: "172.30.0.0/16",
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}}}
	c := &corpus{mode: mode, cn: cn, podIdx: idx(), namespaces: idx(), policies: idx(), services: idx(),
		slices: cache.NewIndexer(cache.MetaNamespaceKeyFunc, proxy.SliceIndexers()), netNamespaces: idx(), hostSubnets: idx(), nets: idx(),
		svc: map[string]*corev1.Service{}, pol: map[string]*networkingv1.NetworkPolicy{}}
	c.nets.Add(cn)
	c.hostSubnets.Add(&v1alpha1.HostSubnet{ObjectMeta: metav1.ObjectMeta{Name: corpusNode},
		Spec: v1alpha1.HostSubnetSpec{Host: corpusNode, HostIP: "192.168.1.10", Subnet: "10.128.0.0/23"}})
	for name, id := range map[string]uint32{"a": 10, "b": 20, "infra": 0} {
		c.namespaces.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/metadata.name": name, "team": name}}})
		c.netNamespaces.Add(&v1alpha1.NetNamespace{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.NetNamespaceSpec{NetName: name, NetID: id}})
	}
	pod := func(ns, name, ip string, labels map[string]string, ports ...corev1.ContainerPort) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec:   corev1.PodSpec{NodeName: corpusNode, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
		c.pods = append(c.pods, p)
		c.podIdx.Add(p)
	}
	pod("a", "web", "10.128.0.2", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP})
	pod("a", "client", "10.128.0.3", map[string]string{"role": "client"})
	pod("b", "dns", "10.128.0.4", map[string]string{"app": "dns"}, corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP})
	pod("infra", "mon", "10.128.0.5", nil)

	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p8080, named, p53, p9000, end := intstr.FromInt32(8080), intstr.FromString("http"), intstr.FromInt32(53), intstr.FromInt32(9000), int32(9100)
	policy := func(name, ns string, spec networkingv1.NetworkPolicySpec) {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
		c.pol[name] = np
		c.policies.Add(np)
	}
	web := metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	policy("from-clients", "a", networkingv1.NetworkPolicySpec{PodSelector: web,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}, {Protocol: &tcp, Port: &named}, {Protocol: &tcp, Port: &p9000, EndPort: &end}},
		}}})
	policy("from-ns", "a", networkingv1.NetworkPolicySpec{PodSelector: web,
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24", "192.168.7.0/24"}}}},
		}}})
	policy("dns-egress", "b", networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		Egress: []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p53}, {Protocol: &udp}}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}}},
		}})

	service := func(name, vip string, mut func(*corev1.Service)) {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: vip, ClusterIPs: []string{vip},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		if mut != nil {
			mut(s)
		}
		c.svc[name] = s
		c.services.Add(s)
	}
	service("web", "172.30.0.10", nil)
	service("sticky", "172.30.0.11", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	})
	service("lb", "172.30.0.12", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30081
		s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24", "198.51.100.7/32"}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.20"}}
	})
	service("empty", "172.30.0.13", nil)
	service("udp-dns", "172.30.0.14", func(s *corev1.Service) {
		s.Spec.Ports[0] = corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)}
	})
	c.slices.Add(c.slice("web", "10.128.0.2", "10.129.0.9"))
	c.slices.Add(c.slice("sticky", "10.128.0.2", "10.128.0.3"))
	c.slices.Add(c.slice("lb", "10.128.0.2", "10.128.0.3", "10.129.0.9")) // two local: a numgen map
	c.slices.Add(c.slice("udp-dns", "10.128.0.4"))
	return c
}

// slice is svc's EndpointSlice with ready endpoints at ips (10.128.0.x on
// this node, others elsewhere) on the service's first port.
func (c *corpus) slice(svc string, ips ...string) *discoveryv1.EndpointSlice {
	s := c.svc[svc]
	sp := s.Spec.Ports[0]
	port, ready := sp.TargetPort.IntVal, true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: s.Namespace, Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &sp.Name, Protocol: &sp.Protocol, Port: &port}},
	}
	for _, ip := range ips {
		node := "node-b"
		if strings.HasPrefix(ip, "10.128.0.") {
			node = corpusNode
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

// features builds the three features over the corpus as the agent wires
// them, every local pod reported as CNI does.
func (c *corpus) features() (*dataplane.Base, *netpol.Isolation, *proxy.Proxier) {
	base := dataplane.NewBase()
	base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
	iso := netpol.NewIsolation(netpol.Listers{
		Pods: corelisters.NewPodLister(c.podIdx), Namespaces: corelisters.NewNamespaceLister(c.namespaces),
		Policies: networkinglisters.NewNetworkPolicyLister(c.policies), NetNamespaces: listers.NewNetNamespaceLister(c.netNamespaces),
		HostSubnets: listers.NewHostSubnetLister(c.hostSubnets), ClusterNetworks: listers.NewClusterNetworkLister(c.nets),
	}, corpusNode, logr.Discard(), func() {})
	for _, o := range c.podIdx.List() {
		p := o.(*corev1.Pod)
		dp := dataplane.Pod{Iface: podIface(p), IP: netip.MustParseAddr(p.Status.PodIP), Owner: p.Namespace + "/" + p.Name}
		base.PodAdded(dp)
		iso.PodAdded(dp)
	}
	px := proxy.NewProxier(corelisters.NewServiceLister(c.services), c.slices,
		proxy.NodeInfo{Name: corpusNode, IPs: []netip.Addr{netip.MustParseAddr("192.168.1.10")}}, logr.Discard(), func() {})
	return base, iso, px
}

func podIface(p *corev1.Pod) string {
	a := netip.MustParseAddr(p.Status.PodIP).As4()
	return fmt.Sprintf("%s%02x%02x%02x%02x", dataplane.PodIfPrefix, a[0], a[1], a[2], a[3])
}

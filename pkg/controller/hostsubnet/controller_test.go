package hostsubnet

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluicefake "github.com/sluice-net/sluice/pkg/client/clientset/versioned/fake"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
)

// fixture is one fake API server (a Kubernetes and a Sluice fake clientset) that stamps
// created objects with a UID and a creationTimestamp from a clock the test moves.
type fixture struct {
	t      *testing.T
	kube   *kubefake.Clientset
	sluice *sluicefake.Clientset

	mu   sync.Mutex
	now  time.Time
	uids int
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var kubeObjs, sluiceObjs []runtime.Object
	for _, o := range objs {
		f.stamp(o)
		switch o.(type) {
		case *corev1.Node:
			kubeObjs = append(kubeObjs, o)
		default:
			sluiceObjs = append(sluiceObjs, o)
		}
	}
	f.kube = kubefake.NewSimpleClientset(kubeObjs...)
	f.sluice = sluicefake.NewSimpleClientset(sluiceObjs...)
	for _, fake := range []*k8stesting.Fake{&f.kube.Fake, &f.sluice.Fake} {
		fake.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			f.stamp(a.(k8stesting.CreateAction).GetObject())
			return false, nil, nil // the tracker stores the stamped object
		})
	}
	return f
}

// stamp sets what the API server sets on create, if it is not set yet.
func (f *fixture) stamp(o runtime.Object) {
	m, err := meta.Accessor(o)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.GetUID() == "" {
		f.uids++
		m.SetUID(types.UID(fmt.Sprintf("uid-%d", f.uids)))
	}
	if ts := m.GetCreationTimestamp(); ts.IsZero() {
		m.SetCreationTimestamp(metav1.NewTime(f.now))
	}
}

// tick moves the clock that creation timestamps come from.
func (f *fixture) tick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(time.Second)
}

// ctl is one controller on the fixture. Its informers are not started: refresh copies the
// fake API's state into their caches, so a test decides when a controller's view catches up.
type ctl struct {
	*Controller
	f         *fixture
	kubeInf   kubeinformers.SharedInformerFactory
	sluiceInf sluiceinformers.SharedInformerFactory
	events    *record.FakeRecorder
}

func (f *fixture) newController() *ctl {
	f.t.Helper()
	c := &ctl{
		f:         f,
		kubeInf:   kubeinformers.NewSharedInformerFactory(f.kube, 0),
		sluiceInf: sluiceinformers.NewSharedInformerFactory(f.sluice, 0),
		events:    record.NewFakeRecorder(1000),
	}
	var err error
	c.Controller, err = New(f.kube, f.sluice,
		c.kubeInf.Core().V1().Nodes(),
		c.sluiceInf.Sluice().V1alpha1().HostSubnets(),
		c.sluiceInf.Sluice().V1alpha1().ClusterNetworks(),
		c.events, Options{RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[key](0, 0),
			// Every status change written and every created HostSubnet checked at once, so
			// that a pass over the queue does all of it.
			StatusInterval: -1, VerifyInterval: -1})
	if err != nil {
		f.t.Fatal(err)
	}
	c.refresh()
	return c
}

// refresh replaces the controller's caches with the fake API's current state.
func (c *ctl) refresh() {
	t := c.f.t
	t.Helper()
	ctx := context.Background()
	nodes, err := c.f.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subnets, err := c.f.sluice.SluiceV1alpha1().HostSubnets().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	networks, err := c.f.sluice.SluiceV1alpha1().ClusterNetworks().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replace := func(inf cache.SharedIndexInformer, objs []any) {
		if err := inf.GetIndexer().Replace(objs, ""); err != nil {
			t.Fatal(err)
		}
	}
	var objs []any
	for i := range nodes.Items {
		objs = append(objs, &nodes.Items[i])
	}
	replace(c.kubeInf.Core().V1().Nodes().Informer(), objs)
	objs = nil
	for i := range subnets.Items {
		objs = append(objs, &subnets.Items[i])
	}
	replace(c.sluiceInf.Sluice().V1alpha1().HostSubnets().Informer(), objs)
	objs = nil
	for i := range networks.Items {
		objs = append(objs, &networks.Items[i])
	}
	replace(c.sluiceInf.Sluice().V1alpha1().ClusterNetworks().Informer(), objs)
	// Replacing the caches' contents calls no event handler; an informer's relist would
	// deliver the differences to them, which keep the subnet index.
	c.reindex()
}

// process works the queue until it is empty (at most limit items), without refreshing.
func (c *ctl) process(limit int) {
	ctx := context.Background()
	for i := 0; i < limit && c.queue.Len() > 0; i++ {
		c.processNextWorkItem(ctx)
	}
}

// syncKeys reconciles the given nodes (and the status) once, from the current caches.
func (c *ctl) syncKeys(names ...string) {
	for _, n := range names {
		c.queue.Add(key{kind: nodeKey, name: n})
	}
	c.queue.Add(theStatus)
	c.process(100)
}

// settle runs the controller to a fixed point: refresh the caches, reconcile everything,
// until a round writes nothing.
func (c *ctl) settle() {
	c.f.t.Helper()
	for round := 0; round < 20; round++ {
		before := len(c.f.sluice.Actions()) + len(c.f.kube.Actions())
		c.refresh()
		c.enqueueAll()
		c.process(1000)
		writes := 0
		for _, a := range append(c.f.sluice.Actions(), c.f.kube.Actions()...)[before:] {
			if !a.Matches("list", a.GetResource().Resource) && !a.Matches("get", a.GetResource().Resource) && !a.Matches("watch", a.GetResource().Resource) {
				writes++
			}
		}
		if writes == 0 {
			c.refresh()
			return
		}
	}
	c.f.t.Fatalf("controller did not settle in 20 rounds")
}

// drainEvents returns the events recorded so far.
func (c *ctl) drainEvents() []string {
	var out []string
	for {
		select {
		case e := <-c.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func node(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	if ip != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	return n
}

func network(serviceNetwork string, entries ...sluicev1alpha1.ClusterNetworkEntry) *sluicev1alpha1.ClusterNetwork {
	return &sluicev1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: sluicev1alpha1.ClusterNetworkName, Generation: 1},
		Spec:       sluicev1alpha1.ClusterNetworkSpec{ClusterNetworks: entries, ServiceNetwork: serviceNetwork},
	}
}

func entry(cidr string, hsl uint32) sluicev1alpha1.ClusterNetworkEntry {
	return sluicev1alpha1.ClusterNetworkEntry{CIDR: cidr, HostSubnetLength: hsl}
}

func hostSubnet(name, ip, subnet string) *sluicev1alpha1.HostSubnet {
	return &sluicev1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       sluicev1alpha1.HostSubnetSpec{Host: name, HostIP: ip, Subnet: subnet},
	}
}

var defaultNetwork = network("172.30.0.0/16", entry("10.128.0.0/14", 9))

// subnets returns the fake API's HostSubnets as "name=hostIP,subnet", sorted.
func (f *fixture) subnets() []string {
	f.t.Helper()
	list, err := f.sluice.SluiceV1alpha1().HostSubnets().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, hs := range list.Items {
		if hs.Spec.Host != hs.Name {
			f.t.Errorf("HostSubnet %s has host %q", hs.Name, hs.Spec.Host)
		}
		out = append(out, hs.Name+"="+hs.Spec.HostIP+","+hs.Spec.Subnet)
	}
	sort.Strings(out)
	return out
}

func (f *fixture) wantSubnets(want ...string) {
	f.t.Helper()
	if got := f.subnets(); !slices.Equal(got, want) {
		f.t.Errorf("HostSubnets:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func (f *fixture) status() sluicev1alpha1.ClusterNetworkStatus {
	f.t.Helper()
	cn, err := f.sluice.SluiceV1alpha1().ClusterNetworks().Get(context.Background(), sluicev1alpha1.ClusterNetworkName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return cn.Status
}

// wantCondition checks one condition's status and that its message contains every part.
func (f *fixture) wantCondition(typ string, status metav1.ConditionStatus, parts ...string) {
	f.t.Helper()
	c := meta.FindStatusCondition(f.status().Conditions, typ)
	if c == nil {
		f.t.Errorf("no %s condition in %+v", typ, f.status().Conditions)
		return
	}
	if c.Status != status {
		f.t.Errorf("%s = %s (%s: %s), want %s", typ, c.Status, c.Reason, c.Message, status)
	}
	for _, p := range parts {
		if !strings.Contains(c.Message, p) {
			f.t.Errorf("%s message %q does not contain %q", typ, c.Message, p)
		}
	}
}

func wantEvent(t *testing.T, events []string, parts ...string) {
	t.Helper()
	for _, e := range events {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(e, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no event with %q in:\n%s", parts, strings.Join(events, "\n"))
}

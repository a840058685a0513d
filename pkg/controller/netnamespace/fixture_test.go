package netnamespace

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	"github.com/sluice-net/sluice/pkg/vnid"
)

// fixture is one fake API server (a Kubernetes and a Sluice fake clientset) that does what
// the real one does and the fakes do not: it stamps objects with a UID, a creationTimestamp
// from a clock the test moves and a resourceVersion, and refuses an update whose
// resourceVersion is not the stored one (optimistic concurrency).
type fixture struct {
	t      *testing.T
	kube   *kubefake.Clientset
	sluice *sluicefake.Clientset

	mu   sync.Mutex
	now  time.Time
	uids int
	rv   int
}

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var kubeObjs, sluiceObjs []runtime.Object
	for _, o := range objs {
		f.stamp(o, true)
		switch o.(type) {
		case *corev1.Namespace:
			kubeObjs = append(kubeObjs, o)
		default:
			sluiceObjs = append(sluiceObjs, o)
		}
	}
	f.kube = kubefake.NewClientset(kubeObjs...)
	f.sluice = sluicefake.NewSimpleClientset(sluiceObjs...)
	for _, fake := range []*k8stesting.Fake{&f.kube.Fake, &f.sluice.Fake} {
		fake.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			f.stamp(a.(k8stesting.CreateAction).GetObject(), true)
			return false, nil, nil // the tracker stores the stamped object
		})
	}
	tracker := f.sluice.Tracker()
	f.sluice.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.UpdateAction)
		m, _ := meta.Accessor(u.GetObject())
		cur, err := tracker.Get(a.GetResource(), "", m.GetName())
		if err != nil {
			return true, nil, err
		}
		cm, _ := meta.Accessor(cur)
		if m.GetResourceVersion() != "" && m.GetResourceVersion() != cm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), m.GetName(),
				fmt.Errorf("the object has been modified"))
		}
		m.SetUID(cm.GetUID())
		m.SetCreationTimestamp(cm.GetCreationTimestamp())
		f.stamp(u.GetObject(), false)
		return false, nil, nil
	})
	f.sluice.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		handled, obj, err := k8stesting.ObjectReaction(tracker)(a)
		if err != nil || !handled {
			return handled, obj, err
		}
		f.stamp(obj, false)
		if err := tracker.Update(a.GetResource(), obj, ""); err != nil {
			return true, nil, err
		}
		return true, obj, nil
	})
	return f
}

// stamp sets what the API server sets: UID and creationTimestamp on create, a new
// resourceVersion on every write.
func (f *fixture) stamp(o runtime.Object, create bool) {
	m, err := meta.Accessor(o)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if create && m.GetUID() == "" {
		f.uids++
		m.SetUID(types.UID(fmt.Sprintf("uid-%d", f.uids)))
	}
	if ts := m.GetCreationTimestamp(); create && ts.IsZero() {
		m.SetCreationTimestamp(metav1.NewTime(f.now))
	}
	f.rv++
	m.SetResourceVersion(fmt.Sprint(f.rv))
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

func (f *fixture) newController(opts ...func(*Options)) *ctl {
	f.t.Helper()
	c := &ctl{
		f:         f,
		kubeInf:   kubeinformers.NewSharedInformerFactory(f.kube, 0),
		sluiceInf: sluiceinformers.NewSharedInformerFactory(f.sluice, 0),
		events:    record.NewFakeRecorder(1000),
	}
	o := Options{RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[string](0, 0)}
	for _, fn := range opts {
		fn(&o)
	}
	var err error
	c.Controller, err = New(f.kube, f.sluice,
		c.kubeInf.Core().V1().Namespaces(),
		c.sluiceInf.Sluice().V1alpha1().NetNamespaces(),
		c.events, o)
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
	nss, err := c.f.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nns, err := c.f.sluice.SluiceV1alpha1().NetNamespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replace := func(inf cache.SharedIndexInformer, objs []any) {
		if err := inf.GetIndexer().Replace(objs, ""); err != nil {
			t.Fatal(err)
		}
	}
	var objs []any
	for i := range nss.Items {
		objs = append(objs, &nss.Items[i])
	}
	replace(c.kubeInf.Core().V1().Namespaces().Informer(), objs)
	objs = nil
	for i := range nns.Items {
		objs = append(objs, &nns.Items[i])
	}
	replace(c.sluiceInf.Sluice().V1alpha1().NetNamespaces().Informer(), objs)
}

// process works the queue until it is empty (at most limit items), without refreshing.
func (c *ctl) process(limit int) {
	ctx := context.Background()
	for i := 0; i < limit && c.queue.Len() > 0; i++ {
		c.processNextWorkItem(ctx)
	}
}

// syncNames reconciles the given names once, from the current caches.
func (c *ctl) syncNames(names ...string) {
	for _, n := range names {
		c.queue.Add(n)
	}
	c.process(100)
}

// settle runs the controller to a fixed point: refresh the caches, reconcile everything,
// until a round writes nothing.
func (c *ctl) settle() {
	c.f.t.Helper()
	for round := 0; round < 20; round++ {
		before := len(c.f.sluice.Actions())
		c.refresh()
		c.enqueueAll()
		c.process(1000)
		writes := 0
		for _, a := range c.f.sluice.Actions()[before:] {
			switch a.GetVerb() {
			case "create", "update", "patch", "delete":
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

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func netNamespace(name string, netID uint32, annotations ...string) *sluicev1alpha1.NetNamespace {
	nn := &sluicev1alpha1.NetNamespace{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       sluicev1alpha1.NetNamespaceSpec{NetName: name, NetID: netID},
	}
	for i := 0; i+1 < len(annotations); i += 2 {
		setAnnotation(nn, annotations[i], annotations[i+1])
	}
	return nn
}

// allocatedNN is a NetNamespace as the controller creates it: netID recorded as allocated.
func allocatedNN(name string, netID uint32) *sluicev1alpha1.NetNamespace {
	return netNamespace(name, netID, sluicev1alpha1.AnnotationAllocatedNetID, vnid.Format(netID))
}

// netIDs returns the fake API's NetNamespaces as "name=netID", sorted by name.
func (f *fixture) netIDs() string {
	f.t.Helper()
	list, err := f.sluice.SluiceV1alpha1().NetNamespaces().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, nn := range list.Items {
		out = append(out, fmt.Sprintf("%s=%d", nn.Name, nn.Spec.NetID))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func (f *fixture) get(name string) *sluicev1alpha1.NetNamespace {
	f.t.Helper()
	nn, err := f.sluice.SluiceV1alpha1().NetNamespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return nn
}

func (f *fixture) createNamespace(name string) {
	f.t.Helper()
	if _, err := f.kube.CoreV1().Namespaces().Create(context.Background(), namespace(name), metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) deleteNamespace(name string) {
	f.t.Helper()
	if err := f.kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// request asks for a multitenant change on a NetNamespace as sluicectl does (a merge patch
// that also removes an old error).
func (f *fixture) request(name, change string) {
	f.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:null}}}`, sluicev1alpha1.AnnotationMultitenantChange, change, sluicev1alpha1.AnnotationMultitenantChangeError)
	if _, err := f.sluice.SluiceV1alpha1().NetNamespaces().Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// edit changes a NetNamespace's netID by hand, as an operator with kubectl edit does.
func (f *fixture) edit(name string, netID uint32) {
	f.t.Helper()
	nn := f.get(name)
	nn.Spec.NetID = netID
	if _, err := f.sluice.SluiceV1alpha1().NetNamespaces().Update(context.Background(), nn, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func wantNetIDs(t *testing.T, f *fixture, want string) {
	t.Helper()
	if got := f.netIDs(); got != want {
		t.Fatalf("NetNamespaces:\n got %s\nwant %s", got, want)
	}
}

func hasEvent(events []string, substrs ...string) bool {
	for _, e := range events {
		all := true
		for _, s := range substrs {
			if !strings.Contains(e, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

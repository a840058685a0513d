package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	"k8s.io/client-go/tools/record"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluicefake "github.com/sluice-net/sluice/pkg/client/clientset/versioned/fake"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	"github.com/sluice-net/sluice/pkg/controller/netnamespace"
)

// fakeCluster is a fake API server (with the UIDs, resourceVersions and optimistic
// concurrency the real one has) that sluicectl talks to, optionally with the NetNamespace
// controller running against it.
func fakeCluster(t *testing.T, withController bool, objs ...runtime.Object) *clients {
	t.Helper()
	var mu sync.Mutex
	rv := 0
	stamp := func(o runtime.Object, create bool) {
		m, _ := meta.Accessor(o)
		mu.Lock()
		defer mu.Unlock()
		rv++
		if create && m.GetUID() == "" {
			m.SetUID(types.UID(fmt.Sprintf("uid-%d", rv)))
			m.SetCreationTimestamp(metav1.NewTime(time.Date(2026, 1, 1, 0, 0, rv, 0, time.UTC)))
		}
		m.SetResourceVersion(fmt.Sprint(rv))
	}
	var kubeObjs, sluiceObjs []runtime.Object
	for _, o := range objs {
		stamp(o, true)
		if _, ok := o.(*corev1.Namespace); ok {
			kubeObjs = append(kubeObjs, o)
		} else {
			sluiceObjs = append(sluiceObjs, o)
		}
	}
	kube := kubefake.NewClientset(kubeObjs...)
	sluice := sluicefake.NewSimpleClientset(sluiceObjs...)
	tracker := sluice.Tracker()
	sluice.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		stamp(a.(k8stesting.CreateAction).GetObject(), true)
		return false, nil, nil
	})
	sluice.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.UpdateAction).GetObject()
		m, _ := meta.Accessor(obj)
		cur, err := tracker.Get(a.GetResource(), "", m.GetName())
		if err != nil {
			return true, nil, err
		}
		cm, _ := meta.Accessor(cur)
		if m.GetResourceVersion() != cm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), m.GetName(), fmt.Errorf("modified"))
		}
		stamp(obj, false)
		return false, nil, nil
	})
	sluice.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		handled, obj, err := k8stesting.ObjectReaction(tracker)(a)
		if err != nil || !handled {
			return handled, obj, err
		}
		stamp(obj, false)
		return true, obj, tracker.Update(a.GetResource(), obj, "")
	})

	if withController {
		ctx, cancel := context.WithCancel(context.Background())
		kubeInf := kubeinformers.NewSharedInformerFactory(kube, 0)
		sluiceInf := sluiceinformers.NewSharedInformerFactory(sluice, 0)
		c, err := netnamespace.New(kube, sluice, kubeInf.Core().V1().Namespaces(), sluiceInf.Sluice().V1alpha1().NetNamespaces(),
			record.NewFakeRecorder(1000), netnamespace.Options{})
		if err != nil {
			t.Fatal(err)
		}
		kubeInf.Start(ctx.Done())
		sluiceInf.Start(ctx.Done())
		done := make(chan struct{})
		go func() { defer close(done); c.Run(ctx, 2) }()
		t.Cleanup(func() { cancel(); <-done; kubeInf.Shutdown(); sluiceInf.Shutdown() })
	}
	cl := &clients{kube: kube, sluice: sluice}
	old := newClients
	newClients = func(string) (*clients, error) { return cl, nil }
	t.Cleanup(func() { newClients = old })
	return cl
}

func namespaces(names ...string) []runtime.Object {
	var out []runtime.Object
	for _, n := range names {
		out = append(out, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return out
}

// waitNetNamespaces waits for the controller to give every namespace a NetNamespace.
func waitNetNamespaces(t *testing.T, c *clients, names ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range names {
		for {
			if _, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(context.Background(), n, metav1.GetOptions{}); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no NetNamespace %s", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// table parses the NAMESPACE NETID output.
func table(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAMESPACE NETID" {
		t.Fatalf("output is not a NAMESPACE NETID table:\n%s", out)
	}
	m := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("bad line %q in\n%s", l, out)
		}
		m[f[0]] = f[1]
	}
	return m
}

func TestPodNetwork(t *testing.T) {
	c := fakeCluster(t, true, namespaces("default", "a", "b", "c", "d")...)
	waitNetNamespaces(t, c, "default", "a", "b", "c", "d")

	r := sluicectl(t, "", "pod-network", "join-projects", "--to=a", "b", "c")
	if r.code != 0 {
		t.Fatalf("join: exit %d, stderr %q", r.code, r.stderr)
	}
	got := table(t, r.stdout)
	if len(got) != 3 || got["a"] == "" || got["b"] != got["a"] || got["c"] != got["a"] {
		t.Fatalf("join: netIDs %v, want a, b and c on a's:\n%s", got, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, "NAMESPACE  NETID\na ") {
		t.Errorf("join: --to first:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "note: ClusterNetwork") && r.stderr != "" {
		t.Errorf("join: stderr %q", r.stderr)
	}
	joined := got["a"]

	r = sluicectl(t, "", "pod-network", "isolate-projects", "b", "c")
	if r.code != 0 {
		t.Fatalf("isolate: exit %d, stderr %q", r.code, r.stderr)
	}
	got = table(t, r.stdout)
	if got["b"] == got["c"] || got["b"] == joined || got["c"] == joined || got["b"] == "0" || got["c"] == "0" {
		t.Fatalf("isolate: netIDs %v (a has %s); want b and c apart from a and each other", got, joined)
	}

	r = sluicectl(t, "", "pod-network", "make-projects-global", "c", "d")
	if r.code != 0 {
		t.Fatalf("make global: exit %d, stderr %q", r.code, r.stderr)
	}
	if got = table(t, r.stdout); got["c"] != "0" || got["d"] != "0" || len(got) != 2 {
		t.Fatalf("make global: %v", got)
	}

	// The controller refuses: its reason, exit 1, and the netIDs as they are.
	r = sluicectl(t, "", "pod-network", "isolate-projects", "default", "b")
	if r.code != exitFindings || !strings.Contains(r.stderr, "namespace default: sluice-controller refused the change") ||
		!strings.Contains(r.stderr, "cannot be isolated") {
		t.Fatalf("isolate default: exit %d, stderr %q", r.code, r.stderr)
	}
	if got = table(t, r.stdout); got["default"] != "0" {
		t.Errorf("isolate default: %v", got)
	}
	// An error is cleared by the next request.
	if r = sluicectl(t, "", "pod-network", "make-projects-global", "default"); r.code != 0 {
		t.Errorf("make default global after a refusal: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestPodNetworkBadInput(t *testing.T) {
	c := fakeCluster(t, false, append(namespaces("a", "b", "lonely"),
		&sluicev1alpha1.NetNamespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: sluicev1alpha1.NetNamespaceSpec{NetName: "a", NetID: 1}},
		&sluicev1alpha1.NetNamespace{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: sluicev1alpha1.NetNamespaceSpec{NetName: "b", NetID: 2}},
	)...)
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"join-projects", "b"}, exitBadInput, []string{"--to: the namespace to join is required"}},
		{[]string{"join-projects", "--to=a"}, exitBadInput, []string{"requires at least 1 arg"}},
		{[]string{"isolate-projects"}, exitBadInput, []string{"requires at least 1 arg"}},
		{[]string{"isolate-projects", "Not_A_Name"}, exitBadInput, []string{`namespace "Not_A_Name": not a namespace name`}},
		{[]string{"join-projects", "--to=nope", "a", "ghost"}, exitBadInput, []string{
			`unknown project "nope": namespace nope does not exist`, `unknown project "ghost": namespace ghost does not exist`}},
		{[]string{"make-projects-global", "lonely"}, exitBadInput, []string{"namespace lonely has no NetNamespace lonely (is sluice-controller running?)"}},
		{[]string{"isolate-projects", "a", "--timeout=0s"}, exitBadInput, []string{"--timeout 0s"}},
		// No controller to apply the change.
		{[]string{"isolate-projects", "a", "b", "--timeout=300ms"}, exitFailed, []string{
			"namespace a: the change sluice.dev/multitenant-change=isolate was not applied within 300ms (is sluice-controller running?)",
			"namespace b: the change"}},
	} {
		r := sluicectl(t, "", append([]string{"pod-network"}, tc.args...)...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d; stderr %q", tc.args, r.code, tc.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr %q, want %q", tc.args, r.stderr, w)
			}
		}
	}
	// The request stays for a controller to apply later.
	nn, err := c.sluice.SluiceV1alpha1().NetNamespaces().Get(context.Background(), "a", metav1.GetOptions{})
	if err != nil || nn.Annotations[sluicev1alpha1.AnnotationMultitenantChange] != sluicev1alpha1.MultitenantChangeIsolate {
		t.Errorf("NetNamespace a after a timed-out isolate: %v, %v", nn.Annotations, err)
	}
}

func TestPodNetworkKubeconfig(t *testing.T) {
	r := sluicectl(t, "", "--kubeconfig", filepath.Join(t.TempDir(), "missing"), "pod-network", "isolate-projects", "a")
	if r.code != exitBadInput || !strings.Contains(r.stderr, "kubeconfig") || !strings.Contains(r.stderr, "missing") {
		t.Errorf("missing kubeconfig: exit %d, stderr %q", r.code, r.stderr)
	}
	// A kubeconfig whose server refuses connections: exit 3, naming the call.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "not-this-one"))
	r = sluicectl(t, "", "pod-network", "isolate-projects", "a", "--kubeconfig", kc, "--timeout=2s")
	if r.code != exitFailed || !strings.Contains(r.stderr, "get namespace a") || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("unreachable cluster: exit %d, stderr %q", r.code, r.stderr)
	}
	// $KUBECONFIG without --kubeconfig.
	t.Setenv("KUBECONFIG", kc)
	r = sluicectl(t, "", "pod-network", "isolate-projects", "a", "--timeout=2s")
	if r.code != exitFailed || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("$KUBECONFIG: exit %d, stderr %q", r.code, r.stderr)
	}
}

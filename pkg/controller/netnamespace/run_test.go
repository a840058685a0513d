package netnamespace

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/record"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
)

// TestRunWithInformers runs the controller as cmd/sluice-controller does — started
// informers, event handlers, Run with workers — against the fake API, and follows namespaces
// being added, joined, isolated and deleted.
func TestRunWithInformers(t *testing.T) {
	f := newFixture(t, namespace("default"), namespace("a"), allocatedNN("a", 1), namespace("b"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kubeInf := kubeinformers.NewSharedInformerFactory(f.kube, 0)
	sluiceInf := sluiceinformers.NewSharedInformerFactory(f.sluice, 0)
	c, err := New(f.kube, f.sluice, kubeInf.Core().V1().Namespaces(), sluiceInf.Sluice().V1alpha1().NetNamespaces(),
		record.NewFakeRecorder(100), Options{})
	if err != nil {
		t.Fatal(err)
	}
	kubeInf.Start(ctx.Done())
	sluiceInf.Start(ctx.Done())
	done := make(chan error)
	go func() { done <- c.Run(ctx, 2) }()

	waitFor := func(what, want string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			return f.netIDs() == want, nil
		})
		if err != nil {
			t.Fatalf("%s: NetNamespaces %s, want %s", what, f.netIDs(), want)
		}
	}
	waitFor("start", "a=1 b=2 default=0")
	f.createNamespace("c")
	waitFor("c added", "a=1 b=2 c=3 default=0")
	f.request("b", "join:a")
	f.request("c", "join:a")
	waitFor("b and c joined a", "a=1 b=1 c=1 default=0")
	f.request("b", sluicev1alpha1.MultitenantChangeIsolate)
	f.request("c", sluicev1alpha1.MultitenantChangeIsolate)
	// b and c share 1 with a (and each other): the first isolated moves to a free netID (2
	// or 3, in whatever order the workers take them), the other then shares only with a and
	// moves too.
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		got := f.netIDs()
		return got == "a=1 b=2 c=3 default=0" || got == "a=1 b=3 c=2 default=0", nil
	})
	if err != nil {
		t.Fatalf("b and c isolated: %s", f.netIDs())
	}
	f.deleteNamespace("a")
	f.request("c", sluicev1alpha1.MultitenantChangeGlobal)
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		got := f.netIDs()
		return got == "b=2 c=0 default=0" || got == "b=3 c=0 default=0", nil
	})
	if err != nil {
		t.Fatalf("a deleted, c global: %s", f.netIDs())
	}
	f.createNamespace("d")
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		got := f.netIDs()
		return got == "b=2 c=0 d=1 default=0" || got == "b=3 c=0 d=1 default=0", nil
	})
	if err != nil {
		t.Fatalf("d reuses netID 1: %s", f.netIDs())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

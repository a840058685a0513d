package hostsubnet

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/record"

	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
)

// TestRunWithInformers runs the controller as cmd/sluice-controller does — started
// informers, event handlers, Run with workers — against the fake API, and follows a node
// being added and deleted.
func TestRunWithInformers(t *testing.T) {
	f := newFixture(t, defaultNetwork, node("node1", "172.28.0.11"), node("node2", "172.28.0.12"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := f.runWithInformers(ctx, 100, 2)

	waitFor := func(what string, want ...string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			got := f.subnets()
			if len(got) != len(want) {
				return false, nil
			}
			for i := range got {
				if got[i] != want[i] {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%s: HostSubnets %v, want %v", what, f.subnets(), want)
		}
	}
	// The informers deliver the initial nodes in no particular order, and two workers take
	// them in parallel: node1 and node2 get the two lowest subnets, either way round.
	one, two := "node1=172.28.0.11,10.128.0.0/23", "node2=172.28.0.12,10.128.2.0/23"
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		got := f.subnets()
		if len(got) == 2 && got[0] == "node1=172.28.0.11,10.128.2.0/23" && got[1] == "node2=172.28.0.12,10.128.0.0/23" {
			one, two = got[0], got[1]
		}
		return len(got) == 2 && got[0] == one && got[1] == two, nil
	})
	if err != nil {
		t.Fatalf("start: HostSubnets %v", f.subnets())
	}

	if _, err := f.kube.CoreV1().Nodes().Create(ctx, node("node3", "172.28.0.13"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("node3 added", one, two, "node3=172.28.0.13,10.128.4.0/23")

	if err := f.kube.CoreV1().Nodes().Delete(ctx, "node2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("node2 deleted", one, "node3=172.28.0.13,10.128.4.0/23")

	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return f.status().AllocatedSubnets == 2, nil
	})
	if err != nil {
		t.Errorf("status: %+v", f.status())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// runWithInformers starts a controller over the fixture's fake API as cmd/sluice-controller
// does (informers, handlers, Run with workers) and returns Run's result channel. events is
// the fake recorder's capacity.
func (f *fixture) runWithInformers(ctx context.Context, events, workers int) chan error {
	f.t.Helper()
	kubeInf := kubeinformers.NewSharedInformerFactory(f.kube, 0)
	sluiceInf := sluiceinformers.NewSharedInformerFactory(f.sluice, 0)
	c, err := New(f.kube, f.sluice, kubeInf.Core().V1().Nodes(),
		sluiceInf.Sluice().V1alpha1().HostSubnets(), sluiceInf.Sluice().V1alpha1().ClusterNetworks(),
		record.NewFakeRecorder(events), Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	kubeInf.Start(ctx.Done())
	sluiceInf.Start(ctx.Done())
	done := make(chan error)
	go func() { done <- c.Run(ctx, workers) }()
	return done
}

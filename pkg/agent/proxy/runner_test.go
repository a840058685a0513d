package proxy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The proxy's lifecycle under the table owner, against a fake API server:
// nothing is contributed until the informers have synced; a Service created
// through the API reaches the table; disabling tears the proxy's objects
// down once and leaves the pod network's; enabling again brings them back.
func TestRunnerLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kube := kubefake.NewClientset(svc("web"), slice("web", "web-1", 8080, readyEP(epRem, "node-b")))
	f := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	own := dataplane.NewOwner(f, logr.Discard())
	requested := make(chan struct{}, 100)
	r := &Runner{Kube: kube, NodeName: "node-a", Log: logr.Discard(), Request: func() { requested <- struct{}{} }}
	base := dataplane.NewBase()
	base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
	own.Register(base)
	own.Register(r)
	sync := func(what string) {
		t.Helper()
		if err := own.SyncNow(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	has := func(s string) bool { return strings.Contains(f.Dump(), s) }

	if err := r.SetEnabled(ctx, true); err != nil {
		t.Fatal(err)
	}
	select { // the informers synced and asked for a sync
	case <-requested:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy never asked for its first sync")
	}
	for !r.ready.Load() {
		time.Sleep(time.Millisecond)
	}
	sync("first")
	if !has("chain inet sluice svc-nat-prerouting") || !has(`comment "ns/web:http/tcp"`) {
		t.Fatalf("after the first sync the table lacks the proxy or the Service:\n%s", f.Dump())
	}

	// A Service created through the API: its handler asks, a sync programs it.
	other := svc("api", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.30", []string{"172.30.0.30"} })
	if _, err := kube.CoreV1().Services("ns").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !has("172.30.0.30") {
		if time.Now().After(deadline) {
			t.Fatalf("the new Service never reached the table:\n%s", f.Dump())
		}
		<-requested
		sync("after a Service was created")
	}

	// Disabled: every proxy object goes, once; the pod network's stay.
	if err := r.SetEnabled(ctx, false); err != nil {
		t.Fatal(err)
	}
	sync("teardown")
	if has("svc-") || has("service-ips") || has("pick-") || !has("chain inet sluice pod-antispoof") || !has("set inet sluice cluster-cidrs") {
		t.Fatalf("after the teardown:\n%s", f.Dump())
	}
	before := own.Stats().Transactions
	sync("after the teardown")
	if own.Stats().Transactions != before {
		t.Error("a torn-down proxy contributed again")
	}

	// Enabled again: back, Services included.
	if err := r.SetEnabled(ctx, true); err != nil {
		t.Fatal(err)
	}
	for !r.ready.Load() {
		time.Sleep(time.Millisecond)
	}
	sync("re-enabled")
	if !has("chain inet sluice svc-nat-prerouting") || !has("172.30.0.30") {
		t.Fatalf("after enabling again:\n%s", f.Dump())
	}
}

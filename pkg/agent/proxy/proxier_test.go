package proxy

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// flakyNFT fails the next Run when failNext is set.
type flakyNFT struct {
	*knftables.Fake
	failNext bool
}

func (f *flakyNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.failNext {
		f.failNext = false
		return errors.New("injected failure")
	}
	return f.Fake.Run(ctx, tx)
}

type fakeConntrack struct{ endpoints, dests []netip.AddrPort }

func (c *fakeConntrack) ClearUDP(endpoints, dests []netip.AddrPort) error {
	c.endpoints = append(c.endpoints, endpoints...)
	c.dests = append(c.dests, dests...)
	return nil
}

type proxierEnv struct {
	t      *testing.T
	nft    *flakyNFT
	svcs   cache.Indexer
	slices cache.Indexer
	p      *Proxier
	own    *dataplane.Owner
	stop   context.CancelFunc
	run    func()
	ct     *fakeConntrack
	health map[uint16]int
}

func newProxierEnv(t *testing.T) *proxierEnv {
	f := knftables.NewFake(knftables.InetFamily, dataplane.Table)
	tx := f.NewTransaction()
	dataplane.Render(tx, dpState)
	if err := f.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	e := &proxierEnv{t: t, nft: &flakyNFT{Fake: f}, ct: &fakeConntrack{},
		svcs:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		slices: cache.NewIndexer(cache.MetaNamespaceKeyFunc, SliceIndexers())}
	e.start()
	return e
}

// start runs a new Proxier (a restarted agent) under its own table owner.
func (e *proxierEnv) start() {
	if e.stop != nil {
		e.stop()
	}
	e.own = dataplane.NewOwner(e.nft, logr.Discard())
	e.own.Loop().RetryAfter = time.Hour // the tests retry with Sync
	// Changes do not kick the owner here: each sync is the test's Sync, so
	// that a sync the test expects to fail is not run early by a kick.
	e.p = NewProxier(corelisters.NewServiceLister(e.svcs), e.slices, node, logr.Discard(), func() {})
	e.p.Conntrack = e.ct
	e.p.Health = func(m map[uint16]int) { e.health = m }
	e.own.Register(e.p)
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	e.stop = cancel
	e.run = func() { go e.own.Run(ctx) }
}

// syncErr runs one sync of the owner, starting its loop the first time
// (the loop syncs once as it starts: started earlier, it would sync before
// the test has set anything up).
func (e *proxierEnv) syncErr() error {
	if e.run != nil {
		e.run()
		e.run = nil
	}
	return e.own.Sync(context.Background())
}

func (e *proxierEnv) setService(s *corev1.Service) {
	if err := e.svcs.Update(s); err != nil {
		e.t.Fatal(err)
	}
	e.p.ServiceChanged(s.Namespace, s.Name)
}

func (e *proxierEnv) setSlice(es *discoveryv1.EndpointSlice) {
	if err := e.slices.Update(es); err != nil {
		e.t.Fatal(err)
	}
	e.p.SliceChanged(es)
}

func (e *proxierEnv) sync() {
	e.t.Helper()
	if err := e.syncErr(); err != nil {
		e.t.Fatal(err)
	}
}

// check: the table equals a fresh full render of everything in the
// listers, element order aside.
func (e *proxierEnv) check(what string) {
	e.t.Helper()
	var svcs []*corev1.Service
	for _, o := range e.svcs.List() {
		svcs = append(svcs, o.(*corev1.Service))
	}
	var sl []*discoveryv1.EndpointSlice
	for _, o := range e.slices.List() {
		sl = append(sl, o.(*discoveryv1.EndpointSlice))
	}
	st, _ := Build(svcs, sl, node)
	want := render(e.t, st).Dump()
	if got := e.nft.Dump(); normalize(got) != normalize(want) {
		e.t.Fatalf("%s: table differs from a fresh full render\n--- got\n%s\n--- want\n%s", what, got, want)
	}
}

func udpSvc(name, ip string) *corev1.Service {
	return svc(name, func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
		s.Spec.Ports[0].Port = 53
	})
}

func udpSlice(name string, eps ...ep) *discoveryv1.EndpointSlice {
	es := slice(name, name+"-1", 5353, eps...)
	es.Ports[0].Protocol = ptr(corev1.ProtocolUDP)
	return es
}

func TestProxierPartialSyncsMatchFullRender(t *testing.T) {
	e := newProxierEnv(t)
	e.setService(svc("web"))
	e.setSlice(slice("web", "web-1", 8080, readyEP(epLocal, "node-a"), readyEP(epRem, "node-b")))
	e.setService(udpSvc("dns", "172.30.0.53"))
	e.setSlice(udpSlice("dns", readyEP(epLocal, "node-a"), readyEP(epRem, "node-b")))
	e.setService(svc("lb", func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.20", []string{"172.30.0.20"}
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
		s.Spec.Ports[0].NodePort = 30020
	}))
	e.setSlice(slice("lb", "lb-1", 8080, readyEP(epLocal, "node-a")))
	e.sync()
	e.check("first sync")
	if s := e.p.Stats(); s.Full != 1 || s.Partial != 0 {
		t.Fatalf("first sync must be full: %+v", s)
	}
	if e.health[32000] != 1 {
		t.Errorf("health: %v, want 32000 → 1 local endpoint", e.health)
	}

	// An endpoint leaves a UDP service: partial, conntrack of it cleared.
	e.setSlice(udpSlice("dns", readyEP(epLocal, "node-a")))
	e.sync()
	e.check("UDP endpoint removed")
	if want := netip.MustParseAddrPort(epRem + ":5353"); !slices.Contains(e.ct.endpoints, want) {
		t.Errorf("conntrack cleared %v, want %v among them", e.ct.endpoints, want)
	}

	// The UDP service loses its last endpoint, then gets one back: the
	// destination's entries are cleared when it does.
	e.setSlice(udpSlice("dns"))
	e.sync()
	e.check("UDP service without endpoints")
	e.ct.dests = nil
	e.setSlice(udpSlice("dns", readyEP(epRem, "node-b")))
	e.sync()
	e.check("UDP service has an endpoint again")
	if want := netip.MustParseAddrPort("172.30.0.53:53"); !slices.Equal(e.ct.dests, []netip.AddrPort{want}) {
		t.Errorf("conntrack destinations %v, want [%v]", e.ct.dests, want)
	}

	// The local endpoint of the Local LB goes: health says 0.
	e.setSlice(slice("lb", "lb-1", 8080, readyEP(epRem, "node-b")))
	e.sync()
	e.check("Local LB without local endpoint")
	if e.health[32000] != 0 {
		t.Errorf("health: %v, want 32000 → 0", e.health)
	}

	// A service is deleted.
	if err := e.svcs.Delete(svc("web")); err != nil {
		t.Fatal(err)
	}
	e.p.ServiceChanged("ns", "web")
	e.sync()
	e.check("service deleted")
	if s := e.p.Stats(); s.Full != 1 || s.Partial != 5 {
		t.Fatalf("every change after the first must be partial: %+v", s)
	}

	// A failed transaction: nothing changes, and the next sync is full.
	e.nft.failNext = true
	e.setService(svc("web"))
	if err := e.syncErr(); err == nil {
		t.Fatal("injected failure not reported")
	}
	e.sync()
	e.check("full sync after a failure")
	if s := e.p.Stats(); s.Full != 2 || s.Failed != 1 {
		t.Fatalf("want a full sync after the failure: %+v", s)
	}

	// A destination another service owns: resolved by a full Build.
	e.setService(svc("thief", func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.99", []string{"172.30.0.99"}
		s.Spec.ExternalIPs = []string{"172.30.0.10"} // web's cluster IP
	}))
	e.sync()
	e.check("conflicting externalIP")
	if s := e.p.Stats(); s.Full != 3 {
		t.Fatalf("a conflict must be resolved by a full sync: %+v", s)
	}
	// A service outside the conflict changes: still partial. One of the
	// parties changes: full again.
	before := e.p.Stats()
	e.setSlice(udpSlice("dns", readyEP(epLocal, "node-a")))
	e.sync()
	e.check("unrelated change while a conflict stands")
	if s := e.p.Stats(); s.Full != before.Full || s.Partial != before.Partial+1 {
		t.Fatalf("an unrelated change must stay partial: %+v after %+v", s, before)
	}
	e.setSlice(slice("web", "web-1", 8080, readyEP(epRem, "node-b")))
	e.sync()
	e.check("change to a party of the conflict")
	if s := e.p.Stats(); s.Full != before.Full+1 {
		t.Fatalf("a change to a conflicting service must be a full sync: %+v after %+v", s, before)
	}
}

// A restarted agent prunes what its predecessor left, found by listing
// the table once.
func TestProxierPrunesLeftoversAfterRestart(t *testing.T) {
	e := newProxierEnv(t)
	e.setService(svc("web", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }))
	e.setSlice(slice("web", "web-1", 8080, readyEP(epLocal, "node-a"), readyEP(epRem, "node-b")))
	e.setService(svc("old", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "172.30.0.77", []string{"172.30.0.77"} }))
	e.setSlice(slice("old", "old-1", 8080, readyEP(epRem, "node-b")))
	e.sync()

	// The service is deleted while no agent runs; a new one starts.
	if err := e.svcs.Delete(svc("old")); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.sync()
	e.check("after restart")
}

// The proxy is healthy while every change gets programmed in time: a
// pending change turns it unhealthy only after HealthTimeout, a failed
// sync keeps the change pending, a successful one clears it. The HTTP
// handler maps that (and the node's eligibility) to kube-proxy's codes.
func TestSyncHealth(t *testing.T) {
	e := newProxierEnv(t)
	now := time.Now()
	if ok, _ := e.p.SyncHealth(now); !ok {
		t.Fatal("unhealthy before the first sync had a chance")
	}
	if ok, _ := e.p.SyncHealth(now.Add(HealthTimeout + time.Second)); ok {
		t.Fatal("healthy though the first sync never ran")
	}
	if err := e.syncErr(); err != nil {
		t.Fatal(err)
	}
	ok, last := e.p.SyncHealth(time.Now().Add(24 * time.Hour))
	if !ok || last.IsZero() {
		t.Fatalf("after a sync with nothing pending: healthy %v, last %v", ok, last)
	}
	e.setService(svc("web"))
	e.nft.failNext = true
	if err := e.syncErr(); err == nil {
		t.Fatal("injected failure not returned")
	}
	if ok, _ := e.p.SyncHealth(time.Now().Add(HealthTimeout + time.Second)); ok {
		t.Fatal("healthy though the change failed to program for longer than HealthTimeout")
	}
	if err := e.syncErr(); err != nil {
		t.Fatal(err)
	}
	if ok, last2 := e.p.SyncHealth(time.Now().Add(HealthTimeout + time.Second)); !ok || !last2.After(last) {
		t.Fatalf("after the retry succeeded: healthy %v, last %v (before %v)", ok, last2, last)
	}

	for _, tc := range []struct {
		path            string
		healthy, elig   bool
		code            int
		bodyHasEligible string
	}{
		{"/healthz", true, true, 200, `"nodeEligible": true`},
		{"/healthz", true, false, 503, `"nodeEligible": false`},
		{"/healthz", false, true, 503, `"nodeEligible": true`},
		{"/livez", true, false, 200, `"nodeEligible": false`},
		{"/livez", false, true, 503, ""},
		{"/other", true, true, 404, ""},
	} {
		h := &ProxyHealth{
			Sync:     func(time.Time) (bool, time.Time) { return tc.healthy, time.Unix(0, 0) },
			Eligible: func() bool { return tc.elig },
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.bodyHasEligible) {
			t.Errorf("%s healthy=%v eligible=%v: %d %s, want %d with %s", tc.path, tc.healthy, tc.elig, rec.Code, rec.Body, tc.code, tc.bodyHasEligible)
		}
	}
	taint := func(key string) *corev1.Node {
		return &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: key, Effect: corev1.TaintEffectNoSchedule}}}}
	}
	deleting := &corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{Time: time.Now()}}}
	if NodeEligible(taint("node.kubernetes.io/unschedulable")) != true || NodeEligible(deleting) || NodeEligible(taint("ToBeDeletedByClusterAutoscaler")) {
		t.Error("NodeEligible")
	}
}

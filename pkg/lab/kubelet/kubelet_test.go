package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluice-net/sluice/pkg/lab/testserver"
)

// fakeNet is a Network that hands out addresses from 10.0.0.0/24 and
// remembers attachments; failAdd makes ADD fail.
type fakeNet struct {
	mu       sync.Mutex
	attached map[string]Sandbox // by container ID
	next     int
	adds     int
	failAdd  error
	gcValid  []Sandbox
}

func (f *fakeNet) Add(_ context.Context, sb Sandbox) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	if f.failAdd != nil {
		return nil, f.failAdd
	}
	if sb.NetnsPath == "" || sb.Namespace == "" || sb.Name == "" || sb.UID == "" {
		return nil, fmt.Errorf("incomplete CNI arguments: %+v", sb)
	}
	f.next++
	f.attached[sb.ContainerID] = sb
	return []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(f.next)})}, nil
}

func (f *fakeNet) Del(_ context.Context, sb Sandbox) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.attached, sb.ContainerID)
	return nil
}

func (f *fakeNet) GC(_ context.Context, valid []Sandbox) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcValid = valid
	return nil
}

type fakeSandboxes struct {
	mu  sync.Mutex
	set map[string]bool
}

func (f *fakeSandboxes) Create(_ context.Context, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[name] = true
	return "/fake/netns/" + name, nil
}
func (f *fakeSandboxes) Delete(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.set, name)
	return nil
}
func (f *fakeSandboxes) List(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l []string
	for n := range f.set {
		l = append(l, n)
	}
	return l, nil
}

type fakeContainers struct {
	mu      sync.Mutex
	running map[string]testserver.Ports
}

func (f *fakeContainers) Start(r *podRecord, p testserver.Ports) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[r.UID] = p
	return nil
}
func (f *fakeContainers) Running(r *podRecord) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.running[r.UID]
	return ok
}
func (f *fakeContainers) Stop(r *podRecord, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, r.UID)
	return nil
}

type fakeProber struct {
	mu sync.Mutex
	ok map[netip.AddrPort]bool
}

func (f *fakeProber) Probe(_ context.Context, a netip.AddrPort, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ok[a] {
		return nil
	}
	return errors.New("connection refused")
}

var (
	_ Network    = &fakeNet{}
	_ Sandboxes  = &fakeSandboxes{}
	_ Containers = &fakeContainers{}
	_ Prober     = &fakeProber{}
)

type harness struct {
	k    *Kubelet
	cs   *fake.Clientset
	net  *fakeNet
	sbx  *fakeSandboxes
	ctrs *fakeContainers
	dir  string
}

func newHarness(t *testing.T, dir string, objs ...*corev1.Pod) *harness {
	t.Helper()
	h := &harness{
		net:  &fakeNet{attached: map[string]Sandbox{}},
		sbx:  &fakeSandboxes{set: map[string]bool{}},
		ctrs: &fakeContainers{running: map[string]testserver.Ports{}},
		dir:  dir,
	}
	h.cs = fake.NewClientset()
	for _, p := range objs {
		h.cs.Tracker().Add(p)
	}
	h.k = New(Options{
		NodeName: "node1", NodeIP: netip.MustParseAddr("172.28.0.11"),
		StateDir: dir, NetnsPrefix: "lab-node1-p-",
		Client: h.cs, Network: h.net, Sandboxes: h.sbx, Containers: h.ctrs,
		Prober: &fakeProber{ok: map[netip.AddrPort]bool{}},
	})
	return h
}

// start runs the kubelet until the test ends.
func (h *harness) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.k.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func pod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name + "-0123456789")},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "c",
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 80},
				{ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				{ContainerPort: 53, Protocol: corev1.ProtocolTCP},
				{ContainerPort: 80, Protocol: corev1.ProtocolTCP}, // duplicate
			},
		}}},
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) get(t *testing.T, name string) *corev1.Pod {
	p, err := h.cs.CoreV1().Pods("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return p
}

func TestPodLifecycle(t *testing.T) {
	h := newHarness(t, t.TempDir(), pod("a", "node1"), pod("elsewhere", "node2"))
	h.start(t)
	waitFor(t, "pod a Running", func() bool {
		p := h.get(t, "a")
		return p != nil && p.Status.Phase == corev1.PodRunning && podReadyStatus(p) == corev1.ConditionTrue
	})
	p := h.get(t, "a")
	if p.Status.PodIP != "10.0.0.1" || p.Status.HostIP != "172.28.0.11" {
		t.Errorf("pod IP %s host IP %s", p.Status.PodIP, p.Status.HostIP)
	}
	if got := h.ctrs.running[string(p.UID)]; fmt.Sprint(got) != fmt.Sprint(testserver.Ports{TCP: []int{80, 53}, UDP: []int{53}}) {
		t.Errorf("served ports %+v", got)
	}
	if h.get(t, "elsewhere").Status.Phase != "" {
		t.Errorf("kubelet of node1 touched a pod of node2")
	}
	sb := h.net.attached[ContainerID(string(p.UID))]
	if sb.Namespace != "ns" || sb.Name != "a" || sb.Netns != "lab-node1-p-uid-a-01" {
		t.Errorf("CNI saw %+v", sb)
	}

	// Deletion: the kubelet tears down and removes the object.
	now := metav1.Now()
	grace := int64(0)
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, &grace
	h.cs.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), p, "ns")
	waitFor(t, "pod a deleted", func() bool { return h.get(t, "a") == nil })
	if len(h.net.attached) != 0 || len(h.sbx.set) != 0 || len(h.ctrs.running) != 0 {
		t.Errorf("left behind: attached %v netns %v running %v", h.net.attached, h.sbx.set, h.ctrs.running)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.dir, "pods")); len(ents) != 0 {
		t.Errorf("pod records left: %v", ents)
	}
}

func TestFailedAddIsCleanedUpAndReported(t *testing.T) {
	h := newHarness(t, t.TempDir(), pod("a", "node1"))
	h.net.failAdd = fmt.Errorf("%w in /etc/cni/net.d", ErrNoNetworkConfig)
	h.start(t)
	waitFor(t, "pod a reports the sandbox error", func() bool {
		p := h.get(t, "a")
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReadyToStartContainers && c.Status == corev1.ConditionFalse && c.Reason == "FailedCreatePodSandBox" &&
				c.Message == "no CNI network configuration in /etc/cni/net.d" {
				return true
			}
		}
		return false
	})
	if p := h.get(t, "a"); p.Status.Phase != corev1.PodPending || p.Status.PodIP != "" {
		t.Errorf("phase %s IP %q", p.Status.Phase, p.Status.PodIP)
	}
	h.net.mu.Lock()
	h.sbx.mu.Lock()
	if len(h.sbx.set) != 0 {
		t.Errorf("failed sandbox's namespace left: %v", h.sbx.set)
	}
	h.sbx.mu.Unlock()
	// The network appears: the retry succeeds.
	h.net.failAdd = nil
	h.net.mu.Unlock()
	waitFor(t, "pod a Running after retry", func() bool { return h.get(t, "a").Status.Phase == corev1.PodRunning })
}

func TestRestartAdoptsAndCollects(t *testing.T) {
	dir := t.TempDir()
	a, gone := pod("a", "node1"), pod("gone", "node1")
	h := newHarness(t, dir, a)
	// State as a previous kubelet left it: a is attached and running, and
	// "gone" was deleted from the API while the kubelet was down.
	for _, p := range []*corev1.Pod{a, gone} {
		rec := &podRecord{Sandbox: Sandbox{ContainerID: ContainerID(string(p.UID)), Netns: "lab-node1-p-" + string(p.UID)[:8],
			Namespace: "ns", Name: p.Name, UID: string(p.UID)}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Attached: true, Started: true}
		if err := os.MkdirAll(filepath.Join(dir, "pods"), 0o755); err != nil {
			t.Fatal(err)
		}
		h.k.saveRecord(rec)
		h.sbx.set[rec.Netns] = true
		h.net.attached[rec.ContainerID] = rec.Sandbox
		h.ctrs.running[rec.UID] = testserver.Ports{}
	}
	h.k.records = map[string]*podRecord{} // a new process remembers only the files
	h.sbx.set["lab-node1-p-orphaned"] = true
	h.start(t)
	waitFor(t, "pod a Running with its old address", func() bool {
		p := h.get(t, "a")
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP == "10.0.0.9"
	})
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.net.adds != 0 {
		t.Errorf("adopted pod was attached again (%d ADDs)", h.net.adds)
	}
	if _, ok := h.net.attached[ContainerID(string(gone.UID))]; ok {
		t.Errorf("the deleted pod's attachment was not collected")
	}
	if h.sbx.set["lab-node1-p-orphaned"] || h.sbx.set["lab-node1-p-uid-gone"] {
		t.Errorf("orphaned namespaces left: %v", h.sbx.set)
	}
	if len(h.net.gcValid) != 1 || h.net.gcValid[0].Name != "a" {
		t.Errorf("CNI GC valid attachments %+v, want only a", h.net.gcValid)
	}
}

func TestReadinessProbe(t *testing.T) {
	p := pod("a", "node1")
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}},
		PeriodSeconds: 1,
	}
	h := newHarness(t, t.TempDir(), p)
	prober := h.k.Prober.(*fakeProber)
	h.start(t)
	waitFor(t, "pod a Running", func() bool { return h.get(t, "a").Status.Phase == corev1.PodRunning })
	time.Sleep(1500 * time.Millisecond)
	if st := podReadyStatus(h.get(t, "a")); st != corev1.ConditionFalse {
		t.Fatalf("Ready=%s while the probe port does not answer", st)
	}
	prober.mu.Lock()
	prober.ok[netip.MustParseAddrPort("10.0.0.1:80")] = true
	prober.mu.Unlock()
	waitFor(t, "pod a Ready", func() bool { return podReadyStatus(h.get(t, "a")) == corev1.ConditionTrue })
}

func TestReadinessTarget(t *testing.T) {
	p := pod("a", "node1")
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("nope")}}}
	if _, _, err := readinessTarget(p); err == nil {
		t.Error("unknown named port accepted")
	}
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	if _, _, err := readinessTarget(p); err == nil {
		t.Error("exec probe accepted")
	}
}

func podReadyStatus(p *corev1.Pod) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status
		}
	}
	return ""
}

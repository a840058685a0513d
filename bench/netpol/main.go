// Command netpol measures Sluice's isolation dataplane in a real lab (real
// API server, three nodes running sluice-agent, real packets):
//
//   - the time from a NetworkPolicy change (created, then deleted) to its
//     enforcement on every node, p50/p99, with P policies and N pods known
//     to the agents;
//   - the isolation rules, set elements and agent memory as N × P grow
//     (they must grow linearly);
//   - TCP throughput (iperf3) and new connections per second through a node
//     with the largest policy load against none, in the same run.
//
// The load pods are API objects bound to "ghost" nodes that no kubelet
// runs, with addresses in 10.131.0.0/16: every agent knows them (they fill
// the policies' peer sets), none has to wire them. The load policies select
// real pods on every node, so every agent compiles all of them. Run as root: `make
// bench-netpol`. It prints a Markdown report.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/iperf"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/netns"
)

var (
	sizesF     = flag.String("sizes", "2500x250,5000x500,10000x1000", "pods x policies, cumulative steps")
	iterations = flag.Int("iterations", 20, "policy changes (create + delete) measured per size")
	seconds    = flag.Int("seconds", 5, "duration of each throughput and connection-rate run")
	stateDir   = flag.String("state-dir", "/tmp/sluice-bench-netpol", "the benchmark lab's state directory")
	namespaces = 100
)

// loadApps is the number of app labels the load policies select; each node
// runs one real pod of each.
const loadApps = 4

const benchNS = "bench"

// The main goroutine keeps the main thread: netns.Do discards the threads it
// moves into pod namespaces, and a discarded main thread would stay in one,
// where the lab's `down` (which kills every process in its namespaces) would
// find this process.
func init() { runtime.LockOSThread() }

type env struct {
	lab     labrun.Lab
	cfg     *lab.Config
	kube    *kubernetes.Clientset
	server  podRef
	clients []podRef // one per node
}

type podRef struct {
	name, node, netns string
	ip                netip.Addr
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: the benchmark runs a lab")
	}
	var sizes [][2]int
	for _, s := range strings.Split(*sizesF, ",") {
		var n, p int
		if _, err := fmt.Sscanf(s, "%dx%d", &n, &p); err != nil || n <= 0 || p <= 0 {
			fail(fmt.Sprintf("--sizes %q: want PODSxPOLICIES[,…]", s))
		}
		sizes = append(sizes, [2]int{n, p})
	}
	self, _ := os.Executable()
	labBin := filepath.Join(filepath.Dir(self), "sluice-lab")
	if _, err := os.Stat(labBin); err != nil {
		labBin = "bin/sluice-lab"
	}
	e := &env{lab: labrun.Lab{Bin: labBin, StateDir: *stateDir}}
	defer e.sh("down")
	if err := e.up(); err != nil {
		fail(err.Error())
	}
	if err := e.run(sizes); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-netpol:", msg)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func (e *env) sh(args ...string) (string, error) {
	out, err := e.lab.Command(args...).CombinedOutput()
	return string(out), err
}

func (e *env) up() error {
	logf("lab up (3 nodes) in %s", *stateDir)
	port, err := labrun.FreePort()
	if err != nil {
		panic(err)
	}
	if out, err := e.sh("up", "--nodes", "3", "--api-port", strconv.Itoa(port)); err != nil {
		return fmt.Errorf("sluice-lab up: %v\n%s", err, out)
	}
	if e.cfg, err = lab.LoadConfig(*stateDir); err != nil {
		return err
	}
	if e.kube, err = labrun.Client(e.cfg.Kubeconfig(), 500, 1000); err != nil {
		return err
	}
	ctx := context.Background()
	if err := labrun.CreateNamespace(ctx, e.kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}); err != nil {
		return err
	}
	// The server on node2, a client on every node, and the load pods the
	// load policies select (loadApps per node, so every agent compiles
	// them), each with a named port.
	place := []struct{ name, node, role, app string }{{"server", "node2", "server", ""}, {"c1", "node1", "client", ""}, {"c2", "node2", "client", ""}, {"c3", "node3", "client", ""}}
	for k := range 3 * loadApps {
		place = append(place, struct{ name, node, role, app string }{fmt.Sprintf("l%d", k), fmt.Sprintf("node%d", 1+k%3), "load", fmt.Sprintf("a%d", k%loadApps)})
	}
	for _, p := range place {
		labels := map[string]string{"role": p.role}
		if p.app != "" {
			labels["app"] = p.app
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: benchNS, Labels: labels},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": p.node},
				Containers: []corev1.Container{{Name: "c", Image: "sluice-lab/testserver", Ports: []corev1.ContainerPort{{ContainerPort: 80}, {Name: "http", ContainerPort: 8080}}}}}}
		if _, err := e.kube.CoreV1().Pods(benchNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, p := range place {
		pod, err := labrun.RunningPod(ctx, e.kube, benchNS, p.name, deadline, 300*time.Millisecond)
		if err != nil {
			return err
		}
		ref := podRef{name: p.name, node: p.node, ip: netip.MustParseAddr(pod.Status.PodIP),
			netns: netns.Path(e.cfg.PodNetnsPrefix(p.node) + string(pod.UID)[:8])}
		switch p.role {
		case "server":
			e.server = ref
		case "client":
			e.clients = append(e.clients, ref)
		}
	}
	// Ghost nodes hold the load pods: Node objects without a kubelet.
	for i := 1; i <= 3; i++ {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ghost%d", i)}}
		if _, err := e.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("g%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}
		if err := labrun.CreateNamespace(ctx, e.kube, ns); err != nil {
			return err
		}
	}
	return nil
}

// parallel runs f(i) for i in [from, to) on 16 workers.
func parallel(from, to int, f func(i int) error) error {
	return labrun.Parallel(context.Background(), 16, from, to, f)
}

// ghostPod i lives in namespace g(i%100) on a ghost node, with the address
// 10.131.x.y and labels the load policies select on.
func (e *env) addGhostPods(from, to int) error {
	ctx := context.Background()
	forever := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	return parallel(from, to, func(i int) error {
		ns := fmt.Sprintf("g%d", i%namespaces)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: ns,
				Labels: map[string]string{"app": fmt.Sprintf("a%d", i%50), "tier": fmt.Sprintf("t%d", i%3)}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("ghost%d", 1+i%3), Tolerations: forever,
				Containers: []corev1.Container{{Name: "c", Image: "none", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		}
		p, err := e.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ip := netip.AddrFrom4([4]byte{10, 131, byte(i >> 8), byte(i)})
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
		_, err = e.kube.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
}

// addPolicies: policy i isolates one app of the load pods for ingress and
// admits one tier of the load pods from one team's namespaces on a named
// port (the peer sets hold load pods, shared between policies with the
// same peer).
func (e *env) addPolicies(from, to int) error {
	ctx := context.Background()
	port := intstr.FromString("http")
	return parallel(from, to, func(i int) error {
		ns := benchNS
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%loadApps)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", i%3)}},
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}}
		_, err := e.kube.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

type tableCount struct{ chains, rules, elements int }

// count reads node1's isolation objects (np-* and tenant-*) from the kernel.
func (e *env) count() (tableCount, error) {
	out, err := e.sh("exec", "node/node1", "--", "nft", "-j", "list", "table", "inet", "sluice")
	if err != nil {
		return tableCount{}, fmt.Errorf("%v: %s", err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return tableCount{}, err
	}
	ours := func(name string) bool { return strings.HasPrefix(name, "np-") || strings.HasPrefix(name, "tenant-") }
	var c tableCount
	for _, o := range doc.Nftables {
		for kind, raw := range o {
			var v struct {
				Name  string            `json:"name"`
				Chain string            `json:"chain"`
				Elem  []json.RawMessage `json:"elem"`
			}
			json.Unmarshal(raw, &v)
			switch kind {
			case "chain":
				if ours(v.Name) {
					c.chains++
				}
			case "rule":
				if ours(v.Chain) {
					c.rules++
				}
			case "set", "map":
				if ours(v.Name) {
					c.elements += len(v.Elem)
				}
			}
		}
	}
	return c, nil
}

// settle waits until node1's isolation table stops changing.
func (e *env) settle() (tableCount, error) {
	var last tableCount
	stable := 0
	for i := 0; i < 600; i++ {
		c, err := e.count()
		if err != nil {
			return c, err
		}
		if c == last && c.elements > 0 {
			stable++
			if stable == 3 {
				return c, nil
			}
		} else {
			stable = 0
		}
		last = c
		time.Sleep(time.Second)
	}
	return last, fmt.Errorf("node1's table did not settle")
}

// agentMemory: RSS and peak RSS (MiB) of node1's agent.
func (e *env) agentMemory() (rss, peak float64) {
	pid := proc.Running(e.cfg.PidFile("sluice-agent-node1"))
	return float64(host.StatusKB(pid, "VmRSS")) / 1024, float64(host.StatusKB(pid, "VmHWM")) / 1024
}

// probeOnce connects from a client pod to the server and reads its reply.
func probeOnce(c podRef, server netip.Addr, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := netns.Dial(ctx, c.netns, "tcp", netip.AddrPortFrom(server, 80).String())
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 128)
	n, _ := conn.Read(buf)
	return n > 0
}

// waitState returns, per client, how long after start its probes first
// showed want (allowed or denied). Each client runs 4 staggered probe
// loops with a 100 ms timeout, so the resolution is about 25 ms; a probe
// counts from the moment it started.
func (e *env) waitState(start time.Time, want bool, limit time.Duration) ([]time.Duration, error) {
	out := make([]time.Duration, len(e.clients))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for i, c := range e.clients {
		done := make(chan struct{})
		var once sync.Once
		for k := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(k) * 25 * time.Millisecond)
				for {
					select {
					case <-done:
						return
					default:
					}
					t := time.Now()
					if t.Sub(start) > limit {
						once.Do(func() {
							mu.Lock()
							errs = append(errs, c.name)
							mu.Unlock()
							close(done)
						})
						return
					}
					if probeOnce(c, e.server.ip, 100*time.Millisecond) == want {
						once.Do(func() { out[i] = t.Sub(start); close(done) })
						return
					}
					// Each loop starts a probe at most every 100 ms (with 4
					// loops staggered by 25 ms): an allowed probe returns in
					// about a millisecond, and probing flat out would take the
					// CPU the agents need to enforce the change.
					time.Sleep(time.Until(t.Add(100 * time.Millisecond)))
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		return out, fmt.Errorf("clients %v never saw allowed=%v within %s", errs, want, limit)
	}
	return out, nil
}

// enforcement toggles an egress deny for every client (each client's own
// node enforces it) and measures create → denied and delete → allowed on
// every node.
func (e *env) enforcement() (create, remove []time.Duration, err error) {
	ctx := context.Background()
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: "deny-clients"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}}
	for it := 0; it < *iterations; it++ {
		if _, err := e.waitState(time.Now(), true, 30*time.Second); err != nil {
			return nil, nil, err
		}
		t0 := time.Now()
		if _, err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			return nil, nil, err
		}
		d, err := e.waitState(t0, false, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		create = append(create, slices.Max(d))
		t0 = time.Now()
		if err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
			return nil, nil, err
		}
		d, err = e.waitState(t0, true, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		remove = append(remove, slices.Max(d))
	}
	return create, remove, nil
}

// connRate opens connections from c1 (node1) to the server (node2)
// one after another for the run's duration.
func (e *env) connRate() (perSec float64, mean time.Duration) {
	end := time.Now().Add(time.Duration(*seconds) * time.Second)
	n := 0
	var total time.Duration
	for time.Now().Before(end) {
		t := time.Now()
		if probeOnce(e.clients[0], e.server.ip, time.Second) {
			n++
			total += time.Since(t)
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(n) / float64(*seconds), total / time.Duration(n)
}

// throughput runs iperf3 from c1 (node1) to the server (node2).
func (e *env) throughput() (float64, error) {
	return iperf.Gbps(exec.Command("nsenter", "--net="+e.server.netns, "iperf3", "-s", "-1", "-p", "5201"),
		exec.Command("nsenter", "--net="+e.clients[0].netns, "iperf3", "-c", e.server.ip.String(), "-p", "5201",
			"-t", strconv.Itoa(*seconds), "-J"),
		"iperf3")
}

// serverPolicy makes the server isolated for ingress with one rule admitting
// the clients, so that its traffic runs through the isolation chains.
func (e *env) serverPolicy(on bool) error {
	ctx := context.Background()
	if !on {
		err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Delete(ctx, "server", metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: "server"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}}}}
	_, err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, np, metav1.CreateOptions{})
	return err
}

type sizeResult struct {
	pods, policies int
	count          tableCount
	rss, peak      float64
	create, remove []time.Duration
	load           time.Duration
}

func (e *env) run(sizes [][2]int) error {
	// Anchor: no policies at all.
	logf("anchor: throughput and connection rate without policies")
	tpNone, err := e.throughput()
	if err != nil {
		return err
	}
	rateNone, latNone := e.connRate()

	var results []sizeResult
	pods, policies := 0, 0
	for _, s := range sizes {
		logf("loading %d pods and %d policies", s[0], s[1])
		t0 := time.Now()
		if err := e.addGhostPods(pods, s[0]); err != nil {
			return err
		}
		if err := e.addPolicies(policies, s[1]); err != nil {
			return err
		}
		pods, policies = s[0], s[1]
		c, err := e.settle()
		if err != nil {
			return err
		}
		r := sizeResult{pods: pods, policies: policies, count: c, load: time.Since(t0)}
		logf("measuring enforcement latency (%d changes)", *iterations)
		if r.create, r.remove, err = e.enforcement(); err != nil {
			return err
		}
		r.rss, r.peak = e.agentMemory()
		results = append(results, r)
	}

	logf("throughput and connection rate with %d policies", policies)
	if err := e.serverPolicy(true); err != nil {
		return err
	}
	if _, err := e.waitState(time.Now(), true, 30*time.Second); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	tpLoad, err := e.throughput()
	if err != nil {
		return err
	}
	rateLoad, latLoad := e.connRate()

	hostname, _ := os.Hostname()
	fmt.Printf("## Isolation (bench/netpol)\n\n`make bench-netpol` (`bench-netpol --sizes %s --iterations %d --seconds %d`) on %s: %d vCPU, kernel %s, %s, %s.\n\n",
		*sizesF, *iterations, *seconds, hostname, runtime.NumCPU(), host.Kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("A 3-node lab; load pods are API objects on kubelet-less nodes (every agent knows them); load policies (in one namespace) each isolate one of %d apps whose pods run on every node, and admit one tier of the load pods of one team's namespaces on a named port. Enforcement: an egress deny for a client pod on every node is created, then deleted; the time is until the client on the *last* node sees it (real TCP probes every ~25 ms).\n\n", loadApps)
	fmt.Printf("| pods | policies | create → enforced everywhere p50 / p99 | delete → lifted everywhere p50 / p99 | isolation chains | rules | set/map elements | agent RSS / peak (MiB) |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %d | %d | %s / %s | %s / %s | %d | %d | %d | %.0f / %.0f |\n", r.pods, r.policies,
			ms(stats.FloorQuantile(r.create, .5)), ms(stats.FloorQuantile(r.create, .99)), ms(stats.FloorQuantile(r.remove, .5)), ms(stats.FloorQuantile(r.remove, .99)),
			r.count.chains, r.count.rules, r.count.elements, r.rss, r.peak)
	}
	if len(results) > 1 {
		a, b := results[0], results[len(results)-1]
		fmt.Printf("\nGrowth from the first to the last size: pods × %.1f, policies × %.1f → rules × %.2f, elements × %.2f, agent RSS × %.2f (linear growth would be ≈ %.1f for elements).\n",
			float64(b.pods)/float64(a.pods), float64(b.policies)/float64(a.policies),
			float64(b.count.rules)/float64(a.count.rules), float64(b.count.elements)/float64(a.count.elements), b.rss/a.rss,
			float64(b.pods)/float64(a.pods))
	}
	fmt.Printf("\n| through node2, client on node1 | no policies | %d policies + one selecting the server | ratio (target ≥ 0.95) |\n|---|---|---|---|\n", policies)
	fmt.Printf("| TCP throughput (iperf3, Gbit/s) | %.2f | %.2f | %.2f |\n", tpNone, tpLoad, tpLoad/tpNone)
	fmt.Printf("| new connections / s (sequential) | %.0f | %.0f | %.2f |\n", rateNone, rateLoad, rateLoad/rateNone)
	fmt.Printf("| mean connect + reply | %s | %s | |\n", latNone.Round(10*time.Microsecond), latLoad.Round(10*time.Microsecond))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

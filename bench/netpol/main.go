// Command netpol measures Sluice's isolation dataplane in a real lab (real
// API server, three nodes running sluice-agent, real packets):
//
//   - the time from a NetworkPolicy change (created, then deleted) to its
//     enforcement on every node, p50/p99, with P policies and N pods known
//     to the agents;
//   - the isolation rules, set elements and agent memory as N × P grow
//     (they must grow linearly);
//   - the per-packet cost of isolation for a pod selected by many policies:
//     TCP throughput (iperf3) and new connections per second from a client on
//     node1 to a server on node2 selected by 1, 100 and 1000 policies (only
//     the last in the server's chain admits the client), against the same
//     server selected by none (the anchor), in the same run at the largest
//     load, --repeats times with the order reversed every other repeat.
//
// A change counts as enforced (or lifted) on a node at the first of two
// consecutive probes from that node's client that agree with it. Raw samples
// and the report go to bench/results/netpol-<UTC time>-<commit>.txt;
// bench/docgen puts the report into docs/performance.md.
//
// The load pods are API objects bound to "ghost" nodes that no kubelet
// runs, with addresses in 10.131.0.0/16: every agent knows them (they fill
// the policies' peer sets), none has to wire them. The load policies select
// real pods on every node, so every agent compiles all of them. Run as root: `make
// bench-netpol`. It prints a Markdown report.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/iperf"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/netns"
)

var (
	sizesF     = flag.String("sizes", "2500x250,5000x500,10000x1000", "pods x policies, cumulative steps")
	iterations = flag.Int("iterations", 20, "policy changes (create + delete) measured per size and repeat")
	repeats    = flag.Int("repeats", 3, "repeats of the enforcement measurement and of the per-packet runs")
	selectingF = flag.String("selecting", "1,100,1000", "numbers of policies selecting the server in the per-packet runs (0, the anchor, is always measured)")
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
	res     *results.File
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
	var selecting []int
	for _, f := range strings.Split(*selectingF, ",") {
		k, err := strconv.Atoi(f)
		if err != nil || k < 1 {
			fail(fmt.Sprintf("--selecting %q: want positive numbers", *selectingF))
		}
		selecting = append(selecting, k)
	}
	root, err := image.FindSource(".")
	if err != nil {
		fail(err.Error())
	}
	res, err := results.Open(root, "netpol")
	if err != nil {
		fail(err.Error())
	}
	defer res.Close()
	self, _ := os.Executable()
	labBin := filepath.Join(filepath.Dir(self), "sluice-lab")
	if _, err := os.Stat(labBin); err != nil {
		labBin = filepath.Join(root, "bin", "sluice-lab")
	}
	e := &env{res: res, lab: labrun.Lab{Bin: labBin, StateDir: *stateDir}}
	rawLog = res
	down := func() {
		logf("lab down")
		if out, err := e.sh("down"); err != nil {
			logf("lab down: %v: %s", err, out)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		logf("interrupted: cleaning up")
		down()
		os.Exit(1)
	}()
	err = e.up()
	if err == nil {
		err = e.run(sizes, selecting)
	}
	down()
	if err != nil {
		logf("FAILED: %v", err)
		fail(err.Error())
	}
	fmt.Fprintf(os.Stderr, "raw output: %s\n", res.Path)
}

var rawLog *results.File

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-netpol:", msg)
	os.Exit(1)
}

func logf(format string, a ...any) {
	if rawLog != nil {
		rawLog.Logf(format, a...)
		return
	}
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
	return parallel(from, to, func(i int) error {
		return labrun.CreateLoadPod(ctx, e.kube, i, namespaces)
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

// settle waits until the node's isolation table stops changing.
func (e *env) settle(node string) (labrun.TableCount, error) {
	return e.lab.Settle(node, 3, time.Second, 10*time.Minute)
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

// waitState returns, per client, how long after start its probes showed
// want (allowed or denied) for the first of two consecutive probes: probes
// are numbered in the order they start, and a state counts once probes k
// and k+1 both showed it and every probe before them has finished (a single
// lucky or unlucky probe confirms nothing). The time is probe k's start.
// Each client runs 4 loops staggered by 25 ms, each starting a probe at most
// every 100 ms (100 ms timeout), so probes start about every 25 ms.
func (e *env) waitState(start time.Time, want bool, limit time.Duration) ([]time.Duration, error) {
	out := make([]time.Duration, len(e.clients))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for i, c := range e.clients {
		done := make(chan struct{})
		var once sync.Once
		var pmu sync.Mutex
		var starts []time.Time
		var got []int // per probe: 0 running, 1 want, 2 not want
		confirm := func() (time.Time, bool) {
			for k := 0; k+1 < len(got); k++ {
				if got[k] == 0 || got[k+1] == 0 {
					return time.Time{}, false // an earlier probe is still out
				}
				if got[k] == 1 && got[k+1] == 1 {
					return starts[k], true
				}
			}
			return time.Time{}, false
		}
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
					pmu.Lock()
					n := len(got)
					starts, got = append(starts, t), append(got, 0)
					pmu.Unlock()
					ok := probeOnce(c, e.server.ip, 100*time.Millisecond) == want
					pmu.Lock()
					got[n] = 2
					if ok {
						got[n] = 1
					}
					first, confirmed := confirm()
					pmu.Unlock()
					if confirmed {
						once.Do(func() { out[i] = first.Sub(start); close(done) })
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
		return out, fmt.Errorf("clients %v never saw allowed=%v twice in a row within %s", errs, want, limit)
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

// throughput runs iperf3 from c1 (node1) to the server (node2); its
// report goes to the raw output as what.
func (e *env) throughput(what string) (float64, error) {
	g, raw, err := iperf.GbpsRaw(exec.Command("nsenter", "--net="+e.server.netns, "iperf3", "-s", "-1", "-p", "5201"),
		exec.Command("nsenter", "--net="+e.clients[0].netns, "iperf3", "-c", e.server.ip.String(), "-p", "5201",
			"-t", strconv.Itoa(*seconds), "-J"),
		"iperf3")
	e.res.Raw(what, raw)
	return g, err
}

// addSelecting creates, for each k, k policies that select pods labelled
// many=k for ingress: k-1 admit peers no pod has (distinct peer sets, so
// one rule and one set lookup each) and the last, by name, admits the
// clients. In the server's chain the rule that admits the client comes
// after k-1 others.
func (e *env) addSelecting(ks []int) error {
	ctx := context.Background()
	for _, k := range ks {
		err := parallel(0, k, func(i int) error {
			name, from := fmt.Sprintf("many-%d-%04d", k, i), map[string]string{"peer": fmt.Sprintf("x-%d-%d", k, i)}
			if i == k-1 {
				name, from = fmt.Sprintf("many-%d-zz-admit", k), map[string]string{"role": "client"}
			}
			np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: name},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"many": strconv.Itoa(k)}},
					Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: from}}}}}}}
			_, err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, np, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// selectServer labels the server many=k (0: no policy selects it) and
// waits until node2's table has settled and the client is admitted (two
// probes in a row).
func (e *env) selectServer(k int) error {
	ctx := context.Background()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"many":"%d"}}}`, k)
	if _, err := e.kube.CoreV1().Pods(benchNS).Patch(ctx, "server", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	if _, err := e.settle("node2"); err != nil {
		return err
	}
	_, err := e.waitState(time.Now(), true, 30*time.Second)
	return err
}

type sizeResult struct {
	pods, policies int
	count          labrun.TableCount
	rss, peak      float64
	create, remove [][]time.Duration // per repeat
	load           time.Duration
}

type packetResult struct {
	k, run    int
	gbps, cps float64
	mean      time.Duration
}

func (e *env) run(sizes [][2]int, selecting []int) error {
	var results_ []sizeResult
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
		c, err := e.settle("node1")
		if err != nil {
			return err
		}
		r := sizeResult{pods: pods, policies: policies, count: c, load: time.Since(t0)}
		e.res.Sample("load pods=%d policies=%d seconds=%.1f chains=%d rules=%d elements=%d", pods, policies, r.load.Seconds(), c.Chains, c.Rules, c.Elements)
		for rep := range *repeats {
			logf("measuring enforcement latency (%d changes), repeat %d", *iterations, rep+1)
			cr, rm, err := e.enforcement()
			if err != nil {
				return err
			}
			e.res.Sample("enforce pods=%d policies=%d repeat=%d op=create ms=%s", pods, policies, rep+1, msList(cr))
			e.res.Sample("enforce pods=%d policies=%d repeat=%d op=delete ms=%s", pods, policies, rep+1, msList(rm))
			r.create, r.remove = append(r.create, cr), append(r.remove, rm)
		}
		r.rss, r.peak = e.agentMemory()
		e.res.Sample("memory pods=%d policies=%d rss_mib=%.1f peak_mib=%.1f", pods, policies, r.rss, r.peak)
		results_ = append(results_, r)
	}

	logf("per-packet cost: server selected by 0 (anchor) and %v policies", selecting)
	if err := e.addSelecting(selecting); err != nil {
		return err
	}
	ks := append([]int{0}, selecting...)
	var packets []packetResult
	for rep := range *repeats {
		for _, k := range results.Rotate(rep, ks) {
			if err := e.selectServer(k); err != nil {
				return fmt.Errorf("server selected by %d: %w", k, err)
			}
			time.Sleep(time.Second)
			g, err := e.throughput(fmt.Sprintf("iperf3 selecting=%d run=%d", k, rep+1))
			if err != nil {
				return err
			}
			cps, mean := e.connRate()
			e.res.Sample("packet selecting=%d run=%d gbps=%.3f conn_per_s=%.1f mean_us=%d", k, rep+1, g, cps, mean.Microseconds())
			logf("  selected by %d, run %d: %.2f Gbit/s, %.0f conn/s", k, rep+1, g, cps)
			packets = append(packets, packetResult{k, rep, g, cps, mean})
		}
	}
	e.res.Report(e.report(results_, ks, packets))
	return nil
}

func (e *env) report(rs []sizeResult, ks []int, packets []packetResult) string {
	var b strings.Builder
	hostname, _ := os.Hostname()
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (%s), kernel %s, %s. A 3-node lab; load pods are API objects on kubelet-less nodes (every agent knows them); load policies (in one namespace) each isolate one of %d apps whose pods run on every node, and admit one tier of the load pods of one team's namespaces on a named port.\n\n",
		hostname, runtime.NumCPU(), results.CPUModel(), host.Kernel(), runtime.Version(), loadApps)
	fmt.Fprintf(&b, "#### Policy change → enforced on every node (ms; median (min–max) over %d repeats of %d changes each)\n\n", *repeats, *iterations)
	b.WriteString("An egress deny for a client pod on every node is created, then deleted; the time is until the client on the *last* node sees it, confirmed by two consecutive probes (real TCP connections, one about every 25 ms per client, counted from the first of the two). p99 is the sample at ⌊(n−1)·0.99⌋ of each repeat's changes.\n\n")
	b.WriteString("| pods | policies | create → enforced p50 | p99 | delete → lifted p50 | p99 | isolation chains | rules | set/map elements | agent RSS / peak (MiB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	q := func(ds [][]time.Duration, p float64) string {
		var v []float64
		for _, d := range ds {
			v = append(v, stats.Millis(stats.FloorQuantile(d, p)))
		}
		return results.Spread("%.0f", v)
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %d | %d | %d | %.0f / %.0f |\n", r.pods, r.policies,
			q(r.create, .5), q(r.create, .99), q(r.remove, .5), q(r.remove, .99), r.count.Chains, r.count.Rules, r.count.Elements, r.rss, r.peak)
	}
	if len(rs) > 1 {
		a, z := rs[0], rs[len(rs)-1]
		fmt.Fprintf(&b, "\nGrowth from the first to the last size: pods × %.1f, policies × %.1f → rules × %.2f, elements × %.2f, agent RSS × %.2f.\n",
			float64(z.pods)/float64(a.pods), float64(z.policies)/float64(a.policies),
			float64(z.count.Rules)/float64(a.count.Rules), float64(z.count.Elements)/float64(a.count.Elements), z.rss/a.rss)
	}
	last := rs[len(rs)-1]
	fmt.Fprintf(&b, "\n#### Per-packet cost of many policies selecting one pod (client on node1 → server on node2, at %d pods × %d policies; median (min–max) over %d runs)\n\n", last.pods, last.policies, *repeats)
	b.WriteString("The server is selected by k policies for ingress: k−1 admit peers no pod has, the last (by name, so last in the server's chain) admits the client. k = 0 is the anchor: no policy selects the server. Each run measures every k, in reverse order every other run; ratios are of each run's figure to the same run's anchor.\n\n")
	fmt.Fprintf(&b, "| policies selecting the server | TCP throughput (iperf3, %d s, Gbit/s) | / anchor | new connections / s (sequential, %d s) | / anchor | mean connect + reply (µs) |\n|---|---|---|---|---|---|\n", *seconds, *seconds)
	for _, k := range ks {
		var g, c, m, gr, cr []float64
		for _, p := range packets {
			if p.k != k {
				continue
			}
			g, c, m = append(g, p.gbps), append(c, p.cps), append(m, float64(p.mean.Microseconds()))
			for _, a := range packets {
				if a.k == 0 && a.run == p.run {
					gr, cr = append(gr, results.Ratio(p.gbps, a.gbps)), append(cr, results.Ratio(p.cps, a.cps))
				}
			}
		}
		name := strconv.Itoa(k)
		if k == 0 {
			name = "0 (anchor)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", name, results.Spread("%.2f", g), results.Spread("%.2f", gr), results.Spread("%.0f", c), results.Spread("%.2f", cr), results.Spread("%.0f", m))
	}
	b.WriteString("\nTarget: throughput and connection rate with policies ≥ 0.95 of the anchor's.\n")
	return b.String()
}

func msList(d []time.Duration) string {
	s := make([]string, len(d))
	for i, x := range d {
		s[i] = strconv.FormatFloat(stats.Millis(x), 'f', 1, 64)
	}
	return strings.Join(s, ",")
}

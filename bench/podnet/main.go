// Command podnet measures Sluice's pod network as the agent ships, against
// its anchors, in one run on one machine:
//
//   - CNI ADD and DEL latency (p50, p99) at 1 and 20 concurrent calls, through
//     the real path: libcni execs the node's installed sluice-cni with the
//     node's conflist, which calls the real sluice-agent process over its
//     unix socket; the agent allocates the address, wires the routed veth and
//     answers only once its table owner has synced the pod network's base
//     and the isolation feature with the pod (one transaction). The agent
//     runs on a node of a sluice-lab (real kube-apiserver, controller,
//     informers), with no load and with N pods × P NetworkPolicies in the
//     API; each pod added is a real API object bound to the node, selected
//     by the load policies, as a kubelet's pod would be. The anchor is the
//     reference bridge + host-local plugins driven through the same libcni
//     calls in a namespace of their own.
//   - TCP throughput (iperf3) between pods the agents wired: on one node
//     against a bare veth pair, across the two nodes over Sluice's VXLAN
//     overlay (through the lab's fabric bridge) against a bare VXLAN link
//     between two namespaces on the same fabric.
//
// The lab's kubelets are stopped once the lab is up: this program is the
// runtime (it creates the pods' objects and namespaces and calls CNI), so
// nothing else wires pods. Every cell is repeated (--repeats), Sluice and
// its anchor alternating which goes first; the report gives the median and
// the spread (min–max) over repeats. Raw samples, iperf3's reports and the
// report go to bench/results/podnet-<UTC time>-<commit>.txt; bench/docgen
// puts the report into docs/performance.md. Run as root: `make bench-podnet`.
package main

import (
	"context"
	"flag"
	"fmt"
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

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/iperf"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/netns"
)

var (
	sizesF   = flag.String("sizes", "0,10000x1000", "loads at which CNI latency is measured: 0 (none) or PODSxPOLICIES, cumulative steps")
	calls    = flag.Int("calls", 200, "CNI ADDs (and DELs) per cell")
	concF    = flag.String("concurrency", "1,20", "concurrent CNI calls")
	repeats  = flag.Int("repeats", 3, "repeats of every cell and throughput pair (Sluice and anchor alternating which goes first)")
	seconds  = flag.Int("seconds", 5, "iperf3 duration per throughput run")
	tput     = flag.Bool("throughput", true, "measure throughput")
	settle   = flag.Duration("settle", 3*time.Second, "pause after creating or deleting a cell's pod objects (the agents compile them) before timing")
	stateDir = flag.String("state-dir", "/tmp/sluice-bench-podnet", "the benchmark lab's state directory")
	keepLab  = flag.Bool("keep-lab", false, "leave the lab up afterwards (sluice-lab --state-dir DIR down removes it)")
)

const (
	benchNS  = "bench"
	loadApps = 4 // app labels the load policies select; each added pod has one
	refConf  = "reference bridge + host-local"
	sluice   = "Sluice (sluice-cni → sluice-agent)"
	refNetns = "sb-pn-ref"
	prefix   = "sb-pn-" // every namespace this program makes
)

// The main goroutine keeps the main thread: netns.Do discards the threads it
// moves into namespaces, and a discarded main thread would leave this
// process inside one, where the lab's `down` would find and kill it.
func init() { runtime.LockOSThread() }

type env struct {
	res   *results.File
	lab   labrun.Lab
	cfg   *lab.Config
	kube  *kubernetes.Clientset
	work  string
	cache string
	ref   *libcni.NetworkConfigList
	refB  string // the reference plugins' directory
	nets  map[string]*libcni.NetworkConfigList
	ghost int // load pods and policies so far
	pols  int

	mu      sync.Mutex
	cleanup []func()
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: the benchmark runs a lab and makes network namespaces")
	}
	sizes, err := parseSizes(*sizesF)
	if err != nil {
		fail(err.Error())
	}
	var concs []int
	for _, c := range strings.Split(*concF, ",") {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			fail(fmt.Sprintf("--concurrency %q", *concF))
		}
		concs = append(concs, n)
	}
	root, err := image.FindSource(".")
	if err != nil {
		fail(err.Error())
	}
	res, err := results.Open(root, "podnet")
	if err != nil {
		fail(err.Error())
	}
	defer res.Close()
	self, _ := os.Executable()
	labBin := filepath.Join(filepath.Dir(self), "sluice-lab")
	if _, err := os.Stat(labBin); err != nil {
		labBin = filepath.Join(root, "bin", "sluice-lab")
	}
	e := &env{res: res, lab: labrun.Lab{Bin: labBin, StateDir: *stateDir}, nets: map[string]*libcni.NetworkConfigList{}}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		res.Logf("interrupted: cleaning up")
		e.clean()
		os.Exit(1)
	}()
	err = e.run(sizes, concs)
	e.clean()
	if err != nil {
		res.Logf("FAILED: %v", err)
		fail(err.Error())
	}
	fmt.Fprintf(os.Stderr, "raw output: %s\n", res.Path)
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench-podnet:", msg)
	os.Exit(1)
}

func parseSizes(s string) ([][2]int, error) {
	var out [][2]int
	for _, f := range strings.Split(s, ",") {
		if f == "0" {
			out = append(out, [2]int{0, 0})
			continue
		}
		var n, p int
		if _, err := fmt.Sscanf(f, "%dx%d", &n, &p); err != nil || n <= 0 || p <= 0 {
			return nil, fmt.Errorf("--sizes %q: want 0 or PODSxPOLICIES[,…]", f)
		}
		out = append(out, [2]int{n, p})
	}
	return out, nil
}

func (e *env) defer_(f func()) {
	e.mu.Lock()
	e.cleanup = append(e.cleanup, f)
	e.mu.Unlock()
}

// clean undoes everything in reverse, once.
func (e *env) clean() {
	e.mu.Lock()
	fs := e.cleanup
	e.cleanup = nil
	e.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func (e *env) run(sizes [][2]int, concs []int) error {
	ctx := context.Background()
	if err := e.up(ctx); err != nil {
		return err
	}
	var tp []tputSample
	if *tput {
		var err error
		if tp, err = e.throughput(ctx); err != nil {
			return err
		}
	}
	var cells []cell
	for si, s := range sizes {
		if err := e.load(ctx, s[0], s[1]); err != nil {
			return err
		}
		for r := range *repeats {
			for _, conc := range concs {
				for _, impl := range results.Order(r+si, sluice, refConf) {
					c, err := e.cniCell(ctx, impl, s, conc, r)
					if err != nil {
						return fmt.Errorf("%s, load %dx%d, concurrency %d: %w", impl, s[0], s[1], conc, err)
					}
					cells = append(cells, c)
				}
			}
		}
	}
	e.res.Report(report(sizes, concs, cells, tp))
	return nil
}

// up brings up a 2-node lab running Sluice, stops its kubelets and prepares
// the reference plugins' namespace.
func (e *env) up(ctx context.Context) error {
	work, err := os.MkdirTemp("", "sluice-bench-podnet-")
	if err != nil {
		return err
	}
	e.work, e.cache = work, filepath.Join(work, "cni-cache")
	e.defer_(func() { os.RemoveAll(work) })
	port, err := labrun.FreePort()
	if err != nil {
		return err
	}
	e.res.Logf("lab up (2 nodes) in %s", *stateDir)
	if !*keepLab {
		e.defer_(func() {
			e.res.Logf("lab down")
			if out, err := e.lab.Command("down").CombinedOutput(); err != nil {
				e.res.Logf("lab down: %v: %s", err, out)
			}
		})
	}
	if out, err := e.lab.Command("up", "--nodes", "2", "--api-port", strconv.Itoa(port)).CombinedOutput(); err != nil {
		return fmt.Errorf("sluice-lab up: %v\n%s", err, out)
	}
	if e.cfg, err = lab.LoadConfig(*stateDir); err != nil {
		return err
	}
	if e.kube, err = labrun.Client(e.cfg.Kubeconfig(), 500, 1000); err != nil {
		return err
	}
	// This program is the nodes' runtime from now on.
	for _, n := range e.cfg.NodeNames() {
		if err := proc.Stop(e.cfg.PidFile("kubelet-"+n), 10*time.Second); err != nil {
			return fmt.Errorf("stop kubelet-%s: %w", n, err)
		}
		conf, err := nodeConf(e.cfg.CNIConfDir(n))
		if err != nil {
			return err
		}
		e.nets[n] = conf
	}
	if err := labrun.CreateNamespace(ctx, e.kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}); err != nil {
		return err
	}
	if err := labrun.WaitServiceAccount(ctx, e.kube, benchNS, 150, 200*time.Millisecond); err != nil {
		return fmt.Errorf("namespace %s's service account: %w", benchNS, err)
	}

	// The reference plugins run in a namespace of their own (their bridge,
	// iptables rules and host-local state stay there).
	if e.refB, err = kubebuild.EnsureReferencePlugins(ctx, e.res.Log); err != nil {
		return err
	}
	if err := e.netnsAdd(refNetns); err != nil {
		return err
	}
	e.ref, err = libcni.ConfListFromBytes(fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"ref","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(work, "host-local")))
	return err
}

// nodeConf is the node's conflist as the agent installed it.
func nodeConf(dir string) (*libcni.NetworkConfigList, error) {
	for range 100 {
		files, _ := filepath.Glob(filepath.Join(dir, "*.conflist"))
		if len(files) > 0 {
			slices.Sort(files)
			return libcni.ConfListFromFile(files[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("no conflist in %s", dir)
}

// netnsAdd makes a namespace (lo up) that clean removes.
func (e *env) netnsAdd(name string) error {
	if err := host.NetnsAdd(name); err != nil {
		return err
	}
	e.defer_(func() { host.NetnsDel(name) })
	return host.Sh("ip", "-n", name, "link", "set", "lo", "up")
}

// load adds ghost pods and policies up to pods × policies, as bench/netpol
// does: pods on kubelet-less nodes in 100 namespaces, each policy isolating
// one of loadApps apps in namespace bench (every pod this program adds has
// one) and admitting one tier of one team's pods on a named port.
func (e *env) load(ctx context.Context, pods, policies int) error {
	if pods <= e.ghost && policies <= e.pols {
		return nil
	}
	e.res.Logf("loading %d pods and %d NetworkPolicies", pods, policies)
	t0 := time.Now()
	if e.ghost == 0 {
		for i := 1; i <= 3; i++ {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ghost%d", i)}}
			if _, err := e.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
		}
		for i := range 100 {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("g%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}
			if err := labrun.CreateNamespace(ctx, e.kube, ns); err != nil {
				return err
			}
		}
	}
	err := labrun.Parallel(ctx, 16, e.ghost, pods, func(i int) error {
		return labrun.CreateLoadPod(ctx, e.kube, i, 100)
	})
	if err != nil {
		return err
	}
	port := intstr.FromString("http")
	err = labrun.Parallel(ctx, 16, e.pols, policies, func(i int) error {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%loadApps)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", i%3)}},
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}}}}}
		_, err := e.kube.NetworkingV1().NetworkPolicies(benchNS).Create(ctx, np, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	e.ghost, e.pols = max(e.ghost, pods), max(e.pols, policies)
	// node1's agent has compiled the load once its table stops changing
	// (the load pods fill its peer sets).
	c, err := e.lab.Settle("node1", 3, time.Second, 10*time.Minute)
	if err != nil {
		return err
	}
	e.res.Logf("loaded in %s; node1's isolation: %d chains, %d rules, %d elements", time.Since(t0).Round(time.Second), c.Chains, c.Rules, c.Elements)
	e.res.Sample("load pods=%d policies=%d seconds=%.1f chains=%d rules=%d elements=%d", pods, policies, time.Since(t0).Seconds(), c.Chains, c.Rules, c.Elements)
	return nil
}

// apiPod is a pod bound to node as the scheduler would bind it; no kubelet
// runs it (this program is its runtime).
func apiPod(name, node string, labels map[string]string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &zero,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, // the stopped kubelet's node turns NotReady
			Containers: []corev1.Container{{Name: "c", Image: "none",
				Ports: []corev1.ContainerPort{{ContainerPort: 80}, {Name: "http", ContainerPort: 8080}}}}}}
}

func (e *env) deletePods(ctx context.Context, names []string) error {
	zero := int64(0)
	return labrun.Parallel(ctx, 16, 0, len(names), func(i int) error {
		err := e.kube.CoreV1().Pods(benchNS).Delete(ctx, names[i], metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

func runtimeConf(id, nsName, podName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netns.Path(nsName), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", benchNS}, {"K8S_POD_NAME", podName}, {"K8S_POD_INFRA_CONTAINER_ID", id}}}
}

// cni is libcni for the node's Sluice network, or the reference plugins
// (run inside their own namespace).
func (e *env) add(ctx context.Context, impl, node string, rt *libcni.RuntimeConf) (string, error) {
	if impl == refConf {
		cni := libcni.NewCNIConfigWithCacheDir([]string{e.refB}, e.cache, nil)
		return "", netns.Do(netns.Path(refNetns), func() error { _, err := cni.AddNetworkList(ctx, e.ref, rt); return err })
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{e.cfg.CNIBinDir(node)}, e.cache, nil)
	r, err := cni.AddNetworkList(ctx, e.nets[node], rt)
	if err != nil {
		return "", err
	}
	res, err := libcniResultIP(r)
	return res, err
}

func (e *env) del(ctx context.Context, impl, node string, rt *libcni.RuntimeConf) error {
	if impl == refConf {
		cni := libcni.NewCNIConfigWithCacheDir([]string{e.refB}, e.cache, nil)
		return netns.Do(netns.Path(refNetns), func() error { return cni.DelNetworkList(ctx, e.ref, rt) })
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{e.cfg.CNIBinDir(node)}, e.cache, nil)
	return cni.DelNetworkList(ctx, e.nets[node], rt)
}

type cell struct {
	impl      string
	size      [2]int
	conc, rep int
	add, del  []time.Duration
}

// cniCell times n ADDs and then n DELs at the given concurrency, each into
// a fresh namespace. For Sluice each call is for a pod object created
// beforehand on node1 (as a kubelet's pod exists before its sandbox), with
// an app label the load policies select; the objects are deleted after the
// DELs. Neither creating nor deleting them is timed.
func (e *env) cniCell(ctx context.Context, impl string, size [2]int, conc, rep int) (cell, error) {
	c := cell{impl: impl, size: size, conc: conc, rep: rep}
	tag := fmt.Sprintf("%d-%d-%d-%s", size[0], conc, rep, map[string]string{sluice: "s", refConf: "r"}[impl])
	e.res.Logf("CNI %s, load %dx%d, concurrency %d, repeat %d: %d ADDs, %d DELs", impl, size[0], size[1], conc, rep+1, *calls, *calls)
	names := make([]string, *calls)
	for i := range names {
		names[i] = fmt.Sprintf("c-%s-%d", tag, i)
		if err := host.NetnsAdd(prefix + names[i]); err != nil {
			return c, err
		}
	}
	defer func() {
		for _, n := range names {
			host.NetnsDel(prefix + n)
		}
	}()
	if impl == sluice {
		err := labrun.Parallel(ctx, 16, 0, len(names), func(i int) error {
			_, err := e.kube.CoreV1().Pods(benchNS).Create(ctx, apiPod(names[i], "node1", map[string]string{"app": fmt.Sprintf("a%d", i%loadApps), "role": "cni"}), metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return c, err
		}
		defer func() {
			e.deletePods(ctx, names)
			time.Sleep(*settle)
		}()
		time.Sleep(*settle)
	}
	rt := func(i int) *libcni.RuntimeConf { return runtimeConf("bench-"+names[i], prefix+names[i], names[i]) }
	var err error
	if c.add, err = timed(*calls, conc, func(i int) error { _, err := e.add(ctx, impl, "node1", rt(i)); return err }); err != nil {
		return c, fmt.Errorf("ADD: %w", err)
	}
	if c.del, err = timed(*calls, conc, func(i int) error { return e.del(ctx, impl, "node1", rt(i)) }); err != nil {
		return c, fmt.Errorf("DEL: %w", err)
	}
	e.res.Sample("cni impl=%q pods=%d policies=%d concurrency=%d repeat=%d op=ADD ms=%s", impl, size[0], size[1], conc, rep+1, msList(c.add))
	e.res.Sample("cni impl=%q pods=%d policies=%d concurrency=%d repeat=%d op=DEL ms=%s", impl, size[0], size[1], conc, rep+1, msList(c.del))
	e.res.Logf("  ADD p50/p99 %.1f/%.1f ms, DEL p50/p99 %.1f/%.1f ms", stats.Millis(stats.NearestRank(c.add, 50)), stats.Millis(stats.NearestRank(c.add, 99)),
		stats.Millis(stats.NearestRank(c.del, 50)), stats.Millis(stats.NearestRank(c.del, 99)))
	return c, nil
}

// timed runs f(0…n-1) with conc calls in flight and returns each call's
// duration; the first error, if any.
func timed(n, conc int, f func(i int) error) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			if err := f(i); err != nil {
				errs <- err
			}
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	close(errs)
	return lat, <-errs
}

func msList(d []time.Duration) string {
	s := make([]string, len(d))
	for i, x := range d {
		s[i] = strconv.FormatFloat(stats.Millis(x), 'f', 3, 64)
	}
	return strings.Join(s, ",")
}

type tputSample struct {
	path, impl string
	run        int
	gbps       float64
}

// throughput measures the two paths, --repeats times each, anchor and
// Sluice alternating which goes first.
func (e *env) throughput(ctx context.Context) ([]tputSample, error) {
	e.res.Logf("throughput: wiring pods through the agents and the bare links")
	// Pods through the real agents: two on node1, one on node2.
	type pod struct{ name, node, ip string }
	pods := []*pod{{name: "tp-1a", node: "node1"}, {name: "tp-1b", node: "node1"}, {name: "tp-2", node: "node2"}}
	for _, p := range pods {
		if _, err := e.kube.CoreV1().Pods(benchNS).Create(ctx, apiPod(p.name, p.node, map[string]string{"role": "tput"}), metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if err := e.netnsAdd(prefix + p.name); err != nil {
			return nil, err
		}
	}
	time.Sleep(*settle)
	for _, p := range pods {
		rt := runtimeConf("bench-"+p.name, prefix+p.name, p.name)
		ip, err := e.add(ctx, sluice, p.node, rt)
		if err != nil {
			return nil, fmt.Errorf("ADD %s: %w", p.name, err)
		}
		p.ip = ip
		node := p.node
		e.defer_(func() { e.del(context.Background(), sluice, node, rt) })
		// As a kubelet would: the pod's status carries its address (the
		// other node's agent learns it from there).
		o, err := e.kube.CoreV1().Pods(benchNS).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		o.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if _, err := e.kube.CoreV1().Pods(benchNS).UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
	}
	// A bare veth pair between two namespaces (pods' MTU).
	va, vb := prefix+"va", prefix+"vb"
	for _, n := range []string{va, vb} {
		if err := e.netnsAdd(n); err != nil {
			return nil, err
		}
	}
	for _, c := range [][]string{
		{"ip", "link", "add", "eth0", "netns", va, "type", "veth", "peer", "name", "eth0", "netns", vb},
		{"ip", "-n", va, "addr", "add", "10.99.0.1/24", "dev", "eth0"}, {"ip", "-n", vb, "addr", "add", "10.99.0.2/24", "dev", "eth0"},
		{"ip", "-n", va, "link", "set", "eth0", "mtu", "1450", "up"}, {"ip", "-n", vb, "link", "set", "eth0", "mtu", "1450", "up"},
	} {
		if err := host.Sh(c...); err != nil {
			return nil, err
		}
	}
	// A bare VXLAN link between two namespaces on the lab's fabric bridge:
	// the same underlay the nodes' overlay crosses.
	xa, xb := prefix+"xa", prefix+"xb"
	fabric := e.cfg.FabricNetns()
	for i, n := range []string{xa, xb} {
		if err := e.netnsAdd(n); err != nil {
			return nil, err
		}
		peer := fmt.Sprintf("v-sbpnx%d", i)
		under := fmt.Sprintf("172.28.0.%d", 241+i)
		other := fmt.Sprintf("172.28.0.%d", 242-i)
		for _, c := range [][]string{
			{"ip", "link", "add", "eth0", "netns", n, "type", "veth", "peer", "name", peer, "netns", fabric},
			{"ip", "-n", fabric, "link", "set", peer, "master", "fabric0", "up"},
			{"ip", "-n", n, "addr", "add", under + "/24", "dev", "eth0"},
			{"ip", "-n", n, "link", "set", "eth0", "up"},
			{"ip", "-n", n, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", under, "remote", other, "dstport", "4789", "dev", "eth0"},
			{"ip", "-n", n, "addr", "add", fmt.Sprintf("10.98.0.%d/24", 1+i), "dev", "vx0"},
			{"ip", "-n", n, "link", "set", "vx0", "up"},
		} {
			if err := host.Sh(c...); err != nil {
				return nil, err
			}
		}
	}
	type run struct {
		path, impl             string
		server, client, target string
	}
	pairs := [][2]run{
		{{"same node", "bare veth pair", vb, va, "10.99.0.2"}, {"same node", "Sluice", prefix + "tp-1b", prefix + "tp-1a", pods[1].ip}},
		{{"across nodes", "bare VXLAN", xb, xa, "10.98.0.2"}, {"across nodes", "Sluice", prefix + "tp-2", prefix + "tp-1a", pods[2].ip}},
	}
	var out []tputSample
	for r := range *repeats {
		for _, pair := range pairs {
			for _, x := range results.Order(r, pair[0], pair[1]) {
				g, raw, err := iperf.GbpsRaw(exec.Command("ip", "netns", "exec", x.server, "iperf3", "-s", "-1"),
					exec.Command("ip", "netns", "exec", x.client, "iperf3", "-c", x.target, "-t", strconv.Itoa(*seconds), "-J"),
					fmt.Sprintf("iperf3 %s %s", x.path, x.impl))
				e.res.Raw(fmt.Sprintf("iperf3 path=%q impl=%q run=%d", x.path, x.impl, r+1), raw)
				if err != nil {
					return nil, err
				}
				e.res.Sample("tput path=%q impl=%q run=%d gbps=%.3f", x.path, x.impl, r+1, g)
				e.res.Logf("  %s, %s, run %d: %.2f Gbit/s", x.path, x.impl, r+1, g)
				out = append(out, tputSample{x.path, x.impl, r, g})
			}
		}
	}
	return out, nil
}

// report is the Markdown for docs/performance.md.
func report(sizes [][2]int, concs []int, cells []cell, tp []tputSample) string {
	var b strings.Builder
	hostname, _ := os.Hostname()
	fmt.Fprintf(&b, "Machine: %s, %d CPUs (%s), kernel %s, %s. %d CNI calls per cell; each figure is the median (min–max) over %d repeats of that repeat's percentile (nearest rank: with %d calls p99 is sample %d of %d), Sluice and the reference alternating which goes first.\n\n",
		hostname, runtime.NumCPU(), results.CPUModel(), host.Kernel(), runtime.Version(), *calls, *repeats, *calls, (*calls*99+99)/100, *calls)
	b.WriteString("#### CNI ADD and DEL (ms) through the running agent\n\n")
	b.WriteString("| load (pods × policies) | plugin | concurrency | ADD p50 | ADD p99 | DEL p50 | DEL p99 |\n|---|---|---|---|---|---|---|\n")
	type key struct {
		size [2]int
		impl string
		conc int
	}
	pct := map[key][4][]float64{}
	for _, c := range cells {
		k := key{c.size, c.impl, c.conc}
		v := pct[k]
		v[0] = append(v[0], stats.Millis(stats.NearestRank(c.add, 50)))
		v[1] = append(v[1], stats.Millis(stats.NearestRank(c.add, 99)))
		v[2] = append(v[2], stats.Millis(stats.NearestRank(c.del, 50)))
		v[3] = append(v[3], stats.Millis(stats.NearestRank(c.del, 99)))
		pct[k] = v
	}
	loadName := func(s [2]int) string {
		if s[0] == 0 {
			return "none"
		}
		return fmt.Sprintf("%d × %d", s[0], s[1])
	}
	for _, s := range sizes {
		for _, conc := range concs {
			for _, impl := range []string{sluice, refConf} {
				v := pct[key{s, impl, conc}]
				fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s |\n", loadName(s), impl, conc,
					results.Spread("%.1f", v[0]), results.Spread("%.1f", v[1]), results.Spread("%.1f", v[2]), results.Spread("%.1f", v[3]))
			}
		}
	}
	b.WriteString("\n| load | concurrency | ADD p99, Sluice / reference (target ≤ 1.5) | ADD p50, Sluice / Sluice without load | DEL p50, Sluice / Sluice without load |\n|---|---|---|---|---|\n")
	for _, s := range sizes {
		for _, conc := range concs {
			sl, rf, zero := pct[key{s, sluice, conc}], pct[key{s, refConf, conc}], pct[key{[2]int{}, sluice, conc}]
			vsZero, delZero := "–", "–"
			if zero[0] != nil {
				vsZero = fmt.Sprintf("%.2f", results.Ratio(stats.Median(sl[0]), stats.Median(zero[0])))
				delZero = fmt.Sprintf("%.2f", results.Ratio(stats.Median(sl[2]), stats.Median(zero[2])))
			}
			fmt.Fprintf(&b, "| %s | %d | **%.2f** | %s | %s |\n", loadName(s), conc, results.Ratio(stats.Median(sl[1]), stats.Median(rf[1])), vsZero, delZero)
		}
	}
	if len(tp) > 0 {
		fmt.Fprintf(&b, "\n#### TCP throughput (iperf3, %d s per run, Gbit/s), pods wired by the agents\n\n", *seconds)
		b.WriteString("| path | anchor | anchor Gbit/s | Sluice Gbit/s | Sluice / anchor (median of per-run ratios; target ≥ 0.95) |\n|---|---|---|---|---|\n")
		for _, path := range []string{"same node", "across nodes"} {
			var anchor string
			var a, s, ratio []float64
			for r := range *repeats {
				var ar, sr float64
				for _, x := range tp {
					if x.path != path || x.run != r {
						continue
					}
					if x.impl == "Sluice" {
						sr = x.gbps
						s = append(s, x.gbps)
					} else {
						anchor, ar = x.impl, x.gbps
						a = append(a, x.gbps)
					}
				}
				ratio = append(ratio, results.Ratio(sr, ar))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | **%s** |\n", path, anchor, results.Spread("%.2f", a), results.Spread("%.2f", s), results.Spread("%.2f", ratio))
		}
		fmt.Fprintf(&b, "\nSame node: pod → host veth → route → host veth → pod on node1, against one veth pair between two namespaces (MTU 1450). Across nodes: pod on node1 → node1's VXLAN → the lab's fabric bridge → node2 → pod, against a VXLAN link between two namespaces on the same bridge. Both agents run their whole table (pod network, isolation, service proxy); no NetworkPolicy selects these pods. %d runs per path.\n", *repeats)
	}
	return b.String()
}

// libcniResultIP is the first address of an ADD's result.
func libcniResultIP(r cnitypes.Result) (string, error) {
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return "", err
	}
	if len(res.IPs) == 0 {
		return "", fmt.Errorf("ADD returned no address")
	}
	return res.IPs[0].Address.IP.String(), nil
}

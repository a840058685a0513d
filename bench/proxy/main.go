// Command proxy measures Sluice's service proxy side by side with kube-proxy
// (the lab's pinned Kubernetes release) in its nftables and iptables modes,
// in one run, on one lab, against the same Services:
//
//   - cold programming: time from starting the proxy process until a new TCP
//     connection to a sentinel ClusterIP is answered by its pod, with N
//     Services × E endpoints loaded;
//   - change latency: time from just before one EndpointSlice update (the
//     sentinel's slice switched between two pods) until a new connection is
//     answered by the new pod (p50, p99);
//   - new connections per second and their latency to the sentinel
//     ClusterIP, at each size (10 Services is the baseline);
//   - the proxy's CPU seconds (its own and its reaped children's: nft,
//     iptables-restore) and peak memory.
//
// A dedicated lab with one node is brought up (and down at the end); its
// agent's service proxy is switched off (ClusterNetwork serviceProxy:
// External). Each proxy under test runs alone, as a process inside the lab's
// external network namespace, whose ruleset nothing else uses; the
// benchmark's probes run there too.
//
// It prints a Markdown report. Run as root: `make bench-proxy`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
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
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vishvananda/netlink"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/lab"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

const (
	innerEnv  = "SLUICE_BENCH_PROXY_INNER"
	namespace = "bench-proxy"
	managedBy = "bench.sluice.dev"
	sentinel  = "sentinel"
)

var (
	sizesF       = flag.String("sizes", "1000,10000,30000", "numbers of Services to measure at (each with --endpoints endpoints); 10 is always measured first as the baseline")
	endpointsF   = flag.Int("endpoints", 10, "endpoints per Service")
	repsF        = flag.Int("reps", 3, "cold starts per proxy and size (the median is reported)")
	bigRepsF     = flag.Int("big-reps", 1, "cold starts per proxy at sizes above 10000")
	changesF     = flag.Int("changes", 30, "EndpointSlice changes per proxy and size")
	changeGapF   = flag.Duration("change-gap", 1100*time.Millisecond, "pause between changes (longer than kube-proxy's default --min-sync-period, so each change is measured alone)")
	changeBudF   = flag.Duration("change-budget", 90*time.Second, "time limit for the changes of one proxy at one size")
	connSecsF    = flag.Duration("conn-time", 5*time.Second, "duration of each connection-rate run")
	connTimeoutF = flag.Duration("conn-timeout", 200*time.Millisecond, "timeout of one connection in the rate runs (a failed one counts against the rate)")
	workersF     = flag.Int("workers", 16, "parallel API clients creating the Services")
	proxiesF     = flag.String("proxies", "sluice,kube-proxy-nftables,kube-proxy-iptables", "proxies to measure; kube-proxy-nftables-0 is kube-proxy nftables with --min-sync-period=0")
	stateDirF    = flag.String("state-dir", "/tmp/sluice-bench-proxy", "the benchmark lab's state directory")
	apiPortF     = flag.Int("api-port", 0, "the lab's API port on the host (0: a free one)")
	binDirF      = flag.String("bin-dir", "", "directory with sluice-lab and sluice-agent (default: beside this program)")
	logDirF      = flag.String("log-dir", "/tmp/sluice-bench-proxy-logs", "where each proxy run's stderr goes")
	keepLabF     = flag.Bool("keep-lab", false, "leave the lab running at the end")
	iptMaxF      = flag.Int("iptables-max", 3000, "measure kube-proxy iptables mode only up to this many Services (its cold start took minutes at 3000 on the 2-vCPU machine)")
	coldTimeout  = flag.Duration("cold-timeout", 10*time.Minute, "give up on one cold start after this long")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: the benchmark runs a lab (network namespaces)")
	}
	if os.Getenv(innerEnv) == "" {
		os.Exit(outer())
	}
	if err := inner(); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/proxy:", msg)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s bench/proxy: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func binDir() string {
	if *binDirF != "" {
		return *binDirF
	}
	self, _ := os.Executable()
	return filepath.Dir(self)
}

// outer brings the lab up, runs the measurements inside its external
// namespace, and brings the lab down whatever happened.
func outer() int {
	l := labrun.Lab{Bin: filepath.Join(binDir(), "sluice-lab"), StateDir: *stateDirF}
	port := *apiPortF
	if port == 0 {
		var err error
		if port, err = labrun.FreePort(); err != nil {
			port = 26443
		}
	}
	down := func() {
		if *keepLabF {
			logf("lab left running: %s --state-dir %s down", l.Bin, l.StateDir)
			return
		}
		logf("lab down")
		cmd := l.Command("down")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Run()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	logf("lab up (%s, api port %d)", *stateDirF, port)
	up := l.Command("up", "--nodes", "1", "--api-port", strconv.Itoa(port))
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		logf("lab up: %v", err)
		down()
		return 1
	}
	c, err := lab.LoadConfig(*stateDirF)
	if err != nil {
		logf("%v", err)
		down()
		return 1
	}
	cmd := host.InNetns(c.External().Netns, innerEnv)
	if err := cmd.Start(); err != nil {
		logf("%v", err)
		down()
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var rc int
	select {
	case err = <-done:
	case s := <-sig:
		cmd.Process.Signal(s)
		err = <-done
	}
	if err != nil {
		logf("measurements: %v", err)
		rc = 1
	}
	down()
	return rc
}

// bench is the state of the measurements, inside the external namespace.
type bench struct {
	c        *lab.Config
	cs       kubernetes.Interface
	ctx      context.Context
	podIP    map[string]netip.Addr // pod name → IP
	vip      netip.AddrPort        // the sentinel's ClusterIP:80
	slice    *discoveryv1.EndpointSlice
	current  string // the pod the sentinel's slice points at
	services int    // filler Services created
	running  *proxyProc
}

type proxyKind struct {
	name, label string
}

var allProxies = map[string]proxyKind{
	"sluice":                {"sluice", "Sluice"},
	"kube-proxy-nftables":   {"kube-proxy-nftables", "kube-proxy nftables"},
	"kube-proxy-iptables":   {"kube-proxy-iptables", "kube-proxy iptables"},
	"kube-proxy-nftables-0": {"kube-proxy-nftables-0", "kube-proxy nftables, --min-sync-period=0"},
}

// result is one proxy at one size.
type result struct {
	cold       []time.Duration
	coldCPU    []float64 // CPU seconds at the moment the sentinel went live
	changes    []time.Duration
	changeMiss int
	conn       connStats
	cpuTotal   float64 // CPU seconds over the whole last process (cold start, changes, connections)
	peakRSS    int64   // bytes
	err        string
}

func inner() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := lab.LoadConfig(*stateDirF)
	if err != nil {
		return err
	}
	cs, err := labrun.Client(c.AdminKubeconfigFabric(), 2000, 4000)
	if err != nil {
		return err
	}
	os.MkdirAll(*logDirF, 0o755)
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 10 {
			return fmt.Errorf("--sizes: %q", s)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(append([]int{10}, sizes...))
	var proxies []proxyKind
	for _, p := range strings.Split(*proxiesF, ",") {
		k, ok := allProxies[strings.TrimSpace(p)]
		if !ok {
			return fmt.Errorf("--proxies: unknown %q", p)
		}
		proxies = append(proxies, k)
	}
	b := &bench{c: c, cs: cs, ctx: ctx, podIP: map[string]netip.Addr{}}
	defer b.stopProxy()
	if err := b.setup(); err != nil {
		return err
	}
	results := map[string]map[int]*result{}
	direct := map[int]connStats{}
	var done []int // sizes measured completely
	var stopped error
sizesLoop:
	for _, size := range sizes {
		if err := b.load(size); err != nil {
			stopped = err
			break
		}
		b.flush()
		flushConntrack()
		direct[size] = b.connRate(netip.AddrPortFrom(b.podIP[b.current], 80))
		logf("%d services: direct to the pod %.0f conn/s", size, direct[size].rate)
		for _, p := range proxies {
			if ctx.Err() != nil {
				stopped = ctx.Err()
				break sizesLoop
			}
			if p.name == "kube-proxy-iptables" && size > *iptMaxF {
				logf("%s at %d Services: skipped (--iptables-max %d)", p.label, size, *iptMaxF)
				continue
			}
			r := b.measure(p, size)
			if ctx.Err() != nil { // interrupted in the middle: not a result
				stopped = ctx.Err()
				break sizesLoop
			}
			if results[p.name] == nil {
				results[p.name] = map[int]*result{}
			}
			results[p.name][size] = r
		}
		done = append(done, size)
	}
	// Interrupted or failed part-way: report what was measured in full.
	if len(done) > 0 {
		report(done, proxies, results, direct)
		if stopped != nil {
			fmt.Printf("\n**Incomplete run**: stopped before finishing %s (%v).\n", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(sizes[len(done):])), ", "), "[]"), stopped)
		}
	}
	return stopped
}

// setup switches the lab's own proxy off, starts two test-server pods and the
// sentinel Service, and routes the external namespace to services and pods.
func (b *bench) setup() error {
	ctx, c := b.ctx, b.c
	logf("ClusterNetwork serviceProxy: External (the lab agent's proxy steps aside)")
	kubectl := filepath.Join(kubebuild.BinDir(), "kubectl")
	if out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig="+c.AdminKubeconfigFabric(), "patch", "clusternetwork", "default",
		"--type=merge", "-p", `{"spec":{"serviceProxy":"External"}}`).CombinedOutput(); err != nil {
		return fmt.Errorf("patch clusternetwork: %w: %s", err, out)
	}
	node, _ := c.Node("node1")
	if !labrun.Poll(152, 200*time.Millisecond, func() bool {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", node.Netns, "nft", "list", "chains", "inet", "sluice").CombinedOutput()
		return !strings.Contains(string(out), "chain services ")
	}) {
		return errors.New("the lab agent's service proxy did not step aside within 30 s")
	}
	if err := labrun.CreateNamespace(ctx, b.cs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	if err := labrun.WaitServiceAccount(ctx, b.cs, namespace, 122, 500*time.Millisecond); err != nil {
		return fmt.Errorf("service account %s/default: %w", namespace, err)
	}
	for _, name := range []string{"a", "b"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "bench-proxy"}},
			Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{
				Name: "server", Image: "sluice-lab/testserver",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
			}}},
		}
		if _, err := b.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range []string{"a", "b"} {
		p, err := labrun.RunningPod(ctx, b.cs, namespace, name, deadline, 500*time.Millisecond)
		if err != nil {
			return fmt.Errorf("%w after 2 minutes", err)
		}
		b.podIP[name] = netip.MustParseAddr(p.Status.PodIP)
	}
	logf("pods: a %s, b %s", b.podIP["a"], b.podIP["b"])
	for _, args := range [][]string{
		{"ip", "route", "replace", c.ServiceCIDR.String(), "dev", "eth0"},
		{"ip", "route", "replace", lab.LabClusterCIDR, "via", node.Addr.String()},
	} {
		if err := host.Sh(args...); err != nil {
			return err
		}
	}
	// More ephemeral ports: fewer reused 4-tuples in the connection runs.
	os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644)
	for _, name := range []string{"a", "b"} {
		if got, err := probe(netip.AddrPortFrom(b.podIP[name], 80), time.Second); err != nil || got != name {
			return fmt.Errorf("pod %s not reachable from the external namespace: %q %v", name, got, err)
		}
	}
	svc, err := b.cs.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: sentinel, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // a lab kept from an earlier run (--keep-lab)
		svc, err = b.cs.CoreV1().Services(namespace).Get(ctx, sentinel, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	b.vip = netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	b.current = "a"
	es := sliceFor(sentinel, 80, []netip.Addr{b.podIP["a"]})
	b.slice, err = b.cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, es, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if old, gerr := b.cs.DiscoveryV1().EndpointSlices(namespace).Get(ctx, es.Name, metav1.GetOptions{}); gerr == nil {
			es.ResourceVersion = old.ResourceVersion
			b.slice, err = b.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, es, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return err
	}
	logf("sentinel %s → pod a", b.vip)
	return nil
}

func sliceFor(svc string, port int32, addrs []netip.Addr) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new(""), Port: new(port), Protocol: new(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)}})
	}
	return es
}

// load creates filler Services (no selector, port 80 → 8080) with one
// EndpointSlice each of --endpoints fake addresses, until there are n.
func (b *bench) load(n int) error {
	if b.services >= n {
		return nil
	}
	logf("creating Services %d … %d (%d endpoints each)", b.services, n-1, *endpointsF)
	start := time.Now()
	if err := labrun.Parallel(b.ctx, *workersF, b.services, n, func(i int) error {
		if err := b.createFiller(i); err != nil {
			return err
		}
		if (i+1)%2000 == 0 {
			logf("  %d Services (%.0f/s)", i+1, float64(i+1-b.services)/time.Since(start).Seconds())
		}
		return nil
	}); err != nil {
		return err
	}
	logf("created %d Services and slices in %s", n-b.services, time.Since(start).Round(time.Second))
	b.services = n
	return nil
}

func (b *bench) createFiller(i int) error {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	base := netip.MustParseAddr("10.160.0.0").As4()
	var addrs []netip.Addr
	for j := range *endpointsF {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i**endpointsF+j+1)
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
	}
	es := sliceFor(name, 8080, addrs)
	return retry(b.ctx, func() error {
		_, err := b.cs.CoreV1().Services(namespace).Create(b.ctx, svc, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}, func() error {
		_, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Create(b.ctx, es, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func retry(ctx context.Context, fns ...func() error) error {
	for _, fn := range fns {
		var err error
		for attempt := range 10 {
			if err = fn(); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// flush empties the external namespace's ruleset (only the proxies under
// test use it) and its connection tracking table.
func (b *bench) flush() {
	if err := host.Sh("nft", "flush", "ruleset"); err != nil {
		logf("warning: %v", err)
	}
	flushConntrack()
}

// flushConntrack empties the external namespace's connection tracking table
// (this process runs in it). Entries left by unanswered probes (SYN_SENT,
// not NATed, 120 s) would otherwise catch later connections that reuse a
// source port and send them, un-NATed, nowhere.
func flushConntrack() {
	if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		logf("warning: conntrack flush: %v", err)
	}
}

// proxyProc is one running proxy process.
type proxyProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	peakRSS atomic.Int64
	stopS   chan struct{}
	logPath string
}

func (b *bench) startProxy(p proxyKind, size, rep int) (*proxyProc, time.Time, error) {
	kc := b.c.AdminKubeconfigFabric()
	var argv []string
	switch p.name {
	case "sluice":
		argv = []string{filepath.Join(binDir(), "sluice-agent"), "--services-only", "--node-name=node1", "--kubeconfig=" + kc}
	default:
		mode := strings.TrimPrefix(p.name, "kube-proxy-")
		mode, zero := strings.CutSuffix(mode, "-0")
		argv = []string{filepath.Join(kubebuild.BinDir(), "kube-proxy"), "--kubeconfig=" + kc, "--hostname-override=node1",
			"--proxy-mode=" + mode, "--cluster-cidr=" + lab.LabClusterCIDR,
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
			"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256", "--v=2"}
		if zero {
			argv = append(argv, "--min-sync-period=0")
		}
	}
	logPath := filepath.Join(*logDirF, fmt.Sprintf("%s-%d-%d.log", p.name, size, rep))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, time.Time{}, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, t0, err
	}
	pp := &proxyProc{cmd: cmd, done: make(chan struct{}), stopS: make(chan struct{}), logPath: logPath}
	go func() {
		cmd.Wait()
		lf.Close()
		close(pp.done)
	}()
	go pp.sampleRSS()
	b.running = pp
	return pp, t0, nil
}

// sampleRSS records the peak resident memory of the proxy and its children
// (nft, iptables-restore), summed, every 100 ms.
func (pp *proxyProc) sampleRSS() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if rss := host.TreeRSS(pp.cmd.Process.Pid); rss > pp.peakRSS.Load() {
			pp.peakRSS.Store(rss)
		}
		select {
		case <-pp.done:
			return
		case <-pp.stopS:
			return
		case <-t.C:
		}
	}
}

func (b *bench) stopProxy() {
	pp := b.running
	if pp == nil {
		return
	}
	b.running = nil
	close(pp.stopS)
	pp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pp.done:
	case <-time.After(15 * time.Second):
		pp.cmd.Process.Kill()
		<-pp.done
	}
}

// measure runs one proxy at one size: cold starts, changes, connections.
func (b *bench) measure(p proxyKind, size int) *result {
	r := &result{}
	reps := *repsF
	if size > 10000 {
		reps = *bigRepsF
	}
	reps = max(reps, 1)
	var pp *proxyProc
	for rep := range reps {
		b.flush()
		var t0 time.Time
		var err error
		pp, t0, err = b.startProxy(p, size, rep)
		if err != nil {
			r.err = err.Error()
			return r
		}
		live, err := b.waitLive(pp, t0)
		if err != nil {
			r.err = fmt.Sprintf("cold start %d: %v (log %s)", rep, err, pp.logPath)
			logf("%s at %d: %s", p.label, size, r.err)
			b.stopProxy()
			b.flush()
			return r
		}
		r.cold = append(r.cold, live)
		r.coldCPU = append(r.coldCPU, host.CPUSeconds(pp.cmd.Process.Pid))
		logf("%s at %d Services: cold start %d live after %s (CPU %.2f s)", p.label, size, rep, live.Round(time.Millisecond), r.coldCPU[rep])
		if rep < reps-1 {
			b.stopProxy()
		}
	}
	// Let startup syncs settle before changing anything; forget the
	// probes' unanswered connections.
	time.Sleep(2 * time.Second)
	flushConntrack()
	deadline := time.Now().Add(*changeBudF)
	for i := 0; i < *changesF && time.Now().Before(deadline) && b.ctx.Err() == nil; i++ {
		d, err := b.change()
		if err != nil {
			r.changeMiss++
			logf("%s at %d: change %d: %v", p.label, size, i, err)
			if errors.Is(err, errNotLive) {
				continue
			}
			break
		}
		r.changes = append(r.changes, d)
		time.Sleep(*changeGapF)
	}
	if len(r.changes) > 0 {
		logf("%s at %d Services: %d changes, p50 %s p99 %s", p.label, size, len(r.changes), stats.NearestRank(r.changes, 50).Round(100*time.Microsecond), stats.NearestRank(r.changes, 99).Round(100*time.Microsecond))
	}
	flushConntrack()
	r.conn = b.connRate(b.vip)
	logf("%s at %d Services: %.0f conn/s (%d failed; %.0f/s without the failed attempts' time)", p.label, size, r.conn.rate, r.conn.errs, r.conn.clean)
	pid := pp.cmd.Process.Pid
	r.cpuTotal = host.CPUSeconds(pid)
	r.peakRSS = max(pp.peakRSS.Load(), host.StatusKB(pid, "VmHWM")*1024) // the proxy's own peak, which sampling may miss
	b.stopProxy()
	b.flush()
	return r
}

var errNotLive = errors.New("not live")

// waitLive starts a connection attempt to the sentinel every 10 ms (each
// with its own short timeout) until one is answered; it returns the time
// from t0 to that answer.
func (b *bench) waitLive(pp *proxyProc, t0 time.Time) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(b.ctx, *coldTimeout)
	defer cancel()
	got := make(chan time.Time, 1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case t := <-got:
			cancel()
			return t.Sub(t0), nil
		case <-pp.done:
			return 0, errors.New("the proxy exited")
		case <-ctx.Done():
			return 0, fmt.Errorf("not live after %s", *coldTimeout)
		case <-tick.C:
			wg.Go(func() {
				if _, err := probe(b.vip, 300*time.Millisecond); err == nil {
					select {
					case got <- time.Now():
					default:
					}
				}
			})
		}
	}
}

// change points the sentinel's slice at the other pod and waits until a new
// connection is answered by it.
func (b *bench) change() (time.Duration, error) {
	target := "b"
	if b.current == "b" {
		target = "a"
	}
	es := b.slice.DeepCopy()
	es.Endpoints[0].Addresses = []string{b.podIP[target].String()}
	t0 := time.Now()
	upd, err := b.cs.DiscoveryV1().EndpointSlices(namespace).Update(b.ctx, es, metav1.UpdateOptions{})
	if err != nil {
		return 0, err
	}
	b.slice, b.current = upd, target
	deadline := t0.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if name, err := probe(b.vip, 200*time.Millisecond); err == nil && name == target {
			return time.Since(t0), nil
		}
		if b.ctx.Err() != nil {
			return 0, b.ctx.Err()
		}
	}
	return 0, fmt.Errorf("%w: pod %s not answering after 30 s", errNotLive, target)
}

// probe opens one TCP connection, reads the test server's line and resets
// the connection (no TIME_WAIT left on either side); it returns the server's name.
func probe(to netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", to.String(), timeout)
	if err != nil {
		return "", err
	}
	tc := c.(*net.TCPConn)
	defer func() {
		tc.SetLinger(0)
		tc.Close()
	}()
	tc.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return "", err
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", fmt.Errorf("empty reply")
	}
	return f[0], nil
}

// connRate opens connections one after another for --conn-time and returns
// the rate of answered ones and each one's connect+reply latency.
type connStats struct {
	rate  float64 // answered connections per second of wall time
	clean float64 // the same, not counting the time spent in failed attempts
	lat   []time.Duration
	errs  int
}

func (b *bench) connRate(to netip.AddrPort) connStats {
	var lat []time.Duration
	var lost time.Duration
	errs := 0
	kinds := map[string]int{}
	start := time.Now()
	end := start.Add(*connSecsF)
	for time.Now().Before(end) && b.ctx.Err() == nil {
		t := time.Now()
		if _, err := probe(to, *connTimeoutF); err != nil {
			lost += time.Since(t)
			errs++
			kinds[err.Error()[max(0, len(err.Error())-60):]]++
			continue
		}
		lat = append(lat, time.Since(t))
	}
	if errs > 0 {
		logf("  %d of %d connections to %s failed: %v", errs, errs+len(lat), to, kinds)
	}
	el := time.Since(start)
	return connStats{rate: float64(len(lat)) / el.Seconds(), clean: float64(len(lat)) / (el - lost).Seconds(), lat: lat, errs: errs}
}

func nproc() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return strconv.Itoa(runtime.NumCPU())
	}
	return strings.TrimSpace(string(out))
}

func report(sizes []int, proxies []proxyKind, res map[string]map[int]*result, direct map[int]connStats) {
	kube, _ := kubebuild.Versions()
	hostname, _ := os.Hostname()
	fmt.Printf("## Service proxy\n\nMachine: %s, nproc %s, kernel %s, %s. Run on %s.\n", hostname, nproc(), host.Kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("Command: `make bench-proxy` (runs `bin/bench-proxy %s`).\n\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("Setup: one `sluice-lab` (1 node, Kubernetes %s) whose agent's proxy is off (ClusterNetwork `serviceProxy: External`). "+
		"Each proxy runs alone, as a process in the lab's external network namespace (ruleset flushed before each start), against the same API server and the same objects: "+
		"N Services without selector (port 80 → 8080), each with one EndpointSlice of %d ready endpoints at fake addresses, plus a sentinel Service whose slice points at a real test-server pod. "+
		"kube-proxy %s runs with its defaults (`--min-sync-period` 1 s) plus `--cluster-cidr` and conntrack sysctls left alone; Sluice is `sluice-agent --services-only`. "+
		"Figures are from one run; ratios are against kube-proxy in the same run.\n\n", kube, *endpointsF, kube)

	label := func(name string) string { return allProxies[name].label }
	has := func(name string) bool { return res[name] != nil }
	medCold := func(name string, size int) (time.Duration, bool) {
		r := res[name][size]
		if r == nil || len(r.cold) == 0 {
			return 0, false
		}
		return stats.NearestRank(r.cold, 50), true
	}

	fmt.Printf("### Cold programming (s, start of the process → sentinel ClusterIP answers; median of %d, %d above 10k)\n\n", *repsF, *bigRepsF)
	fmt.Print("| Services |")
	for _, p := range proxies {
		fmt.Printf(" %s |", p.label)
	}
	ratioCols := []string{}
	if has("sluice") {
		for _, k := range []string{"kube-proxy-nftables", "kube-proxy-iptables"} {
			if has(k) {
				ratioCols = append(ratioCols, k)
				fmt.Printf(" %s / Sluice |", label(k))
			}
		}
	}
	fmt.Print("\n|---|" + strings.Repeat("---|", len(proxies)+len(ratioCols)) + "\n")
	for _, size := range sizes {
		fmt.Printf("| %d |", size)
		for _, p := range proxies {
			if d, ok := medCold(p.name, size); ok {
				fmt.Printf(" %.2f |", d.Seconds())
			} else {
				fmt.Printf(" %s |", failed(res[p.name][size]))
			}
		}
		s, sok := medCold("sluice", size)
		for _, k := range ratioCols {
			if d, ok := medCold(k, size); ok && sok {
				fmt.Printf(" **%.2f** |", d.Seconds()/s.Seconds())
			} else {
				fmt.Print(" – |")
			}
		}
		fmt.Println()
	}
	if s, ok := medCold("sluice", 10000); ok {
		if k, ok := medCold("kube-proxy-nftables", 10000); ok {
			verdict := "met"
			if k.Seconds()/s.Seconds() < 5 {
				verdict = "**missed**"
			}
			fmt.Printf("\nTarget: at 10k Services Sluice ≥ 5× faster than kube-proxy nftables: **%.2f×** (%s).\n", k.Seconds()/s.Seconds(), verdict)
		}
	}

	fmt.Printf("\n### One EndpointSlice change → live (ms, p50 / p99; changes %v apart, n per cell in brackets)\n\n", *changeGapF)
	fmt.Print("| Services |")
	for _, p := range proxies {
		fmt.Printf(" %s |", p.label)
	}
	fmt.Print("\n|---|" + strings.Repeat("---|", len(proxies)) + "\n")
	for _, size := range sizes {
		fmt.Printf("| %d |", size)
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || len(r.changes) == 0 {
				fmt.Printf(" %s |", failed(r))
				continue
			}
			miss := ""
			if r.changeMiss > 0 {
				miss = fmt.Sprintf(", %d not live in 30 s", r.changeMiss)
			}
			fmt.Printf(" %.1f / %.1f (%d%s) |", stats.Millis(stats.NearestRank(r.changes, 50)), stats.Millis(stats.NearestRank(r.changes, 99)), len(r.changes), miss)
		}
		fmt.Println()
	}
	largest := sizes[len(sizes)-1]
	if r := res["sluice"][largest]; r != nil && len(r.changes) > 0 {
		verdict := "met"
		if stats.NearestRank(r.changes, 99) >= 50*time.Millisecond {
			verdict = "**missed**"
		}
		fmt.Printf("\nTarget: a change live in < 50 ms p99 at %d Services (Sluice): **%.1f ms** (%s; with %d samples p99 is the maximum but one or the maximum).\n",
			largest, stats.Millis(stats.NearestRank(r.changes, 99)), verdict, len(r.changes))
	}

	fmt.Printf("\n### New connections to the sentinel ClusterIP (one client in the external namespace, sequential connect + reply line + reset, %v per cell, %v timeout)\n\n", *connSecsF, *connTimeoutF)
	fmt.Print("conn/s: answered connections per second of wall time; in brackets, not counting the time spent in failed attempts (failed ones time out or are refused; see below). Latency: connect + reply, answered connections.\n\n")
	fmt.Print("| Services | proxy | conn/s | failed | mean / p99 ms | added mean ms vs direct | conn/s vs 10 Services |\n|---|---|---|---|---|---|---|\n")
	for _, size := range sizes {
		d := direct[size]
		fmt.Printf("| %d | none: direct to the pod IP | %.0f (%.0f) | %d | %.3f / %.3f | – | – |\n", size, d.rate, d.clean, d.errs, stats.Millis(stats.Mean(d.lat)), stats.Millis(stats.NearestRank(d.lat, 99)))
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || r.conn.rate == 0 {
				fmt.Printf("| %d | %s | %s | | | | |\n", size, p.label, failed(r))
				continue
			}
			ratio := "–"
			if base := res[p.name][10]; base != nil && base.conn.rate > 0 {
				ratio = fmt.Sprintf("**%.2f** (%.2f)", r.conn.rate/base.conn.rate, r.conn.clean/base.conn.clean)
			}
			fmt.Printf("| %d | %s | %.0f (%.0f) | %d | %.3f / %.3f | %.3f | %s |\n", size, p.label, r.conn.rate, r.conn.clean, r.conn.errs,
				stats.Millis(stats.Mean(r.conn.lat)), stats.Millis(stats.NearestRank(r.conn.lat, 99)), stats.Millis(stats.Mean(r.conn.lat)-stats.Mean(d.lat)), ratio)
		}
	}
	if r, base := res["sluice"][largest], res["sluice"][10]; r != nil && base != nil && base.conn.rate > 0 {
		q := r.conn.rate / base.conn.rate
		verdict := "met"
		if q < 0.95 {
			verdict = "**missed**"
		}
		fmt.Printf("\nTarget: Sluice's connection rate at %d Services ≥ 0.95 of its rate at 10: **%.2f** (%s); not counting failed attempts' time: %.2f.\n",
			largest, q, verdict, r.conn.clean/base.conn.clean)
	}

	fmt.Print("\n### CPU and memory of the proxy process (CPU: its own and its reaped children's — nft, iptables-restore)\n\n")
	fmt.Print("| Services | proxy | CPU s to program (median) | CPU s, whole run of the last process | peak RSS MiB (process + children, sampled) |\n|---|---|---|---|---|\n")
	for _, size := range sizes {
		for _, p := range proxies {
			r := res[p.name][size]
			if r == nil || len(r.cold) == 0 {
				continue
			}
			fmt.Printf("| %d | %s | %.2f | %.2f | %.0f |\n", size, p.label, stats.Median(r.coldCPU), r.cpuTotal, float64(r.peakRSS)/(1<<20))
		}
	}
	fmt.Println("\n\"Whole run of the last process\": the last cold start, the changes and the connection runs, until SIGTERM.")
	for _, p := range proxies {
		for _, size := range sizes {
			if r := res[p.name][size]; r != nil && r.err != "" {
				fmt.Printf("\n%s at %d Services: %s\n", p.label, size, r.err)
			}
		}
	}
}

func failed(r *result) string {
	if r == nil {
		return "skipped"
	}
	if r.err != "" {
		return "failed"
	}
	return "–"
}

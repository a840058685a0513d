// Command podnet measures Sluice's pod network against its anchors, in one
// run on one machine, inside throw-away network namespaces:
//
//   - CNI ADD and DEL latency (p50, p99) at 1 and 20 concurrent calls:
//     sluice-cni → the agent's CNI server → node IPAM, routed veth and
//     nftables admission, against the reference bridge + host-local plugins
//     (github.com/containernetworking/plugins), both driven through libcni
//     as a container runtime does;
//   - TCP throughput (iperf3) pod to pod on one node against a bare veth
//     pair, and across two nodes over Sluice's VXLAN overlay against a bare
//     VXLAN link between two namespaces.
//
// It prints a Markdown report. Run as root: `make bench-podnet`.
package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/go-logr/logr"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/iperf"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/agent/podnet"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/netns"
)

const innerEnv = "SLUICE_BENCH_INNER"

var (
	calls   = flag.Int("calls", 200, "CNI ADDs (and DELs) per implementation and concurrency")
	seconds = flag.Int("seconds", 5, "iperf3 duration per throughput run")
	pluginF = flag.String("sluice-cni", "", "sluice-cni binary (default: beside this program, else bin/sluice-cni)")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("run as root: the benchmark makes network namespaces")
	}
	if os.Getenv(innerEnv) == "" {
		os.Exit(outer())
	}
	if err := inner(); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "bench/podnet:", msg)
	os.Exit(1)
}

// outer runs the benchmark in a namespace of its own (it plays the node)
// with a private mount namespace (its pods' namespaces stay private too),
// and removes everything afterwards.
func outer() int {
	name := fmt.Sprintf("sluice-bench-%d", os.Getpid())
	if err := host.NetnsAdd(name); err != nil {
		fail(err.Error())
	}
	defer host.NetnsDel(name)
	if err := host.InNetns(name, innerEnv).Run(); err != nil {
		return 1
	}
	return 0
}

func inner() error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	host.Sh("ip", "link", "set", "lo", "up")
	if err := link.EnableForwarding(); err != nil {
		return err
	}
	ref, err := kubebuild.EnsureReferencePlugins(ctx, os.Stderr)
	if err != nil {
		return err
	}
	plugin := *pluginF
	if plugin == "" {
		self, _ := os.Executable()
		plugin = filepath.Join(filepath.Dir(self), "sluice-cni")
		if _, err := os.Stat(plugin); err != nil {
			plugin = "bin/sluice-cni"
		}
	}
	binDir := filepath.Join(work, "bin")
	os.MkdirAll(binDir, 0o755)
	for _, p := range []string{filepath.Join(ref, "bridge"), filepath.Join(ref, "host-local"), plugin} {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		os.WriteFile(filepath.Join(binDir, filepath.Base(p)), b, 0o755)
	}

	// Sluice's agent side, in this namespace, as the real agent wires it.
	subnet := netip.MustParsePrefix("10.128.0.0/23")
	ipam, err := podnet.OpenIPAM(filepath.Join(work, "ipam"), subnet)
	if err != nil {
		return err
	}
	nft, err := knftables.New(knftables.InetFamily, dataplane.Table)
	if err != nil {
		return err
	}
	quiet := logr.Discard()
	base := dataplane.NewBase()
	base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
	owner := dataplane.NewOwner(nft, quiet)
	owner.Register(base)
	octx, stopOwner := context.WithCancel(ctx)
	defer stopOwner()
	go owner.Run(octx)
	if err := owner.Sync(ctx); err != nil {
		return err
	}
	pn := &podnet.Network{IPAM: ipam, Links: podnet.RealLinks{}, Hooks: []podnet.PodHook{base}, Table: owner, Subnet: subnet, MTU: 1450, Log: quiet}
	pn.SetReady(true)
	sock := filepath.Join(work, "cni.sock")
	srv := cniserver.New(sock, pn, quiet)
	srv.SetReady(true)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.Run(sctx)
	for range 100 {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	confs := map[string]string{
		"reference bridge + host-local": fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ref","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.200.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(work, "host-local")),
		"sluice-cni": fmt.Sprintf(`{"cniVersion":"1.1.0","name":"sluice","plugins":[{"type":"sluice-cni","agentSocket":%q}]}`, sock),
	}
	hostname, _ := os.Hostname()
	fmt.Printf("## Pod network (issue 3)\n\nMachine: %s, %d CPUs, %s, kernel %s. Command: `make bench-podnet` (bench/podnet, %d calls per cell).\n\n",
		hostname, runtime.NumCPU(), runtime.Version(), host.Kernel(), *calls)
	fmt.Printf("### CNI latency (ms)\n\n| plugin | concurrency | ADD p50 | ADD p99 | DEL p50 | DEL p99 |\n|---|---|---|---|---|---|\n")
	results := map[string][4]time.Duration{}
	for _, conc := range []int{1, 20} {
		for _, impl := range []string{"reference bridge + host-local", "sluice-cni"} {
			add, del, err := cniLatency(ctx, binDir, confs[impl], *calls, conc)
			if err != nil {
				return fmt.Errorf("%s at %d: %w", impl, conc, err)
			}
			r := [4]time.Duration{stats.NearestRank(add, 50), stats.NearestRank(add, 99), stats.NearestRank(del, 50), stats.NearestRank(del, 99)}
			results[fmt.Sprint(impl, conc)] = r
			fmt.Printf("| %s | %d | %.2f | %.2f | %.2f | %.2f |\n", impl, conc, stats.Millis(r[0]), stats.Millis(r[1]), stats.Millis(r[2]), stats.Millis(r[3]))
		}
	}
	fmt.Printf("\nRatio sluice / reference, p99 ADD: at 1: **%.2f**, at 20: **%.2f** (target ≤ 1.5).\n\n",
		float64(results["sluice-cni1"][1])/float64(results["reference bridge + host-local1"][1]),
		float64(results["sluice-cni20"][1])/float64(results["reference bridge + host-local20"][1]))

	fmt.Printf("### TCP throughput (iperf3, %d s, Gbit/s)\n\n| path | bare | Sluice | ratio (target ≥ 0.95) |\n|---|---|---|---|\n", *seconds)
	bareVeth, err := throughputBareVeth()
	if err != nil {
		return err
	}
	sameNode, err := throughputSameNode(ctx, pn)
	if err != nil {
		return err
	}
	fmt.Printf("| same node: pod → pod vs veth pair | %.2f | %.2f | **%.2f** |\n", bareVeth, sameNode, sameNode/bareVeth)
	bareVX, err := throughputBareVXLAN()
	if err != nil {
		return err
	}
	cross, err := throughputCrossNode(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("| across nodes: pod → pod over Sluice's overlay vs a bare VXLAN link | %.2f | %.2f | **%.2f** |\n", bareVX, cross, cross/bareVX)
	return nil
}

// cniLatency times n ADDs and then n DELs at the given concurrency, each
// into its own fresh network namespace.
func cniLatency(ctx context.Context, binDir, conf string, n, conc int) (add, del []time.Duration, err error) {
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, nil, err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(os.TempDir(), "sluice-bench-cni-cache"), nil)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("sb-%s-%d-%d", list.Name, conc, i)
		if err := host.NetnsAdd(names[i]); err != nil {
			return nil, nil, err
		}
	}
	defer func() {
		for _, nm := range names {
			host.NetnsDel(nm)
		}
	}()
	rt := func(i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%s-%d-%d", list.Name, conc, i), NetNS: netns.Path(names[i]), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", names[i]}}}
	}
	run := func(f func(i int) error) ([]time.Duration, error) {
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
	if add, err = run(func(i int) error { _, err := cni.AddNetworkList(ctx, list, rt(i)); return err }); err != nil {
		return nil, nil, fmt.Errorf("ADD: %w", err)
	}
	if del, err = run(func(i int) error { return cni.DelNetworkList(ctx, list, rt(i)) }); err != nil {
		return nil, nil, fmt.Errorf("DEL: %w", err)
	}
	return add, del, nil
}

// throughput runs an iperf3 server in serverNS and a client in clientNS.
func throughput(serverNS, clientNS, addr string) (float64, error) {
	return iperf.Gbps(exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1"),
		exec.Command("ip", "netns", "exec", clientNS, "iperf3", "-c", addr, "-t", fmt.Sprint(*seconds), "-J"),
		"iperf3 -c "+addr)
}

func pairNS(tag string) (a, b string, cleanup func(), err error) {
	a, b = "sb-"+tag+"-a", "sb-"+tag+"-b"
	cleanup = func() { host.NetnsDel(a); host.NetnsDel(b) }
	for _, n := range []string{a, b} {
		if err = host.NetnsAdd(n); err != nil {
			return
		}
		host.Sh("ip", "-n", n, "link", "set", "lo", "up")
	}
	err = host.Sh("ip", "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b)
	return
}

func throughputBareVeth() (float64, error) {
	a, b, cleanup, err := pairNS("veth")
	defer cleanup()
	if err != nil {
		return 0, err
	}
	for _, c := range [][]string{
		{"ip", "-n", a, "addr", "add", "10.99.0.1/24", "dev", "eth0"}, {"ip", "-n", b, "addr", "add", "10.99.0.2/24", "dev", "eth0"},
		{"ip", "-n", a, "link", "set", "eth0", "mtu", "1450", "up"}, {"ip", "-n", b, "link", "set", "eth0", "mtu", "1450", "up"},
	} {
		if err := host.Sh(c...); err != nil {
			return 0, err
		}
	}
	return throughput(b, a, "10.99.0.2")
}

// throughputSameNode: two pods on this node, through Sluice's own CNI path.
func throughputSameNode(ctx context.Context, pn *podnet.Network) (float64, error) {
	var ips []string
	var names []string
	for i := range 2 {
		n := fmt.Sprintf("sb-same-%d", i)
		if err := host.NetnsAdd(n); err != nil {
			return 0, err
		}
		defer host.NetnsDel(n)
		res, err := pn.Add(ctx, &cniserver.Call{ContainerID: "tput-" + n, Netns: netns.Path(n), IfName: "eth0", PodNamespace: "bench", PodName: n})
		if err != nil {
			return 0, err
		}
		defer pn.Del(ctx, &cniserver.Call{ContainerID: "tput-" + n, IfName: "eth0"})
		ips = append(ips, res.IPs[0].Address.IP.String())
		names = append(names, n)
	}
	return throughput(names[1], names[0], ips[1])
}

func throughputBareVXLAN() (float64, error) {
	a, b, cleanup, err := pairNS("vx")
	defer cleanup()
	if err != nil {
		return 0, err
	}
	for _, c := range [][]string{
		{"ip", "-n", a, "addr", "add", "10.99.1.1/24", "dev", "eth0"}, {"ip", "-n", b, "addr", "add", "10.99.1.2/24", "dev", "eth0"},
		{"ip", "-n", a, "link", "set", "eth0", "up"}, {"ip", "-n", b, "link", "set", "eth0", "up"},
		{"ip", "-n", a, "link", "add", "vx0", "type", "vxlan", "id", "1", "local", "10.99.1.1", "remote", "10.99.1.2", "dstport", "4789", "dev", "eth0"},
		{"ip", "-n", b, "link", "add", "vx0", "type", "vxlan", "id", "1", "local", "10.99.1.2", "remote", "10.99.1.1", "dstport", "4789", "dev", "eth0"},
		{"ip", "-n", a, "addr", "add", "10.98.0.1/24", "dev", "vx0"}, {"ip", "-n", b, "addr", "add", "10.98.0.2/24", "dev", "vx0"},
		{"ip", "-n", a, "link", "set", "vx0", "up"}, {"ip", "-n", b, "link", "set", "vx0", "up"},
	} {
		if err := host.Sh(c...); err != nil {
			return 0, err
		}
	}
	return throughput(b, a, "10.98.0.2")
}

// throughputCrossNode: two nodes (namespaces on an underlay veth), each with
// Sluice's overlay, dataplane and one pod.
func throughputCrossNode(ctx context.Context) (float64, error) {
	nodeA, nodeB, cleanup, err := pairNS("xn")
	defer cleanup()
	if err != nil {
		return 0, err
	}
	type side struct {
		node, pod string
		ip        netip.Addr
		sub       netip.Prefix
	}
	A := side{nodeA, "sb-xn-pa", netip.MustParseAddr("10.99.2.1"), netip.MustParsePrefix("10.128.0.0/23")}
	B := side{nodeB, "sb-xn-pb", netip.MustParseAddr("10.99.2.2"), netip.MustParsePrefix("10.128.2.0/23")}
	for _, s := range []side{A, B} {
		if err := host.NetnsAdd(s.pod); err != nil {
			return 0, err
		}
		defer host.NetnsDel(s.pod)
		host.Sh("ip", "-n", s.node, "addr", "add", s.ip.String()+"/24", "dev", "eth0")
		host.Sh("ip", "-n", s.node, "link", "set", "eth0", "up")
	}
	setup := func(s, peer side) error {
		return netns.Do(netns.Path(s.node), func() error {
			if err := link.EnableForwarding(); err != nil {
				return err
			}
			o := &link.Overlay{VNI: 1, Port: 4789, LocalIP: s.ip, LocalSubnet: s.sub, UnderlayMTU: 1500}
			if err := o.Ensure(); err != nil {
				return err
			}
			if err := o.SyncRemotes([]link.Remote{{Node: "peer", NodeIP: peer.ip, Subnet: peer.sub}}); err != nil {
				return err
			}
			podIP := s.sub.Addr().Next().Next()
			if _, err := link.SetupPod(link.Pod{ContainerID: "xn-" + s.pod, NetnsPath: netns.Path(s.pod), IfName: "eth0",
				IP: podIP, Gateway: s.sub.Addr().Next(), MTU: 1450}); err != nil {
				return err
			}
			nft, err := knftables.New(knftables.InetFamily, dataplane.Table)
			if err != nil {
				return err
			}
			// SyncNow: this goroutine's thread is the one in the namespace.
			base := dataplane.NewBase()
			base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
			base.PodAdded(dataplane.Pod{Iface: link.HostIfName("xn-" + s.pod), IP: podIP})
			owner := dataplane.NewOwner(nft, logr.Discard())
			owner.Register(base)
			return owner.SyncNow(ctx)
		})
	}
	if err := setup(A, B); err != nil {
		return 0, err
	}
	if err := setup(B, A); err != nil {
		return 0, err
	}
	return throughput(B.pod, A.pod, B.sub.Addr().Next().Next().String())
}

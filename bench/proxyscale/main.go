// Command proxyscale measures the programming path of Sluice's service
// proxy at sizes the lab's API server cannot reach in a session on a
// 2-vCPU machine (creating 30k Services there takes about an hour): the
// real Proxier, fed from in-memory listers instead of informers, programs
// the real kernel inside a throw-away network namespace through each of the
// agent's backends: over netlink (pkg/agent/nftnl, what the agent runs) and
// through the nft binary (knftables, the path before it: the anchor), in
// the same run, the order alternating between repeats. It reports, per size
// and backend, median (min–max) over the repeats of:
//
//   - cold programming: the first (full) sync of N Services × E endpoints;
//   - one EndpointSlice change → programmed: the partial sync of a single
//     changed service (build, render, transaction), p50 / p99 of each
//     repeat's changes;
//   - the kernel ruleset's size.
//
// Raw samples go to bench/results/proxyscale-<time>-<commit>.txt.
//
// What it leaves out, and bench/proxy measures in a lab side by side with
// kube-proxy: the API server, watch delivery, and packets. Run as root:
// `make bench-proxyscale`.
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
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/results"
	"github.com/sluice-net/sluice/bench/internal/stats"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/nftnl"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	"github.com/sluice-net/sluice/pkg/netns"
)

var (
	sizesF    = flag.String("sizes", "1000,10000,30000", "numbers of Services")
	endpoints = flag.Int("endpoints", 10, "endpoints per Service")
	changes   = flag.Int("changes", 50, "single-service changes measured per size")
	repeats   = flag.Int("repeats", 3, "repeats of each size and backend, the backends' order alternating")
	root      = flag.String("root", ".", "source tree (for bench/results and the commit)")
	cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
)

// The backends compared.
const (
	backendNetlink = "netlink"
	backendNFT     = "nft binary"
)

// The main goroutine keeps the main thread (netns.Do discards the threads
// it moves).
func init() { runtime.LockOSThread() }

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "proxyscale: run as root (it makes a network namespace)")
		os.Exit(1)
	}
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "proxyscale: --sizes %q: want numbers\n", *sizesF)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxyscale:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	out, err := results.Open(*root, "proxyscale")
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxyscale:", err)
		os.Exit(1)
	}
	defer out.Close()
	var md strings.Builder
	fmt.Fprintf(&md, "`make bench-proxyscale` (`bench-proxyscale --sizes %s --endpoints %d --changes %d --repeats %d`), %d vCPU (%s), Linux %s, %s, commit %s. Median (min–max) over %d repeats; the two backends alternate which runs first; raw samples in `%s`.\n\n",
		*sizesF, *endpoints, *changes, *repeats, runtime.NumCPU(), results.CPUModel(), host.Kernel(), runtime.Version(), out.Commit, *repeats, "bench/results/"+filepath.Base(out.Path))
	fmt.Fprintf(&md, "| Services | backend | cold full sync (ms) | one change p50 (ms) | one change p99 (ms) | cold: nft binary ÷ netlink | change p99: nft binary ÷ netlink | ruleset |\n|---|---|---|---|---|---|---|---|\n")
	for _, n := range sizes {
		got := map[string]*series{backendNetlink: {}, backendNFT: {}}
		var objects string
		for r := range *repeats {
			for _, b := range results.Order(r, backendNetlink, backendNFT) {
				res, err := measure(n, b)
				if err != nil {
					fmt.Fprintln(os.Stderr, "proxyscale:", err)
					os.Exit(1)
				}
				s := got[b]
				s.cold = append(s.cold, stats.Millis(res.cold))
				s.p50 = append(s.p50, stats.Millis(stats.FloorQuantile(res.change, .5)))
				s.p99 = append(s.p99, stats.Millis(stats.FloorQuantile(res.change, .99)))
				objects = res.objects
				changes := make([]string, len(res.change))
				for i, d := range res.change {
					changes[i] = strconv.FormatFloat(stats.Millis(d), 'f', 3, 64)
				}
				out.Sample("services=%d backend=%q repeat=%d cold_ms=%.1f change_ms=%s", n, b, r, stats.Millis(res.cold), strings.Join(changes, ","))
				out.Logf("%d services, %s, repeat %d: cold %s, change p50 %s p99 %s", n, b, r, res.cold.Round(time.Millisecond), pct(res.change, .5), pct(res.change, .99))
			}
		}
		nl, nft := got[backendNetlink], got[backendNFT]
		coldRatio, p99Ratio := make([]float64, *repeats), make([]float64, *repeats)
		for r := range *repeats {
			coldRatio[r] = results.Ratio(nft.cold[r], nl.cold[r])
			p99Ratio[r] = results.Ratio(nft.p99[r], nl.p99[r])
		}
		for _, b := range []string{backendNetlink, backendNFT} {
			s := got[b]
			ratios := [2]string{"", ""}
			if b == backendNetlink {
				ratios = [2]string{results.Spread("%.1f×", coldRatio), results.Spread("%.1f×", p99Ratio)}
			}
			fmt.Fprintf(&md, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n, b, results.Spread("%.0f", s.cold), results.Spread("%.1f", s.p50), results.Spread("%.1f", s.p99), ratios[0], ratios[1], objects)
		}
	}
	out.Report(md.String())
}

// series: one backend's per-repeat figures at one size.
type series struct{ cold, p50, p99 []float64 }

type result struct {
	cold    time.Duration
	change  []time.Duration
	objects string
}

func kernel() string { return "Linux " + host.Kernel() }

// pct is a change-latency cell: 0.1 ms resolution is what a single
// partial sync can be told apart at.
func pct(ds []time.Duration, q float64) string {
	return stats.FloorQuantile(ds, q).Round(100 * time.Microsecond).String()
}

func service(i int) *corev1.Service {
	ip := netip.AddrFrom4([4]byte{172, 30, byte(i >> 8), byte(i)}).String()
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i)},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
}

func slice(i, variant int) *discoveryv1.EndpointSlice {
	name, proto, port := "http", corev1.ProtocolTCP, int32(8080)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%05d-1", i), Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%05d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	for j := range *endpoints {
		a := netip.AddrFrom4([4]byte{10, 160 + byte(j+variant), byte(i >> 8), byte(i)})
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()}})
	}
	return es
}

func measure(n int, backend string) (result, error) {
	name := fmt.Sprintf("sluice-proxyscale-%d", os.Getpid())
	if err := host.NetnsAdd(name); err != nil {
		return result{}, err
	}
	defer host.NetnsDel(name)

	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	slices := cache.NewIndexer(cache.MetaNamespaceKeyFunc, proxy.SliceIndexers())
	for i := range n {
		svcs.Add(service(i))
		slices.Add(slice(i, 0))
	}
	var r result
	err := netns.Do(netns.Path(name), func() error {
		ctx := context.Background()
		var nft dataplane.Backend
		switch backend {
		case backendNetlink:
			nl, err := nftnl.New(dataplane.Table)
			if err != nil {
				return err
			}
			defer nl.Close()
			nft = nl
		case backendNFT:
			exe, err := dataplane.NewNFT()
			if err != nil {
				return err
			}
			nft = dataplane.FromKnftables(exe)
		}
		// The agent's table owner, synced in this goroutine (SyncNow): its
		// thread is the one inside the namespace.
		base := dataplane.NewBase()
		base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
		owner := dataplane.NewOwnerOn(nft, logr.Discard())
		owner.Register(base)
		if err := owner.SyncNow(ctx); err != nil {
			return err
		}
		node := proxy.NodeInfo{Name: "node1", IPs: []netip.Addr{netip.MustParseAddr("172.28.0.11")}}
		p := proxy.NewProxier(corelisters.NewServiceLister(svcs), slices, node, logr.Discard(), func() {})
		owner.Register(p)
		t0 := time.Now()
		if err := owner.SyncNow(ctx); err != nil {
			return fmt.Errorf("cold sync of %d services: %w", n, err)
		}
		r.cold = time.Since(t0)
		for k := range *changes {
			i := (k * 7919) % n
			es := slice(i, 1+k%2) // every change moves one service's endpoints
			slices.Update(es)
			t := time.Now()
			p.SliceChanged(es)
			if err := owner.SyncNow(ctx); err != nil {
				return fmt.Errorf("change %d: %w", k, err)
			}
			r.change = append(r.change, time.Since(t))
		}
		if s := p.Stats(); s.Full != 1 || s.Partial != *changes {
			return fmt.Errorf("want 1 full and %d partial syncs, got %+v", *changes, s)
		}
		out, err := exec.Command("nft", "-t", "list", "table", "inet", dataplane.Table).Output()
		if err != nil {
			return err
		}
		r.objects = fmt.Sprintf("%d chains, %d maps", strings.Count(string(out), "\tchain "), strings.Count(string(out), "\tmap "))
		return nil
	})
	return r, err
}

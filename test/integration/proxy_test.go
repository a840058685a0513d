//go:build integration

package integration

import (
	"context"
	"fmt"
	"github.com/go-logr/logr"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	"github.com/sluice-net/sluice/pkg/netns"
)

// TestProxierAgainstKernel runs the service proxy's full sync, partial
// syncs (affinity services included), a restart that prunes what the old
// process left, and the teardown of a hand-over, against the real kernel's
// nftables in a throw-away namespace: every transaction must be accepted,
// and the table must hold what each step promises.
func TestProxierAgainstKernel(t *testing.T) {
	ns := fmt.Sprintf("sluice-it-px%d", time.Now().UnixNano()%1e6)
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	slices := cache.NewIndexer(cache.MetaNamespaceKeyFunc, proxy.SliceIndexers())
	service := func(name, vip string, affinity bool) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: vip, ClusterIPs: []string{vip},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
		if affinity {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}
		return s
	}
	// guarded: a LoadBalancer service with source ranges.
	guarded := func(ranges ...string) *corev1.Service {
		s := service("guarded", "172.30.0.13", false)
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerSourceRanges = ranges
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.20"}}
		return s
	}
	slice := func(svc string, ips ...string) *discoveryv1.EndpointSlice {
		name, proto, port := "http", corev1.ProtocolTCP, int32(8080)
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
		}
		for _, a := range ips {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
		}
		return es
	}
	put := func(p *proxy.Proxier, objs ...any) {
		for _, o := range objs {
			switch o := o.(type) {
			case *corev1.Service:
				svcs.Update(o)
				p.ServiceChanged(o.Namespace, o.Name)
			case *discoveryv1.EndpointSlice:
				slices.Update(o)
				p.SliceChanged(o)
			}
		}
	}
	node := proxy.NodeInfo{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("192.168.7.1")}}

	err := netns.Do(netns.Path(ns), func() error {
		ctx := context.Background()
		nft, err := dataplane.NewNFT()
		if err != nil {
			return err
		}
		// The owner syncs in this goroutine (SyncNow): its thread is the
		// one inside the namespace.
		base := dataplane.NewBase()
		base.SetNetworks([]netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")}, []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")})
		own := dataplane.NewOwner(nft, logr.Discard())
		p := proxy.NewProxier(corelisters.NewServiceLister(svcs), slices, node, logr.Discard(), func() {})
		own.Register(base)
		own.Register(p)
		put(p, service("web", "172.30.0.10", false), slice("web", "10.128.0.2", "10.128.2.2", "10.128.4.2"),
			service("sticky", "172.30.0.11", true), slice("sticky", "10.128.0.3", "10.128.2.3"),
			service("old", "172.30.0.12", false), slice("old", "10.128.0.4"),
			guarded("10.0.0.0/8", "192.168.7.0/24"), slice("guarded", "10.128.0.5"))
		if err := own.SyncNow(ctx); err != nil {
			return fmt.Errorf("full sync: %w", err)
		}
		table := func() string {
			out, _ := exec.Command("nft", "list", "table", "inet", dataplane.Table).CombinedOutput()
			return string(out)
		}
		for _, want := range []string{`172.30.0.10 . tcp . 80 comment "ns/web:http/tcp" : goto pick-masq-tcp-3`,
			"172.30.0.10 . 80 . 2 : 10.128.4.2 . 8080", "dnat ip to ip daddr . tcp dport . numgen random mod 3 map @service-endpoints-tcp",
			"172.30.0.12 . tcp . 80", "update @affinity-",
			"elements = { 172.30.0.10, 172.30.0.11,",                                            // cluster-ips
			"198.51.100.20 . tcp . 80 . 10.0.0.0/8", "198.51.100.20 . tcp . 80 . 198.51.100.20", // the node is in a range: the LB address admitted
			"ip daddr . meta l4proto . th dport . ip saddr != @firewall-allow counter packets 0 bytes 0 drop"} {
			if !strings.Contains(table(), want) {
				return fmt.Errorf("after the full sync the table lacks %q:\n%s", want, table())
			}
		}

		// Partial syncs: endpoints change (also under affinity), a service goes.
		put(p, slice("web", "10.128.0.2"), slice("sticky", "10.128.0.3", "10.128.2.3", "10.128.4.3"), guarded("203.0.113.0/24"))
		svcs.Delete(service("old", "172.30.0.12", false))
		p.ServiceChanged("ns", "old")
		if err := own.SyncNow(ctx); err != nil {
			return fmt.Errorf("partial sync: %w", err)
		}
		if s := p.Stats(); s.Partial != 1 || s.Failed != 0 {
			return fmt.Errorf("want one partial sync: %+v", s)
		}
		got := table()
		if !strings.Contains(got, "goto pick-masq-tcp-1") || strings.Contains(got, "172.30.0.10 . 80 . 1 ") ||
			strings.Contains(got, "172.30.0.12") || !strings.Contains(got, "10.128.4.3") ||
			strings.Contains(got, "10.0.0.0/8") || !strings.Contains(got, "198.51.100.20 . tcp . 80 . 203.0.113.0/24") {
			return fmt.Errorf("after the partial sync:\n%s", got)
		}

		// A new process prunes what the old one left: "sticky" is gone
		// while nobody watched.
		svcs.Delete(service("sticky", "172.30.0.11", true))
		own2 := dataplane.NewOwner(nft, logr.Discard())
		own2.Register(dataplane.NewBase())
		own2.Register(proxy.NewProxier(corelisters.NewServiceLister(svcs), slices, node, logr.Discard(), func() {}))
		if err := own2.SyncNow(ctx); err != nil {
			return fmt.Errorf("sync after restart: %w", err)
		}
		if got := table(); strings.Contains(got, "affinity-") || strings.Contains(got, "ns/sticky") {
			return fmt.Errorf("the restarted proxy left the deleted service's objects:\n%s", got)
		}

		// Hand-over: every proxy object goes, the pod network's stay.
		var listed dataplane.Objects
		for _, l := range []struct {
			what string
			into *[]string
		}{{"chains", &listed.Chains}, {"sets", &listed.Sets}, {"maps", &listed.Maps}} {
			if *l.into, err = nft.List(ctx, l.what); err != nil {
				return err
			}
		}
		tx := nft.NewTransaction()
		proxy.Teardown(tx, listed)
		if err := nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("teardown: %w", err)
		}
		got = table()
		if strings.Contains(got, "chain svc-") || strings.Contains(got, "map service-") || strings.Contains(got, "chain service") ||
			strings.Contains(got, "chain pick-") || strings.Contains(got, "nodeport-ips") || strings.Contains(got, "cluster-ips") ||
			strings.Contains(got, "firewall-") {
			return fmt.Errorf("teardown left proxy objects:\n%s", got)
		}
		if !strings.Contains(got, "chain pod-antispoof") || !strings.Contains(got, "set cluster-cidrs") {
			return fmt.Errorf("teardown removed the pod network's objects:\n%s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

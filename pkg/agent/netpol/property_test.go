package netpol

import (
	"fmt"
	"math/rand"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/policy"
)

var propertyProbes = []probe{
	{tcp, 53}, {tcp, 80}, {tcp, 81}, {tcp, 8080},
	{udp, 53}, {udp, 80}, {udp, 81},
	{sctp, 80}, {sctp, 81},
	{"ICMP", 0},
}

// gen draws random clusters and policies that use every NetworkPolicy field.
type gen struct {
	r     *rand.Rand
	nodes int
	in    policy.Input
}

func (g *gen) pick(s ...string) string { return s[g.r.Intn(len(s))] }
func (g *gen) chance(p float64) bool   { return g.r.Float64() < p }

func randomInput(seed int64) (policy.Input, int) {
	g := &gen{r: rand.New(rand.NewSource(seed))}
	g.nodes = 2 + g.r.Intn(2)
	switch x := g.r.Intn(10); {
	case x < 7:
		g.in.Mode = policy.Mode(g.pick("", string(policy.ModeNetworkPolicy)))
	case x < 9:
		g.in.Mode = policy.ModeMultitenant
	default:
		g.in.Mode = policy.ModeSubnet
	}
	g.in.VNIDs = map[string]uint32{}
	nss := []string{"red", "green", "blue", "default"}[:2+g.r.Intn(3)]
	for _, ns := range nss {
		l := map[string]string{}
		if g.chance(0.6) {
			l["team"] = g.pick("a", "b")
		}
		if g.chance(0.5) {
			l["env"] = g.pick("prod", "dev")
		}
		g.in.Namespaces = append(g.in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}})
		if g.chance(0.9) {
			g.in.VNIDs[ns] = uint32(g.r.Intn(3)) // 0 is global
		}
	}
	npods := 5 + g.r.Intn(11)
	perNode := make([]int, g.nodes)
	for i := 0; i < npods; i++ {
		n := g.r.Intn(g.nodes)
		p := policy.Pod{Namespace: g.pick(nss...), Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{},
			IP: podAddr(n, perNode[n]), Node: nodeName(n)}
		perNode[n]++
		if g.chance(0.7) {
			p.Labels["app"] = g.pick("web", "db", "cache")
		}
		if g.chance(0.5) {
			p.Labels["tier"] = g.pick("fe", "be")
		}
		for _, cp := range []policy.ContainerPort{
			{Name: "http", Port: 80}, {Name: "http", Port: 8080, Protocol: tcp}, {Name: "dns", Port: 53, Protocol: udp},
			{Name: "dns-tcp", Port: 53, Protocol: tcp}, {Name: "assoc", Port: 81, Protocol: sctp}, {Name: "alt", Port: 81, Protocol: udp},
		} {
			if g.chance(0.3) {
				p.Ports = append(p.Ports, cp)
			}
		}
		if g.chance(0.05) {
			p.IP = netip.Addr{} // not started yet: no address
		}
		g.in.Pods = append(g.in.Pods, p)
	}
	for i, n := 0, g.r.Intn(5); i < n; i++ {
		g.in.Policies = append(g.in.Policies, g.policy(fmt.Sprintf("np-%d", i), g.pick(nss...)))
	}
	return g.in, g.nodes
}

func (g *gen) selector(keys ...string) *metav1.LabelSelector {
	vals := map[string][]string{"app": {"web", "db", "cache"}, "tier": {"fe", "be"}, "team": {"a", "b"}, "env": {"prod", "dev"},
		nsName: {"red", "green", "blue", "default"}}
	key := g.pick(keys...)
	switch g.r.Intn(6) {
	case 0:
		return &metav1.LabelSelector{}
	case 1, 2:
		return sel(key, g.pick(vals[key]...))
	case 3:
		return expr(key, metav1.LabelSelectorOperator(g.pick("In", "NotIn")), g.pick(vals[key]...), g.pick(vals[key]...))
	default:
		return expr(key, metav1.LabelSelectorOperator(g.pick("Exists", "DoesNotExist")))
	}
}

func (g *gen) policy(name, ns string) networkingv1.NetworkPolicy {
	var types []networkingv1.PolicyType
	switch g.r.Intn(4) {
	case 1:
		types = ingressOnly
	case 2:
		types = egressOnly
	case 3:
		types = bothTypes
	}
	var in []inR
	var out []outR
	if g.chance(0.7) {
		in = []inR{}
		for i, n := 0, g.r.Intn(3); i < n; i++ {
			in = append(in, inR{From: g.peers(), Ports: g.ports()})
		}
	}
	if g.chance(0.6) {
		out = []outR{}
		for i, n := 0, g.r.Intn(3); i < n; i++ {
			out = append(out, outR{To: g.peers(), Ports: g.ports()})
		}
	}
	podSel := g.selector("app", "tier")
	if g.chance(0.3) {
		podSel = &metav1.LabelSelector{}
	}
	return netpol(ns, name, podSel, types, in, out)
}

func (g *gen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		switch g.r.Intn(4) {
		case 0:
			out = append(out, peerPods(g.selector("app", "tier")))
		case 1:
			out = append(out, peerNS(g.selector("team", "env", nsName)))
		case 2:
			out = append(out, peerBoth(g.selector("team", "env", nsName), g.selector("app", "tier")))
		default:
			out = append(out, g.ipBlock())
		}
	}
	return out
}

func (g *gen) ipBlock() networkingv1.NetworkPolicyPeer {
	somePod := g.in.Pods[g.r.Intn(len(g.in.Pods))].IP
	cidrs := []string{"10.128.0.0/14", "10.128.1.0/24", "0.0.0.0/0", "203.0.113.0/24", "10.0.0.0/8", "192.168.0.0/16", "fd00::/8"}
	if somePod.IsValid() {
		cidrs = append(cidrs, somePod.String()+"/32", netip.PrefixFrom(somePod, 30).Masked().String())
	}
	cidr := netip.MustParsePrefix(g.pick(cidrs...))
	candidates := []string{"10.128.0.0/24", "10.128.1.0/25", "10.128.0.0/16", "203.0.113.0/25", "192.168.0.1/32", "10.128.0.0/32", "fd00::/16"}
	if somePod.IsValid() {
		candidates = append(candidates, somePod.String()+"/32")
	}
	var except []string
	for _, c := range candidates {
		e := netip.MustParsePrefix(c)
		if e.Addr().Is4() == cidr.Addr().Is4() && e.Bits() > cidr.Bits() && cidr.Contains(e.Addr()) && g.chance(0.4) {
			except = append(except, c)
		}
	}
	return peerIP(cidr.String(), except...)
}

func (g *gen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		var proto *corev1.Protocol
		if !g.chance(0.3) {
			p := corev1.Protocol(g.pick("TCP", "UDP", "SCTP"))
			proto = &p
		}
		switch g.r.Intn(5) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPort{Protocol: proto})
		case 1, 2:
			out = append(out, portNum(proto, int32([]int{53, 80, 81, 8080}[g.r.Intn(4)])))
		case 3:
			r := [][2]int32{{80, 81}, {53, 80}, {81, 8080}, {80, 80}}[g.r.Intn(4)]
			out = append(out, portRange(proto, r[0], r[1]))
		default:
			out = append(out, portNamed(proto, g.pick("http", "dns", "dns-tcp", "assoc", "alt", "missing")))
		}
	}
	return out
}

// The rendered rules agree with the reference model on every (source, destination, port,
// protocol) of hundreds of random clusters: the dataplane allows a connection iff the
// source's node lets it out (when the source is a pod there) and the destination's node lets
// it in, exactly when the model says allowed.
func TestPropertyAgreesWithModel(t *testing.T) {
	cases := 400
	if testing.Short() {
		cases = 60
	}
	start := time.Now()
	var queries, allowed, policies int
	modes := map[policy.Mode]int{}
	for seed := int64(1); seed <= int64(cases); seed++ {
		in, nodes := randomInput(seed)
		c := newCluster(t, in, nodes)
		modes[c.model.Mode()]++
		policies += len(in.Policies)
		pods := c.podEnds()
		n, a := c.check(t, append(pods, c.otherEnds()...), pods, propertyProbes, fmt.Sprintf("seed %d", seed))
		queries, allowed = queries+n, allowed+a
		n, a = c.check(t, pods, c.otherEnds(), propertyProbes, fmt.Sprintf("seed %d (to non-pods)", seed))
		queries, allowed = queries+n, allowed+a
		if t.Failed() {
			t.Fatalf("seed %d failed; policies: %+v", seed, in.Policies)
		}
	}
	t.Logf("%d random clusters (modes %v, %d policies), %d queries (%d allowed, %d denied) agree with the model in %v",
		cases, modes, policies, queries, allowed, queries-allowed, time.Since(start).Round(time.Millisecond))
}

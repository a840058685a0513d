//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Services load-balanced by the agents (no kube-proxy in the main lab),
// with real connections from pods, nodes and the external host.

const svcPodTmpl = `apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: {%s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: sluice-lab/testserver
    ports:
    - {name: http, containerPort: 80}
    - {name: dns, containerPort: 81, protocol: UDP}
    - {name: ready, containerPort: 82}
    readinessProbe:
      tcpSocket: {port: ready}
      periodSeconds: 1
      failureThreshold: 1
`

func (e *labEnv) apply(t *testing.T, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kubectl(t, "apply", "-f", f)
}

// probes sends n probes from a pod ("ns/pod"), a node ("node/NAME") or
// "external" and returns one line per probe: "NAME CLIENT:PORT" or
// "error: …".
func (e *labEnv) probes(t *testing.T, from, proto, addr string, n int, extra ...string) []string {
	t.Helper()
	args := append([]string{"exec", from, "--", labBin, "probe", proto, addr, "--count", fmt.Sprint(n), "--timeout", "1s"}, extra...)
	out, _ := e.sh(args...)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) != n {
		t.Fatalf("probe from %s to %s/%s: want %d lines, got:\n%s", from, proto, addr, n, out)
	}
	return lines
}

// answered: the set of server names that replied, and the client
// addresses they saw.
func answered(lines []string) (names map[string]int, clients map[string]bool, errs int) {
	names, clients = map[string]int{}, map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l, "error: ") || strings.HasPrefix(l, "sluice-lab probe: ") {
			errs++ // the second form: a single probe reports on stderr
			continue
		}
		f := strings.Fields(l)
		names[f[0]]++
		if ap, err := netip.ParseAddrPort(f[1]); err == nil {
			clients[ap.Addr().String()] = true
		}
	}
	return names, clients, errs
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (e *labEnv) clusterIP(t *testing.T, ns, name string) string {
	t.Helper()
	return strings.TrimSpace(e.kubectl(t, "-n", ns, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"))
}

// readyEndpoints lists the addresses the service's EndpointSlices mark
// ready.
func (e *labEnv) readyEndpoints(t *testing.T, ns, svc string) []string {
	t.Helper()
	var l struct {
		Items []struct {
			Endpoints []struct {
				Addresses  []string
				Conditions struct{ Ready *bool }
			}
		}
	}
	out := e.kubectl(t, "-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name="+svc, "-o", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, s := range l.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready = append(ready, ep.Addresses...)
			}
		}
	}
	slices.Sort(ready)
	return ready
}

func TestServices(t *testing.T) {
	e := sl
	ns := "e2e-svc"
	e.namespace(t, ns)
	pods := []struct{ name, node, labels string }{
		{"s1", "node1", "app: web, local: 'yes', zoned: 'yes'"},
		{"s2", "node2", "app: web, local: 'yes', zoned: 'yes'"},
		{"s3", "node3", "app: web, zoned: 'yes'"},
		{"c1", "node1", "role: client"},
		{"c3", "node3", "role: client"},
	}
	var m strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&m, svcPodTmpl+"---\n", p.name, ns, p.labels, p.node)
	}
	e.apply(t, m.String())
	st := e.waitReady(t, ns, "s1", "s2", "s3", "c1", "c3")
	ip := func(pod string) string { return st[pod].Status.PodIP }
	node := func(n string) string { m, _ := e.cfg.Node(n); return m.Addr.String() }

	const lbIP, extIP = "192.0.2.11", "192.0.2.10"
	e.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  type: NodePort
  selector: {app: web}
  externalIPs: [%[2]s]
  ports:
  - {name: http, port: 8080, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP, nodePort: 30053}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: %[1]s}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {local: 'yes'}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30081}
---
apiVersion: v1
kind: Service
metadata: {name: itp, namespace: %[1]s}
spec:
  internalTrafficPolicy: Local
  selector: {local: 'yes'}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: %[1]s}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: %[1]s}
spec:
  selector: {app: nothing}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: %[1]s}
spec:
  clusterIP: None
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: %[1]s}
spec:
  type: ExternalName
  externalName: example.invalid
`, ns, extIP))
	// The load balancer's address, as a cloud controller would publish it.
	e.kubectl(t, "-n", ns, "patch", "svc", "local", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"`+lbIP+`"}]}}}`)
	// The external host reaches the external and load-balancer IPs through node1.
	for _, dst := range []string{extIP, lbIP} {
		e.must(t, "exec", "external", "--", "ip", "route", "replace", dst+"/32", "via", node("node1"))
		t.Cleanup(func() { e.sh("exec", "external", "--", "ip", "route", "del", dst+"/32") })
	}
	web := e.clusterIP(t, ns, "web")
	eventually(t, 20*time.Second, "web has 3 ready endpoints", func() error {
		if got := e.readyEndpoints(t, ns, "web"); len(got) != 3 {
			return fmt.Errorf("ready: %v", got)
		}
		return nil
	})
	all := []string{"s1", "s2", "s3"}

	t.Run("ClusterIP spreads over every endpoint, keeps the pod's address", func(t *testing.T) {
		for _, c := range []struct{ proto, port string }{{"tcp", "8080"}, {"udp", "53"}} {
			names, clients, errs := answered(e.probes(t, ns+"/c1", c.proto, web+":"+c.port, 40))
			if errs > 0 || !slices.Equal(keys(names), all) {
				t.Errorf("%s: answered by %v (%d errors), want each of %v", c.proto, names, errs, all)
			}
			if !clients[ip("c1")] || len(clients) != 1 {
				t.Errorf("%s: servers saw clients %v, want only c1's %s", c.proto, clients, ip("c1"))
			}
		}
	})

	t.Run("from a node", func(t *testing.T) {
		names, _, errs := answered(e.probes(t, "node/node2", "tcp", web+":8080", 30))
		if errs > 0 || !slices.Equal(keys(names), all) {
			t.Errorf("answered by %v (%d errors), want each of %v", names, errs, all)
		}
	})

	t.Run("NodePort on every node, TCP and UDP, from outside", func(t *testing.T) {
		for _, n := range e.cfg.NodeNames() {
			for _, c := range []struct{ proto, port string }{{"tcp", "30080"}, {"udp", "30053"}} {
				names, _, errs := answered(e.probes(t, "external", c.proto, node(n)+":"+c.port, 30))
				if errs > 0 || !slices.Equal(keys(names), all) {
					t.Errorf("%s %s:%s: answered by %v (%d errors), want each of %v", n, c.proto, c.port, names, errs, all)
				}
			}
		}
	})

	t.Run("externalIP", func(t *testing.T) {
		names, _, errs := answered(e.probes(t, "external", "tcp", extIP+":8080", 30))
		if errs > 0 || !slices.Equal(keys(names), all) {
			t.Errorf("answered by %v (%d errors), want each of %v", names, errs, all)
		}
	})

	t.Run("externalTrafficPolicy Local keeps the client address and drops without a local endpoint", func(t *testing.T) {
		ext := e.cfg.External().Addr.String()
		for _, c := range []struct{ node, want string }{{"node1", "s1"}, {"node2", "s2"}} {
			names, clients, errs := answered(e.probes(t, "external", "tcp", node(c.node)+":30081", 10))
			if errs > 0 || !slices.Equal(keys(names), []string{c.want}) {
				t.Errorf("via %s: answered by %v (%d errors), want only %s", c.node, names, errs, c.want)
			}
			if !clients[ext] || len(clients) != 1 {
				t.Errorf("via %s: servers saw %v, want the external host's %s", c.node, clients, ext)
			}
		}
		if _, _, errs := answered(e.probes(t, "external", "tcp", node("node3")+":30081", 3)); errs != 3 {
			t.Errorf("node3 has no local endpoint: want every probe dropped, %d of 3 were", errs)
		}
		// The load-balancer IP (routed to node1) behaves the same.
		names, clients, errs := answered(e.probes(t, "external", "tcp", lbIP+":80", 10))
		if errs > 0 || !slices.Equal(keys(names), []string{"s1"}) || !clients[ext] {
			t.Errorf("LB IP: answered by %v seeing %v (%d errors), want only s1 seeing %s", names, clients, errs, ext)
		}
		// The health-check node port tells a load balancer where to send.
		hc := strings.TrimSpace(e.kubectl(t, "-n", ns, "get", "svc", "local", "-o", "jsonpath={.spec.healthCheckNodePort}"))
		for _, c := range []struct{ node, code string }{{"node1", "200"}, {"node3", "503"}} {
			out, _ := e.sh("exec", "external", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
				"http://"+node(c.node)+":"+hc+"/healthz")
			if strings.TrimSpace(out) != c.code {
				t.Errorf("health check on %s:%s: %q, want %s", c.node, hc, out, c.code)
			}
		}
	})

	t.Run("kube-proxy's node health check on port 10256", func(t *testing.T) {
		get := func(n, path string) (string, string) {
			out, _ := e.sh("exec", "external", "--", "curl", "-s", "-w", "\n%{http_code}", "--max-time", "2", "http://"+node(n)+":10256"+path)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			return strings.TrimSpace(lines[len(lines)-1]), lines[0]
		}
		for _, n := range e.cfg.NodeNames() {
			if code, body := get(n, "/healthz"); code != "200" || !strings.Contains(body, `"nodeEligible": true`) || strings.Contains(body, `"lastUpdated": ""`) {
				t.Errorf("%s /healthz: %s %s, want 200, eligible, a last update", n, code, body)
			}
		}
		// A node the cluster autoscaler is removing stops taking load-balancer
		// traffic; its proxy is still alive.
		e.kubectl(t, "taint", "node", "node2", "ToBeDeletedByClusterAutoscaler=1:NoSchedule")
		defer e.sh("kubectl", "--", "taint", "node", "node2", "ToBeDeletedByClusterAutoscaler-")
		eventually(t, 10*time.Second, "node2 /healthz 503", func() error {
			if code, body := get("node2", "/healthz"); code != "503" || !strings.Contains(body, `"nodeEligible": false`) {
				return fmt.Errorf("%s %s", code, body)
			}
			return nil
		})
		if code, body := get("node2", "/livez"); code != "200" {
			t.Errorf("node2 /livez while tainted: %s %s, want 200", code, body)
		}
	})

	t.Run("internalTrafficPolicy Local", func(t *testing.T) {
		itp := e.clusterIP(t, ns, "itp")
		names, _, errs := answered(e.probes(t, ns+"/c1", "tcp", itp+":80", 10))
		if errs > 0 || !slices.Equal(keys(names), []string{"s1"}) {
			t.Errorf("from node1: answered by %v (%d errors), want only s1", names, errs)
		}
		if _, _, errs := answered(e.probes(t, ns+"/c3", "tcp", itp+":80", 3)); errs != 3 {
			t.Errorf("from node3 (no local endpoint): want every probe dropped, %d of 3 were", errs)
		}
	})

	t.Run("hairpin: an endpoint reaching itself through its service", func(t *testing.T) {
		itp := e.clusterIP(t, ns, "itp") // on node1, only s1 serves it
		names, clients, errs := answered(e.probes(t, ns+"/s1", "tcp", itp+":80", 3))
		if errs > 0 || names["s1"] != 3 {
			t.Fatalf("answered by %v (%d errors), want s1 itself", names, errs)
		}
		if clients[ip("s1")] {
			t.Errorf("s1 saw its own address as the client (%v); hairpin traffic must be masqueraded", clients)
		}
	})

	t.Run("sessionAffinity ClientIP sticks, then expires", func(t *testing.T) {
		sticky := e.clusterIP(t, ns, "sticky")
		first, _, errs := answered(e.probes(t, ns+"/c1", "tcp", sticky+":80", 15))
		if errs > 0 || len(first) != 1 {
			t.Fatalf("answered by %v (%d errors), want one endpoint throughout", first, errs)
		}
		stuck := keys(first)[0]
		// After the 2 s timeout the client is free again; the next pick is
		// random (and sticks again), so try a few times.
		for i := 0; ; i++ {
			time.Sleep(3 * time.Second)
			names, _, _ := answered(e.probes(t, ns+"/c1", "tcp", sticky+":80", 5))
			if len(names) != 1 {
				t.Fatalf("after expiry: answered by %v, want one endpoint (affinity again)", names)
			}
			if keys(names)[0] != stuck {
				break
			}
			if i == 8 {
				t.Fatalf("still %s after %d expiries: affinity does not expire", stuck, i+1)
			}
		}
	})

	t.Run("no endpoints: rejected at once", func(t *testing.T) {
		empty := e.clusterIP(t, ns, "empty")
		for _, from := range []string{ns + "/c1", "node/node2"} {
			lines := e.probes(t, from, "tcp", empty+":80", 1)
			if !strings.Contains(lines[0], "connection refused") {
				t.Errorf("from %s: %q, want connection refused", from, lines[0])
			}
		}
	})

	t.Run("a cluster IP's other ports are rejected; unallocated service addresses dropped", func(t *testing.T) {
		for _, from := range []string{ns + "/c1", "node/node2"} {
			lines := e.probes(t, from, "tcp", web+":9999", 1)
			if !strings.Contains(lines[0], "connection refused") {
				t.Errorf("%s to %s:9999: %q, want connection refused", from, web, lines[0])
			}
		}
		// An address of the service network no Service holds: dropped, and
		// counted by the drop rule on the client's node.
		used := e.kubectl(t, "get", "svc", "-A", "-o", "jsonpath={..clusterIPs}")
		last := e.cfg.ServiceCIDR.Addr().As4()
		last[2], last[3] = 255, 254
		free := netip.AddrFrom4(last).String()
		if strings.Contains(used, `"`+free+`"`) {
			t.Skipf("%s happens to be allocated", free)
		}
		counter := func() int {
			out := e.must(t, "exec", "node/node1", "--", "nft", "list", "chain", "inet", "sluice", "cluster-ips-check")
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); strings.Contains(l, "@service-cidrs") && len(f) > 5 && f[len(f)-5] == "packets" {
					n, _ := strconv.Atoi(f[len(f)-4])
					return n
				}
			}
			t.Fatalf("no counted drop rule for the service network:\n%s", out)
			return 0
		}
		before := counter()
		lines := e.probes(t, ns+"/c1", "tcp", free+":80", 1)
		if !strings.Contains(lines[0], "timeout") {
			t.Errorf("to unallocated %s: %q, want no answer", free, lines[0])
		}
		if after := counter(); after <= before {
			t.Errorf("the service-network drop rule on node1 counted %d → %d packets; want more", before, after)
		}
	})

	t.Run("loadBalancerSourceRanges admit only their sources; the node port stays open", func(t *testing.T) {
		const guardedIP = "192.0.2.12"
		ext := e.cfg.External().Addr.String()
		manifest := func(ranges string) string {
			return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: guarded, namespace: %s}
spec:
  type: LoadBalancer
  selector: {app: web}
  loadBalancerSourceRanges: [%s]
  ports:
  - {port: 80, targetPort: 80, nodePort: 30084}
`, ns, ranges)
		}
		e.apply(t, manifest("198.51.100.0/24"))
		e.kubectl(t, "-n", ns, "patch", "svc", "guarded", "--subresource=status", "--type=merge",
			"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"`+guardedIP+`"}]}}}`)
		e.must(t, "exec", "external", "--", "ip", "route", "replace", guardedIP+"/32", "via", node("node1"))
		defer e.sh("exec", "external", "--", "ip", "route", "del", guardedIP+"/32")
		eventually(t, 20*time.Second, "the source ranges programmed on node1", func() error {
			out := e.must(t, "exec", "node/node1", "--", "nft", "list", "set", "inet", "sluice", "firewall-allow")
			if !strings.Contains(out, guardedIP+" . tcp . 80 . 198.51.100.0/24") {
				return fmt.Errorf("firewall-allow:\n%s", out)
			}
			return nil
		})
		if _, _, errs := answered(e.probes(t, "external", "tcp", guardedIP+":80", 3)); errs != 3 {
			t.Errorf("the external host (%s) is outside the ranges: want every probe to the LB IP dropped, %d of 3 were", ext, errs)
		}
		if names, _, errs := answered(e.probes(t, "external", "tcp", node("node1")+":30084", 10)); errs > 0 || len(names) == 0 {
			t.Errorf("node port of the guarded service: answered by %v (%d errors), want answers", names, errs)
		}
		e.apply(t, manifest("198.51.100.0/24, "+ext+"/32"))
		eventually(t, 20*time.Second, "the external host admitted", func() error {
			if names, _, errs := answered(e.probes(t, "external", "tcp", guardedIP+":80", 10)); errs > 0 || len(names) == 0 {
				return fmt.Errorf("answered by %v (%d errors)", names, errs)
			}
			return nil
		})
	})

	t.Run("headless and ExternalName services are left alone", func(t *testing.T) {
		for _, n := range e.cfg.NodeNames() {
			out := e.must(t, "exec", "node/"+n, "--", "nft", "list", "table", "inet", "sluice")
			for _, svc := range []string{ns + "/headless", ns + "/elsewhere"} {
				if strings.Contains(out, svc) {
					t.Errorf("%s: the table mentions %s", n, svc)
				}
			}
		}
	})

	t.Run("trafficDistribution PreferClose keeps traffic in the client's zone", func(t *testing.T) {
		zones := map[string]string{"node1": "zone-a", "node2": "zone-b", "node3": "zone-b"}
		for n, z := range zones {
			e.kubectl(t, "label", "node", n, "topology.kubernetes.io/zone="+z, "--overwrite")
		}
		defer func() {
			for n := range zones {
				e.sh("kubectl", "--", "label", "node", n, "topology.kubernetes.io/zone-")
			}
		}()
		e.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: close, namespace: %s}
spec:
  selector: {zoned: 'yes'}
  trafficDistribution: PreferClose
  ports:
  - {port: 80, targetPort: 80}
`, ns))
		vip := e.clusterIP(t, ns, "close")
		for _, c := range []struct {
			from string
			want []string
		}{{ns + "/c1", []string{"s1"}}, {ns + "/c3", []string{"s2", "s3"}}} {
			eventually(t, 20*time.Second, "zone-local endpoints from "+c.from, func() error {
				names, _, errs := answered(e.probes(t, c.from, "tcp", vip+":80", 20))
				if errs > 0 || !slices.Equal(keys(names), c.want) {
					return fmt.Errorf("answered by %v (%d errors), want %v", names, errs, c.want)
				}
				return nil
			})
		}
	})

	t.Run("a readiness failure removes the endpoint within a second", func(t *testing.T) {
		// Block the readiness port inside s2: the kubelet's probe fails,
		// the endpoint turns not-ready, and the service must stop using it.
		block := "add table inet probe-block; add chain inet probe-block in { type filter hook input priority 0 ; }; add rule inet probe-block in tcp dport 82 drop"
		e.must(t, "exec", ns+"/s2", "--", "nft", block)
		defer e.sh("exec", ns+"/s2", "--", "nft", "delete", "table", "inet", "probe-block")
		var since time.Time
		eventually(t, 20*time.Second, "s2 not ready in the EndpointSlice", func() error {
			if got := e.readyEndpoints(t, ns, "web"); slices.Contains(got, ip("s2")) {
				return fmt.Errorf("ready: %v", got)
			}
			since = time.Now()
			return nil
		})
		time.Sleep(time.Until(since.Add(time.Second)))
		names, _, errs := answered(e.probes(t, ns+"/c1", "tcp", web+":8080", 30))
		if errs > 0 || names["s2"] > 0 || len(names) != 2 {
			t.Errorf("a second after s2 turned not-ready: answered by %v (%d errors), want s1 and s3 only", names, errs)
		}
	})

	t.Run("UDP conntrack of a removed endpoint is cleared", func(t *testing.T) {
		// A UDP client keeps one source port, hence one conntrack entry.
		// The endpoint it is pinned to is deleted: the next datagram must
		// reach another endpoint, not vanish into the stale entry.
		const sport = "40053"
		lines := e.probes(t, ns+"/c3", "udp", web+":53", 1, "--source-port", sport)
		names, _, errs := answered(lines)
		if errs > 0 {
			t.Fatalf("first datagram: %v", lines)
		}
		pinned := keys(names)[0]
		again, _, _ := answered(e.probes(t, ns+"/c3", "udp", web+":53", 3, "--source-port", sport))
		if again[pinned] != 3 {
			t.Fatalf("same source port answered by %v, want %s every time (one conntrack entry)", again, pinned)
		}
		e.kubectl(t, "-n", ns, "delete", "pod", pinned, "--wait=false")
		eventually(t, 20*time.Second, pinned+" gone from the EndpointSlice", func() error {
			if got := e.readyEndpoints(t, ns, "web"); slices.Contains(got, ip(pinned)) {
				return fmt.Errorf("ready: %v", got)
			}
			return nil
		})
		time.Sleep(time.Second)
		after, _, errs := answered(e.probes(t, ns+"/c3", "udp", web+":53", 3, "--source-port", sport))
		if errs > 0 || after[pinned] > 0 {
			t.Errorf("after %s was removed: answered by %v (%d errors), want other endpoints", pinned, after, errs)
		}
	})
}

// TestServiceScaledToZero: a deployment scaled to zero makes its service
// reject at once, and scaling up brings it back.
func TestServiceScaledToZero(t *testing.T) {
	e := sl
	ns := "e2e-zero"
	e.namespace(t, ns)
	e.deploy(t, ns, "zero", 2)
	e.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: zero, namespace: %s}
spec:
  selector: {app: zero}
  ports:
  - {port: 80, targetPort: 80}
`, ns))
	e.applyPod(t, ns, "client", "node2", "http")
	e.waitReady(t, ns, "client")
	vip := e.clusterIP(t, ns, "zero")
	eventually(t, 60*time.Second, "zero answers", func() error {
		if names, _, errs := answered(e.probes(t, ns+"/client", "tcp", vip+":80", 1)); errs > 0 || len(names) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	e.kubectl(t, "-n", ns, "scale", "deployment", "zero", "--replicas=0")
	var since time.Time
	eventually(t, 30*time.Second, "no ready endpoints", func() error {
		if got := e.readyEndpoints(t, ns, "zero"); len(got) > 0 {
			return fmt.Errorf("ready: %v", got)
		}
		since = time.Now()
		return nil
	})
	time.Sleep(time.Until(since.Add(time.Second)))
	lines := e.probes(t, ns+"/client", "tcp", vip+":80", 3)
	for _, l := range lines {
		if !strings.Contains(l, "connection refused") {
			t.Errorf("scaled to zero: %q, want connection refused", l)
		}
	}
	e.kubectl(t, "-n", ns, "scale", "deployment", "zero", "--replicas=1")
	eventually(t, 60*time.Second, "zero answers again", func() error {
		if names, _, errs := answered(e.probes(t, ns+"/client", "tcp", vip+":80", 1)); errs > 0 || len(names) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

// serverBehindService runs pod "server" (node2) behind Service "s" and pod
// "client" (node1) in a new namespace ns; the returned check says whether
// the client reaches the server through the service.
func (e *labEnv) serverBehindService(t *testing.T, ns string) func() error {
	t.Helper()
	e.namespace(t, ns)
	e.applyPod(t, ns, "server", "node2", "http")
	e.applyPod(t, ns, "client", "node1", "http")
	e.waitReady(t, ns, "server", "client")
	e.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: s, namespace: %s}
spec:
  selector: {app: none}
  ports: [{port: 80, targetPort: 80}]
`, ns))
	e.kubectl(t, "-n", ns, "label", "pod", "server", "app=none")
	vip := e.clusterIP(t, ns, "s")
	return func() error {
		if names, _, _ := answered(e.probes(t, ns+"/client", "tcp", vip+":80", 1)); names["server"] != 1 {
			return fmt.Errorf("not answered: %v", names)
		}
		return nil
	}
}

// TestServiceProxyHandover: ClusterNetwork spec.serviceProxy External hands
// Services to another proxy (the agents remove their rules), Sluice takes
// them back; switched live.
func TestServiceProxyHandover(t *testing.T) {
	e := sl
	ns := "e2e-handover"
	reach := e.serverBehindService(t, ns)
	eventually(t, 20*time.Second, "service answers", reach)

	set := func(mode string) {
		e.kubectl(t, "patch", "clusternetwork", "default", "--type=merge", "-p", `{"spec":{"serviceProxy":"`+mode+`"}}`)
	}
	set("External")
	t.Cleanup(func() { set("Sluice") })
	for _, n := range e.cfg.NodeNames() {
		eventually(t, 20*time.Second, n+" drops its service rules", func() error {
			out := e.must(t, "exec", "node/"+n, "--", "nft", "list", "table", "inet", "sluice")
			if strings.Contains(out, "chain svc-") || strings.Contains(out, "map service-ips") {
				return fmt.Errorf("still has service chains")
			}
			if !strings.Contains(out, "chain pod-antispoof") {
				return fmt.Errorf("the pod network's chains went too:\n%s", out)
			}
			return nil
		})
	}
	if reach() == nil {
		t.Errorf("with serviceProxy External and no kube-proxy the service still answered")
	}
	set("Sluice")
	eventually(t, 20*time.Second, "service answers again", reach)
}

// TestKubeProxyLab: the lab runs kube-proxy instead (the comparison setup
// of bench/proxy): the agents leave Services alone and kube-proxy serves
// them over Sluice's pod network.
func TestKubeProxyLab(t *testing.T) {
	e := startLab(t, "kp", "--nodes", "2", "--service-proxy", "kube-proxy-nftables")
	ns := "e2e-kp"
	reach := e.serverBehindService(t, ns)
	eventually(t, 30*time.Second, "service answers through kube-proxy", reach)
	for _, n := range e.cfg.NodeNames() {
		if out := e.must(t, "exec", "node/"+n, "--", "nft", "list", "table", "inet", "sluice"); strings.Contains(out, "chain svc-") {
			t.Errorf("%s: the agent programmed services although kube-proxy has them", n)
		}
		if _, code := e.sh("exec", "node/"+n, "--", "nft", "list", "table", "ip", "kube-proxy"); code != 0 {
			t.Errorf("%s: no kube-proxy table", n)
		}
	}
}

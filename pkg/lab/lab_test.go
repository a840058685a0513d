package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestNewConfig(t *testing.T) {
	c, err := NewConfig(DefaultStateDir, 3, DefaultAPIPort)
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "sluice-lab" {
		t.Errorf("default prefix %q", c.Prefix)
	}
	other, _ := NewConfig("/tmp/x", 3, DefaultAPIPort)
	if other.Prefix == c.Prefix || !strings.HasPrefix(other.Prefix, "sl-") {
		t.Errorf("another state dir got prefix %q", other.Prefix)
	}
	if err := other.Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []struct {
		nodes, port int
		want        string
	}{{0, 1, "--nodes 0"}, {MaxNodes + 1, 1, fmt.Sprintf("--nodes %d", MaxNodes+1)}, {3, 70000, "--api-port 70000"}} {
		if _, err := NewConfig("/tmp/x", bad.nodes, bad.port); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("NewConfig(%d, %d) = %v, want error naming %q", bad.nodes, bad.port, err, bad.want)
		}
	}
}

func TestAddressesAndNames(t *testing.T) {
	c, _ := NewConfig("/tmp/x", MaxNodes, DefaultAPIPort)
	seen := map[string]string{}
	for _, m := range c.Members() {
		if !c.Fabric.Contains(m.Addr) {
			t.Errorf("%s: %s outside the fabric %s", m.Name, m.Addr, c.Fabric)
		}
		if prev, dup := seen[m.Addr.String()]; dup {
			t.Errorf("%s and %s share %s", prev, m.Name, m.Addr)
		}
		seen[m.Addr.String()] = m.Name
		if !c.Owns(m.Netns) {
			t.Errorf("lab does not own its namespace %s", m.Netns)
		}
		// Interface names are at most 15 bytes (IFNAMSIZ-1).
		if peer := "v-" + m.Name; len(peer) > 15 {
			t.Errorf("interface name %q too long", peer)
		}
	}
	if !c.Owns(c.PodNetnsPrefix("node2") + "abcdef12") {
		t.Error("lab does not own its pods' namespaces")
	}
	if c.Owns("sluice-lab-node1") || c.Owns("unrelated") {
		t.Error("lab claims a namespace of another lab")
	}
	if _, ok := c.Node("node51"); ok {
		t.Error("node51 exists in a 50-node lab")
	}
}

// fakeRunner answers `ip` commands from a canned table and records them.
type fakeRunner struct {
	out  map[string]string
	runs []string
}

func (f *fakeRunner) Run(_ context.Context, argv ...string) ([]byte, error) {
	k := strings.Join(argv, " ")
	f.runs = append(f.runs, k)
	return []byte(f.out[k]), nil
}

func TestTopology(t *testing.T) {
	c, _ := NewConfig("/tmp/x", 2, DefaultAPIPort)
	cmds := TopologyCommands(c)
	var flat []string
	for _, argv := range cmds {
		flat = append(flat, strings.Join(argv, " "))
	}
	p := c.Prefix
	for _, want := range []string{
		"ip netns add " + p + "-fabric",
		"ip -n " + p + "-fabric link add fabric0 type bridge",
		"ip link add v-node2 netns " + p + "-fabric type veth peer name eth0 netns " + p + "-node2",
		"ip -n " + p + "-node2 addr add 172.28.0.12/24 dev eth0",
		"ip -n " + p + "-cp addr add 172.28.0.2/24 dev eth0",
		"ip -n " + p + "-ext addr add 172.28.0.200/24 dev eth0",
	} {
		if !slices.Contains(flat, want) {
			t.Errorf("missing %q", want)
		}
	}
	// Every namespace is created before anything is put in it.
	made := map[string]bool{}
	for _, argv := range cmds {
		if argv[1] == "netns" && argv[2] == "add" {
			made[argv[3]] = true
			continue
		}
		for i, a := range argv {
			if (a == "-n" || a == "netns") && i+1 < len(argv) && !made[argv[i+1]] {
				t.Errorf("%q uses %s before it exists", strings.Join(argv, " "), argv[i+1])
			}
		}
	}

	r := &fakeRunner{out: map[string]string{"ip netns list": p + "-fabric\n" + p + "-cp (id: 1)\n"}}
	if ok, why := TopologyHealthy(context.Background(), r, c); ok || !strings.Contains(why, p+"-node1 is missing") {
		t.Errorf("healthy=%v why=%q with namespaces missing", ok, why)
	}
	list := ""
	for _, ns := range c.Namespaces() {
		list += ns + "\n"
	}
	r.out["ip netns list"] = list
	for _, m := range c.Members() {
		r.out["ip -n "+m.Netns+" -o -4 addr show dev eth0"] = fmt.Sprintf("2: eth0    inet %s/24 brd x scope global eth0", m.Addr)
	}
	if ok, why := TopologyHealthy(context.Background(), r, c); !ok {
		t.Errorf("complete topology unhealthy: %s", why)
	}
	delete(r.out, "ip -n "+p+"-ext -o -4 addr show dev eth0")
	if ok, _ := TopologyHealthy(context.Background(), r, c); ok {
		t.Error("member without its address counted healthy")
	}
}

func TestControlPlaneFlags(t *testing.T) {
	c, _ := NewConfig("/tmp/x", 3, DefaultAPIPort)
	comps := ControlPlaneComponents(c, "/bin")
	flags := map[string]string{}
	for _, comp := range comps {
		flags[comp.Name] = strings.Join(comp.Argv, " ")
		if comp.Netns != c.ControlPlane().Netns {
			t.Errorf("%s runs in %q, not the control plane's namespace", comp.Name, comp.Netns)
		}
	}
	for comp, want := range map[string][]string{
		"kube-apiserver": {"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
			"--service-account-signing-key-file=", "--service-account-key-file=", "--service-cluster-ip-range=172.30.0.0/16",
			"--advertise-address=172.28.0.2"},
		"kube-controller-manager": {"--controllers=*", "--service-account-private-key-file=", "--root-ca-file=", "--use-service-account-credentials=true"},
		"etcd":                    {"--data-dir=/tmp/x/etcd"},
	} {
		for _, w := range want {
			if !strings.Contains(flags[comp], w) {
				t.Errorf("%s lacks %s: %s", comp, w, flags[comp])
			}
		}
	}
	host := HostComponents(c, "/self")
	var kubelets int
	for _, comp := range host {
		if strings.HasPrefix(comp.Name, "kubelet-") {
			kubelets++
		}
	}
	if kubelets != 3 {
		t.Errorf("%d kubelets for 3 nodes", kubelets)
	}
}

func TestInstallHelmValidation(t *testing.T) {
	base := func() *Config {
		c, err := NewConfig("/tmp/x", 3, DefaultAPIPort)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"processes on the lab kubelet", func(c *Config) {}, ""},
		{"helm on real nodes with an image", func(c *Config) {
			c.Runtime, c.Install, c.SluiceImage = RuntimeContainerd, InstallHelm, "/tmp/sluice.tar"
		}, ""},
		{"helm on the lab kubelet", func(c *Config) { c.Install, c.SluiceImage = InstallHelm, "/tmp/sluice.tar" }, "--install helm needs real nodes"},
		{"helm without an image (built from source at up)", func(c *Config) { c.Runtime, c.Install = RuntimeContainerd, InstallHelm }, ""},
		{"helm without Sluice", func(c *Config) {
			c.Runtime, c.Install, c.SluiceImage, c.PodNetwork = RuntimeContainerd, InstallHelm, "/tmp/sluice.tar", PodNetworkNone
		}, "needs --pod-network sluice"},
		{"unknown mode", func(c *Config) { c.Install = "kustomize" }, `--install "kustomize"`},
	}
	for _, tc := range cases {
		c := base()
		tc.edit(c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	// With helm the lab starts no Sluice process and makes no identity for one.
	c := base()
	c.Runtime, c.Install, c.SluiceImage = RuntimeContainerd, InstallHelm, "/tmp/sluice.tar"
	if comps := SluiceComponents(c); len(comps) != 0 {
		t.Errorf("--install helm: the lab would start %d Sluice processes", len(comps))
	}
	vals := strings.Join(c.ChartValues("sluice.dev/sluice:v1.2.3"), " ")
	for _, want := range []string{"image.repository=sluice.dev/sluice", "image.tag=v1.2.3", "image.pullPolicy=Never",
		"kubernetesAPI.host=172.28.0.2", "serviceNetwork=172.30.0.0/16", "agent.netnsDirs[0]=/run/netns", "serviceProxy.enabled=true"} {
		if !strings.Contains(vals, want) {
			t.Errorf("chart values %q lack %q", vals, want)
		}
	}
}

func TestSplitImage(t *testing.T) {
	for in, want := range map[string][2]string{
		"sluice.dev/sluice:v1":           {"sluice.dev/sluice", "v1"},
		"localhost:5000/sluice":          {"localhost:5000/sluice", "latest"},
		"localhost:5000/sluice:v2-dirty": {"localhost:5000/sluice", "v2-dirty"},
	} {
		if r, tag := splitImage(in); r != want[0] || tag != want[1] {
			t.Errorf("splitImage(%q) = %q %q, want %q %q", in, r, tag, want[0], want[1])
		}
	}
}

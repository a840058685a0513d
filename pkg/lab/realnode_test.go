package lab

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

func realConfig(t *testing.T, stateDir string, nodes int) *Config {
	t.Helper()
	c, err := NewConfig(stateDir, nodes, DefaultAPIPort)
	if err != nil {
		t.Fatal(err)
	}
	c.Runtime = RuntimeContainerd
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRuntimeValidation(t *testing.T) {
	c := realConfig(t, "/tmp/x", 2)
	if !c.RealNodes() {
		t.Error("containerd runtime is not RealNodes")
	}
	c.Runtime = "docker"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `runtime "docker"`) {
		t.Errorf("Validate accepted runtime docker: %v", err)
	}
	for _, ok := range []string{"", RuntimeLab, RuntimeContainerd} {
		if err := ValidRuntime(ok); err != nil {
			t.Errorf("ValidRuntime(%q): %v", ok, err)
		}
	}
	if err := ValidRuntime("crio"); err == nil || !strings.Contains(err.Error(), "--runtime \"crio\"") {
		t.Errorf("ValidRuntime(crio) = %v", err)
	}
}

func TestKubeletConfig(t *testing.T) {
	c := realConfig(t, "/tmp/x", 2)
	var kc map[string]any
	if err := yaml.UnmarshalStrict([]byte(KubeletConfig(c, "node2")), &kc); err != nil {
		t.Fatalf("kubelet config is not YAML: %v\n%s", err, KubeletConfig(c, "node2"))
	}
	m, _ := c.Node("node2")
	want := map[string]any{
		"kind":                     "KubeletConfiguration",
		"address":                  m.Addr.String(),
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               "/" + m.Netns,
		"protectKernelDefaults":    true,
		"readOnlyPort":             float64(0),
		"containerRuntimeEndpoint": "unix://" + filepath.Join(MachineRunDir, m.Netns, "containerd.sock"),
		"tlsCertFile":              "/tmp/x/pki/kubelet-serving-node2.crt",
	}
	for k, v := range want {
		if kc[k] != v {
			t.Errorf("%s = %#v, want %#v", k, kc[k], v)
		}
	}
	authn := kc["authentication"].(map[string]any)
	if authn["anonymous"].(map[string]any)["enabled"] != false || authn["webhook"].(map[string]any)["enabled"] != true ||
		authn["x509"].(map[string]any)["clientCAFile"] != "/tmp/x/pki/ca.crt" {
		t.Errorf("authentication %v: want anonymous off, webhook on, the lab CA", authn)
	}
	if kc["authorization"].(map[string]any)["mode"] != "Webhook" {
		t.Errorf("authorization %v", kc["authorization"])
	}
	if ev := kc["evictionHard"].(map[string]any); ev["nodefs.available"] != "1%" {
		t.Errorf("evictionHard %v", ev)
	}
}

func TestContainerdConfig(t *testing.T) {
	c := realConfig(t, "/tmp/x", 2)
	toml := ContainerdConfig(c, "node1", "/cache/bin")
	m, _ := c.Node("node1")
	run := filepath.Join(MachineRunDir, m.Netns)
	for _, line := range []string{
		`version = 3`,
		`root = "/tmp/x/nodes/node1/containerd/root"`,
		`state = "/tmp/x/nodes/node1/containerd/state"`,
		`imports = []`,
		`address = "` + run + `/containerd.sock"`,
		`address = "` + run + `/containerd.sock.ttrpc"`,
		`socket_dir = "` + run + `/s"`,
		`path = "/tmp/x/nodes/node1/containerd/opt"`,
		`disable = true`,
		`sandbox = "` + DefaultSandboxImage + `"`,
		`restrict_oom_score_adj = true`,
		`netns_mounts_under_state_dir = false`,
		`BinaryName = "/cache/bin/runc"`,
		`Root = "/tmp/x/nodes/node1/containerd/runc"`,
		`SystemdCgroup = false`,
		`bin_dirs = ["/tmp/x/nodes/node1/cni/bin"]`,
		`conf_dir = "/tmp/x/nodes/node1/cni/net.d"`,
		`use_internal_loopback = true`,
		`stream_server_address = '127.0.0.1'`,
	} {
		if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(line) + `$`).MatchString(toml) {
			t.Errorf("config.toml lacks %q:\n%s", line, toml)
		}
	}
	c.SandboxImage = "example.test/pause:1"
	if !strings.Contains(ContainerdConfig(c, "node1", "/b"), `sandbox = "example.test/pause:1"`) {
		t.Error("SandboxImage not used")
	}
	// Paths with quotes or backslashes stay one TOML string.
	odd := realConfig(t, `/tmp/a"b\c`, 1)
	if !strings.Contains(ContainerdConfig(odd, "node1", "/b"), `root = "/tmp/a\"b\\c/nodes/node1/containerd/root"`) {
		t.Errorf("state dir not escaped:\n%s", ContainerdConfig(odd, "node1", "/b"))
	}
}

// TestSocketPaths: a shim's socket is socket_dir plus 64 hex digits, and a
// unix socket path has at most 107 bytes, whatever the state directory.
func TestSocketPaths(t *testing.T) {
	for _, sd := range []string{DefaultStateDir, "/tmp/sluice-e2e-1234567890/a-rather-long-lab-name/for-testing"} {
		c := realConfig(t, sd, MaxNodes)
		for _, n := range c.NodeNames() {
			if l := len(filepath.Join(c.NodeRunDir(n), "s")) + 1 + 64; l > 107 {
				t.Errorf("%s: shim socket path of %s is %d bytes", sd, n, l)
			}
			if l := len(c.ContainerdSocket(n) + ".ttrpc"); l > 107 {
				t.Errorf("%s: ttrpc socket of %s is %d bytes", sd, n, l)
			}
		}
	}
}

func TestRealNodeComponents(t *testing.T) {
	c := realConfig(t, "/tmp/x", 2)
	comps := NodeRuntimeComponents(c, "/usr/bin/sluice-lab", "/cache/bin")
	if len(comps) != 4 {
		t.Fatalf("%d components, want holder and containerd for 2 nodes", len(comps))
	}
	hold, ctrd := comps[0], comps[1]
	m, _ := c.Node("node1")
	wantHold := []string{"unshare", "--mount", "--propagation", "slave", "--", "/usr/bin/sluice-lab", "node-mounts",
		"--outer-mntns=" + mountNS("self"),
		"--bind=/tmp/x/nodes/node1/kubelet:/var/lib/kubelet",
		"--bind=/tmp/x/nodes/node1/log:/var/log",
		"--bind=/tmp/x/nodes/node1/cni/net.d:/etc/cni/net.d",
		"--bind=/tmp/x/nodes/node1/cni/bin:/opt/cni/bin",
		"--bind=/tmp/x/nodes/node1/sluice/state:/var/lib/sluice",
		"--bind=/tmp/x/nodes/node1/sluice/run:/run/sluice",
		"--bind=/tmp/x/nodes/node1/netns:/run/netns"}
	if hold.Netns != m.Netns || !slices.Equal(hold.Argv, wantHold) || hold.MountNSOf != "" {
		t.Errorf("holder %+v", hold)
	}
	if ctrd.MountNSOf != hold.Name || ctrd.Netns != m.Netns || ctrd.Argv[0] != "/cache/bin/containerd" ||
		ctrd.Health != "unix://"+c.ContainerdSocket("node1") || !strings.HasPrefix(ctrd.Env[0], "PATH=/cache/bin:") {
		t.Errorf("containerd %+v", ctrd)
	}
	kl := realKubelet(c, "node1", "/cache/bin")
	for _, a := range []string{"--hostname-override=node1", "--node-ip=" + m.Addr.String(), "--root-dir=/var/lib/kubelet",
		"--config=/tmp/x/nodes/node1/kubelet-config.yaml", "--kubeconfig=/tmp/x/kubeconfigs/kubelet-node1.conf"} {
		if !slices.Contains(kl.Argv, a) {
			t.Errorf("kubelet argv %v lacks %s", kl.Argv, a)
		}
	}
	if kl.MountNSOf != hold.Name || kl.Health != "http://127.0.0.1:10248/healthz" {
		t.Errorf("kubelet %+v", kl)
	}
	// Host components: the real kubelet replaces the lab kubelet.
	found := false
	for _, comp := range HostComponents(c, "/usr/bin/sluice-lab") {
		if comp.Name == "kubelet-node2" {
			found = true
			if comp.Argv[0] != filepath.Join(kubebuild.NodeRuntimeDir(), "kubelet") || comp.MountNSOf != holderName("node2") {
				t.Errorf("kubelet-node2 is %+v", comp)
			}
		}
	}
	if !found {
		t.Error("no kubelet-node2 among the host components")
	}
	// Agents enter the node's mount namespace; the controller does not.
	c.PodNetwork, c.SluiceBinDir = PodNetworkSluice, "/b"
	for _, comp := range c.inNodeMountNS(SluiceComponents(c)) {
		switch {
		case strings.HasPrefix(comp.Name, "sluice-agent-node1") && comp.MountNSOf != holderName("node1"),
			strings.HasPrefix(comp.Name, "sluice-controller") && comp.MountNSOf != "":
			t.Errorf("%s enters %q", comp.Name, comp.MountNSOf)
		}
	}
	// Lab runtime: nothing of the above.
	c.Runtime = RuntimeLab
	if len(NodeRuntimeComponents(c, "/s", "/b")) != 0 || len(c.kubeletServingRequests()) != 0 {
		t.Error("lab runtime has real-node components")
	}
}

func TestParseCgroupMounts(t *testing.T) {
	mi := `25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
28 25 0:25 / /sys/fs/cgroup/cpuset rw,nosuid shared:12 - cgroup cgroup rw,cpuset
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid shared:14 - cgroup cgroup rw,xattr,name=systemd
`
	ms, err := parseCgroupMounts(strings.NewReader(mi))
	if err != nil {
		t.Fatal(err)
	}
	want := []cgroupMount{
		{Dir: "/sys/fs/cgroup/unified", V2: true},
		{Dir: "/sys/fs/cgroup/cpuset", Cpuset: true},
		{Dir: "/sys/fs/cgroup/cpu,cpuacct"},
		{Dir: "/sys/fs/cgroup/systemd"},
	}
	if !slices.Equal(ms, want) {
		t.Errorf("got %+v, want %+v", ms, want)
	}
}

func TestMkdirAllRecord(t *testing.T) {
	d := t.TempDir()
	os.Mkdir(filepath.Join(d, "a"), 0o755)
	made, err := mkdirAllRecord(filepath.Join(d, "a", "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(d, "a", "b"), filepath.Join(d, "a", "b", "c")}; !slices.Equal(made, want) {
		t.Errorf("made %v, want %v", made, want)
	}
	if made, _ := mkdirAllRecord(filepath.Join(d, "a", "b", "c")); len(made) != 0 {
		t.Errorf("second call made %v", made)
	}
}

func TestSplitBind(t *testing.T) {
	if s, d, err := SplitBind("/a/b:/var/lib/kubelet"); err != nil || s != "/a/b" || d != "/var/lib/kubelet" {
		t.Errorf("SplitBind = %q %q %v", s, d, err)
	}
	for _, bad := range []string{"/a", "a:/b", "/a:b", ""} {
		if _, _, err := SplitBind(bad); err == nil {
			t.Errorf("SplitBind(%q) accepted", bad)
		}
	}
}

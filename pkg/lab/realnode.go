package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/lab/pki"
	"github.com/sluice-net/sluice/pkg/lab/proc"
)

// Runtimes the lab's nodes can run pods with.
const (
	// RuntimeLab is the lab kubelet: pods are network namespaces with a test
	// server in each (fast, the default).
	RuntimeLab = "lab"
	// RuntimeContainerd is a real node: kubelet, containerd and runc, pods
	// are real containers.
	RuntimeContainerd = "containerd"
)

// ValidRuntime checks a --runtime value ("" is the default, lab).
func ValidRuntime(r string) error {
	switch r {
	case "", RuntimeLab, RuntimeContainerd:
		return nil
	}
	return fmt.Errorf("--runtime %q: want %s or %s", r, RuntimeLab, RuntimeContainerd)
}

// RealNodes reports whether the lab's nodes run kubelet and containerd.
func (c *Config) RealNodes() bool { return c.Runtime == RuntimeContainerd }

// DefaultSandboxImage is the pause image a real node's containerd runs as
// every pod's sandbox, unless the lab's configuration names another. It is
// never pulled: `up` imports it from a local archive (`sluice-lab images` makes it).
const DefaultSandboxImage = image.PauseRef

// MachineRunDir holds what real nodes need on short, machine-wide paths:
// one directory per node for containerd's sockets (a unix socket path has at
// most 107 bytes, and a shim's is 64 bytes of hash long), and the record of
// what the lab changed on the machine (sysctls, directories it made), which
// the last lab to go down restores.
const MachineRunDir = "/run/sluice-lab"

// NodeRunDir holds a real node's containerd sockets.
func (c *Config) NodeRunDir(node string) string {
	m, _ := c.Node(node)
	return filepath.Join(MachineRunDir, m.Netns)
}

// ContainerdSocket is the node's containerd (and CRI) socket.
func (c *Config) ContainerdSocket(node string) string {
	return filepath.Join(c.NodeRunDir(node), "containerd.sock")
}

// NodeCgroupRoot is the cgroup under which a real node's kubelet puts its
// pods (kubelet's cgroupRoot), in every cgroup hierarchy.
func (c *Config) NodeCgroupRoot(node string) string {
	m, _ := c.Node(node)
	return "/" + m.Netns
}

// Real node directories: containerd's root and state, the kubelet's root
// (bind-mounted at /var/lib/kubelet inside the node) and the node's /var/log.
func (c *Config) containerdDir(node string) string {
	return filepath.Join(c.NodeDir(node), "containerd")
}
func (c *Config) KubeletRootDir(node string) string {
	return filepath.Join(c.NodeDir(node), "kubelet")
}
func (c *Config) NodeLogDir(node string) string { return filepath.Join(c.NodeDir(node), "log") }

// Paths inside a real node's mount namespace that are the node's own: the
// lab bind-mounts a directory of the node over each, so a kubelet, a CNI
// plugin or a DaemonSet's hostPath finds the node's files at the usual
// places. The kubelet needs the first two (its device-plugin socket is always
// /var/lib/kubelet/device-plugins/kubelet.sock, the container log links
// always /var/log/containers); the CNI paths are where a network's DaemonSet
// installs its plugin and configuration.
const (
	nodeKubeletDir = "/var/lib/kubelet"
	nodeLogDir     = "/var/log"
	nodeCNIConfDir = "/etc/cni/net.d"
	nodeCNIBinDir  = "/opt/cni/bin"
	// Sluice's agent keeps its IPAM state and its CNI socket at fixed host paths (the
	// chart's hostPath volumes), and the runtime mounts pods' network namespaces under
	// /run/netns, which the agent enters: each node has its own.
	nodeSluiceStateDir = "/var/lib/sluice"
	nodeSluiceRunDir   = "/run/sluice"
	nodeNetnsDir       = "/run/netns"
)

// NodeBinds are the bind mounts of a real node's mount namespace, source
// (in the state directory) to target (the usual path).
func (c *Config) NodeBinds(node string) [][2]string {
	return [][2]string{
		{c.KubeletRootDir(node), nodeKubeletDir},
		{c.NodeLogDir(node), nodeLogDir},
		{c.CNIConfDir(node), nodeCNIConfDir},
		{c.CNIBinDir(node), nodeCNIBinDir},
		{filepath.Join(c.NodeDir(node), "sluice", "state"), nodeSluiceStateDir},
		{filepath.Join(c.NodeDir(node), "sluice", "run"), nodeSluiceRunDir},
		{filepath.Join(c.NodeDir(node), "netns"), nodeNetnsDir},
	}
}

// sandboxImage is the lab's pause image.
func (c *Config) sandboxImage() string {
	if c.SandboxImage != "" {
		return c.SandboxImage
	}
	return DefaultSandboxImage
}

// ContainerdConfig renders a real node's containerd config.toml (version 3,
// containerd 2.x). bin holds runc.
func ContainerdConfig(c *Config, node, bin string) string {
	d := c.containerdDir(node)
	run := c.NodeRunDir(node)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return fmt.Sprintf(`# containerd of lab node %[1]s, written by sluice-lab.
version = 3
root = %[2]s
state = %[3]s
# Nothing else is read: the node's whole configuration is this file.
imports = []

[grpc]
  address = %[4]s

[ttrpc]
  address = %[5]s

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  # Shim sockets beside the node's socket: short, and the node's own.
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = %[6]s

  # The node's own /opt/containerd.
  [plugins.'io.containerd.internal.v1.opt']
    path = %[7]s

  # No NRI plugins run, and no other node's NRI socket is shared.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[8]s

  [plugins.'io.containerd.cri.v1.runtime']
    # root here lacks CAP_SYS_RESOURCE (a VM's or container's root often
    # does); without this runc cannot lower a container's oom_score_adj
    # below its own and fails with "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    # Pods' network namespaces in /run/netns, the default, which is the node's own
    # (bind-mounted in its mount namespace), where a network's DaemonSet finds them.
    netns_mounts_under_state_dir = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = %[9]s
          Root = %[10]s
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[11]s]
      conf_dir = %[12]s
      max_conf_num = 1
      # containerd brings the pod's lo up itself instead of running the
      # loopback plugin, which a network's DaemonSet does not install.
      use_internal_loopback = true

  [plugins.'io.containerd.grpc.v1.cri']
    # kubectl exec/attach/port-forward: the kubelet proxies to this server
    # on the node's loopback.
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
`, node, q(filepath.Join(d, "root")), q(filepath.Join(d, "state")),
		q(filepath.Join(run, "containerd.sock")), q(filepath.Join(run, "containerd.sock.ttrpc")),
		q(filepath.Join(run, "s")), q(filepath.Join(d, "opt")), q(c.sandboxImage()),
		q(filepath.Join(bin, "runc")), q(filepath.Join(d, "runc")),
		q(c.CNIBinDir(node)), q(c.CNIConfDir(node)))
}

// KubeletConfig renders a real node's KubeletConfiguration.
func KubeletConfig(c *Config, node string) string {
	m, _ := c.Node(node)
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return fmt.Sprintf(`# kubelet of lab node %[1]s, written by sluice-lab.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[3]s
tlsPrivateKeyFile: %[4]s
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[5]s}
authorization:
  mode: Webhook
containerRuntimeEndpoint: %[6]s
# This machine's cgroups are v1, which kubelet refuses by default since 1.35.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
# The node's pods (and their QoS classes) under a cgroup of their own,
# made by sluice-lab in every hierarchy and removed by down.
cgroupRoot: %[7]s
cgroupsPerQOS: true
# sluice-lab sets the sysctls kubelet wants (they are machine-wide) itself,
# once, and restores them when the last lab goes down: kubelet only checks.
protectKernelDefaults: true
# Imported images cannot be pulled again: never collect them, and keep
# evicting for the lab's disk and memory out of the way of a developer's
# machine at 1%%.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
clusterDomain: cluster.local
podLogsDir: /var/log/pods
staticPodPath: ""
nodeStatusReportFrequency: 1m0s
`, node, m.Addr, q(c.pem("kubelet-serving-"+node, "crt")), q(c.pem("kubelet-serving-"+node, "key")),
		q(c.pem("ca", "crt")), q("unix://"+c.ContainerdSocket(node)), q(c.NodeCgroupRoot(node)))
}

// KubeletConfigPath and ContainerdConfigPath are where up writes them.
func (c *Config) KubeletConfigPath(node string) string {
	return filepath.Join(c.NodeDir(node), "kubelet-config.yaml")
}
func (c *Config) ContainerdConfigPath(node string) string {
	return filepath.Join(c.containerdDir(node), "config.toml")
}

// holderName, containerdName: component names of a real node's processes.
func holderName(node string) string     { return "mountns-" + node }
func containerdName(node string) string { return "containerd-" + node }

// NodeRuntimeComponents renders the command lines of the real nodes'
// namespace holders and containerds (their kubelets are in HostComponents,
// started after the pod network). self is sluice-lab, bin the directory of
// kubelet, containerd and runc.
func NodeRuntimeComponents(c *Config, self, bin string) []Component {
	if !c.RealNodes() {
		return nil
	}
	var comps []Component
	for _, n := range c.NodeNames() {
		m, _ := c.Node(n)
		hold := []string{"unshare", "--mount", "--propagation", "slave", "--", self, "node-mounts", "--outer-mntns=" + mountNS("self")}
		for _, b := range c.NodeBinds(n) {
			hold = append(hold, "--bind="+b[0]+":"+b[1])
		}
		comps = append(comps,
			Component{Name: holderName(n), Netns: m.Netns, Argv: hold, Health: healthNodeMounts},
			Component{
				Name:      containerdName(n),
				Netns:     m.Netns,
				MountNSOf: holderName(n),
				Argv:      []string{filepath.Join(bin, "containerd"), "--config=" + c.ContainerdConfigPath(n)},
				// containerd finds its shim on PATH.
				Env:    []string{"PATH=" + bin + ":" + os.Getenv("PATH")},
				Health: "unix://" + c.ContainerdSocket(n),
			})
	}
	return comps
}

// realKubelet is the kubelet component of a real node.
func realKubelet(c *Config, node, bin string) Component {
	m, _ := c.Node(node)
	return Component{
		Name:      "kubelet-" + node,
		Netns:     m.Netns,
		MountNSOf: holderName(node),
		Argv: []string{filepath.Join(bin, "kubelet"),
			"--config=" + c.KubeletConfigPath(node),
			"--kubeconfig=" + c.NodeKubeconfig(node),
			"--hostname-override=" + node,
			"--node-ip=" + m.Addr.String(),
			"--root-dir=" + nodeKubeletDir,
			"--cert-dir=" + filepath.Join(nodeKubeletDir, "pki"),
			"--v=1"},
		Env:    []string{"PATH=" + bin + ":" + os.Getenv("PATH")},
		Health: "http://127.0.0.1:10248/healthz",
	}
}

// kubeletServingRequests are the real kubelets' serving certificates, for
// the node's fabric address, signed by the lab CA (the API server checks it
// for logs and exec).
func (c *Config) kubeletServingRequests() []pki.Request {
	if !c.RealNodes() {
		return nil
	}
	var reqs []pki.Request
	for _, n := range c.NodeNames() {
		m, _ := c.Node(n)
		reqs = append(reqs, pki.Request{Name: "kubelet-serving-" + n, CN: "system:node:" + n, Orgs: []string{"system:nodes"},
			Server: true, DNS: []string{n}, IPs: []net.IP{net.IP(m.Addr.AsSlice())}})
	}
	return reqs
}

// writeRealNodeFiles writes every real node's configuration and makes its
// directories.
func (l *Lab) writeRealNodeFiles(bin string) error {
	c := l.C
	for _, n := range c.NodeNames() {
		for _, d := range []string{c.containerdDir(n), c.KubeletRootDir(n), c.NodeLogDir(n), c.NodeRunDir(n)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(c.ContainerdConfigPath(n), []byte(ContainerdConfig(c, n, bin)), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(c.KubeletConfigPath(n), []byte(KubeletConfig(c, n)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ctr runs containerd's client against a node.
func (l *Lab) ctr(ctx context.Context, bin, node string, args ...string) ([]byte, error) {
	argv := append([]string{filepath.Join(bin, "ctr"), "--address=" + l.C.ContainerdSocket(node), "--namespace=k8s.io"}, args...)
	return l.R.Run(ctx, argv...)
}

// ImportImages imports OCI or Docker image archives into every real node's
// containerd (namespace k8s.io, the kubelet's), as `ctr images import`
// does, and remembers them, so that nodes added later get them too. Pods
// then use them by name with imagePullPolicy Never or IfNotPresent.
func (l *Lab) ImportImages(ctx context.Context, archives ...string) error {
	if !l.C.RealNodes() {
		return fmt.Errorf("the lab at %s runs the lab kubelet, which runs no images (start it with --runtime containerd)", l.C.StateDir)
	}
	bin := kubebuild.NodeRuntimeDir()
	if !kubebuild.NodeRuntimeBuilt() {
		return fmt.Errorf("the node runtime is not built in %s: run `sluice-lab build --runtime containerd`", bin)
	}
	if err := l.C.addImageArchives(archives); err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	if err := l.C.Save(); err != nil {
		return err
	}
	return l.importMissing(ctx, bin)
}

// addImageArchives records archives (made absolute, each checked to exist) among the
// lab's images, once each.
func (c *Config) addImageArchives(archives []string) error {
	for _, a := range archives {
		a, err := filepath.Abs(a)
		if err != nil {
			return err
		}
		if _, err := os.Stat(a); err != nil {
			return err
		}
		if !slices.Contains(c.ImageArchives, a) {
			c.ImageArchives = append(c.ImageArchives, a)
		}
	}
	return nil
}

// stopStaleNodes stops a real node's containerd and kubelet when its
// namespace holder is gone: they run in a mount namespace that a new holder
// would not share.
func (l *Lab) stopStaleNodes() {
	for _, n := range l.C.NodeNames() {
		if proc.Running(l.C.PidFile(holderName(n))) != 0 {
			continue
		}
		for _, comp := range []string{"kubelet-" + n, "sluice-agent-" + n, "kube-proxy-" + n, containerdName(n)} {
			if proc.Running(l.C.PidFile(comp)) != 0 {
				fmt.Fprintf(l.Out, "  %-26s restarting: its node's mount namespace is gone\n", comp)
				proc.Stop(l.C.PidFile(comp), 10*time.Second)
			}
		}
	}
}

// SplitBind parses a --bind SRC:DST of node-mounts.
func SplitBind(s string) (src, dst string, err error) {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
		return "", "", fmt.Errorf("--bind %q: want SRC:DST, both absolute", s)
	}
	return src, dst, nil
}

// runtime is the lab's runtime, lab when unset.
func (c *Config) runtime() string {
	if c.Runtime == "" {
		return RuntimeLab
	}
	return c.Runtime
}

// inNodeMountNS makes the components that run in a real node's network
// namespace (Sluice's agents, kube-proxy) enter its mount namespace too, as
// a DaemonSet's pod with hostPath mounts would see the node's files: the CNI
// plugin hands its agent paths of pods' network namespaces that exist only
// there.
func (c *Config) inNodeMountNS(comps []Component) []Component {
	if !c.RealNodes() {
		return comps
	}
	for i, comp := range comps {
		for _, n := range c.NodeNames() {
			if m, _ := c.Node(n); comp.Netns == m.Netns {
				comps[i].MountNSOf = holderName(n)
			}
		}
	}
	return comps
}

// startRealNodes prepares the machine and starts every real node's
// namespace holder and containerd, and imports the lab's images into them.
func (l *Lab) startRealNodes(ctx context.Context, bin string) error {
	c := l.C
	if err := l.prepareMachine(); err != nil {
		return fmt.Errorf("prepare the machine for real nodes: %w", err)
	}
	for _, n := range c.NodeNames() {
		if err := ensureNodeCgroups(c.NodeCgroupRoot(n)); err != nil {
			return fmt.Errorf("cgroups of %s: %w", n, err)
		}
	}
	if err := l.writeRealNodeFiles(bin); err != nil {
		return err
	}
	l.stopStaleNodes()
	for _, comp := range NodeRuntimeComponents(c, l.Self, bin) {
		if err := l.start(ctx, comp); err != nil {
			return err
		}
	}
	return l.importMissing(ctx, bin)
}

// importedPath records, per node, which archives (path, size, mtime) its
// containerd has imported.
func (c *Config) importedPath(node string) string {
	return filepath.Join(c.containerdDir(node), "imported.json")
}

func archiveKey(a string) string {
	st, err := os.Stat(a)
	if err != nil {
		return a
	}
	return fmt.Sprintf("%s %d %d", a, st.Size(), st.ModTime().UnixNano())
}

func (c *Config) imported(node string) map[string]bool {
	m := map[string]bool{}
	if b, err := os.ReadFile(c.importedPath(node)); err == nil {
		var keys []string
		json.Unmarshal(b, &keys)
		for _, k := range keys {
			m[k] = true
		}
	}
	return m
}

// imagesImported reports whether every node has every archive of the lab.
func (l *Lab) imagesImported() bool {
	for _, n := range l.C.NodeNames() {
		have := l.C.imported(n)
		for _, a := range l.C.ImageArchives {
			if !have[archiveKey(a)] {
				return false
			}
		}
	}
	return true
}

// importMissing imports into each node the archives it does not have yet.
func (l *Lab) importMissing(ctx context.Context, bin string) error {
	c := l.C
	for _, n := range c.NodeNames() {
		have := c.imported(n)
		for _, a := range c.ImageArchives {
			k := archiveKey(a)
			if have[k] {
				continue
			}
			ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			_, err := l.ctr(ictx, bin, n, "images", "import", "--platform=linux/amd64", a)
			cancel()
			if err != nil {
				return fmt.Errorf("import %s into %s: %w", a, n, err)
			}
			fmt.Fprintf(l.Out, "  %-26s imported %s\n", containerdName(n), filepath.Base(a))
			have[k] = true
			var keys []string
			for k := range have {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			b, _ := json.Marshal(keys)
			if err := os.WriteFile(c.importedPath(n), b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopContainers stops the real nodes' kubelets (so that nothing restarts
// a container) and kills every process in the nodes' cgroups.
func (l *Lab) stopContainers() {
	for _, n := range l.C.NodeNames() {
		proc.Stop(l.C.PidFile("kubelet-"+n), 10*time.Second)
	}
	for _, n := range l.C.NodeNames() {
		if err := removeNodeCgroups(l.C.NodeCgroupRoot(n)); err != nil {
			fmt.Fprintf(l.Out, "warning: %v\n", err)
		}
	}
}

// teardownRealNodes removes what real nodes leave outside their state
// directory once their processes are stopped: the containers still running
// and the node's cgroups, its socket directory, and (for the last lab on the
// machine) the sysctls and directories prepareMachine changed.
func (l *Lab) teardownRealNodes() []error {
	var errs []error
	for _, n := range l.C.NodeNames() {
		// Shims are in the node's namespaces and stopped with them; any
		// process still naming the node's sockets goes too.
		killReferring(l.C.NodeRunDir(n) + "/")
		if err := removeNodeCgroups(l.C.NodeCgroupRoot(n)); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(l.C.NodeRunDir(n)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.releaseMachine(); err != nil {
		errs = append(errs, err)
	}
	// Mounts are made inside the nodes only; should one have reached the
	// machine's namespace, it must not keep the state directory.
	if err := unmountUnder(l.C.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// mountNS identifies the mount namespace of a process ("self" or a pid).
func mountNS(pid string) string {
	l, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
	return l
}

// healthNodeMounts is the Health of a namespace holder: it is ready once its
// process is in a mount namespace other than the lab's with every bind
// mount made (before that, the pid is still sluice-lab nsexec or unshare,
// and entering its namespaces would enter the machine's).
const healthNodeMounts = "node-mounts"

func (l *Lab) nodeMountsReady(comp Component) error {
	pid := proc.Running(l.C.PidFile(comp.Name))
	if pid == 0 {
		return errors.New("not running")
	}
	p := strconv.Itoa(pid)
	if ns := mountNS(p); ns == "" || ns == mountNS("self") {
		return errors.New("not in a mount namespace of its own yet")
	}
	b, err := os.ReadFile("/proc/" + p + "/mountinfo")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			have[f[4]] = true
		}
	}
	node := strings.TrimPrefix(comp.Name, "mountns-")
	for _, b := range l.C.NodeBinds(node) {
		if !have[b[1]] {
			return fmt.Errorf("%s is not mounted yet", b[1])
		}
	}
	return nil
}

package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/lab/pki"
	"github.com/sluice-net/sluice/pkg/lab/proc"
	"github.com/sluice-net/sluice/pkg/netns"
)

// UpOptions are the flags of `sluice-lab up`. Zero Nodes/APIPort mean "as
// before, or the default for a new lab".
type UpOptions struct {
	StateDir string
	Nodes    int
	APIPort  int
	Demo     bool
	// PodNetwork and SluiceBinDir: for a new lab; empty means the default
	// (sluice, and the directory of the running executable).
	PodNetwork   string
	ServiceProxy string
	SluiceBinDir string
	// Runtime is lab (the default) or containerd (real nodes), for a new lab.
	Runtime string
	// ImageArchives are imported into every real node (and remembered, so
	// nodes added later get them too).
	ImageArchives []string
	// Install is processes (default) or helm; SluiceImage the image archive helm installs.
	Install     string
	SluiceImage string
}

// Lab is a lab being operated on.
type Lab struct {
	C    *Config
	R    Runner
	Out  io.Writer
	Self string // the sluice-lab executable, run inside namespaces
}

// ErrNotRoot is returned by commands that need root.
var ErrNotRoot = errors.New("sluice-lab must run as root: it creates network namespaces and links (try: sudo sluice-lab …)")

// Open loads an existing lab.
func Open(stateDir string, out io.Writer) (*Lab, error) {
	c, err := LoadConfig(stateDir)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &Lab{C: c, R: ExecRunner{}, Out: out, Self: self}, nil
}

// Up brings the lab up, or resumes a half-started one; on a running lab it
// changes nothing.
func Up(ctx context.Context, o UpOptions, out io.Writer) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("iproute2's `ip` command is required (apt-get install iproute2)")
	}
	c, err := LoadConfig(o.StateDir)
	switch {
	case err == nil:
		if o.Nodes != 0 && o.Nodes < c.Nodes {
			return nil, fmt.Errorf("--nodes %d: the lab at %s has %d nodes and cannot shrink; remove it first with `sluice-lab down --state-dir %s`", o.Nodes, c.StateDir, c.Nodes, c.StateDir)
		}
		if o.Nodes > c.Nodes {
			fmt.Fprintf(out, "growing the lab from %d to %d nodes\n", c.Nodes, o.Nodes)
			c.Nodes = o.Nodes
		}
		if o.APIPort != 0 && o.APIPort != c.APIPort {
			return nil, fmt.Errorf("--api-port %d: the lab at %s uses port %d; remove it first with `sluice-lab down --state-dir %s`", o.APIPort, c.StateDir, c.APIPort, c.StateDir)
		}
		if o.Runtime != "" && o.Runtime != c.runtime() {
			return nil, fmt.Errorf("--runtime %s: the lab at %s runs %s nodes; remove it first with `sluice-lab down --state-dir %s`", o.Runtime, c.StateDir, c.runtime(), c.StateDir)
		}
	case errors.Is(err, os.ErrNotExist):
		c, err = NewConfig(o.StateDir, orDefault(o.Nodes, 3), orDefault(o.APIPort, DefaultAPIPort))
		if err != nil {
			return nil, err
		}
		c.NetnsMountBefore = netns.RunDirMounted()
		if o.PodNetwork != "" {
			c.PodNetwork = o.PodNetwork
		}
		if o.ServiceProxy != "" {
			c.ServiceProxy = o.ServiceProxy
		}
		c.Runtime = o.Runtime
		c.Install = o.Install
		if o.SluiceImage != "" {
			if c.SluiceImage, err = filepath.Abs(o.SluiceImage); err != nil {
				return nil, err
			}
			if _, err := os.Stat(c.SluiceImage); err != nil {
				return nil, fmt.Errorf("--sluice-image: %w", err)
			}
		}
		c.SluiceBinDir = o.SluiceBinDir
		if c.SluiceBinDir == "" {
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			c.SluiceBinDir = filepath.Dir(self)
		}
		if err := c.Validate(); err != nil {
			return nil, err
		}
		if c.PodNetwork == PodNetworkSluice {
			if m := c.missingSluiceBinary(); m != "" {
				return nil, fmt.Errorf("--pod-network sluice: %s not found (build with `make build`, point --sluice-bin-dir at it, or use --pod-network none)", m)
			}
		}
	default:
		return nil, err
	}
	if o.Demo && c.RealNodes() {
		// The demo's pods name no real image: the lab kubelet serves their
		// ports itself.
		return nil, errors.New("--demo runs on the lab kubelet only; with --runtime containerd, deploy pods with images imported by --image-archive")
	}
	if len(o.ImageArchives) > 0 && !c.RealNodes() {
		return nil, fmt.Errorf("--image-archive: the lab kubelet runs no images (start a lab with --runtime containerd)")
	}
	if err := c.addImageArchives(o.ImageArchives); err != nil {
		return nil, fmt.Errorf("--image-archive: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l := &Lab{C: c, R: ExecRunner{}, Out: out, Self: self}
	return l, l.up(ctx, o.Demo)
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func (l *Lab) up(ctx context.Context, demo bool) error {
	c := l.C
	bin, err := kubebuild.Ensure(ctx, l.Out)
	if err != nil {
		return err
	}
	nodeBin := ""
	if c.RealNodes() {
		if nodeBin, err = kubebuild.EnsureNodeRuntime(ctx, l.Out); err != nil {
			return err
		}
	}
	if l.allRunning() && (!c.RealNodes() || l.imagesImported()) && !c.chartPending() {
		healthy, _ := TopologyHealthy(ctx, l.R, c)
		if healthy {
			fmt.Fprintf(l.Out, "lab at %s is already running\n", c.StateDir)
			if demo {
				return l.Demo(ctx)
			}
			return nil
		}
	}
	if err := l.checkPortFree(); err != nil {
		return err
	}
	if err := c.Save(); err != nil {
		return err
	}
	if err := l.ensurePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := l.repairTopology(ctx); err != nil {
		return err
	}
	if err := l.prepareNodes(); err != nil {
		return err
	}
	for _, comp := range ControlPlaneComponents(c, bin) {
		if err := l.start(ctx, comp); err != nil {
			return err
		}
	}
	// The forwarder first: the host's kubectl goes through it.
	if err := l.start(ctx, HostComponents(c, l.Self)[0]); err != nil {
		return err
	}
	if c.PodNetwork == PodNetworkSluice && !c.installsByHelm() {
		if err := l.installSluice(ctx, filepath.Join(bin, "kubectl")); err != nil {
			return err
		}
	}
	if c.RealNodes() {
		if err := l.ensureNodeImages(ctx); err != nil {
			return err
		}
		if err := l.startRealNodes(ctx, nodeBin); err != nil {
			return err
		}
	}
	for _, comp := range append(c.inNodeMountNS(SluiceComponents(c)), HostComponents(c, l.Self)...) {
		if err := l.start(ctx, comp); err != nil {
			return err
		}
	}
	if c.installsByHelm() {
		if err := l.installChart(ctx); err != nil {
			return err
		}
	}
	if err := l.waitClusterReady(ctx, 3*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(l.Out, "lab is up: kubeconfig %s, API server %s\n", c.Kubeconfig(), c.HostAPIServerURL())
	if demo {
		return l.Demo(ctx)
	}
	return nil
}

// allRunning reports whether every component's process is alive.
func (l *Lab) allRunning() bool {
	for _, comp := range l.components() {
		if proc.Running(l.C.PidFile(comp.Name)) == 0 {
			return false
		}
	}
	return true
}

func (l *Lab) components() []Component {
	comps := ControlPlaneComponents(l.C, kubebuild.BinDir())
	comps = append(comps, NodeRuntimeComponents(l.C, l.Self, kubebuild.NodeRuntimeDir())...)
	comps = append(comps, l.C.inNodeMountNS(SluiceComponents(l.C))...)
	return append(comps, HostComponents(l.C, l.Self)...)
}

func (l *Lab) anyNetnsExists(ctx context.Context) bool {
	names, _ := ListNetns(ctx, l.R)
	for _, n := range names {
		if l.C.Owns(n) {
			return true
		}
	}
	return false
}

func (l *Lab) prepareNodes() error {
	for _, n := range l.C.NodeNames() {
		for _, d := range []string{l.C.CNIConfDir(n), l.C.CNIBinDir(n)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) ensurePKI() error {
	c := l.C
	d := pki.Dir(c.PKI())
	ca, err := d.EnsureCA()
	if err != nil {
		return err
	}
	cp := c.ControlPlane()
	reqs := []pki.Request{
		{Name: "apiserver", CN: "kube-apiserver", Server: true,
			DNS: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			IPs: []net.IP{net.ParseIP("127.0.0.1"), net.IP(cp.Addr.AsSlice()), net.IP(c.ServiceIP().AsSlice())}},
		{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}},
		{Name: "admin", CN: "sluice-lab-admin", Orgs: []string{"system:masters"}},
		{Name: "controller-manager", CN: "system:kube-controller-manager"},
		{Name: "scheduler", CN: "system:kube-scheduler"},
	}
	for _, n := range c.NodeNames() {
		reqs = append(reqs, pki.Request{Name: "node-" + n, CN: "system:node:" + n, Orgs: []string{"system:nodes"}})
	}
	reqs = append(reqs, c.sluiceIdentities()...)
	reqs = append(reqs, c.kubeletServingRequests()...)
	for _, r := range reqs {
		if err := d.Ensure(ca, r); err != nil {
			return err
		}
	}
	if err := d.EnsureServiceAccountKey(); err != nil {
		return err
	}
	kc := c.Path("kubeconfigs")
	if err := os.MkdirAll(kc, 0o755); err != nil {
		return err
	}
	inCP := "https://127.0.0.1:6443"
	if err := d.WriteKubeconfig(filepath.Join(kc, "controller-manager.conf"), inCP, "system:kube-controller-manager", ca, "controller-manager"); err != nil {
		return err
	}
	if err := d.WriteKubeconfig(filepath.Join(kc, "scheduler.conf"), inCP, "system:kube-scheduler", ca, "scheduler"); err != nil {
		return err
	}
	for _, n := range c.NodeNames() {
		if err := d.WriteKubeconfig(c.NodeKubeconfig(n), c.APIServerURL(), "system:node:"+n, ca, "node-"+n); err != nil {
			return err
		}
	}
	for _, r := range c.sluiceIdentities() {
		if err := d.WriteKubeconfig(c.Path("kubeconfigs", r.Name+".conf"), c.APIServerURL(), r.CN, ca, r.Name); err != nil {
			return err
		}
	}
	if err := d.WriteKubeconfig(c.AdminKubeconfigFabric(), c.APIServerURL(), "sluice-lab-admin", ca, "admin"); err != nil {
		return err
	}
	return d.WriteKubeconfig(c.Kubeconfig(), c.HostAPIServerURL(), "sluice-lab-admin", ca, "admin")
}

// NodeKubeconfig is the kubelet's kubeconfig for node (system:node:NAME).
func (c *Config) NodeKubeconfig(node string) string {
	return c.Path("kubeconfigs", "kubelet-"+node+".conf")
}

// AdminKubeconfigFabric is an administrator kubeconfig that reaches the API
// server across the fabric, for programs running inside a node's namespace.
func (c *Config) AdminKubeconfigFabric() string { return c.Path("kubeconfigs", "admin-fabric.conf") }

// start launches comp unless it runs already, and waits until it is healthy.
func (l *Lab) start(ctx context.Context, comp Component) error {
	pidFile := l.C.PidFile(comp.Name)
	if pid := proc.Running(pidFile); pid != 0 {
		fmt.Fprintf(l.Out, "  %-26s running (pid %d)\n", comp.Name, pid)
		return nil
	}
	argv := comp.Argv
	switch {
	case comp.MountNSOf != "":
		holder := proc.Running(l.C.PidFile(comp.MountNSOf))
		if holder == 0 {
			return fmt.Errorf("%s: %s, whose namespaces it enters, is not running", comp.Name, comp.MountNSOf)
		}
		if err := l.nodeMountsReady(Component{Name: comp.MountNSOf}); err != nil {
			return fmt.Errorf("%s: %s, whose namespaces it enters, is not ready: %w", comp.Name, comp.MountNSOf, err)
		}
		argv = append([]string{"nsenter", "--target=" + strconv.Itoa(holder), "--mount", "--net", "--"}, argv...)
	case comp.Netns != "":
		argv = append([]string{l.Self, "nsexec", netns.Path(comp.Netns), "--"}, argv...)
	}
	t0 := time.Now()
	pid, err := proc.Start(proc.Spec{Name: comp.Name, Argv: argv, Env: comp.Env, LogFile: l.C.LogFile(comp.Name), PidFile: pidFile})
	if err != nil {
		return err
	}
	if err := l.waitHealthy(ctx, comp, 90*time.Second); err != nil {
		return fmt.Errorf("%s did not become healthy: %w (log: %s)", comp.Name, err, l.C.LogFile(comp.Name))
	}
	fmt.Fprintf(l.Out, "  %-26s started (pid %d, ready in %s)\n", comp.Name, pid, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

func (l *Lab) waitHealthy(ctx context.Context, comp Component, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if proc.Running(l.C.PidFile(comp.Name)) == 0 {
			return errors.New("process exited")
		}
		last = l.checkHealth(ctx, comp)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s: %v", timeout, last)
}

func (l *Lab) checkHealth(ctx context.Context, comp Component) error {
	switch {
	case comp.Name == "api-forwarder":
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(l.C.APIPort)), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	case comp.Health == "":
		return nil
	case comp.Health == healthNodeMounts:
		return l.nodeMountsReady(comp)
	case strings.HasPrefix(comp.Health, "unix://"):
		c, err := net.DialTimeout("unix", strings.TrimPrefix(comp.Health, "unix://"), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	hc := l.httpClientIn(comp.Netns)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, comp.Health, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", comp.Health, resp.Status, b)
	}
	return nil
}

// httpClientIn returns an HTTP client whose connections start inside the
// namespace. It trusts the lab CA, and for the control plane's self-signed
// health endpoints (controller-manager, scheduler) skips verification.
func (l *Lab) httpClientIn(ns string) *http.Client {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(filepath.Join(l.C.PKI(), "ca.crt")); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.Dial(ctx, netns.Path(ns), network, addr)
		},
		TLSClientConfig: &tls.Config{
			RootCAs: pool,
			// Health endpoints of kube-controller-manager and kube-scheduler
			// serve a certificate they made themselves at start.
			InsecureSkipVerify: true,
		},
		DisableKeepAlives: true,
	}}
}

// stopAll stops every recorded component and then every process left in the
// lab's namespaces (pods' test servers, agents, anything started inside).
func (l *Lab) stopAll(ctx context.Context) {
	comps := l.components()
	slices.Reverse(comps)
	for _, comp := range comps {
		if err := proc.Stop(l.C.PidFile(comp.Name), 10*time.Second); err != nil {
			fmt.Fprintf(l.Out, "warning: %v\n", err)
		}
	}
	names, _ := ListNetns(ctx, l.R)
	for _, n := range names {
		if l.C.Owns(n) {
			killAllIn(netns.Path(n))
		}
	}
}

func killAllIn(path string) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		pids, _ := netns.Pids(path)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, sig)
		}
		for range 50 {
			if pids, _ := netns.Pids(path); len(pids) == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (l *Lab) deleteNetns(ctx context.Context) error {
	names, err := ListNetns(ctx, l.R)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if l.C.Owns(n) {
			if _, err := l.R.Run(ctx, "ip", "netns", "del", n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Down stops everything and removes every namespace and file of the lab.
func Down(ctx context.Context, stateDir string, out io.Writer) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	l, err := Open(stateDir, out)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "no lab at %s: nothing to do\n", stateDir)
		return nil
	}
	if err != nil {
		return err
	}
	if l.C.RealNodes() {
		// Containers first, while their shims live to reap them.
		l.stopContainers()
	}
	l.stopAll(ctx)
	if l.C.RealNodes() {
		for _, err := range l.teardownRealNodes() {
			fmt.Fprintf(out, "warning: %v\n", err)
		}
	}
	if err := l.deleteNetns(ctx); err != nil {
		return err
	}
	if err := os.RemoveAll(l.C.StateDir); err != nil {
		return err
	}
	if !l.C.NetnsMountBefore && netns.RunDirMounted() {
		if ents, err := os.ReadDir(netns.RunDir); err == nil && len(ents) == 0 {
			if err := syscall.Unmount(netns.RunDir, syscall.MNT_DETACH); err != nil {
				fmt.Fprintf(out, "warning: unmount %s: %v\n", netns.RunDir, err)
			}
		}
	}
	fmt.Fprintf(out, "lab at %s removed\n", l.C.StateDir)
	return nil
}

// checkPortFree fails early, before anything is made, when the API port is
// taken by something other than this lab's own forwarder.
func (l *Lab) checkPortFree() error {
	if proc.Running(l.C.PidFile("api-forwarder")) != 0 {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(l.C.APIPort)))
	if err != nil {
		return fmt.Errorf("--api-port %d: 127.0.0.1:%d is already in use by another program; choose a free port with --api-port", l.C.APIPort, l.C.APIPort)
	}
	return ln.Close()
}

// repairTopology builds what is missing of the lab's network and leaves the
// rest alone: a new lab gets everything, a half-started one its missing
// members (a member's namespace without its address is rebuilt, whatever
// ran in it is stopped and started again later), a grown one its new nodes.
func (l *Lab) repairTopology(ctx context.Context) error {
	c := l.C
	names, err := ListNetns(ctx, l.R)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	if !have[c.FabricNetns()] {
		if l.anyNetnsExists(ctx) {
			fmt.Fprintf(l.Out, "found a half-started lab (no fabric namespace): rebuilding its network, keeping its state\n")
			l.stopAll(ctx)
			if err := l.deleteNetns(ctx); err != nil {
				return fmt.Errorf("clear the half-started lab: %w (run `sluice-lab down --state-dir %s`)", err, c.StateDir)
			}
			have = map[string]bool{}
		}
		fmt.Fprintf(l.Out, "fabric: %s on bridge %s in namespace %s\n", c.Fabric, bridgeName, c.FabricNetns())
		if err := run(ctx, l.R, FabricCommands(c)); err != nil {
			return fmt.Errorf("build the fabric: %w (clear it with `sluice-lab down --state-dir %s`)", err, c.StateDir)
		}
	}
	for _, m := range c.Members() {
		if memberHealthy(ctx, l.R, have, m) {
			continue
		}
		if have[m.Netns] {
			fmt.Fprintf(l.Out, "found a half-made host %s: rebuilding it\n", m.Netns)
			killAllIn(netns.Path(m.Netns))
			l.R.Run(ctx, "ip", "-n", c.FabricNetns(), "link", "del", "v-"+m.Name)
			if _, err := l.R.Run(ctx, "ip", "netns", "del", m.Netns); err != nil {
				return fmt.Errorf("clear %s: %w (run `sluice-lab down --state-dir %s`)", m.Netns, err, c.StateDir)
			}
		}
		if err := run(ctx, l.R, MemberCommands(c, m)); err != nil {
			return fmt.Errorf("attach %s to the fabric: %w (clear it with `sluice-lab down --state-dir %s`)", m.Name, err, c.StateDir)
		}
	}
	return nil
}

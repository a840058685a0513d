// Package lab runs sluice-lab: a real Kubernetes cluster on one machine, whose
// nodes are network namespaces on a bridged fabric. See docs/lab.md.
package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultStateDir holds the lab unless --state-dir or $SLUICE_LAB_STATE_DIR
// says otherwise.
const DefaultStateDir = "/var/lib/sluice-lab"

// DefaultAPIPort is the host loopback port forwarded to the API server.
const DefaultAPIPort = 16443

// MaxNodes bounds --nodes: node addresses come from one /24 fabric.
const MaxNodes = 50

// Config is what `up` decided the first time; later commands read it back.
type Config struct {
	// Prefix starts the name of every network namespace the lab makes.
	Prefix string `json:"prefix"`
	// StateDir is the absolute state directory.
	StateDir string `json:"stateDir"`
	// Nodes is the number of nodes, named node1 … nodeN.
	Nodes int `json:"nodes"`
	// APIPort is the loopback port on the host that reaches the API server.
	APIPort int `json:"apiPort"`
	// Fabric is the /24 that the control plane, nodes and external host share.
	Fabric netip.Prefix `json:"fabric"`
	// ServiceCIDR is the API server's --service-cluster-ip-range.
	ServiceCIDR netip.Prefix `json:"serviceCIDR"`
	// NetnsMountBefore records whether /run/netns was already a mount point
	// before the lab's first `ip netns add` (which makes it one); `down`
	// unmounts it only if the lab made it and nothing else uses it.
	NetnsMountBefore bool `json:"netnsMountBefore"`
	// PodNetwork is "sluice" (Sluice's controller and agents) or "none".
	PodNetwork string `json:"podNetwork"`
	// ServiceProxy is who load-balances Services: "sluice" (the agents;
	// also when empty, for labs made before the field existed),
	// "kube-proxy-nftables" or "kube-proxy-iptables".
	ServiceProxy string `json:"serviceProxy,omitempty"`
	// SluiceBinDir holds sluice-controller, sluice-agent and sluice-cni.
	SluiceBinDir string `json:"sluiceBinDir,omitempty"`
	// Runtime is what runs the nodes' pods: "lab" (the lab kubelet; also
	// when empty) or "containerd" (kubelet, containerd and runc).
	Runtime string `json:"runtime,omitempty"`
	// SandboxImage is the pause image of real nodes ("" = DefaultSandboxImage).
	SandboxImage string `json:"sandboxImage,omitempty"`
	// Install is how Sluice gets onto the nodes: "" or processes (the lab starts it), or
	// helm (the chart, onto real nodes).
	Install string `json:"install,omitempty"`
	// SluiceImage is the OCI archive of Sluice's image that --install helm imports.
	SluiceImage string `json:"sluiceImage,omitempty"`
	// ImageArchives are imported into every real node's containerd by up
	// (so nodes added later get them too).
	ImageArchives []string `json:"imageArchives,omitempty"`
}

// StateDirFrom resolves the state directory from a flag value and the
// environment.
func StateDirFrom(flag string) (string, error) {
	d := flag
	if d == "" {
		d = os.Getenv("SLUICE_LAB_STATE_DIR")
	}
	if d == "" {
		d = DefaultStateDir
	}
	return filepath.Abs(d)
}

// NewConfig is the configuration of a lab that does not exist yet.
func NewConfig(stateDir string, nodes, apiPort int) (*Config, error) {
	if nodes < 1 || nodes > MaxNodes {
		return nil, fmt.Errorf("--nodes %d: want 1 to %d", nodes, MaxNodes)
	}
	if apiPort < 1 || apiPort > 65535 {
		return nil, fmt.Errorf("--api-port %d: want 1 to 65535", apiPort)
	}
	return &Config{
		Prefix:      prefixFor(stateDir),
		StateDir:    stateDir,
		Nodes:       nodes,
		APIPort:     apiPort,
		PodNetwork:  PodNetworkSluice,
		Fabric:      netip.MustParsePrefix("172.28.0.0/24"),
		ServiceCIDR: netip.MustParsePrefix("172.30.0.0/16"),
	}, nil
}

// prefixFor names namespaces "sluice-lab-…" for the default state directory
// and "sluice-lab-XXXXXX-…" (a hash of the directory) for any other, so that
// two labs on one machine never share a namespace.
func prefixFor(stateDir string) string {
	if stateDir == DefaultStateDir {
		return "sluice-lab"
	}
	h := sha256.Sum256([]byte(stateDir))
	return "sl-" + hex.EncodeToString(h[:])[:6]
}

var prefixRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,20}$`)

// Validate checks a configuration read back from disk.
func (c *Config) Validate() error {
	switch {
	case !prefixRe.MatchString(c.Prefix):
		return fmt.Errorf("prefix %q: want lower-case letters, digits and '-', at most 21", c.Prefix)
	case c.Nodes < 1 || c.Nodes > MaxNodes:
		return fmt.Errorf("nodes %d: want 1 to %d", c.Nodes, MaxNodes)
	case !c.Fabric.IsValid() || c.Fabric.Bits() != 24 || !c.Fabric.Addr().Is4():
		return fmt.Errorf("fabric %s: want an IPv4 /24", c.Fabric)
	case !c.ServiceCIDR.IsValid():
		return fmt.Errorf("serviceCIDR %s: not a CIDR", c.ServiceCIDR)
	case c.PodNetwork != PodNetworkSluice && c.PodNetwork != PodNetworkNone:
		return fmt.Errorf("podNetwork %q: want %s or %s", c.PodNetwork, PodNetworkSluice, PodNetworkNone)
	case c.ServiceProxy != "" && c.ServiceProxy != ServiceProxySluice && c.ServiceProxy != ServiceProxyKubeProxyNFTables && c.ServiceProxy != ServiceProxyKubeProxyIPTables:
		return fmt.Errorf("serviceProxy %q: want %s, %s or %s", c.ServiceProxy, ServiceProxySluice, ServiceProxyKubeProxyNFTables, ServiceProxyKubeProxyIPTables)
	case ValidRuntime(c.Runtime) != nil:
		return fmt.Errorf("runtime %q: want %s or %s", c.Runtime, RuntimeLab, RuntimeContainerd)
	case c.ServiceProxy != "" && c.ServiceProxy != ServiceProxySluice && c.PodNetwork != PodNetworkSluice:
		return fmt.Errorf("serviceProxy %q needs podNetwork %s (kube-proxy runs beside Sluice's agents)", c.ServiceProxy, PodNetworkSluice)
	}
	return c.validateInstall()
}

func configPath(stateDir string) string { return filepath.Join(stateDir, "lab.json") }

// LoadConfig reads the configuration of an existing lab. It returns an error
// wrapping os.ErrNotExist when there is none.
func LoadConfig(stateDir string) (*Config, error) {
	b, err := os.ReadFile(configPath(stateDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab at %s (start one with `sluice-lab up`): %w", stateDir, err)
		}
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", configPath(stateDir), err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", configPath(stateDir), err)
	}
	return &c, nil
}

// Save writes the configuration.
func (c *Config) Save() error {
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return os.WriteFile(configPath(c.StateDir), append(b, '\n'), 0o644)
}

// Member is one host on the fabric: the control plane, a node or the
// external host.
type Member struct {
	Name  string     // cp, ext, node1 …
	Netns string     // network namespace name
	Addr  netip.Addr // address on the fabric (eth0)
}

// Fabric namespace and bridge.
func (c *Config) FabricNetns() string { return c.Prefix + "-fabric" }

const bridgeName = "fabric0"

func (c *Config) host(i int) netip.Addr {
	a := c.Fabric.Addr().As4()
	a[3] = byte(i)
	return netip.AddrFrom4(a)
}

// ControlPlane is the member that runs etcd and the Kubernetes control plane.
func (c *Config) ControlPlane() Member {
	return Member{Name: "cp", Netns: c.Prefix + "-cp", Addr: c.host(2)}
}

// External is the host that stands for the world outside the cluster.
func (c *Config) External() Member {
	return Member{Name: "ext", Netns: c.Prefix + "-ext", Addr: c.host(200)}
}

// NodeNames lists node1 … nodeN.
func (c *Config) NodeNames() []string {
	n := make([]string, c.Nodes)
	for i := range n {
		n[i] = fmt.Sprintf("node%d", i+1)
	}
	return n
}

// Node returns the member for a node name, or false.
func (c *Config) Node(name string) (Member, bool) {
	for i, n := range c.NodeNames() {
		if n == name {
			return Member{Name: n, Netns: c.Prefix + "-" + n, Addr: c.host(11 + i)}, true
		}
	}
	return Member{}, false
}

// Members lists every fabric member: control plane, nodes, external.
func (c *Config) Members() []Member {
	m := []Member{c.ControlPlane()}
	for _, n := range c.NodeNames() {
		nm, _ := c.Node(n)
		m = append(m, nm)
	}
	return append(m, c.External())
}

// PodNetnsPrefix starts the namespace names of the pods on node.
func (c *Config) PodNetnsPrefix(node string) string { return c.Prefix + "-" + node + "-p-" }

// Namespaces lists every fixed namespace the lab owns (pods' come and go).
func (c *Config) Namespaces() []string {
	ns := []string{c.FabricNetns()}
	for _, m := range c.Members() {
		ns = append(ns, m.Netns)
	}
	return ns
}

// Owns reports whether a namespace name belongs to this lab.
func (c *Config) Owns(netns string) bool {
	return netns == c.FabricNetns() || strings.HasPrefix(netns, c.Prefix+"-") &&
		(c.isMember(netns) || strings.Contains(netns, "-p-"))
}

func (c *Config) isMember(netns string) bool {
	for _, m := range c.Members() {
		if m.Netns == netns {
			return true
		}
	}
	return false
}

// APIServerURL is the API server as the nodes see it, across the fabric.
func (c *Config) APIServerURL() string {
	return fmt.Sprintf("https://%s", netip.AddrPortFrom(c.ControlPlane().Addr, 6443))
}

// HostAPIServerURL is the API server as the host sees it, through the
// loopback forwarder.
func (c *Config) HostAPIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.APIPort) }

// ServiceIP is the first address of the service range: the `kubernetes` Service.
func (c *Config) ServiceIP() netip.Addr { return c.ServiceCIDR.Addr().Next() }

// Paths inside the state directory.
func (c *Config) Path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

// Kubeconfig is the administrator's kubeconfig for use on the host.
func (c *Config) Kubeconfig() string { return c.Path("kubeconfig") }

// NodeDir holds one node's CNI directories and kubelet state.
func (c *Config) NodeDir(node string) string { return c.Path("nodes", node) }

// CNIConfDir and CNIBinDir are the node's /etc/cni/net.d and /opt/cni/bin.
func (c *Config) CNIConfDir(node string) string {
	return filepath.Join(c.NodeDir(node), "cni", "net.d")
}
func (c *Config) CNIBinDir(node string) string { return filepath.Join(c.NodeDir(node), "cni", "bin") }

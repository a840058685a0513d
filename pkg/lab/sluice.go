package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-net/sluice/deploy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
	"github.com/sluice-net/sluice/pkg/lab/pki"
)

// Pod networks the lab can run with.
const (
	PodNetworkSluice = "sluice" // Sluice's controller and agents (default)
	PodNetworkNone   = "none"   // no pod network: bring your own CNI configuration
)

// Service proxies the lab can run with: Sluice's agents, or kube-proxy
// (built with the lab's other Kubernetes binaries) in one of its modes, for
// comparisons; then the ClusterNetwork says serviceProxy: External.
const (
	ServiceProxySluice            = "sluice"
	ServiceProxyKubeProxyNFTables = "kube-proxy-nftables"
	ServiceProxyKubeProxyIPTables = "kube-proxy-iptables"
)

// kubeProxyMode is kube-proxy's --proxy-mode for the lab's service proxy,
// "" when Sluice's agents load-balance.
func (c *Config) kubeProxyMode() string {
	mode, _ := strings.CutPrefix(c.ServiceProxy, "kube-proxy-")
	if mode == c.ServiceProxy {
		return ""
	}
	return mode
}

// Lab defaults for the ClusterNetwork, as OpenShift SDN's: 10.128.0.0/14
// in /23 host subnets (hostSubnetLength 9).
const (
	LabClusterCIDR      = "10.128.0.0/14"
	LabHostSubnetLength = 9
)

// SluiceBinaries are the programs a Sluice lab runs, looked for in
// Config.SluiceBinDir.
var SluiceBinaries = []string{"sluice-controller", "sluice-agent", "sluice-cni"}

// SluiceComponents renders the command lines of Sluice in the lab: two
// controller replicas (one active, by leader election) on the control-plane
// host, and one agent per node in the node's namespace, installing its CNI
// plugin and configuration into the node's own CNI directories; and, when
// the lab's services go to kube-proxy, one kube-proxy per node.
func SluiceComponents(c *Config) []Component {
	if c.PodNetwork != PodNetworkSluice || c.installsByHelm() {
		return nil
	}
	bin := func(n string) string { return filepath.Join(c.SluiceBinDir, n) }
	var comps []Component
	for i := 1; i <= 2; i++ {
		comps = append(comps, Component{
			Name:  fmt.Sprintf("sluice-controller-%d", i),
			Netns: c.ControlPlane().Netns,
			Argv: []string{bin("sluice-controller"),
				"--kubeconfig=" + c.Path("kubeconfigs", "sluice-controller.conf"),
				"--leader-elect=true",
				fmt.Sprintf("--id=controller-%d", i)},
		})
	}
	for _, n := range c.NodeNames() {
		m, _ := c.Node(n)
		comps = append(comps, Component{
			Name:  "sluice-agent-" + n,
			Netns: m.Netns,
			Argv: []string{bin("sluice-agent"),
				"--kubeconfig=" + c.Path("kubeconfigs", "sluice-agent-"+n+".conf"),
				"--node-name=" + n,
				"--state-dir=" + filepath.Join(c.NodeDir(n), "agent"),
				"--cni-socket=" + c.AgentSocket(n),
				"--cni-bin-dir=" + c.CNIBinDir(n),
				"--cni-conf-dir=" + c.CNIConfDir(n),
				"--cni-plugin=" + bin("sluice-cni")},
		})
		if mode := c.kubeProxyMode(); mode != "" {
			comps = append(comps, Component{
				Name:  "kube-proxy-" + n,
				Netns: m.Netns,
				Argv: []string{filepath.Join(kubebuild.BinDir(), "kube-proxy"),
					"--kubeconfig=" + c.Path("kubeconfigs", "kube-proxy.conf"),
					"--hostname-override=" + n,
					"--proxy-mode=" + mode,
					"--cluster-cidr=" + LabClusterCIDR,
					"--metrics-bind-address=127.0.0.1:10249",
					"--healthz-bind-address=0.0.0.0:10256",
					// Leave the machine-wide conntrack settings alone.
					"--conntrack-max-per-core=0",
					"--conntrack-tcp-timeout-established=0",
					"--conntrack-tcp-timeout-close-wait=0",
					"--v=1"},
			})
		}
	}
	return comps
}

// AgentSocket is the node's CNI server socket.
func (c *Config) AgentSocket(node string) string {
	return filepath.Join(c.NodeDir(node), "run", "cni.sock")
}

// sluiceIdentities are the client certificates of Sluice's components.
func (c *Config) sluiceIdentities() []pki.Request {
	if c.PodNetwork != PodNetworkSluice || c.installsByHelm() {
		return nil
	}
	reqs := []pki.Request{{Name: "sluice-controller", CN: "sluice-controller"}}
	for _, n := range c.NodeNames() {
		reqs = append(reqs, pki.Request{Name: "sluice-agent-" + n, CN: "sluice-agent:" + n, Orgs: []string{"sluice:agents"}})
	}
	if c.kubeProxyMode() != "" {
		// Bound to system:node-proxier by the API server's bootstrap policy.
		reqs = append(reqs, pki.Request{Name: "kube-proxy", CN: "system:kube-proxy"})
	}
	return reqs
}

// ClusterNetworkManifest is the lab's ClusterNetwork.
func (c *Config) ClusterNetworkManifest() string {
	return fmt.Sprintf(`apiVersion: sluice.dev/v1alpha1
kind: ClusterNetwork
metadata:
  name: default
spec:
  clusterNetworks:
  - cidr: %s
    hostSubnetLength: %d
  serviceNetwork: %s
  mode: NetworkPolicy
  encapsulation: VXLAN
  vxlanPort: 4789
  mtu: 1500
  serviceProxy: %s
`, LabClusterCIDR, LabHostSubnetLength, c.ServiceCIDR, c.clusterServiceProxy())
}

// clusterServiceProxy is the ClusterNetwork's spec.serviceProxy.
func (c *Config) clusterServiceProxy() string {
	if c.kubeProxyMode() != "" {
		return v1alpha1.ServiceProxyExternal
	}
	return v1alpha1.ServiceProxySluice
}

// labBindings grants the lab's certificate identities the chart's ClusterRoles.
const labBindings = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sluice-lab-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %s}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: sluice-controller}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sluice-lab-agents}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %s}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "sluice:agents"}
`

// installSluice applies the CRDs, RBAC and the ClusterNetwork with the
// lab's kubectl, waiting for the CRDs to be established in between.
func (l *Lab) installSluice(ctx context.Context, kubectl string) error {
	c := l.C
	dir := c.Path("manifests")
	if err := os.MkdirAll(filepath.Join(dir, "crds"), 0o755); err != nil {
		return err
	}
	for name, b := range deploy.CRDs() {
		if err := os.WriteFile(filepath.Join(dir, "crds", name), b, 0o644); err != nil {
			return err
		}
	}
	var rbac []byte
	for _, b := range deploy.ClusterRoles() {
		rbac = append(append(rbac, b...), []byte("\n---\n")...)
	}
	rbac = append(rbac, fmt.Sprintf(labBindings, deploy.ControllerClusterRole, deploy.AgentClusterRole)...)
	if err := os.WriteFile(filepath.Join(dir, "rbac.yaml"), rbac, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "clusternetwork.yaml"), []byte(c.ClusterNetworkManifest()), 0o644); err != nil {
		return err
	}
	kc := "--kubeconfig=" + c.Kubeconfig()
	steps := [][]string{
		{kubectl, kc, "apply", "--server-side", "-f", filepath.Join(dir, "crds")},
		{kubectl, kc, "wait", "--for=condition=Established", "--timeout=60s", "-f", filepath.Join(dir, "crds")},
		{kubectl, kc, "apply", "--server-side", "-f", filepath.Join(dir, "rbac.yaml")},
		{kubectl, kc, "apply", "--server-side", "-f", filepath.Join(dir, "clusternetwork.yaml")},
	}
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		_, err := l.R.Run(ctx, s...)
		cancel()
		if err != nil {
			return fmt.Errorf("install Sluice's resources: %w", err)
		}
	}
	return nil
}

// sluiceBinariesPresent reports the first missing Sluice binary, if any.
func (c *Config) missingSluiceBinary() string {
	for _, b := range SluiceBinaries {
		if _, err := os.Stat(filepath.Join(c.SluiceBinDir, b)); err != nil {
			return filepath.Join(c.SluiceBinDir, b)
		}
	}
	return ""
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-net/sluice/pkg/agent/host"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/cni"
)

// options are the agent's command-line settings.
type options struct {
	kubeconfig   string
	node         string
	paths        host.Paths
	serviceProxy string
	healthz      string // kube-proxy's /healthz for load balancers
	health       string // the agent's own /healthz and /readyz
	debug        string // Go's runtime profiles (net/http/pprof); empty: off
	servicesOnly bool
	nftBackend   string // netlink or nft

	uninstallOnDelete string
	owner             string // the DaemonSet's name, from uninstallOnDelete
	namespace         string // $POD_NAMESPACE
}

// The --nftables-backend values.
const (
	nftNetlink = "netlink"
	nftBinary  = "nft"
)

func newOptions() *options {
	return &options{
		node: os.Getenv("NODE_NAME"),
		paths: host.Paths{StateDir: "/var/lib/sluice", CNISocket: cni.DefaultSocket,
			CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d"},
		healthz:    "0.0.0.0:10256",
		namespace:  os.Getenv("POD_NAMESPACE"),
		nftBackend: nftNetlink,
	}
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", o.kubeconfig, "kubeconfig (empty: in-cluster)")
	fs.StringVar(&o.node, "node-name", o.node, "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.paths.StateDir, "state-dir", o.paths.StateDir, "crash-safe state (IPAM)")
	fs.StringVar(&o.paths.CNISocket, "cni-socket", o.paths.CNISocket, "the CNI server's unix socket")
	fs.StringVar(&o.paths.CNIBinDir, "cni-bin-dir", o.paths.CNIBinDir, "where to install the sluice-cni plugin")
	fs.StringVar(&o.paths.CNIConfDir, "cni-conf-dir", o.paths.CNIConfDir, "where to write the CNI network configuration")
	fs.StringVar(&o.paths.PluginPath, "cni-plugin", o.paths.PluginPath, "the sluice-cni binary to install (default: beside this binary)")
	fs.StringVar(&o.serviceProxy, "service-proxy", o.serviceProxy, "Sluice: load-balance Services here; External: leave them to kube-proxy (default: ClusterNetwork spec.serviceProxy)")
	fs.StringVar(&o.healthz, "healthz-bind-address", o.healthz, "where the service proxy answers kube-proxy's /healthz and /livez for load balancers (empty: nowhere)")
	fs.StringVar(&o.health, "health-bind-address", o.health, "host:port for the agent's /healthz and /readyz (empty: none)")
	fs.StringVar(&o.debug, "debug-bind-address", o.debug, "host:port serving Go's runtime profiles under /debug/pprof/ (heap, CPU, goroutines) for measuring the agent; keep it on loopback (empty: off, the default)")
	fs.StringVar(&o.uninstallOnDelete, "uninstall-on-delete", o.uninstallOnDelete, "daemonset/NAME: the DaemonSet (in $POD_NAMESPACE) this agent runs in; when the agent stops because it was deleted, remove what the agent installed on the node (empty: never)")
	fs.StringVar(&o.nftBackend, "nftables-backend", o.nftBackend, "how the agent programs its nftables table: netlink (no nft binary needed), or nft (exec the nft binary; for comparison and debugging)")
	fs.BoolVar(&o.servicesOnly, "services-only", o.servicesOnly, "run only the service proxy (another CNI plugin wires the pods)")
}

// complete fills in defaults that depend on the environment.
func (o *options) complete() error {
	if o.paths.PluginPath == "" && !o.servicesOnly {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--cni-plugin: no default: %w", err)
		}
		o.paths.PluginPath = filepath.Join(filepath.Dir(self), host.PluginName)
	}
	if o.uninstallOnDelete != "" {
		o.owner, _ = strings.CutPrefix(o.uninstallOnDelete, "daemonset/")
	}
	return nil
}

func (o *options) validate() error {
	var errs []error
	if o.node == "" {
		errs = append(errs, errors.New("--node-name is empty (and $NODE_NAME unset)"))
	}
	switch o.serviceProxy {
	case "", v1alpha1.ServiceProxySluice, v1alpha1.ServiceProxyExternal:
	default:
		errs = append(errs, fmt.Errorf("--service-proxy %q: want %s or %s", o.serviceProxy, v1alpha1.ServiceProxySluice, v1alpha1.ServiceProxyExternal))
	}
	if o.nftBackend != nftNetlink && o.nftBackend != nftBinary {
		errs = append(errs, fmt.Errorf("--nftables-backend %q: want %s or %s", o.nftBackend, nftNetlink, nftBinary))
	}
	if o.servicesOnly && o.serviceProxy == v1alpha1.ServiceProxyExternal {
		errs = append(errs, errors.New("--services-only with --service-proxy External leaves nothing to run"))
	}
	for _, f := range []struct{ flag, value string }{{"--healthz-bind-address", o.healthz}, {"--health-bind-address", o.health}, {"--debug-bind-address", o.debug}} {
		if f.value == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(f.value); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v (want host:port, or empty for none)", f.flag, f.value, err))
		}
	}
	if o.uninstallOnDelete != "" && (!strings.HasPrefix(o.uninstallOnDelete, "daemonset/") || o.owner == "" || o.namespace == "") {
		errs = append(errs, fmt.Errorf("--uninstall-on-delete %q: want daemonset/NAME, with $POD_NAMESPACE set (POD_NAMESPACE=%q)", o.uninstallOnDelete, o.namespace))
	}
	if !o.servicesOnly {
		if _, err := os.Stat(o.paths.PluginPath); err != nil {
			errs = append(errs, fmt.Errorf("--cni-plugin: %w", err))
		}
	}
	return errors.Join(errs...)
}

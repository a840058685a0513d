// Command sluice-agent runs Sluice's pod network on one node: node IPAM, the
// CNI server, pod interfaces, the overlay and the node's nftables table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-net/sluice/pkg/agent/node"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluiceclient "github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	"github.com/sluice-net/sluice/pkg/cni"
	"github.com/sluice-net/sluice/pkg/health"
)

func main() {
	var o struct {
		kubeconfig, node, stateDir, socket, binDir, confDir, plugin, serviceProxy, healthz string
		health, uninstallOnDelete                                                          string
		servicesOnly                                                                       bool
	}
	fs := flag.NewFlagSet("sluice-agent", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/sluice", "crash-safe state (IPAM)")
	fs.StringVar(&o.socket, "cni-socket", cni.DefaultSocket, "the CNI server's unix socket")
	fs.StringVar(&o.binDir, "cni-bin-dir", "/opt/cni/bin", "where to install the sluice-cni plugin")
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "where to write the CNI network configuration")
	fs.StringVar(&o.plugin, "cni-plugin", "", "the sluice-cni binary to install (default: beside this binary)")
	fs.StringVar(&o.serviceProxy, "service-proxy", "", "Sluice: load-balance Services here; External: leave them to kube-proxy (default: ClusterNetwork spec.serviceProxy)")
	fs.StringVar(&o.healthz, "healthz-bind-address", "0.0.0.0:10256", "where the service proxy answers kube-proxy's /healthz and /livez for load balancers (empty: nowhere)")
	fs.StringVar(&o.health, "health-bind-address", "", "host:port for the agent's /healthz and /readyz (empty: none)")
	fs.StringVar(&o.uninstallOnDelete, "uninstall-on-delete", "", "daemonset/NAME: the DaemonSet (in $POD_NAMESPACE) this agent runs in; when the agent stops because it was deleted, remove what the agent installed on the node (empty: never)")
	fs.BoolVar(&o.servicesOnly, "services-only", false, "run only the service proxy (another CNI plugin wires the pods)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	switch o.serviceProxy {
	case "", v1alpha1.ServiceProxySluice, v1alpha1.ServiceProxyExternal:
	default:
		fmt.Fprintf(os.Stderr, "sluice-agent: --service-proxy %q: want %s or %s\n", o.serviceProxy, v1alpha1.ServiceProxySluice, v1alpha1.ServiceProxyExternal)
		os.Exit(2)
	}
	for _, f := range []struct{ flag, value string }{{"--healthz-bind-address", o.healthz}, {"--health-bind-address", o.health}} {
		if f.value == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(f.value); err != nil {
			fmt.Fprintf(os.Stderr, "sluice-agent: %s %q: %v (want host:port, or empty for none)\n", f.flag, f.value, err)
			os.Exit(2)
		}
	}
	var owner string
	if o.uninstallOnDelete != "" {
		name, ok := strings.CutPrefix(o.uninstallOnDelete, "daemonset/")
		if !ok || name == "" || os.Getenv("POD_NAMESPACE") == "" {
			fmt.Fprintf(os.Stderr, "sluice-agent: --uninstall-on-delete %q: want daemonset/NAME, with $POD_NAMESPACE set (POD_NAMESPACE=%q)\n", o.uninstallOnDelete, os.Getenv("POD_NAMESPACE"))
			os.Exit(2)
		}
		owner = name
	}
	if err := run(o.kubeconfig, o.servicesOnly, o.health, owner, node.Config{NodeName: o.node, StateDir: o.stateDir, CNISocket: o.socket,
		CNIBinDir: o.binDir, CNIConfDir: o.confDir, PluginPath: o.plugin, ServiceProxy: o.serviceProxy, HealthzAddr: o.healthz}); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-agent:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, servicesOnly bool, healthAddr, owner string, c node.Config) error {
	if c.NodeName == "" {
		return errors.New("--node-name is empty (and $NODE_NAME unset)")
	}
	if servicesOnly && c.ServiceProxy == v1alpha1.ServiceProxyExternal {
		return errors.New("--services-only with --service-proxy External leaves nothing to run")
	}
	if c.PluginPath == "" && !servicesOnly {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		c.PluginPath = filepath.Join(filepath.Dir(self), "sluice-cni")
	}
	if _, err := os.Stat(c.PluginPath); err != nil && !servicesOnly {
		return fmt.Errorf("--cni-plugin: %w", err)
	}
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return err
	}
	if c.Client, err = sluiceclient.NewForConfig(rc); err != nil {
		return err
	}
	if c.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", c.NodeName)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Kube.CoreV1().Events("")})
	c.Events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "sluice-agent", Host: c.NodeName})
	if healthAddr != "" {
		c.Health = &health.Server{}
		c.Health.Live.Set("process", func() error { return nil })
		if err := c.Health.Serve(ctx, healthAddr); err != nil {
			return err
		}
	}
	var watch *node.OwnerWatch
	if owner != "" {
		watch = node.WatchOwner(ctx, c.Kube, os.Getenv("POD_NAMESPACE"), owner)
	}

	a := &node.Agent{Config: c}
	if servicesOnly {
		return a.RunServicesOnly(ctx)
	}
	err = a.Run(ctx)
	if watch != nil && ctx.Err() != nil {
		// Stopped: by an uninstall, or for a restart or an update?
		done, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if watch.Deleted(done) {
			return errors.Join(err, a.Uninstall(done))
		}
		c.Log.Info("stopping; the node's network stays as it is for the next agent", "daemonset", owner)
	}
	return err
}

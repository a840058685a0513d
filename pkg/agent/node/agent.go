// Package node wires the agent's subsystems together on one node: it waits
// for the node's HostSubnet, initialises IPAM, links, overlay and the
// nftables table, serves CNI, installs the plugin, and keeps overlay and
// dataplane in step with HostSubnets and the ClusterNetwork.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/link"
	"github.com/sluice-net/sluice/pkg/agent/podnet"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluiceclient "github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/health"
)

// Config is what the agent needs to know about its node.
type Config struct {
	NodeName   string
	StateDir   string // IPAM state lives in StateDir/ipam
	CNISocket  string
	CNIBinDir  string // where the plugin is installed (/opt/cni/bin)
	CNIConfDir string // where the conflist is written (/etc/cni/net.d)
	PluginPath string // the sluice-cni binary to install
	Client     sluiceclient.Interface
	// Kube reads Services, EndpointSlices and this Node for the service
	// proxy; nil runs no service proxy.
	Kube kubernetes.Interface
	// ServiceProxy overrides ClusterNetwork spec.serviceProxy when set:
	// Sluice (the agent load-balances Services) or External (kube-proxy does).
	ServiceProxy string
	// HealthzAddr is where the running service proxy answers kube-proxy's
	// /healthz and /livez ("0.0.0.0:10256"); "" serves nothing.
	HealthzAddr string
	Log         *slog.Logger
	// Health, when set, gets the agent's readiness: "privileges" (what the process lacks)
	// and "node" (initialised, CNI installed).
	Health *health.Server
	// Events, when set, records Node events (a missing privilege).
	Events record.EventRecorder
	// Privileges reads what the process may do; nil reads the kernel (ReadPrivileges).
	Privileges func() (Privileges, error)
}

// Agent runs the pod network of one node.
type Agent struct {
	Config
	hostSubnets listers.HostSubnetLister
	networks    listers.ClusterNetworkLister
	dp          *dataplane.Dataplane
	net         *podnet.Network
	overlay     *link.Overlay
	underlay    string
	self        *v1alpha1.HostSubnet
	resync      chan struct{}
	services    serviceProxy
	iso         *isolation // nil without a Kubernetes client
}

// ConflistName is the file the agent installs in the CNI configuration
// directory; runtimes pick the first file in lexical order.
const ConflistName = "10-sluice.conflist"

// Run blocks until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	log := a.Log
	initialised := health.NewFlag("waiting for this node's HostSubnet and the ClusterNetwork")
	if a.Health != nil {
		a.Health.Ready.Set("node", initialised.Check)
	}
	if !a.checkPrivileges() {
		// Nothing can be done without them, and restarting would not grant them: stay
		// not Ready, with the reason on the Node and in /readyz, until stopped.
		<-ctx.Done()
		return nil
	}
	f := sluiceinformers.NewSharedInformerFactory(a.Client, 0)
	hs := f.Sluice().V1alpha1().HostSubnets()
	cn := f.Sluice().V1alpha1().ClusterNetworks()
	a.hostSubnets, a.networks = hs.Lister(), cn.Lister()
	a.resync = make(chan struct{}, 1)
	synced := []cache.InformerSynced{hs.Informer().HasSynced, cn.Informer().HasSynced}
	if a.Kube != nil {
		kf := kubeinformers.NewSharedInformerFactory(a.Kube, 0)
		nn := f.Sluice().V1alpha1().NetNamespaces()
		iso, err := newIsolation(a, kf, nn.Lister(), nn.Informer())
		if err != nil {
			return err
		}
		a.iso = iso
		kf.Start(ctx.Done())
		synced = append(synced, nn.Informer().HasSynced, kf.Core().V1().Pods().Informer().HasSynced,
			kf.Core().V1().Namespaces().Informer().HasSynced, kf.Networking().V1().NetworkPolicies().Informer().HasSynced)
	}
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.requestSync() },
		UpdateFunc: func(any, any) { a.requestSync() },
		DeleteFunc: func(any) { a.requestSync() },
	}
	hs.Informer().AddEventHandler(kick)
	cn.Informer().AddEventHandler(kick)
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("informer caches did not sync")
	}

	// The CNI server answers TRY_AGAIN_LATER until the node is initialised.
	a.net = &podnet.Network{Links: podnet.RealLinks{}, Log: log}
	srv := cniserver.New(a.CNISocket, a.net, log)
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Run(ctx) }()

	self, network, err := a.waitForSubnet(ctx)
	if err != nil {
		return err
	}
	if err := a.initNode(ctx, self, network); err != nil {
		return err
	}
	if a.iso != nil {
		// Pods already running get their rules before new ones are wired.
		pods, err := a.net.Pods()
		if err != nil {
			return err
		}
		a.iso.setLocal(pods)
		if err := a.iso.sync(ctx); err != nil {
			log.Warn("first isolation sync failed; retrying", "err", err)
			a.iso.request()
		}
		go a.iso.run(ctx)
	}
	srv.SetReady(true)
	a.net.SetReady(true)
	if err := a.installCNI(); err != nil {
		return fmt.Errorf("install the CNI plugin: %w", err)
	}
	initialised.Set(nil)
	log.Info("node initialised", "node", a.NodeName, "subnet", self.Spec.Subnet, "mtu", a.net.MTU, "encapsulation", encapsulation(network))

	tick := time.NewTicker(30 * time.Second) // a periodic level-based resync
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srvErr:
			return fmt.Errorf("CNI server: %w", err)
		case <-a.resync:
		case <-tick.C:
		}
		if err := a.sync(ctx); err != nil {
			log.Warn("sync failed; retrying", "err", err)
			time.AfterFunc(time.Second, a.requestSync)
		}
	}
}

// requestSync coalesces change notifications: a storm costs one sync.
// Isolation depends on the mode and the nodes' addresses too.
func (a *Agent) requestSync() {
	if a.iso != nil {
		a.iso.request()
	}
	select {
	case a.resync <- struct{}{}:
	default:
	}
}

func (a *Agent) waitForSubnet(ctx context.Context) (*v1alpha1.HostSubnet, *v1alpha1.ClusterNetwork, error) {
	logged := false
	for {
		hs, err1 := a.hostSubnets.Get(a.NodeName)
		cn, err2 := a.networks.Get(v1alpha1.ClusterNetworkName)
		if err1 == nil && err2 == nil {
			return hs, cn, nil
		}
		if !logged {
			a.Log.Info("waiting for this node's HostSubnet and the ClusterNetwork", "node", a.NodeName,
				"hostSubnet", notFound(err1), "clusterNetwork", notFound(err2))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-a.resync:
		case <-time.After(time.Second):
		}
	}
}

func notFound(err error) string {
	if err == nil {
		return "present"
	}
	if apierrors.IsNotFound(err) {
		return "missing"
	}
	return err.Error()
}

func encapsulation(cn *v1alpha1.ClusterNetwork) string {
	if cn.Spec.Encapsulation == "" {
		return v1alpha1.EncapsulationVXLAN
	}
	return cn.Spec.Encapsulation
}

func (a *Agent) initNode(ctx context.Context, self *v1alpha1.HostSubnet, cn *v1alpha1.ClusterNetwork) error {
	subnet, err := netip.ParsePrefix(self.Spec.Subnet)
	if err != nil {
		return fmt.Errorf("HostSubnet %s: spec.subnet %q: %w", self.Name, self.Spec.Subnet, err)
	}
	nodeIP, err := netip.ParseAddr(self.Spec.HostIP)
	if err != nil {
		return fmt.Errorf("HostSubnet %s: spec.hostIP %q: %w", self.Name, self.Spec.HostIP, err)
	}
	if err := link.EnableForwarding(); err != nil {
		return fmt.Errorf("enable IP forwarding: %w", err)
	}
	underlay, mtu, err := link.UnderlayFor(nodeIP)
	if err != nil {
		return err
	}
	if cn.Spec.MTU > 0 {
		mtu = int(cn.Spec.MTU)
	}
	a.underlay = underlay
	podMTU := mtu
	if encapsulation(cn) == v1alpha1.EncapsulationVXLAN {
		podMTU = mtu - link.VXLANOverhead
	}
	ipam, err := openIPAM(filepath.Join(a.StateDir, "ipam"), subnet)
	if err != nil {
		return fmt.Errorf("node IPAM: %w", err)
	}
	nft, err := dataplane.NewNFT()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	a.dp = dataplane.New(nft)
	a.net.IPAM, a.net.Dataplane, a.net.Subnet, a.net.MTU = ipam, a.dp, subnet, podMTU
	if a.iso != nil {
		a.net.Dataplane = admittingDataplane{dp: a.dp, iso: a.iso}
	}
	port := int(cn.Spec.VXLANPort)
	if port == 0 {
		port = 4789
	}
	a.overlay = &link.Overlay{VNI: 1, Port: port, LocalIP: nodeIP, LocalSubnet: subnet, UnderlayMTU: mtu}
	a.self = self
	return a.sync(ctx)
}

// sync brings overlay routes and the nftables table in line with the
// HostSubnets and the ClusterNetwork.
func (a *Agent) sync(ctx context.Context) error {
	cn, err := a.networks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return fmt.Errorf("ClusterNetwork: %w", err)
	}
	all, err := a.hostSubnets.List(labels.Everything())
	if err != nil {
		return err
	}
	var remotes []link.Remote
	for _, hs := range all {
		if hs.Name == a.NodeName {
			if hs.Spec.Subnet != a.self.Spec.Subnet {
				a.Log.Error("this node's HostSubnet changed under running pods; restart the agent after draining the node",
					"was", a.self.Spec.Subnet, "now", hs.Spec.Subnet)
			}
			continue
		}
		sub, err1 := netip.ParsePrefix(hs.Spec.Subnet)
		ip, err2 := netip.ParseAddr(hs.Spec.HostIP)
		if err1 != nil || err2 != nil {
			a.Log.Warn("ignoring malformed HostSubnet", "name", hs.Name, "subnet", hs.Spec.Subnet, "hostIP", hs.Spec.HostIP)
			continue
		}
		remotes = append(remotes, link.Remote{Node: hs.Name, NodeIP: ip, Subnet: sub})
	}
	var services []netip.Prefix
	if p, err := netip.ParsePrefix(cn.Spec.ServiceNetwork); err == nil && p.Addr().Is4() {
		services = append(services, p)
	}
	var errs []error
	if encapsulation(cn) == v1alpha1.EncapsulationVXLAN {
		if err := a.overlay.Ensure(); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, a.overlay.SyncRemotes(remotes), link.SyncDirectRoutes(a.underlay, nil, services))
		}
	} else {
		errs = append(errs, link.RemoveOverlay(), link.SyncDirectRoutes(a.underlay, remotes, services))
	}
	pods, err := a.net.Pods()
	if err != nil {
		errs = append(errs, err)
	}
	state := dataplane.State{Pods: pods}
	for _, c := range cn.Spec.ClusterNetworks {
		if p, err := netip.ParsePrefix(c.CIDR); err == nil {
			state.ClusterCIDRs = append(state.ClusterCIDRs, p)
		}
	}
	state.ServiceCIDRs = services
	if err := a.dp.Sync(ctx, state); err != nil {
		return errors.Join(append(errs, err)...)
	}
	// The proxy's rules refer to the dataplane's sets: start it only once
	// they exist.
	errs = append(errs, a.syncServiceProxy(ctx, cn))
	return errors.Join(errs...)
}

// installCNI copies the plugin binary and writes the conflist, each through
// a temporary file and a rename, the conflist last: its appearance is what
// tells the runtime that the node's network is ready.
func (a *Agent) installCNI() error {
	if err := os.MkdirAll(a.CNIBinDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(a.CNIConfDir, 0o755); err != nil {
		return err
	}
	bin, err := os.ReadFile(a.PluginPath)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(a.CNIBinDir, "sluice-cni"), bin, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "sluice",
  "plugins": [
    {"type": "sluice-cni", "agentSocket": %q}
  ]
}
`, a.CNISocket)
	return writeAtomic(filepath.Join(a.CNIConfDir, ConflistName), []byte(conf), 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

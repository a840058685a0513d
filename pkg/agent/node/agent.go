// Package node assembles the agent on one node: it builds the table owner
// and the features that write into it (the pod network's base, isolation,
// the service proxy), the overlay, the pod network behind the CNI server,
// wires informers to them (trimmed by Transform to what isolation reads),
// and brings them up in order. It holds no logic of its own beyond that
// order.
package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/host"
	"github.com/sluice-net/sluice/pkg/agent/loop"
	"github.com/sluice-net/sluice/pkg/agent/netpol"
	"github.com/sluice-net/sluice/pkg/agent/overlay"
	"github.com/sluice-net/sluice/pkg/agent/podnet"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	sluiceclient "github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	listers "github.com/sluice-net/sluice/pkg/client/listers/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/health"
	"github.com/sluice-net/sluice/pkg/informer"
)

// Config is what the agent is given.
type Config struct {
	NodeName string
	host.Paths
	Client sluiceclient.Interface
	// Kube reads pods, namespaces, NetworkPolicies, Services,
	// EndpointSlices and this Node; nil runs neither isolation nor the
	// service proxy.
	Kube kubernetes.Interface
	// NFT programs the node's table (nftnl over netlink, or
	// dataplane.FromKnftables(dataplane.NewNFT()) through the nft binary).
	NFT dataplane.Backend
	// ServiceProxy overrides ClusterNetwork spec.serviceProxy when set:
	// Sluice (the agent load-balances Services) or External (kube-proxy does).
	ServiceProxy string
	// HealthzAddr is where the running service proxy answers kube-proxy's
	// /healthz and /livez ("0.0.0.0:10256"); "" serves nothing.
	HealthzAddr string
	Log         logr.Logger
	// Health, when set, gets the agent's readiness: "privileges" (what the
	// process lacks) and "node" (initialised, CNI installed).
	Health *health.Server
	// Events, when set, records Node events (a missing privilege).
	Events record.EventRecorder
	// Privileges reads what the process may do (host.ReadPrivileges).
	Privileges func() (host.Privileges, error)
}

// Agent runs Sluice on one node.
type Agent struct {
	Config
	hostSubnets listers.HostSubnetLister
	networks    listers.ClusterNetworkLister
	owner       *dataplane.Owner
	base        *dataplane.Base
	proxy       *proxy.Runner
	overlay     *overlay.Overlay
	cluster     *loop.Loop // applies the ClusterNetwork to the base and the proxy
	proxyOnly   bool       // RunServicesOnly: the proxy runs whatever the ClusterNetwork says
}

// Run blocks until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	log := a.Log
	initialised := health.NewFlag("waiting for this node's HostSubnet and the ClusterNetwork")
	if a.Health != nil {
		a.Health.Ready.Set("node", initialised.Check)
	}
	if !host.CheckPrivileges(a.Privileges, host.Reporter{NodeName: a.NodeName, Log: log, Health: a.Health, Events: a.Events}) {
		// Nothing can be done without them, and restarting would not grant
		// them: stay not Ready, with the reason on the Node and in /readyz.
		<-ctx.Done()
		return nil
	}
	f := sluiceinformers.NewSharedInformerFactory(a.Client, 0)
	hs, cn, nn := f.Sluice().V1alpha1().HostSubnets(), f.Sluice().V1alpha1().ClusterNetworks(), f.Sluice().V1alpha1().NetNamespaces()
	a.build(hs.Lister(), cn.Lister())
	a.overlay = &overlay.Overlay{NodeName: a.NodeName, HostSubnets: a.hostSubnets, Networks: a.networks, Log: log.WithValues("component", "overlay")}
	hooks := []podnet.PodHook{a.base}
	synced := []cache.InformerSynced{hs.Informer().HasSynced, cn.Informer().HasSynced}
	var changed []func() // what HostSubnet and ClusterNetwork changes kick
	if a.Kube != nil {
		kf := kubeinformers.NewSharedInformerFactoryWithOptions(a.Kube, 0, kubeinformers.WithTransform(Transform))
		pods, nss, nps := kf.Core().V1().Pods(), kf.Core().V1().Namespaces(), kf.Networking().V1().NetworkPolicies()
		iso := netpol.NewIsolation(netpol.Listers{Pods: pods.Lister(), Namespaces: nss.Lister(), Policies: nps.Lister(),
			NetNamespaces: nn.Lister(), HostSubnets: a.hostSubnets, ClusterNetworks: a.networks},
			a.NodeName, log.WithValues("component", "isolation"), a.owner.Request)
		a.owner.Register(iso)
		hooks = append(hooks, iso)
		changed = append(changed, iso.Changed)
		for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), nps.Informer(), nn.Informer()} {
			if _, err := inf.AddEventHandler(informer.Kick(iso.Changed)); err != nil {
				return err
			}
			synced = append(synced, inf.HasSynced)
		}
		kf.Start(ctx.Done())
	}
	a.owner.Register(a.proxy)
	changed = append(changed, a.overlay.Request, a.cluster.Request)
	for _, inf := range []cache.SharedIndexInformer{hs.Informer(), cn.Informer()} {
		if _, err := inf.AddEventHandler(informer.Kick(func() {
			for _, fn := range changed {
				fn()
			}
		})); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("informer caches did not sync")
	}

	// The CNI server answers TRY_AGAIN_LATER until the node is initialised.
	pn := &podnet.Network{Links: podnet.RealLinks{}, Hooks: hooks, Table: a.owner, Log: log.WithValues("component", "podnet")}
	srv := cniserver.New(a.CNISocket, pn, log)
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Run(ctx) }()

	self, network, err := a.waitForSubnet(ctx)
	if err != nil {
		return err
	}
	node, err := a.overlay.Init(self, network)
	if err != nil {
		return err
	}
	ipam, err := podnet.OpenIPAM(filepath.Join(a.StateDir, "ipam"), node.Subnet)
	if err != nil {
		return fmt.Errorf("node IPAM: %w", err)
	}
	pn.IPAM, pn.Subnet, pn.MTU = ipam, node.Subnet, node.PodMTU
	a.proxy.HostIP = node.HostIP
	if err := a.overlay.Sync(ctx); err != nil {
		log.Error(err, "First overlay sync failed; retrying")
	}
	// Pods already running get their rules before new ones are wired.
	pods, err := pn.Pods()
	if err != nil {
		return err
	}
	for _, p := range pods {
		for _, h := range hooks {
			h.PodAdded(p)
		}
	}
	if err := a.applyNetwork(ctx); err != nil {
		return err
	}
	go a.owner.Run(ctx)
	if err := a.owner.Sync(ctx); err != nil {
		log.Error(err, "First table sync failed; retrying")
	}
	go a.overlay.Run(ctx)
	go a.cluster.Run(ctx)
	srv.SetReady(true)
	pn.SetReady(true)
	if err := host.InstallCNI(a.Paths); err != nil {
		return fmt.Errorf("install the CNI plugin: %w", err)
	}
	initialised.Set(nil)
	log.Info("Node initialised", "node", a.NodeName, "subnet", node.Subnet, "mtu", node.PodMTU, "encapsulation", overlay.Encapsulation(network))
	select {
	case <-ctx.Done():
		return nil
	case err := <-srvErr:
		return fmt.Errorf("CNI server: %w", err)
	}
}

// build makes the table owner and the features every mode has: the base
// and the service proxy.
func (a *Agent) build(hs listers.HostSubnetLister, cn listers.ClusterNetworkLister) {
	a.hostSubnets, a.networks = hs, cn
	a.owner = dataplane.NewOwnerOn(a.NFT, a.Log.WithValues("component", "table"))
	a.base = dataplane.NewBase()
	a.owner.Register(a.base)
	a.proxy = &proxy.Runner{Kube: a.Kube, NodeName: a.NodeName, HealthzAddr: a.HealthzAddr,
		Log: a.Log.WithValues("component", "service-proxy"), Request: a.owner.Request}
	a.cluster = loop.New("cluster network", a.applyNetwork, a.Log)
}

// applyNetwork gives the base the cluster's networks and starts or stops
// the service proxy to match the ClusterNetwork (the --service-proxy flag
// wins over it).
func (a *Agent) applyNetwork(ctx context.Context) error {
	cn, err := a.networks.Get(v1alpha1.ClusterNetworkName)
	if err != nil {
		return fmt.Errorf("ClusterNetwork: %w", err)
	}
	a.base.SetNetworks(overlay.ClusterCIDRs(cn), overlay.ServiceCIDRs(cn))
	a.owner.Request()
	mode := a.ServiceProxy
	if mode == "" && !a.proxyOnly {
		mode = cn.Spec.ServiceProxy
	}
	return a.proxy.SetEnabled(ctx, mode != v1alpha1.ServiceProxyExternal && a.Kube != nil)
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
			a.Log.Info("Waiting for this node's HostSubnet and the ClusterNetwork", "node", a.NodeName,
				"hostSubnet", notFound(err1), "clusterNetwork", notFound(err2))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
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

// RunServicesOnly runs the service proxy alone, without the pod network:
// for a node whose pods another CNI plugin wires (Sluice as a kube-proxy
// replacement only), and for benchmarks that compare it with kube-proxy.
// The table gets the base's sets the proxy refers to (cluster and service
// networks; no pods, so no hairpin) and the proxy's chains.
func (a *Agent) RunServicesOnly(ctx context.Context) error {
	f := sluiceinformers.NewSharedInformerFactory(a.Client, 0)
	hs, cn := f.Sluice().V1alpha1().HostSubnets(), f.Sluice().V1alpha1().ClusterNetworks()
	a.build(hs.Lister(), cn.Lister())
	a.owner.Register(a.proxy)
	a.proxyOnly = true
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), hs.Informer().HasSynced, cn.Informer().HasSynced) {
		return errors.New("informer caches did not sync")
	}
	if self, err := a.hostSubnets.Get(a.NodeName); err == nil {
		a.proxy.HostIP = overlay.HostIP(self)
	}
	if err := a.applyNetwork(ctx); err != nil {
		return err
	}
	go a.owner.Run(ctx)
	a.cluster.Run(ctx) // the cluster's networks may change
	return nil
}

// Uninstall removes what the agent installed on its node (host.Uninstall).
func (a *Agent) Uninstall(ctx context.Context) error {
	underlay := ""
	if a.overlay != nil {
		underlay = a.overlay.Underlay()
	}
	return host.Uninstall(ctx, a.Paths, a.NFT, underlay, a.Log)
}

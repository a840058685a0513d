package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/proxy"
	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/controller/workers"
)

// serviceProxy runs the agent's service proxy while the ClusterNetwork (or
// the agent's --service-proxy flag) gives Services to Sluice, and removes
// its rules when they are handed to an external kube-proxy.
type serviceProxy struct {
	cancel   context.CancelFunc
	done     chan struct{}
	tornDown bool // the proxy's objects are known to be absent
	health   *proxy.HealthServer
}

// wantServiceProxy: the flag wins over the ClusterNetwork.
func (a *Agent) wantServiceProxy(cn *v1alpha1.ClusterNetwork) bool {
	mode := a.ServiceProxy
	if mode == "" {
		mode = cn.Spec.ServiceProxy
	}
	return mode != v1alpha1.ServiceProxyExternal
}

// syncServiceProxy starts or stops the proxy to match cn.
func (a *Agent) syncServiceProxy(ctx context.Context, cn *v1alpha1.ClusterNetwork) error {
	want := a.wantServiceProxy(cn) && a.Kube != nil
	sp := &a.services
	switch {
	case want && sp.cancel == nil:
		return a.startServiceProxy(ctx)
	case !want && sp.cancel != nil:
		sp.cancel()
		<-sp.done
		sp.cancel = nil
		sp.health.Close()
		sp.tornDown = false
		fallthrough
	case !want && !sp.tornDown:
		if err := a.teardownServiceProxy(ctx); err != nil {
			return err
		}
		sp.tornDown = true
		a.Log.Info("service proxy off: Services are left to an external proxy")
	}
	return nil
}

func (a *Agent) teardownServiceProxy(ctx context.Context) error {
	nft, err := dataplane.NewNFT()
	if err != nil {
		return err
	}
	var lists [3][]string
	for i, what := range []string{"chains", "sets", "maps"} {
		if lists[i], err = nft.List(ctx, what); err != nil && !knftables.IsNotFound(err) {
			return err
		}
	}
	tx := nft.NewTransaction()
	proxy.Teardown(tx, lists[0], lists[1], lists[2])
	if tx.NumOperations() == 0 {
		return nil
	}
	return nft.Run(ctx, tx)
}

func (a *Agent) startServiceProxy(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	// The caches hold every Service and EndpointSlice of the cluster; their
	// managedFields are never read here, so they are not kept.
	f := kubeinformers.NewSharedInformerFactoryWithOptions(a.Kube, 0, kubeinformers.WithTransform(dropManagedFields))
	nodes := kubeinformers.NewSharedInformerFactoryWithOptions(a.Kube, 0,
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", a.NodeName).String()
		}))
	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices()
	nodeInf := nodes.Core().V1().Nodes()
	if err := sliceInf.Informer().AddIndexers(proxy.SliceIndexers()); err != nil {
		cancel()
		return err
	}
	nft, err := dataplane.NewNFT()
	if err != nil {
		cancel()
		return err
	}
	health := &proxy.HealthServer{Log: a.Log}
	p := proxy.NewProxier(nft, svcInf.Lister(), sliceInf.Informer().GetIndexer(), a.nodeInfo(nil), a.Log.With("component", "service-proxy"))
	p.Conntrack = proxy.KernelConntrack{}
	p.Health = health.Update

	svcHandler := func(obj any) {
		if s, ok := workers.Object[*corev1.Service](obj); ok {
			p.ServiceChanged(s.Namespace, s.Name)
		}
	}
	sliceHandler := func(obj any) {
		if es, ok := workers.Object[*discoveryv1.EndpointSlice](obj); ok {
			p.SliceChanged(es)
		}
	}
	var eligible atomic.Bool
	eligible.Store(true)
	nodeHandler := func(obj any) {
		if n, ok := workers.Object[*corev1.Node](obj); ok && n.Name == a.NodeName {
			p.SetNode(a.nodeInfo(n))
			eligible.Store(proxy.NodeEligible(n))
		}
	}
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{{svcInf.Informer(), svcHandler}, {sliceInf.Informer(), sliceHandler}, {nodeInf.Informer(), nodeHandler}} {
		fn := h.fn
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn, UpdateFunc: func(_, n any) { fn(n) }, DeleteFunc: fn,
		}); err != nil {
			cancel()
			return err
		}
	}
	if a.HealthzAddr != "" {
		a.serveProxyHealth(ctx, &proxy.ProxyHealth{Sync: p.SyncHealth, Eligible: eligible.Load})
	}
	start := time.Now()
	f.Start(ctx.Done())
	nodes.Start(ctx.Done())
	done := make(chan struct{})
	// Not waited for: pods get their network while services load.
	go func() {
		defer close(done)
		if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced, nodeInf.Informer().HasSynced) {
			return
		}
		if err := p.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return // shutting down: the killed nft is not a failure
			}
			a.Log.Warn("service proxy: first sync failed; retrying", "err", err)
		} else {
			a.Log.Info("service proxy: services programmed", "services", len(svcInf.Informer().GetStore().ListKeys()),
				"took", time.Since(start).Round(time.Millisecond))
		}
		p.Run(ctx)
	}()
	a.services = serviceProxy{cancel: cancel, done: done, health: health}
	return nil
}

// dropManagedFields is an informer transform: objects lose their
// metadata.managedFields before they are cached.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// serveProxyHealth answers kube-proxy's node health checks on HealthzAddr
// until ctx ends. A port already taken (kube-proxy still running) is
// logged, not fatal: load-balancing does not depend on it.
func (a *Agent) serveProxyHealth(ctx context.Context, h http.Handler) {
	ln, err := net.Listen("tcp", a.HealthzAddr)
	if err != nil {
		a.Log.Warn("service proxy: cannot serve /healthz", "addr", a.HealthzAddr, "err", err)
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.Log.Warn("service proxy: /healthz server stopped", "err", err)
		}
	}()
}

// nodeInfo is the node the proxy serves: node ports on the HostSubnet's
// host IP and the Node's InternalIP and ExternalIP addresses.
func (a *Agent) nodeInfo(n *corev1.Node) proxy.NodeInfo {
	info := proxy.NodeInfo{Name: a.NodeName}
	if a.self != nil {
		if ip, err := netip.ParseAddr(a.self.Spec.HostIP); err == nil {
			info.IPs = append(info.IPs, ip)
		}
	}
	if n != nil {
		info.Zone = n.Labels[corev1.LabelTopologyZone]
		for _, addr := range n.Status.Addresses {
			if addr.Type != corev1.NodeInternalIP && addr.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(addr.Address); err == nil {
				info.IPs = append(info.IPs, ip.Unmap())
			}
		}
	}
	slices.SortFunc(info.IPs, netip.Addr.Compare)
	info.IPs = slices.Compact(info.IPs)
	return info
}

// RunServicesOnly runs the service proxy alone, without the pod network:
// for a node whose pods another CNI plugin wires (Sluice as a kube-proxy
// replacement only), and for benchmarks that compare it with kube-proxy.
// The table gets the dataplane's sets the proxy refers to (cluster and
// service networks; no pods, so no hairpin) and the proxy's chains.
func (a *Agent) RunServicesOnly(ctx context.Context) error {
	cn, err := a.Client.SluiceV1alpha1().ClusterNetworks().Get(ctx, v1alpha1.ClusterNetworkName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("ClusterNetwork: %w", err)
	}
	if hs, err := a.Client.SluiceV1alpha1().HostSubnets().Get(ctx, a.NodeName, metav1.GetOptions{}); err == nil {
		a.self = hs
	}
	var st dataplane.State
	for _, c := range cn.Spec.ClusterNetworks {
		if p, err := netip.ParsePrefix(c.CIDR); err == nil {
			st.ClusterCIDRs = append(st.ClusterCIDRs, p)
		}
	}
	if p, err := netip.ParsePrefix(cn.Spec.ServiceNetwork); err == nil {
		st.ServiceCIDRs = append(st.ServiceCIDRs, p)
	}
	nft, err := dataplane.NewNFT()
	if err != nil {
		return err
	}
	if err := dataplane.New(nft).Sync(ctx, st); err != nil {
		return err
	}
	if err := a.startServiceProxy(ctx); err != nil {
		return err
	}
	<-a.services.done
	return nil
}

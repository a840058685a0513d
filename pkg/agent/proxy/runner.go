package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/informer"
)

// Runner is the service proxy's feature on a node: while enabled it runs
// informers on Services, EndpointSlices and the node, a Proxier, the
// health-check node ports and kube-proxy's /healthz; when disabled (Services
// handed to an external proxy) it removes the proxy's objects from the
// table once. It is the dataplane.Feature the agent registers; the Proxier
// it runs contributes through it.
type Runner struct {
	Kube     kubernetes.Interface
	NodeName string
	// HostIP is the node's address from its HostSubnet (invalid: unknown).
	HostIP netip.Addr
	// HealthzAddr is where kube-proxy's /healthz and /livez are answered
	// ("0.0.0.0:10256"); "" serves nothing.
	HealthzAddr string
	Log         logr.Logger
	// Request asks the table owner for a sync.
	Request func()

	mu       sync.Mutex
	cur      *Proxier // running or retiring; nil once torn down
	ready    atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}
	health   *HealthServer
	enabled  bool
	tornDown bool // the proxy's objects are known to be absent
}

// Name is "service proxy".
func (r *Runner) Name() string { return "service proxy" }

// BaseChains declares the proxy's hooks.
func (r *Runner) BaseChains() []dataplane.BaseChain { return BaseChains }

// SetEnabled starts or stops the proxy; stopping removes its objects from
// the table at the next sync.
func (r *Runner) SetEnabled(ctx context.Context, on bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on == r.enabled && (on || r.cancel == nil) {
		if !on && !r.tornDown {
			r.Request()
		}
		return nil
	}
	if !on {
		r.cancel()
		<-r.done
		r.cancel = nil
		r.health.Close()
		r.enabled, r.tornDown = false, false
		r.ready.Store(false)
		r.Request()
		return nil
	}
	if err := r.start(ctx); err != nil {
		return err
	}
	r.enabled, r.tornDown = true, false
	return nil
}

// Contribute is the running Proxier's contribution once its caches have
// synced (before that, an empty cache would read as "no services" and
// wipe the table), or the teardown of a disabled proxy.
func (r *Runner) Contribute(ctx context.Context, tx dataplane.Tx, full bool, existing func() (dataplane.Objects, error)) (func(bool), error) {
	// r.mu is not held while contributing: existing may ask Owned.
	r.mu.Lock()
	enabled, tornDown, cur := r.enabled, r.tornDown, r.cur
	r.mu.Unlock()
	if enabled {
		if !r.ready.Load() {
			return nil, nil
		}
		return cur.Contribute(ctx, tx, full, existing)
	}
	if tornDown {
		return nil, nil
	}
	ex, err := existing()
	if err != nil {
		return nil, err
	}
	Teardown(tx, ex)
	return func(ok bool) {
		if ok {
			r.mu.Lock()
			if !r.enabled { // not re-enabled meanwhile
				r.cur, r.tornDown = nil, true
			}
			r.mu.Unlock()
			r.Log.Info("Service proxy off: Services are left to an external proxy")
		}
	}, nil
}

// Owned is what the proxy's last commit put in the table.
func (r *Runner) Owned() dataplane.Objects {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return dataplane.Objects{}
	}
	return r.cur.Owned()
}

// start runs the informers and the Proxier; r.mu held.
func (r *Runner) start(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	// The caches hold every Service and EndpointSlice of the cluster: they
	// keep only the fields the proxy reads (transform.go).
	f := kubeinformers.NewSharedInformerFactoryWithOptions(r.Kube, 0, kubeinformers.WithTransform(Transform))
	nodes := kubeinformers.NewSharedInformerFactoryWithOptions(r.Kube, 0, kubeinformers.WithTransform(TransformNode),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.NodeName).String()
		}))
	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices()
	nodeInf := nodes.Core().V1().Nodes()
	if err := sliceInf.Informer().AddIndexers(SliceIndexers()); err != nil {
		cancel()
		return err
	}
	health := &HealthServer{Log: r.Log}
	p := NewProxier(svcInf.Lister(), sliceInf.Informer().GetIndexer(), r.nodeInfo(nil), r.Log.WithValues("component", "service-proxy"), r.Request)
	p.Conntrack = KernelConntrack{}
	p.Health = health.Update

	var eligible atomic.Bool
	eligible.Store(true)
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{svcInf.Informer(), func(obj any) {
			if s, ok := informer.Object[*corev1.Service](obj); ok {
				p.ServiceChanged(s.Namespace, s.Name)
			}
		}},
		{sliceInf.Informer(), func(obj any) {
			if es, ok := informer.Object[*discoveryv1.EndpointSlice](obj); ok {
				p.SliceChanged(es)
			}
		}},
		{nodeInf.Informer(), func(obj any) {
			if n, ok := informer.Object[*corev1.Node](obj); ok && n.Name == r.NodeName {
				p.SetNode(r.nodeInfo(n))
				eligible.Store(NodeEligible(n))
			}
		}},
	} {
		if _, err := h.inf.AddEventHandler(informer.OnChange(h.fn)); err != nil {
			cancel()
			return err
		}
	}
	if r.HealthzAddr != "" {
		r.serveHealthz(ctx, &ProxyHealth{Sync: p.SyncHealth, Eligible: eligible.Load})
	}
	f.Start(ctx.Done())
	nodes.Start(ctx.Done())
	done := make(chan struct{})
	// Not waited for: pods get their network while services load.
	go func() {
		defer close(done)
		if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced, nodeInf.Informer().HasSynced) {
			return
		}
		r.ready.Store(true)
		r.Request()
		<-ctx.Done()
	}()
	r.cur, r.cancel, r.done, r.health = p, cancel, done, health
	r.ready.Store(false)
	return nil
}

// serveHealthz answers kube-proxy's node health checks on HealthzAddr until
// ctx ends. A port already taken (kube-proxy still running) is logged, not
// fatal: load-balancing does not depend on it.
func (r *Runner) serveHealthz(ctx context.Context, h http.Handler) {
	ln, err := net.Listen("tcp", r.HealthzAddr)
	if err != nil {
		r.Log.Error(err, "Service proxy: cannot serve /healthz", "addr", r.HealthzAddr)
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.Log.Error(err, "Service proxy: /healthz server stopped")
		}
	}()
}

// nodeInfo is the node the proxy serves: node ports on the HostSubnet's
// host IP and the Node's InternalIP and ExternalIP addresses.
func (r *Runner) nodeInfo(n *corev1.Node) NodeInfo {
	info := NodeInfo{Name: r.NodeName}
	if r.HostIP.IsValid() {
		info.IPs = append(info.IPs, r.HostIP)
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

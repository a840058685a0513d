// This file runs Sluice's controllers in this process, wired as
// cmd/sluice-controller's run.go wires them with its default flags
// (informer factories with the same resync, the HostSubnet and NetNamespace
// controllers, the client's rate limit and the workers of
// pkg/controller/apiclient, events on a client of their own), without
// leader election. One measurement keeps client-go's default rate limit
// (5 QPS, burst 10), which the binary had before --kube-api-qps.

package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluicescheme "github.com/sluice-net/sluice/pkg/client/clientset/versioned/scheme"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	"github.com/sluice-net/sluice/pkg/controller/apiclient"
	"github.com/sluice-net/sluice/pkg/controller/hostsubnet"
	"github.com/sluice-net/sluice/pkg/controller/netnamespace"
)

// controllerResync is cmd/sluice-controller's default --resync.
const controllerResync = 10 * time.Minute

// runningController is one start of the controllers.
type runningController struct {
	cancel context.CancelFunc
	done   chan error
	// nodeEvents and subnetEvents count what the controller's own informers
	// deliver (adds, updates, deletes), and lastNodeEvent is when the latest
	// node event arrived (UnixNano), for the fan-out measurement.
	nodeEvents, subnetEvents atomic.Int64
	lastNodeEvent            atomic.Int64
}

// clientGoQPS and clientGoBurst are client-go's default rate limit, which
// cmd/sluice-controller kept before --kube-api-qps.
const clientGoQPS, clientGoBurst = 5, 10

// startController starts the controllers; clientGoDefault keeps client-go's
// default rate limit instead of the binary's.
func startController(ctx context.Context, base *rest.Config, clientGoDefault bool) (*runningController, error) {
	qps, burst := float64(apiclient.DefaultQPS), apiclient.DefaultBurst
	if clientGoDefault {
		qps, burst = clientGoQPS, clientGoBurst
	}
	cfg := apiclient.Config(base, qps, burst, "sluice-controller/bench-scale")
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	sluice, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	eventsKube, err := kubernetes.NewForConfig(apiclient.Config(cfg, qps, burst, cfg.UserAgent))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	rc := &runningController{cancel: cancel, done: make(chan error, 1)}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventsKube.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(eventScheme(), corev1.EventSource{Component: "sluice-controller", Host: "bench-scale"})

	kubeInf := kubeinformers.NewSharedInformerFactory(kube, controllerResync)
	sluiceInf := sluiceinformers.NewSharedInformerFactory(sluice, controllerResync)
	hs, err := hostsubnet.New(kube, sluice,
		kubeInf.Core().V1().Nodes(),
		sluiceInf.Sluice().V1alpha1().HostSubnets(),
		sluiceInf.Sluice().V1alpha1().ClusterNetworks(),
		recorder, hostsubnet.Options{})
	if err != nil {
		cancel()
		broadcaster.Shutdown()
		return nil, err
	}
	nn, err := netnamespace.New(kube, sluice,
		kubeInf.Core().V1().Namespaces(),
		sluiceInf.Sluice().V1alpha1().NetNamespaces(),
		recorder, netnamespace.Options{})
	if err != nil {
		cancel()
		broadcaster.Shutdown()
		return nil, err
	}
	// Counters on the controller's own (shared) informers: the same watches.
	count := func(n *atomic.Int64, last *atomic.Int64) cache.ResourceEventHandlerFuncs {
		tick := func() {
			n.Add(1)
			if last != nil {
				last.Store(time.Now().UnixNano())
			}
		}
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { tick() },
			UpdateFunc: func(_, _ any) { tick() },
			DeleteFunc: func(any) { tick() },
		}
	}
	kubeInf.Core().V1().Nodes().Informer().AddEventHandler(count(&rc.nodeEvents, &rc.lastNodeEvent))
	sluiceInf.Sluice().V1alpha1().HostSubnets().Informer().AddEventHandler(count(&rc.subnetEvents, nil))

	go func() {
		defer broadcaster.Shutdown()
		defer kubeInf.Shutdown()
		defer sluiceInf.Shutdown()
		kubeInf.Start(ctx.Done())
		sluiceInf.Start(ctx.Done())
		kubeInf.WaitForCacheSync(ctx.Done())
		sluiceInf.WaitForCacheSync(ctx.Done())
		errs := make(chan error, 2)
		go func() { errs <- hs.Run(ctx, apiclient.DefaultWorkers) }()
		go func() { errs <- nn.Run(ctx, apiclient.DefaultWorkers) }()
		first := <-errs
		cancel()
		second := <-errs
		rc.done <- errors.Join(first, second)
	}()
	return rc, nil
}

// stop stops the controllers and waits for their workers.
func (rc *runningController) stop() error {
	rc.cancel()
	select {
	case err := <-rc.done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("controllers did not stop within 30s")
	}
}

// eventScheme is cmd/sluice-controller's: Kubernetes and Sluice types.
func eventScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(scheme.AddToScheme(s))
	utilruntime.Must(sluicescheme.AddToScheme(s))
	return s
}

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	sluicescheme "github.com/sluice-net/sluice/pkg/client/clientset/versioned/scheme"
	sluiceinformers "github.com/sluice-net/sluice/pkg/client/informers/externalversions"
	"github.com/sluice-net/sluice/pkg/controller/apiclient"
	"github.com/sluice-net/sluice/pkg/controller/hostsubnet"
	"github.com/sluice-net/sluice/pkg/controller/netnamespace"
	"github.com/sluice-net/sluice/pkg/health"
)

// run connects to the API server and runs the controllers until ctx ends: at once without
// leader election, else whenever this replica leads.
func run(ctx context.Context, o *options) error {
	logger := klog.FromContext(ctx).WithValues("id", o.id)
	ctx = klog.NewContext(ctx, logger)

	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg = apiclient.Config(cfg, o.kubeAPIQPS, o.kubeAPIBurst, "sluice-controller/"+o.id)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	sluice, err := versioned.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("sluice client: %w", err)
	}
	// Events on a client of their own: a burst of them does not take the requests that
	// allocations need.
	eventsKube, err := kubernetes.NewForConfig(apiclient.Config(cfg, o.kubeAPIQPS, o.kubeAPIBurst, cfg.UserAgent))
	if err != nil {
		return fmt.Errorf("events client: %w", err)
	}

	// Not bound to ctx: events of the shutdown (the lease released) should still go out.
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	defer broadcaster.Shutdown()
	broadcaster.StartStructuredLogging(4)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventsKube.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(eventScheme(), corev1.EventSource{Component: "sluice-controller", Host: o.id})

	// Health: alive while the process runs and, when leading, renews its lease; ready once it
	// leads with its caches synced, or knows another replica leads.
	var hs health.Server
	ready := health.NewFlag("not leading and no leader seen yet")
	hs.Ready.Set("election", ready.Check)
	watchdog := leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	hs.Live.Set("leader-election", func() error { return watchdog.Check(nil) })
	if o.healthBindAddress != "" {
		if err := hs.Serve(ctx, o.healthBindAddress); err != nil {
			return err
		}
	}

	controllers := func(ctx context.Context) error {
		kubeInf := kubeinformers.NewSharedInformerFactory(kube, o.resync)
		sluiceInf := sluiceinformers.NewSharedInformerFactory(sluice, o.resync)
		defer kubeInf.Shutdown()
		defer sluiceInf.Shutdown()
		hs, err := hostsubnet.New(kube, sluice,
			kubeInf.Core().V1().Nodes(),
			sluiceInf.Sluice().V1alpha1().HostSubnets(),
			sluiceInf.Sluice().V1alpha1().ClusterNetworks(),
			recorder, hostsubnet.Options{})
		if err != nil {
			return err
		}
		nn, err := netnamespace.New(kube, sluice,
			kubeInf.Core().V1().Namespaces(),
			sluiceInf.Sluice().V1alpha1().NetNamespaces(),
			recorder, netnamespace.Options{})
		if err != nil {
			return err
		}
		kubeInf.Start(ctx.Done())
		sluiceInf.Start(ctx.Done())
		ready.Set(errors.New("leading; informer caches not synced yet"))
		kubeInf.WaitForCacheSync(ctx.Done())
		sluiceInf.WaitForCacheSync(ctx.Done())
		ready.Set(nil)
		// Both run until ctx ends (the term is over); if one fails, the other is stopped
		// too, so that the replica gives up the lease rather than lead half-working.
		ctx, stop := context.WithCancel(ctx)
		defer stop()
		errs := make(chan error, 2)
		go func() { errs <- hs.Run(ctx, o.workers) }()
		go func() { errs <- nn.Run(ctx, o.workers) }()
		first := <-errs
		stop()
		second := <-errs
		return errors.Join(first, second)
	}

	if !o.leaderElect {
		logger.Info("Starting without leader election")
		ready.Set(errors.New("informer caches not synced yet"))
		return controllers(ctx)
	}

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaderElectNamespace, Name: LeaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.id, EventRecorder: recorder},
	}
	// A replica that loses the lease stops its controllers, waits for them, and stands for
	// election again: the process stays up (a lab runs it without a supervisor), and a
	// stale leader never works beside a new one longer than its workers take to stop.
	for term := 1; ctx.Err() == nil; term++ {
		if err := lead(ctx, o, lock, controllers, term, watchdog, ready); err != nil {
			return err
		}
	}
	return nil
}

// lead stands for election once and, if this replica wins, runs the controllers until it
// stops leading. The controllers run here, not in the elector's callback goroutine, so that
// lead returns only after they have stopped.
func lead(ctx context.Context, o *options, lock resourcelock.Interface, controllers func(context.Context) error, term int,
	watchdog *leaderelection.HealthzAdaptor, ready *health.Flag) error {
	logger := klog.FromContext(ctx)
	lease := o.leaderElectNamespace + "/" + LeaseName
	termCtx, endTerm := context.WithCancel(ctx)
	defer endTerm()
	leading := make(chan context.Context, 1) // buffered: a late send after we stopped listening is dropped
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Name:            LeaseName,
		WatchDog:        watchdog,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) { leading <- leadCtx },
			OnStoppedLeading: func() {
				logger.Info("Not leading", "lease", lease)
				ready.Set(errors.New("stopped leading; standing for election again"))
			},
			OnNewLeader: func(identity string) {
				if identity != o.id {
					ready.Set(nil) // standing by behind a leader that is known
					logger.Info("Another replica leads", "lease", lease, "leader", identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	electorDone := make(chan struct{})
	go func() {
		defer close(electorDone)
		elector.Run(termCtx)
	}()
	logger.Info("Standing for leader election", "lease", lease, "term", term)

	select {
	case leadCtx := <-leading:
		logger.Info("Started leading", "lease", lease, "term", term)
		if err := controllers(leadCtx); err != nil {
			logger.Error(err, "Controllers stopped")
		}
		// Lost the lease, or the controllers failed while we lead: give the lease up
		// (ReleaseOnCancel) so that the other replica need not wait for it to expire.
		endTerm()
		<-electorDone
	case <-electorDone:
		// ctx ended before we won, or we won and lost before the callback reached us; in
		// both cases the leading context is already cancelled and nothing is to be run.
	}
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (no --kubeconfig given): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}

// eventScheme knows the Kubernetes and the Sluice types, so that events can be recorded on
// Nodes, Namespaces and Sluice's objects (NetNamespaces) alike.
func eventScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(scheme.AddToScheme(s))
	utilruntime.Must(sluicescheme.AddToScheme(s))
	return s
}

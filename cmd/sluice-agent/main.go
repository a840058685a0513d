// Command sluice-agent runs Sluice on one node: node IPAM, the CNI server,
// pod interfaces, the overlay, the node's nftables table (pod network,
// isolation, service proxy).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/host"
	"github.com/sluice-net/sluice/pkg/agent/nftnl"
	"github.com/sluice-net/sluice/pkg/agent/node"
	sluiceclient "github.com/sluice-net/sluice/pkg/client/clientset/versioned"
	"github.com/sluice-net/sluice/pkg/health"
)

func main() {
	opts := newOptions()
	fs := flag.NewFlagSet("sluice-agent", flag.ExitOnError)
	opts.addFlags(fs)
	klog.InitFlags(fs) // -v, --vmodule, …
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice-agent [flags]\n\nRuns Sluice on this node: pod network (CNI), isolation and the service proxy.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice-agent: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	for _, step := range []func() error{opts.complete, opts.validate} {
		if err := step(); err != nil {
			fmt.Fprintf(os.Stderr, "sluice-agent: %v\n", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		klog.ErrorS(err, "sluice-agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, o *options) error {
	var rc *rest.Config
	var err error
	if o.kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return err
	}
	c := node.Config{NodeName: o.node, Paths: o.paths, ServiceProxy: o.serviceProxy, HealthzAddr: o.healthz,
		Log: klog.Background().WithValues("node", o.node), Privileges: host.ReadPrivileges}
	if c.Client, err = sluiceclient.NewForConfig(rc); err != nil {
		return err
	}
	if c.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	switch o.nftBackend {
	case nftNetlink:
		nl, err := nftnl.New(dataplane.Table)
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		defer nl.Close()
		c.NFT = nl
	case nftBinary:
		exe, err := dataplane.NewNFT()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		c.NFT = dataplane.FromKnftables(exe)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Kube.CoreV1().Events("")})
	c.Events = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "sluice-agent", Host: c.NodeName})
	if o.health != "" {
		c.Health = &health.Server{}
		c.Health.Live.Set("process", func() error { return nil })
		if err := c.Health.Serve(ctx, o.health); err != nil {
			return err
		}
	}
	if o.debug != "" {
		addr, err := health.ServeDebug(ctx, o.debug)
		if err != nil {
			return err
		}
		klog.InfoS("Serving Go runtime profiles", "address", "http://"+addr.String()+"/debug/pprof/")
	}
	var watch *host.OwnerWatch
	if o.owner != "" {
		watch = host.WatchOwner(ctx, c.Kube, o.namespace, o.owner)
	}

	a := &node.Agent{Config: c}
	if o.servicesOnly {
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
		c.Log.Info("Stopping; the node's network stays as it is for the next agent", "daemonset", o.owner)
	}
	return err
}

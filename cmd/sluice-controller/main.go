// Command sluice-controller allocates a HostSubnet to every Node from the ClusterNetwork and
// reports the ClusterNetwork's status. Run two replicas: leader election on the Lease
// sluice-controller keeps one active.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
)

func main() {
	opts := newOptions()
	fs := flag.NewFlagSet("sluice-controller", flag.ExitOnError)
	opts.addFlags(fs)
	klog.InitFlags(fs) // -v, --vmodule, …
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice-controller [flags]\n\nAllocates HostSubnets to Nodes from the ClusterNetwork %q.\n\n", "default")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice-controller: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if err := opts.complete(); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-controller: %v\n", err)
		os.Exit(2)
	}
	if err := opts.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-controller: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		klog.ErrorS(err, "sluice-controller failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/sluice-net/sluice/pkg/controller/apiclient"
)

// LeaseName is the coordination.k8s.io Lease the replicas elect a leader on.
const LeaseName = "sluice-controller"

// options are the controller's command-line settings.
type options struct {
	kubeconfig string

	leaderElect          bool
	leaderElectNamespace string
	leaseDuration        time.Duration
	renewDeadline        time.Duration
	retryPeriod          time.Duration
	id                   string

	workers int
	resync  time.Duration

	kubeAPIQPS   float64
	kubeAPIBurst int

	healthBindAddress string
}

func newOptions() *options {
	return &options{
		leaderElect:          true,
		leaderElectNamespace: "kube-system",
		// kube-controller-manager's defaults.
		leaseDuration: 15 * time.Second,
		renewDeadline: 10 * time.Second,
		retryPeriod:   2 * time.Second,
		workers:       apiclient.DefaultWorkers,
		resync:        10 * time.Minute,
		kubeAPIQPS:    apiclient.DefaultQPS,
		kubeAPIBurst:  apiclient.DefaultBurst,
	}
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", o.kubeconfig, "kubeconfig file; empty means in-cluster configuration")
	fs.BoolVar(&o.leaderElect, "leader-elect", o.leaderElect, "elect a leader among the replicas on the Lease "+LeaseName+"; only the leader works")
	fs.StringVar(&o.leaderElectNamespace, "leader-elect-namespace", o.leaderElectNamespace, "namespace of the leader-election Lease")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", o.leaseDuration, "how long a non-leader waits after the last renewal before taking over")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", o.renewDeadline, "how long the leader keeps trying to renew before it gives up leading")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", o.retryPeriod, "interval between attempts to acquire or renew the lease")
	fs.StringVar(&o.id, "id", o.id, "this replica's identity in the Lease (default $POD_NAME_RANDOM in a pod, else hostname_pid)")
	fs.IntVar(&o.workers, "workers", o.workers, "reconcile workers per controller (each HostSubnet's subnet is reserved before it is created, so workers allocate in parallel)")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", o.kubeAPIQPS, "requests per second to the API server, sustained (client-side limit; events have a limit of their own)")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", o.kubeAPIBurst, "requests to the API server in a burst above --kube-api-qps; at least --kube-api-qps")
	fs.StringVar(&o.healthBindAddress, "health-bind-address", o.healthBindAddress, "host:port for /healthz (alive; the leader's lease renewed) and /readyz (leading with caches synced, or standing by); empty: none")
	fs.DurationVar(&o.resync, "resync", o.resync, "informer resync period: how often everything is reconciled even without events")
}

// complete fills in defaults that depend on the environment.
func (o *options) complete() error {
	if o.id == "" && os.Getenv("POD_NAME") != "" {
		// A restarted container keeps its pod's name: the suffix tells the new process
		// from the old one, so that it does not take a lease the old one held as its own.
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		o.id = fmt.Sprintf("%s_%x", os.Getenv("POD_NAME"), b)
	}
	if o.id == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--id: no hostname to default to: %w", err)
		}
		o.id = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	return nil
}

func (o *options) validate() error {
	var errs []error
	if o.leaderElect {
		if o.leaderElectNamespace == "" {
			errs = append(errs, errors.New("--leader-elect-namespace must not be empty"))
		}
		if o.leaseDuration <= o.renewDeadline {
			errs = append(errs, fmt.Errorf("--leader-elect-lease-duration %v must be greater than --leader-elect-renew-deadline %v", o.leaseDuration, o.renewDeadline))
		}
		if o.retryPeriod <= 0 || o.renewDeadline <= o.retryPeriod {
			errs = append(errs, fmt.Errorf("--leader-elect-renew-deadline %v must be greater than --leader-elect-retry-period %v, which must be positive", o.renewDeadline, o.retryPeriod))
		}
	}
	if err := apiclient.Check(o.kubeAPIQPS, o.kubeAPIBurst); err != nil {
		errs = append(errs, err)
	}
	if o.workers < 1 {
		errs = append(errs, fmt.Errorf("--workers %d: want at least 1", o.workers))
	}
	if o.healthBindAddress != "" {
		if _, _, err := net.SplitHostPort(o.healthBindAddress); err != nil {
			errs = append(errs, fmt.Errorf("--health-bind-address %q: %v (want host:port, or empty for none)", o.healthBindAddress, err))
		}
	}
	if o.resync < 0 {
		errs = append(errs, fmt.Errorf("--resync %v: want 0 (never) or more", o.resync))
	}
	return errors.Join(errs...)
}

package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/sluice-net/sluice/pkg/controller/apiclient"
)

func parse(t *testing.T, args ...string) (*options, error) {
	t.Helper()
	o := newOptions()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.complete(); err != nil {
		return nil, err
	}
	return o, o.validate()
}

func TestOptionsDefaults(t *testing.T) {
	o, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if !o.leaderElect || o.leaderElectNamespace != "kube-system" || o.kubeconfig != "" || o.workers != apiclient.DefaultWorkers ||
		o.kubeAPIQPS != apiclient.DefaultQPS || o.kubeAPIBurst != apiclient.DefaultBurst {
		t.Errorf("defaults: %+v", o)
	}
	if !strings.Contains(o.id, "_") {
		t.Errorf("id %q is not hostname_pid", o.id)
	}
}

func TestOptionsAsTheLabPassesThem(t *testing.T) {
	o, err := parse(t, "--kubeconfig=/tmp/k.conf", "--leader-elect=true", "--id=controller-1", "--leader-elect-namespace=sluice")
	if err != nil {
		t.Fatal(err)
	}
	if o.kubeconfig != "/tmp/k.conf" || o.id != "controller-1" || o.leaderElectNamespace != "sluice" {
		t.Errorf("parsed: %+v", o)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--leader-elect-lease-duration=5s"}, "--leader-elect-lease-duration 5s must be greater than --leader-elect-renew-deadline 10s"},
		{[]string{"--leader-elect-retry-period=20s", "--leader-elect-lease-duration=60s", "--leader-elect-renew-deadline=15s"}, "--leader-elect-renew-deadline 15s must be greater than --leader-elect-retry-period 20s"},
		{[]string{"--leader-elect-namespace="}, "--leader-elect-namespace must not be empty"},
		{[]string{"--workers=0"}, "--workers 0"},
		{[]string{"--kube-api-qps=0"}, "--kube-api-qps 0: want a positive number of requests per second"},
		{[]string{"--kube-api-qps=-5"}, "--kube-api-qps -5"},
		{[]string{"--kube-api-burst=0"}, "--kube-api-burst 0: want at least 1"},
		{[]string{"--kube-api-qps=50", "--kube-api-burst=20"}, "--kube-api-burst 20 is less than --kube-api-qps 50"},
	} {
		_, err := parse(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	// Without leader election its settings do not matter.
	if _, err := parse(t, "--leader-elect=false", "--leader-elect-lease-duration=1s"); err != nil {
		t.Errorf("--leader-elect=false: %v", err)
	}
}

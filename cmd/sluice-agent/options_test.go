package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func parse(t *testing.T, env map[string]string, args ...string) (*options, error) {
	t.Helper()
	for _, k := range []string{"NODE_NAME", "POD_NAMESPACE"} {
		t.Setenv(k, env[k])
	}
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

func plugin(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "sluice-cni")
	if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOptionsAsTheChartPassesThem(t *testing.T) {
	o, err := parse(t, map[string]string{"NODE_NAME": "node1", "POD_NAMESPACE": "sluice-system"},
		"--cni-plugin="+plugin(t), "--health-bind-address=0.0.0.0:9766", "--uninstall-on-delete=daemonset/sluice-agent")
	if err != nil {
		t.Fatal(err)
	}
	if o.node != "node1" || o.owner != "sluice-agent" || o.namespace != "sluice-system" || o.paths.StateDir != "/var/lib/sluice" || o.healthz != "0.0.0.0:10256" || o.debug != "" {
		t.Errorf("options: %+v", o)
	}
}

// Each bad value is refused with the flag and the value in the message; the
// same flags with good values pass (the control is the test above).
func TestOptionsRefuseBadValues(t *testing.T) {
	env := map[string]string{"NODE_NAME": "node1"}
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{}, nil, "--node-name is empty"},
		{env, []string{"--service-proxy=kube"}, `--service-proxy "kube"`},
		{env, []string{"--services-only", "--service-proxy=External"}, "leaves nothing to run"},
		{env, []string{"--health-bind-address=9766"}, `--health-bind-address "9766"`},
		{env, []string{"--healthz-bind-address=localhost"}, `--healthz-bind-address "localhost"`},
		{env, []string{"--debug-bind-address=6060"}, `--debug-bind-address "6060"`},
		{env, []string{"--uninstall-on-delete=sluice-agent"}, `--uninstall-on-delete "sluice-agent"`},
		{env, []string{"--uninstall-on-delete=daemonset/sluice-agent"}, `POD_NAMESPACE=""`},
		{env, []string{"--cni-plugin=/nonexistent/sluice-cni"}, "--cni-plugin"},
	} {
		args := c.args
		if !strings.Contains(strings.Join(args, " "), "--cni-plugin") {
			args = append(args, "--cni-plugin="+plugin(t))
		}
		_, err := parse(t, c.env, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want one naming %q", c.env, args, err, c.want)
		}
	}
	// --services-only needs no plugin.
	if _, err := parse(t, env, "--services-only", "--cni-plugin=/nonexistent"); err != nil {
		t.Errorf("--services-only with no plugin: %v", err)
	}
}

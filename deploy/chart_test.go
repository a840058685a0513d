//go:build chart

// Tests of the Helm chart with the pinned Helm (`make chart`; the Helm binary is built into
// the cache on first use, which needs the Go module proxy).
package deploy

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/lab/kubebuild"
)

func helmTemplate(t *testing.T, values string, set ...string) (string, error) {
	t.Helper()
	helm, err := kubebuild.EnsureHelm(context.Background(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"template", "sluice", "helm/sluice", "--namespace", "sluice-system"}
	if values != "" {
		f, err := os.CreateTemp(t.TempDir(), "values-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(values)
		f.Close()
		args = append(args, "-f", f.Name())
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := exec.Command(helm, args...).CombinedOutput()
	return string(out), err
}

func TestChartRejectsBadNetworks(t *testing.T) {
	cases := []struct {
		name, values, want string
	}{
		{"overlapping cluster networks", "clusterNetworks:\n- {cidr: 10.128.0.0/14}\n- {cidr: 10.129.0.0/16}\n",
			`values: clusterNetworks[1].cidr "10.129.0.0/16" overlaps clusterNetworks[0].cidr "10.128.0.0/14"`},
		{"service network inside a cluster network", "serviceNetwork: 10.130.0.0/16\n",
			`values: serviceNetwork "10.130.0.0/16" overlaps clusterNetworks[0].cidr "10.128.0.0/14"`},
		{"prefix length out of range", "clusterNetworks:\n- {cidr: 10.128.0.0/33}\n",
			`values: clusterNetworks[0].cidr "10.128.0.0/33" is not a CIDR`},
		{"not an address", "clusterNetworks:\n- {cidr: 10.300.0.0/14}\n",
			`values: clusterNetworks[0].cidr "10.300.0.0/14" is not a CIDR`},
		{"host bits set", "clusterNetworks:\n- {cidr: 10.129.0.0/14}\n",
			`values: clusterNetworks[0].cidr "10.129.0.0/14" has host bits set`},
		{"host subnet as large as the network", "clusterNetworks:\n- {cidr: 10.128.0.0/23, hostSubnetLength: 9}\n",
			`values: clusterNetworks[0].hostSubnetLength 9 leaves no room`},
		{"unknown mode", "mode: Flat\n", "mode"},
		{"misspelt key", "clusterNetwork:\n- {cidr: 10.128.0.0/14}\n", "clusterNetwork"},
		{"MTU too small", "mtu: 500\n", "mtu"},
	}
	for _, c := range cases {
		out, err := helmTemplate(t, c.values)
		if err == nil {
			t.Errorf("%s: helm template succeeded, want it to fail naming %q", c.name, c.want)
			continue
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("%s: helm said\n%s\nwant it to contain %q", c.name, out, c.want)
		}
	}
	// The control: the same shapes with good values render.
	for _, good := range []string{
		"clusterNetworks:\n- {cidr: 10.128.0.0/14}\n- {cidr: 10.132.0.0/16, hostSubnetLength: 8}\n",
		"serviceNetwork: 10.96.0.0/12\n",
		"clusterNetworks:\n- {cidr: 10.128.0.0/22, hostSubnetLength: 9}\n",
		"mode: Multitenant\nmtu: 9000\n",
	} {
		if out, err := helmTemplate(t, good); err != nil {
			t.Errorf("values %q: %v\n%s", good, err, out)
		}
	}
}

func TestChartObjects(t *testing.T) {
	out, err := helmTemplate(t, "", "kubernetesAPI.host=192.0.2.10", "image.tag=v9", "serviceProxy.enabled=false", "mode=Subnet")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var ds appsv1.DaemonSet
	var dep appsv1.Deployment
	var cn struct {
		Spec struct{ Mode, ServiceProxy string }
	}
	for _, doc := range strings.Split(out, "\n---") {
		var meta struct{ Kind string }
		yaml.Unmarshal([]byte(doc), &meta)
		switch meta.Kind {
		case "DaemonSet":
			if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
				t.Fatal(err)
			}
		case "Deployment":
			if err := yaml.UnmarshalStrict([]byte(doc), &dep); err != nil {
				t.Fatal(err)
			}
		case "ClusterNetwork":
			if err := yaml.Unmarshal([]byte(doc), &cn); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cn.Spec.Mode != "Subnet" || cn.Spec.ServiceProxy != "External" {
		t.Errorf("ClusterNetwork spec mode=%q serviceProxy=%q, want Subnet External", cn.Spec.Mode, cn.Spec.ServiceProxy)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.PriorityClassName != "system-node-critical" {
		t.Errorf("agent: hostNetwork=%v priorityClassName=%q", pod.HostNetwork, pod.PriorityClassName)
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "" {
		t.Errorf("agent tolerations %+v, want one that tolerates every taint", pod.Tolerations)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("agent update strategy %q", ds.Spec.UpdateStrategy.Type)
	}
	c := pod.Containers[0]
	if c.Image != "sluice.dev/sluice:v9" {
		t.Errorf("agent image %q", c.Image)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v, want the downward API's spec.nodeName", e)
	}
	if env["KUBERNETES_SERVICE_HOST"].Value != "192.0.2.10" {
		t.Errorf("KUBERNETES_SERVICE_HOST %+v", env["KUBERNETES_SERVICE_HOST"])
	}
	if !slicesContain(c.Args, "--healthz-bind-address=") {
		t.Errorf("service proxy off, but the agent's args %q still bind its health check", c.Args)
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		strings.Join(capNames(sc.Capabilities.Add), ",") != "NET_ADMIN,SYS_ADMIN" {
		t.Errorf("agent securityContext %+v, want unprivileged with NET_ADMIN and SYS_ADMIN", c.SecurityContext)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("agent readiness probe %+v", c.ReadinessProbe)
	}
	if *dep.Spec.Replicas != 2 || !slicesContain(dep.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true") {
		t.Errorf("controller: replicas %d args %q", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Args)
	}
}

func slicesContain(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func capNames(c []corev1.Capability) []string {
	var out []string
	for _, x := range c {
		out = append(out, string(x))
	}
	return out
}

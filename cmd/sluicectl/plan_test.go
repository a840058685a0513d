package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/plan"
)

type runResult struct {
	code           int
	stdout, stderr string
}

func sluicectl(t *testing.T, stdin string, args ...string) runResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return runResult{code, out.String(), errb.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanJSON(t *testing.T) {
	f := writeFile(t, "plan.yaml", `
release:  {maxNodes: 2000, maxPods: 150000, maxPodsPerNode: 250}
node:     {vCPU: 8, memoryGiB: 32, vCPUPerCore: 2, podsPerCore: 10}
network:  {clusterNetwork: [10.128.0.0/14], hostSubnetLength: 9,
           serviceNetwork: 172.30.0.0/16, datacenter: [192.168.0.0/16]}
workload: {cpuCores: 125, memoryGiB: 845, reservePercent: 30, cpuOvercommit: false}
`)
	r := sluicectl(t, "", "plan", "-f", f, "-o", "json")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var got struct {
		PodsPerNode    struct{ Value int64 }
		MaxNodes       struct{ Value int64 }
		MaxClusterPods struct{ Value int64 }
		NodesByCPU     struct{ Value float64 }
		NodesByMemory  struct{ Value float64 }
		NodesNeeded    struct {
			Value   int64
			Binding string
		}
		Conflicts []any
		Storage   struct {
			Logging struct{ Bytes int64 }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if got.PodsPerNode.Value != 40 || got.MaxNodes.Value != 512 || got.MaxClusterPods.Value != 20480 ||
		got.NodesByCPU.Value != 40.625 || got.NodesByMemory.Value != 34.328125 || got.NodesNeeded.Value != 41 ||
		got.NodesNeeded.Binding != "nodesByCPU" || got.Conflicts == nil || len(got.Conflicts) != 0 ||
		got.Storage.Logging.Bytes != 371_589_120_000 {
		t.Errorf("unexpected answer: %+v", got)
	}
}

func TestPlanOutputsAgree(t *testing.T) {
	want, err := plan.Compute(plan.DefaultInput())
	if err != nil {
		t.Fatal(err)
	}
	j := sluicectl(t, "", "plan", "-o", "json")
	y := sluicectl(t, "", "plan", "-o", "yaml")
	tbl := sluicectl(t, "", "plan")
	if j.code != 0 || y.code != 0 || tbl.code != 0 {
		t.Fatalf("exit %d %d %d: %s %s %s", j.code, y.code, tbl.code, j.stderr, y.stderr, tbl.stderr)
	}
	wantJSON, _ := json.Marshal(want)
	fromYAML, err := yaml.YAMLToJSON([]byte(y.stdout))
	if err != nil {
		t.Fatal(err)
	}
	var a, b, c any
	json.Unmarshal(wantJSON, &a)
	json.Unmarshal([]byte(j.stdout), &b)
	json.Unmarshal(fromYAML, &c)
	if !jsonEqual(a, b) || !jsonEqual(a, c) {
		t.Errorf("json and yaml output differ from Compute")
	}
	if tbl.stdout != plan.Table(want) {
		t.Errorf("table output differs from plan.Table")
	}
	for _, s := range []string{"podsPerNode", "cores × podsPerCore", "formula: " + want.PodsPerNode.Formula, "40.625", "34.328125", "CONFLICTS", "none"} {
		if !strings.Contains(tbl.stdout, s) {
			t.Errorf("table lacks %q", s)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// Bad input: exit status 2 and one line on standard error naming the field and the value.
func TestPlanBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"invalid CIDR", "network: {clusterNetwork: [10.128.0.0/33]}", `network.clusterNetwork[0]: "10.128.0.0/33" is not a valid CIDR`},
		{"no host subnet", "network: {hostSubnetLength: 23}", "network.hostSubnetLength: 23 leaves no host subnet in 10.128.0.0/14"},
		{"no pod address", "network: {hostSubnetLength: 1}", "network.hostSubnetLength: 1 leaves no pod address"},
		{"zero size", "node: {memoryGiB: 0}", "node.memoryGiB: 0 must be greater than 0"},
		{"negative size", "workload: {cpuCores: -125}", "workload.cpuCores: -125 must be greater than 0"},
		{"unknown field", "workload: {cpuCore: 125}", "workload.cpuCore: unknown field (value 125)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeFile(t, "plan.yaml", tc.file)
			r := sluicectl(t, "", "plan", "-f", f, "-o", "json")
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			wantPrefix := "sluicectl plan: " + f + ": " + tc.want
			if !strings.HasPrefix(r.stderr, wantPrefix) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr %q, want one line starting %q", r.stderr, wantPrefix)
			}
		})
	}
}

func TestPlanBadInvocation(t *testing.T) {
	for _, args := range [][]string{
		{"plan", "-o", "xml"},
		{"plan", "--no-such-flag"},
		{"plan", "extra-argument"},
		{"plan", "-f", filepath.Join(t.TempDir(), "missing.yaml")},
		{"plan", "-f", "-", "--cluster-network", "-"},
		{"no-such-command"},
	} {
		r := sluicectl(t, "", args...)
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, r.code, r.stderr)
		}
	}
}

func TestPlanStdin(t *testing.T) {
	r := sluicectl(t, "node: {podsPerCore: 0}\n", "plan", "-f", "-", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"binding": "release maxPodsPerNode"`) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = sluicectl(t, "node: {vCPU: 0}\n", "plan", "-f", "-")
	if r.code != 2 || r.stderr != "sluicectl plan: <stdin>: node.vCPU: 0 must be greater than 0\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestPlanConflictsExitOne(t *testing.T) {
	f := writeFile(t, "plan.yaml", "network: {datacenter: [10.0.0.0/8, 172.16.0.0/12]}")
	r := sluicectl(t, "", "plan", "-f", f, "-o", "json")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	var got struct{ Conflicts []plan.Conflict }
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Conflicts) != 2 || got.Conflicts[0].A.Name != "network.clusterNetwork[0]" || got.Conflicts[1].B.Name != "network.datacenter[1]" {
		t.Errorf("conflicts = %+v", got.Conflicts)
	}
	if r.stderr != "sluicectl plan: 2 network conflict(s); see conflicts in the output\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

const clusterNetwork = `apiVersion: sluice.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterNetworks: [{cidr: 10.128.0.0/13, hostSubnetLength: 8}]
  serviceNetwork: 172.30.0.0/16
  mode: NetworkPolicy
  encapsulation: VXLAN
  vxlanPort: 4789
  mtu: 1450
`

func TestPlanClusterNetwork(t *testing.T) {
	cn := writeFile(t, "cn.yaml", clusterNetwork)
	r := sluicectl(t, "", "plan", "--cluster-network", cn, "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got plan.Result
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.MaxNodes.Value != 2000 || got.MaxNodes.Terms[1].Value != 2048 || got.PodsPerNode.Terms[2].Value != 254 {
		t.Errorf("maxNodes %+v podsPerNode %+v", got.MaxNodes, got.PodsPerNode)
	}

	// A manifest's field is reported against the manifest, a plan's against the plan.
	bad := writeFile(t, "bad.yaml", strings.Replace(clusterNetwork, "hostSubnetLength: 8", "hostSubnetLength: 24", 1))
	r = sluicectl(t, "", "plan", "--cluster-network", bad)
	want := "sluicectl plan: " + bad + ": spec.clusterNetworks[0].hostSubnetLength: 24 leaves no host subnet in 10.128.0.0/13"
	if r.code != 2 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}

	p := writeFile(t, "plan.yaml", "network: {datacenter: [10.128.0.0/16]}")
	r = sluicectl(t, "", "plan", "-f", p, "--cluster-network", cn)
	if r.code != 1 || !strings.Contains(r.stdout, "spec.clusterNetworks[0] 10.128.0.0/13 overlaps network.datacenter[0] 10.128.0.0/16") {
		t.Errorf("exit %d, stdout %s", r.code, r.stdout)
	}
}

func TestPlanHelpPrintsEveryDefault(t *testing.T) {
	r := sluicectl(t, "", "plan", "--help")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, d := range plan.FieldDocs() {
		line := ""
		for l := range strings.SplitSeq(r.stdout, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), d.Path+" ") {
				line = l
			}
		}
		if !strings.Contains(line, " "+d.Default+" ") {
			t.Errorf("help lacks %s with default %s (line %q)", d.Path, d.Default, line)
		}
	}
	for _, s := range []string{"podsPerNode", "nodesNeeded", "-f, --file", "-o, --output string", `(default "table")`,
		"--cluster-network", "vxlanPort: 4789", "mtu: 1450", "Exit status"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help lacks %q", s)
		}
	}
}

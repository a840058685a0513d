package plan

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestDecodeKeepsDefaults(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "---\n", "null", "node:\n", "{}"} {
		in, err := DecodeInput([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if !reflect.DeepEqual(in, DefaultInput()) {
			t.Errorf("%q changed the defaults: %+v", doc, in)
		}
	}
	in, err := DecodeInput([]byte("node: {vCPU: 16}\nnetwork:\n  clusterNetwork: [10.128.0.0/13]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultInput()
	want.Node.VCPU = 16
	want.Network.ClusterNetwork = []ClusterNetworkEntry{{CIDR: "10.128.0.0/13"}}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("got %+v\nwant %+v", in, want)
	}
}

func TestInputRoundTrips(t *testing.T) {
	in := DefaultInput()
	in.Network.ClusterNetwork = append(in.Network.ClusterNetwork, ClusterNetworkEntry{CIDR: "10.132.0.0/14", HostSubnetLength: intPtr(8)})
	in.Workload.CPUOvercommit = true
	for _, marshal := range []func(any) ([]byte, error){json.Marshal, yaml.Marshal} {
		b, err := marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeInput(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("round trip of %s\n got %+v\nwant %+v", b, got, in)
		}
	}
}

func TestResultJSONKeys(t *testing.T) {
	b, err := json.Marshal(mustCompute(t, DefaultInput()))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"podsPerNode", "maxNodes", "maxClusterPods", "nodesByCPU", "nodesByMemory", "nodesNeeded", "conflicts", "storage"}
	if len(m) != len(want) {
		t.Errorf("keys = %v, want %v", m, want)
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			t.Errorf("missing key %q", k)
		}
	}
	if string(m["conflicts"]) != "[]" {
		t.Errorf("conflicts = %s, want []", m["conflicts"])
	}
	var ppn struct {
		Value    int64
		Binding  string
		Formula  string
		Workings string
	}
	if err := json.Unmarshal(m["podsPerNode"], &ppn); err != nil {
		t.Fatal(err)
	}
	if ppn.Value != 40 || ppn.Binding != "cores × podsPerCore" || ppn.Formula == "" ||
		ppn.Workings != "min(8 vCPU / 2 vCPUPerCore = 4 cores × 10 = 40, 250, 2^9 − 2 = 510) = 40" {
		t.Errorf("podsPerNode = %+v", ppn)
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	in := DefaultInput()
	in.Network.Datacenter = []string{"10.0.0.0/8", "172.16.0.0/12"}
	a, _ := json.Marshal(mustCompute(t, in))
	for range 20 {
		b, _ := json.Marshal(mustCompute(t, in))
		if string(a) != string(b) {
			t.Fatalf("two runs differ:\n%s\n%s", a, b)
		}
	}
	// Checking a shape never fails in different ways on different runs either.
	const doc = "node: {a: 1, b: 2, c: 3}\nzz: 1\naa: 2\n"
	_, first := DecodeInput([]byte(doc))
	for range 20 {
		if _, err := DecodeInput([]byte(doc)); err.Error() != first.Error() {
			t.Fatalf("errors differ:\n%v\n%v", first, err)
		}
	}
}

func TestFieldDocsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range FieldDocs() {
		if d.Help == "" {
			t.Errorf("%s has no help", d.Path)
		}
		if d.Default == "" {
			t.Errorf("%s has no default", d.Path)
		}
		seen[d.Path] = true
	}
	for path := range fieldHelp {
		if !seen[path] {
			t.Errorf("fieldHelp describes %s, which is not a field", path)
		}
	}
	if got := len(FieldDocs()); got != 39 {
		t.Errorf("%d fields documented", got)
	}
}

// docs/planning.md must list every field with its default, and every formula.
func TestDocsListEveryField(t *testing.T) {
	b, err := os.ReadFile("../../docs/planning.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, d := range FieldDocs() {
		row := "| `" + d.Path + "` | `" + d.Default + "` |"
		if !strings.Contains(doc, row) {
			t.Errorf("docs/planning.md lacks the row %q", row)
		}
	}
	for _, f := range Formulas() {
		if !strings.Contains(doc, f.Formula) {
			t.Errorf("docs/planning.md lacks the formula of %s: %q", f.Answer, f.Formula)
		}
	}
}

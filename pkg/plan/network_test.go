package plan

import (
	"reflect"
	"strings"
	"testing"
)

func TestConflicts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cluster    []string
		service    string
		datacenter []string
		want       []string // Conflict.String()
	}{{
		name: "defaults", cluster: []string{"10.128.0.0/14"}, service: "172.30.0.0/16", datacenter: []string{"192.168.0.0/16"},
	}, {
		name: "service inside the cluster network", cluster: []string{"10.128.0.0/14"}, service: "10.130.0.0/16",
		want: []string{"network.clusterNetwork[0] 10.128.0.0/14 overlaps network.serviceNetwork 10.130.0.0/16 (common: 10.130.0.0/16)"},
	}, {
		// The chapter's warning: an outside system on 172.30.0.0/16 collides with the default
		// service network.
		name: "every pair, in order", cluster: []string{"10.128.0.0/14"}, service: "172.30.0.0/16",
		datacenter: []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "10.129.4.0/24"},
		want: []string{
			"network.clusterNetwork[0] 10.128.0.0/14 overlaps network.datacenter[0] 10.0.0.0/8 (common: 10.128.0.0/14)",
			"network.clusterNetwork[0] 10.128.0.0/14 overlaps network.datacenter[3] 10.129.4.0/24 (common: 10.129.4.0/24)",
			"network.serviceNetwork 172.30.0.0/16 overlaps network.datacenter[1] 172.16.0.0/12 (common: 172.30.0.0/16)",
		},
	}, {
		name: "nested cluster networks", cluster: []string{"10.128.0.0/14", "10.129.0.0/16"}, service: "172.30.0.0/16",
		want: []string{"network.clusterNetwork[0] 10.128.0.0/14 overlaps network.clusterNetwork[1] 10.129.0.0/16 (common: 10.129.0.0/16)"},
	}, {
		name: "IPv6 does not meet IPv4", cluster: []string{"fd00:10::/48"}, service: "172.30.0.0/16", datacenter: []string{"0.0.0.0/0"},
		want: []string{"network.serviceNetwork 172.30.0.0/16 overlaps network.datacenter[0] 0.0.0.0/0 (common: 172.30.0.0/16)"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := DefaultInput()
			in.Network.ClusterNetwork = nil
			for _, c := range tc.cluster {
				in.Network.ClusterNetwork = append(in.Network.ClusterNetwork, ClusterNetworkEntry{CIDR: c})
			}
			in.Network.ServiceNetwork = tc.service
			in.Network.Datacenter = tc.datacenter
			r := mustCompute(t, in)
			got := []string{}
			for _, c := range r.Conflicts {
				got = append(got, c.String())
			}
			if tc.want == nil {
				tc.want = []string{}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("conflicts\n got: %q\nwant: %q", got, tc.want)
			}
		})
	}
}

func TestNestedClusterNetworksAreCountedOnce(t *testing.T) {
	in := DefaultInput()
	in.Network.ClusterNetwork = []ClusterNetworkEntry{{CIDR: "10.128.0.0/14"}, {CIDR: "10.129.0.0/16"}, {CIDR: "10.128.0.0/14"}}
	r := mustCompute(t, in)
	if got := term(t, r.MaxNodes, termHostSubnets).Value; got != 512 {
		t.Errorf("host subnets = %d, want 512 (%s)", got, term(t, r.MaxNodes, termHostSubnets).Workings)
	}
	if len(r.Conflicts) != 3 {
		t.Errorf("conflicts = %v, want 3", r.Conflicts)
	}
}

func TestSeveralClusterNetworks(t *testing.T) {
	// Disjoint networks add their host subnets; the smallest host subnet bounds pods per node.
	in := DefaultInput()
	in.Node.PodsPerCore = 0
	in.Network.ClusterNetwork = []ClusterNetworkEntry{
		{CIDR: "10.128.0.0/14"},
		{CIDR: "10.132.0.0/14", HostSubnetLength: intPtr(7)},
	}
	r := mustCompute(t, in)
	if got := term(t, r.MaxNodes, termHostSubnets).Value; got != 512+2048 {
		t.Errorf("host subnets = %d, want 2560", got)
	}
	if r.PodsPerNode.Value != 126 || r.PodsPerNode.Binding != termSubnetAddrs {
		t.Errorf("podsPerNode = %d by %q, want 126 by the host subnet", r.PodsPerNode.Value, r.PodsPerNode.Binding)
	}
	if !strings.Contains(r.PodsPerNode.Workings, "network.clusterNetwork[1]") {
		t.Errorf("workings do not name the smallest subnet's network: %s", r.PodsPerNode.Workings)
	}
	if len(r.Conflicts) != 0 {
		t.Errorf("conflicts = %v", r.Conflicts)
	}
}

func TestNoteWhenTheWorkloadOutgrowsTheNetwork(t *testing.T) {
	in := DefaultInput()
	in.Workload.CPUCores = 2000 // 2000 × 2 × 1.3 / 8 = 650 nodes > 512
	r := mustCompute(t, in)
	if r.NodesNeeded.Value != 650 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "nodesNeeded 650 exceeds maxNodes 512 (host subnets)") {
		t.Errorf("nodesNeeded %d, notes %q", r.NodesNeeded.Value, r.Notes)
	}
}

const manifest = `apiVersion: sluice.dev/v1alpha1
kind: ClusterNetwork
metadata:
  name: default
  labels: {team: net}
spec:
  clusterNetworks:
  - cidr: 10.128.0.0/13
    hostSubnetLength: 8
  - cidr: 10.136.0.0/16
  serviceNetwork: 172.30.0.0/16
  mode: Multitenant
  encapsulation: VXLAN
  vxlanPort: 4789
  mtu: 1450
status:
  conditions: []
`

func TestCheckClusterNetwork(t *testing.T) {
	cn, err := DecodeClusterNetwork([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if got := *cn.Spec.ClusterNetworks[1].HostSubnetLength; got != DefaultHostSubnetLength {
		t.Errorf("missing hostSubnetLength = %d, want the default %d", got, DefaultHostSubnetLength)
	}
	in := DefaultInput()
	in.Network.HostSubnetLength = 12 // the manifest's lengths win
	r, err := CheckClusterNetwork(in, cn)
	if err != nil {
		t.Fatal(err)
	}
	// 2^(32−13−8) + 2^(32−16−9) = 2048 + 128.
	if got := term(t, r.MaxNodes, termHostSubnets).Value; got != 2176 {
		t.Errorf("host subnets = %d, want 2176", got)
	}
	if r.MaxNodes.Value != 2000 || term(t, r.PodsPerNode, termSubnetAddrs).Value != 254 {
		t.Errorf("maxNodes %d, addresses %d", r.MaxNodes.Value, term(t, r.PodsPerNode, termSubnetAddrs).Value)
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "1500-byte packets") {
		t.Errorf("notes = %q", r.Notes)
	}

	in.Network.Datacenter = []string{"10.136.0.0/20"}
	r, err = CheckClusterNetwork(in, cn)
	if err != nil {
		t.Fatal(err)
	}
	want := "spec.clusterNetworks[1] 10.136.0.0/16 overlaps network.datacenter[0] 10.136.0.0/20 (common: 10.136.0.0/20)"
	if len(r.Conflicts) != 1 || r.Conflicts[0].String() != want {
		t.Errorf("conflicts = %v, want %s", r.Conflicts, want)
	}
}

func TestBadClusterNetwork(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"wrong apiVersion", "apiVersion: sluice.dev/v1alpha1|apiVersion: sluice.dev/v1", `apiVersion: "sluice.dev/v1" is not sluice.dev/v1alpha1`},
		{"wrong kind", "kind: ClusterNetwork|kind: Network", `kind: "Network" is not ClusterNetwork`},
		{"invalid CIDR", "10.136.0.0/16|10.136.0.0/40", `spec.clusterNetworks[1].cidr: "10.136.0.0/40" is not a valid CIDR`},
		{"no room", "hostSubnetLength: 8|hostSubnetLength: 21",
			`spec.clusterNetworks[0].hostSubnetLength: 21 leaves no host subnet in 10.128.0.0/13, which has 19 host bits; it must be less than 19 (hostSubnetLength counts host bits: /21 host subnets are hostSubnetLength 11)`},
		{"no pod address", "hostSubnetLength: 8|hostSubnetLength: 1",
			`spec.clusterNetworks[0].hostSubnetLength: 1 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)`},
		{"bad service", "serviceNetwork: 172.30.0.0/16|serviceNetwork: 172.30.0.1/16", `spec.serviceNetwork: 172.30.0.1/16 has host bits set; the network is 172.30.0.0/16`},
		{"mode", "mode: Multitenant|mode: multitenant", `spec.mode: "multitenant" is not one of Subnet, Multitenant, NetworkPolicy`},
		{"encapsulation", "encapsulation: VXLAN|encapsulation: Geneve", `spec.encapsulation: "Geneve" is not one of VXLAN, None`},
		{"port", "vxlanPort: 4789|vxlanPort: 0", `spec.vxlanPort: 0 is not a port (1–65535)`},
		{"mtu", "mtu: 1450|mtu: 65000", `spec.mtu: 65000 is outside 576–9216`},
		{"unknown spec field", "mtu: 1450|mtu: 1450\n  hostSubnetLength: 9", `spec.hostSubnetLength: unknown field (value 9); known fields: clusterNetworks, encapsulation, mode, mtu, serviceNetwork, vxlanPort`},
		{"string entry", "  - cidr: 10.136.0.0/16|  - 10.136.0.0/16", `spec.clusterNetworks[1]: "10.136.0.0/16" is not a mapping`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to, _ := strings.Cut(tc.edit, "|")
			if !strings.Contains(manifest, from) {
				t.Fatalf("manifest lacks %q", from)
			}
			cn, err := DecodeClusterNetwork([]byte(strings.Replace(manifest, from, to, 1)))
			if err == nil {
				_, err = CheckClusterNetwork(DefaultInput(), cn)
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

func TestClusterNetworkNeedsIdentity(t *testing.T) {
	cn, err := DecodeClusterNetwork([]byte("spec: {mtu: 1400}"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = CheckClusterNetwork(DefaultInput(), cn)
	want := "apiVersion: \"\" is not sluice.dev/v1alpha1; kind: \"\" is not ClusterNetwork"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

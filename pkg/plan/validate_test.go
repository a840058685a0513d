package plan

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-net/sluice/pkg/fielderr"
)

// Every bad input is one line that names the field and shows the value.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // the whole error
	}{
		// Invalid CIDRs.
		{"cluster CIDR", "network: {clusterNetwork: [10.128.0.0/33]}",
			`network.clusterNetwork[0]: "10.128.0.0/33" is not a valid CIDR`},
		{"cluster CIDR not an address", "network: {clusterNetwork: [pods]}",
			`network.clusterNetwork[0]: "pods" is not a valid CIDR`},
		{"cluster CIDR object form", "network: {clusterNetwork: [10.128.0.0/14, {cidr: 10.132.0.0/33, hostSubnetLength: 8}]}",
			`network.clusterNetwork[1].cidr: "10.132.0.0/33" is not a valid CIDR`},
		{"service CIDR", "network: {serviceNetwork: 172.30.0.0}",
			`network.serviceNetwork: "172.30.0.0" is not a valid CIDR`},
		{"empty service CIDR", `network: {serviceNetwork: ""}`,
			`network.serviceNetwork: "" is not a CIDR; want one such as 10.128.0.0/14`},
		{"datacenter host bits", "network: {datacenter: [192.168.0.0/16, 10.1.2.3/8]}",
			`network.datacenter[1]: 10.1.2.3/8 has host bits set; the network is 10.0.0.0/8`},
		{"no cluster network", "network: {clusterNetwork: []}",
			`network.clusterNetwork: is empty; at least one pod network is needed`},
		{"mixed families", "network: {clusterNetwork: [10.128.0.0/14, 'fd00::/48']}",
			`network.clusterNetwork[1]: fd00::/48 is IPv6 but network.clusterNetwork[0] 10.128.0.0/14 is IPv4; all cluster networks must be one address family`},

		// hostSubnetLength leaving no host subnet or no pod address.
		{"prefix length for host bits", "network: {hostSubnetLength: 23}",
			`network.hostSubnetLength: 23 leaves no host subnet in 10.128.0.0/14, which has 18 host bits; it must be less than 18 (hostSubnetLength counts host bits: /23 host subnets are hostSubnetLength 9)`},
		{"longer than the address", "network: {hostSubnetLength: 40}",
			`network.hostSubnetLength: 40 leaves no host subnet in 10.128.0.0/14, which has 18 host bits; it must be less than 18`},
		{"per-network length", "network: {clusterNetwork: [{cidr: 10.0.0.0/24, hostSubnetLength: 9}]}",
			`network.clusterNetwork[0].hostSubnetLength: 9 leaves no host subnet in 10.0.0.0/24, which has 8 host bits; it must be less than 8`},
		// As the CRD: a cluster network of one host subnet is refused.
		{"one host subnet", "network: {clusterNetwork: [10.0.0.0/24], hostSubnetLength: 8}",
			`network.hostSubnetLength: 8 leaves only one host subnet in 10.0.0.0/24, which has 8 host bits; it must be less than 8`},
		{"one host bit", "network: {hostSubnetLength: 1}",
			`network.hostSubnetLength: 1 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)`},
		{"zero host bits", "network: {hostSubnetLength: 0}",
			`network.hostSubnetLength: 0 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)`},
		{"negative host bits, two networks, one error", "network: {clusterNetwork: [10.128.0.0/14, 10.132.0.0/14], hostSubnetLength: -9}",
			`network.hostSubnetLength: -9 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)`},

		// Negative or zero sizes.
		{"zero vCPU", "node: {vCPU: 0}", `node.vCPU: 0 must be greater than 0`},
		{"negative memory", "node: {memoryGiB: -32}", `node.memoryGiB: -32 must be greater than 0`},
		{"zero vCPU per core", "node: {vCPUPerCore: 0}", `node.vCPUPerCore: 0 must be greater than 0`},
		{"negative pods per core", "node: {podsPerCore: -10}", `node.podsPerCore: -10 must not be negative (0 = no limit)`},
		{"no pod fits", "node: {vCPU: 1, podsPerCore: 1}", `node.podsPerCore: 1 pods per core on 1 vCPU at 2 vCPU per core allows no pod on a node`},
		{"zero release nodes", "release: {maxNodes: 0}", `release.maxNodes: 0 must be greater than 0`},
		{"negative release pods", "release: {maxPods: -1}", `release.maxPods: -1 must be greater than 0`},
		{"zero workload cores", "workload: {cpuCores: 0}", `workload.cpuCores: 0 must be greater than 0`},
		{"negative workload memory", "workload: {memoryGiB: -845.5}", `workload.memoryGiB: -845.5 must be greater than 0`},
		{"negative reserve", "workload: {reservePercent: -30}", `workload.reservePercent: -30 must not be negative`},
		{"zero etcd", "storage: {etcdGiB: 0}", `storage.etcdGiB: 0 must be greater than 0`},
		{"zero log line", "storage: {logging: {bytesPerLine: 0}}", `storage.logging.bytesPerLine: 0 must be greater than 0`},
		{"zero logging pods", "storage: {logging: {pods: 0}}", `storage.logging.pods: 0 must be greater than 0`},
		{"negative builds", "storage: {buildRegistry: {buildsPerDay: -1}}", `storage.buildRegistry.buildsPerDay: -1 must not be negative`},
		{"zero prometheus replicas", "storage: {monitoring: {prometheusReplicas: 0}}", `storage.monitoring.prometheusReplicas: 0 must be greater than 0`},

		// Unknown fields, matched case-sensitively, and wrong types.
		{"unknown field", "node: {podsPerCor: 10}",
			`node.podsPerCor: unknown field (value 10); known fields: memoryGiB, podsPerCore, vCPU, vCPUPerCore`},
		{"unknown field by case", "node: {vcpu: 8}",
			`node.vcpu: unknown field (value 8); known fields: memoryGiB, podsPerCore, vCPU, vCPUPerCore`},
		{"unknown section", "nodes: {vCPU: 8}",
			`nodes: unknown field (value a mapping); known fields: network, node, release, storage, workload`},
		{"unknown nested field", "storage: {logging: {daysRetained: 7}}",
			`storage.logging.daysRetained: unknown field (value 7); known fields: bytesPerLine, headroomPercent, linesPerSecond, pods, replicas, retainDays`},
		{"unknown entry field", "network: {clusterNetwork: [{cidr: 10.128.0.0/14, prefix: 23}]}",
			`network.clusterNetwork[0].prefix: unknown field (value 23); known fields: cidr, hostSubnetLength`},
		{"not a number", "node: {vCPU: eight}", `node.vCPU: "eight" is not a number`},
		{"not a whole number", "node: {vCPU: 8.5}", `node.vCPU: 8.5 is not a whole number`},
		{"not a list", "network: {datacenter: 192.168.0.0/16}", `network.datacenter: "192.168.0.0/16" is not a list`},
		{"not a bool", "workload: {cpuOvercommit: maybe}", `workload.cpuOvercommit: "maybe" is not true or false`},
		{"not a mapping", "node: 8", `node: 8 is not a mapping`},
		{"several documents", "node: {vCPU: 8}\n---\nnode: {vCPU: 16}\n",
			`the file holds several YAML documents; a plan is one document`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeAndValidate(tc.yaml)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
		})
	}
}

func decodeAndValidate(y string) error {
	in, err := DecodeInput([]byte(y))
	if err != nil {
		return err
	}
	_, err = Compute(in)
	return err
}

func TestBadInputIsFieldError(t *testing.T) {
	err := decodeAndValidate("node: {vCPU: 0}")
	var fe *fielderr.Error
	if !errors.As(err, &fe) || fe.Field != "node.vCPU" {
		t.Fatalf("errors.As(%v) = %v, path %q", err, fe, fe.Field)
	}
}

func TestSeveralProblemsAreListedInOrder(t *testing.T) {
	err := decodeAndValidate("node: {vCPU: 0}\nnetwork: {hostSubnetLength: 23}\nworkload: {memoryGiB: -1}\n")
	var list fielderr.List
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	for i, want := range []string{"node.vCPU", "network.hostSubnetLength", "workload.memoryGiB"} {
		if list[i].Field != want {
			t.Errorf("error %d is for %s, want %s", i, list[i].Field, want)
		}
	}
}

func TestDuplicateKeyIsAnError(t *testing.T) {
	_, err := DecodeInput([]byte("node: {vCPU: 8, vCPU: 16}"))
	if err == nil || !strings.Contains(err.Error(), "vCPU") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("duplicate key: %v", err)
	}
}

func TestValidateProgrammaticInput(t *testing.T) {
	in := DefaultInput()
	in.Workload.CPUCores = 0
	if err := in.Validate(); err == nil || err.Error() != "workload.cpuCores: 0 must be greater than 0" {
		t.Errorf("Validate = %v", err)
	}
	if err := DefaultInput().Validate(); err != nil {
		t.Errorf("the defaults are invalid: %v", err)
	}
}

package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// Input is one plan: the release's limits, the standard node size, the address plan, the
// workload and the storage assumptions. DefaultInput holds every default; a plan file is
// decoded on top of it (DecodeInput), so a field the file leaves out keeps its default and a
// field the file sets to 0 is an explicit 0, which Validate rejects wherever 0 is not a
// meaningful value.
type Input struct {
	Release  Release  `json:"release"`
	Node     Node     `json:"node"`
	Network  Network  `json:"network"`
	Workload Workload `json:"workload"`
	Storage  Storage  `json:"storage"`
}

// Release holds the limits of the platform release the cluster runs; the defaults are
// OpenShift 4's, as the chapter gives them: 2000 nodes, 150000 pods, 250 pods a node.
type Release struct {
	MaxNodes       int64 `json:"maxNodes"`
	MaxPods        int64 `json:"maxPods"`
	MaxPodsPerNode int64 `json:"maxPodsPerNode"`
}

// Node is the standard compute node every estimate is expressed in.
type Node struct {
	VCPU        int64   `json:"vCPU"`
	MemoryGiB   float64 `json:"memoryGiB"`
	VCPUPerCore int64   `json:"vCPUPerCore"`
	// PodsPerCore is the kubelet's podsPerCore; 0 means no limit.
	PodsPerCore int64 `json:"podsPerCore"`
}

// Network is the address plan.
type Network struct {
	// ClusterNetwork lists the pod networks; each is cut into host subnets, one per node.
	ClusterNetwork []ClusterNetworkEntry `json:"clusterNetwork"`
	// HostSubnetLength is the number of host bits of each node's subnet, as in OpenShift
	// SDN: 9 gives /23 subnets in IPv4 (2^9 − 2 = 510 pod addresses).
	HostSubnetLength int    `json:"hostSubnetLength"`
	ServiceNetwork   string `json:"serviceNetwork"`
	// Datacenter lists networks already in use outside the cluster.
	Datacenter []string `json:"datacenter"`

	// fromManifest is set when the cluster and service networks came from a ClusterNetwork
	// manifest, so that messages name the manifest's fields rather than the plan's.
	fromManifest bool
}

// ClusterNetworkEntry is one pod network. In a plan file it is either a CIDR string, which
// takes network.hostSubnetLength, or {cidr, hostSubnetLength}.
type ClusterNetworkEntry struct {
	CIDR             string `json:"cidr"`
	HostSubnetLength *int   `json:"hostSubnetLength,omitempty"`
}

// UnmarshalJSON accepts "10.128.0.0/14" or {"cidr": "10.128.0.0/14", "hostSubnetLength": 9}.
func (e *ClusterNetworkEntry) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*e = ClusterNetworkEntry{CIDR: s}
		return nil
	}
	type plain ClusterNetworkEntry
	var p plain
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return err
	}
	*e = ClusterNetworkEntry(p)
	return nil
}

// MarshalJSON writes the short form when the entry takes network.hostSubnetLength.
func (e ClusterNetworkEntry) MarshalJSON() ([]byte, error) {
	if e.HostSubnetLength == nil {
		return json.Marshal(e.CIDR)
	}
	type plain ClusterNetworkEntry
	return json.Marshal(plain(e))
}

// Workload is what the applications need, before any reserve, as the chapter states a
// workload: physical cores, memory, a reserve percentage and whether CPU is overcommitted.
type Workload struct {
	// CPUCores counts physical cores; they are converted to vCPU with Node.VCPUPerCore.
	CPUCores       float64 `json:"cpuCores"`
	MemoryGiB      float64 `json:"memoryGiB"`
	ReservePercent float64 `json:"reservePercent"`
	// CPUOvercommit sizes by the smaller of the CPU and memory estimates: CPU can be
	// overcommitted, memory cannot.
	CPUOvercommit bool `json:"cpuOvercommit"`
}

// Storage holds the assumptions of the storage plan.
type Storage struct {
	EtcdGiB             float64           `json:"etcdGiB"`
	ContainerRuntimeGiB float64           `json:"containerRuntimeGiB"`
	NodeLogsGiB         float64           `json:"nodeLogsGiB"`
	BuildRegistry       BuildRegistry     `json:"buildRegistry"`
	BaseImageRegistry   BaseImageRegistry `json:"baseImageRegistry"`
	ReleaseRegistry     ReleaseRegistry   `json:"releaseRegistry"`
	Logging             Logging           `json:"logging"`
	Monitoring          Monitoring        `json:"monitoring"`
}

// BuildRegistry is the development and test cluster's internal registry, which grows with
// every build.
type BuildRegistry struct {
	BuildsPerDay  float64 `json:"buildsPerDay"`
	BuildSizeMiB  float64 `json:"buildSizeMiB"`
	RetainDays    int64   `json:"retainDays"`
	BaseImagesGiB float64 `json:"baseImagesGiB"`
}

// BaseImageRegistry is the external registry that holds base images; it hardly grows.
type BaseImageRegistry struct {
	SizeGiB float64 `json:"sizeGiB"`
}

// ReleaseRegistry is the production registry, which grows with every release.
type ReleaseRegistry struct {
	ReleasesPerDay float64 `json:"releasesPerDay"`
	ImageSizeMiB   float64 `json:"imageSizeMiB"`
	RetainDays     int64   `json:"retainDays"`
}

// Logging sizes Elasticsearch in the logging stack (EFK).
type Logging struct {
	BytesPerLine    float64 `json:"bytesPerLine"`
	LinesPerSecond  float64 `json:"linesPerSecond"`
	Pods            int64   `json:"pods"`
	RetainDays      int64   `json:"retainDays"`
	HeadroomPercent float64 `json:"headroomPercent"`
	// Replicas is the number of copies of each log, the primary included.
	Replicas int64 `json:"replicas"`
}

// Monitoring sizes Prometheus and Alertmanager.
type Monitoring struct {
	// Nodes is the number of nodes Prometheus scrapes; 0 means the nodesNeeded answer.
	Nodes                      int64   `json:"nodes"`
	PrometheusGiBPerNodePerDay float64 `json:"prometheusGiBPerNodePerDay"`
	RetentionDays              int64   `json:"retentionDays"`
	PrometheusReplicas         int64   `json:"prometheusReplicas"`
	AlertmanagerGiB            float64 `json:"alertmanagerGiB"`
	AlertmanagerReplicas       int64   `json:"alertmanagerReplicas"`
	HeadroomPercent            float64 `json:"headroomPercent"`
}

// DefaultHostSubnetLength is OpenShift SDN's default: /23 host subnets in IPv4.
const DefaultHostSubnetLength = 9

// DefaultInput returns the plan every field of a plan file defaults to: the chapter's worked
// example (OpenShift 4 limits, 8 vCPU / 32 GiB nodes, 10.128.0.0/14 split with 9 host bits,
// a 125-core / 845 GiB workload with 30 % reserve, 256-byte log lines at 10 a second from
// 200 pods kept a week) and, where the chapter gives no figure, an illustrative one that
// FieldDocs marks as such.
func DefaultInput() Input {
	return Input{
		Release: Release{MaxNodes: 2000, MaxPods: 150000, MaxPodsPerNode: 250},
		Node:    Node{VCPU: 8, MemoryGiB: 32, VCPUPerCore: 2, PodsPerCore: 10},
		Network: Network{
			ClusterNetwork:   []ClusterNetworkEntry{{CIDR: "10.128.0.0/14"}},
			HostSubnetLength: DefaultHostSubnetLength,
			ServiceNetwork:   "172.30.0.0/16",
			Datacenter:       []string{"192.168.0.0/16"},
		},
		Workload: Workload{CPUCores: 125, MemoryGiB: 845, ReservePercent: 30},
		Storage: Storage{
			EtcdGiB:             20,
			ContainerRuntimeGiB: 100,
			NodeLogsGiB:         15,
			BuildRegistry:       BuildRegistry{BuildsPerDay: 50, BuildSizeMiB: 100, RetainDays: 30, BaseImagesGiB: 100},
			BaseImageRegistry:   BaseImageRegistry{SizeGiB: 100},
			ReleaseRegistry:     ReleaseRegistry{ReleasesPerDay: 5, ImageSizeMiB: 500, RetainDays: 90},
			Logging: Logging{
				BytesPerLine: 256, LinesPerSecond: 10, Pods: 200, RetainDays: 7,
				HeadroomPercent: 20, Replicas: 1,
			},
			Monitoring: Monitoring{
				Nodes: 0, PrometheusGiBPerNodePerDay: 0.125, RetentionDays: 15, PrometheusReplicas: 2,
				AlertmanagerGiB: 40, AlertmanagerReplicas: 3, HeadroomPercent: 20,
			},
		},
	}
}

// FieldDoc documents one field of a plan file.
type FieldDoc struct {
	Path    string // e.g. "node.podsPerCore"
	Default string // as it would be written in a plan file
	Help    string
}

// fieldHelp describes every leaf of Input. TestFieldDocsComplete keeps it in step with the
// types, and TestDocsListEveryField keeps docs/planning.md in step with it.
var fieldHelp = map[string]string{
	"release.maxNodes":       "nodes one cluster of the release supports (OpenShift 4.6: 2000)",
	"release.maxPods":        "pods one cluster supports (OpenShift 4.x: 150000)",
	"release.maxPodsPerNode": "pods the kubelet admits on one node (its maxPods)",

	"node.vCPU":        "vCPUs of the standard node",
	"node.memoryGiB":   "memory of the standard node, GiB",
	"node.vCPUPerCore": "vCPUs per physical core (one core is about two vCPUs)",
	"node.podsPerCore": "kubelet podsPerCore; 0 = no limit (the OpenShift 4 default)",

	"network.clusterNetwork":   "pod networks, each cut into host subnets; an entry may be {cidr, hostSubnetLength}",
	"network.hostSubnetLength": "host bits of each node's subnet, as in OpenShift (9 = /23 in IPv4)",
	"network.serviceNetwork":   "ClusterIP network",
	"network.datacenter":       "networks in use outside the cluster; nothing may overlap them",

	"workload.cpuCores":       "physical cores the applications need (× node.vCPUPerCore = vCPU)",
	"workload.memoryGiB":      "memory the applications need, GiB",
	"workload.reservePercent": "spare capacity for system processes and fail-over, percent",
	"workload.cpuOvercommit":  "size by the smaller of CPU and memory (CPU overcommits, memory cannot)",

	"storage.etcdGiB":             "minimum /var/lib/etcd on each control-plane node",
	"storage.containerRuntimeGiB": "container runtime disk on each node (suggested minimum)",
	"storage.nodeLogsGiB":         "minimum /var/log on each node",

	"storage.buildRegistry.buildsPerDay":  "builds pushed a day to the development registry (illustrative)",
	"storage.buildRegistry.buildSizeMiB":  "image size a build adds, MiB (illustrative)",
	"storage.buildRegistry.retainDays":    "days builds are kept (illustrative)",
	"storage.buildRegistry.baseImagesGiB": "base images kept beside the builds, GiB",
	"storage.baseImageRegistry.sizeGiB":   "external base-image registry (the chapter: 100 or 200 is enough)",

	"storage.releaseRegistry.releasesPerDay": "releases pushed a day to the production registry (illustrative)",
	"storage.releaseRegistry.imageSizeMiB":   "average released image, MiB (illustrative)",
	"storage.releaseRegistry.retainDays":     "days released images are kept (illustrative)",

	"storage.logging.bytesPerLine":    "average log line, bytes",
	"storage.logging.linesPerSecond":  "log lines a pod writes per second",
	"storage.logging.pods":            "pods that log",
	"storage.logging.retainDays":      "days logs are kept",
	"storage.logging.headroomPercent": "extra space on top of the estimate, percent",
	"storage.logging.replicas":        "copies Elasticsearch keeps of each log, primary included",

	"storage.monitoring.nodes":                      "nodes Prometheus scrapes; 0 = the nodesNeeded answer",
	"storage.monitoring.prometheusGiBPerNodePerDay": "Prometheus growth per node a day (OpenShift's scale test: 25 GB a day at 200 nodes)",
	"storage.monitoring.retentionDays":              "days Prometheus keeps data (its default)",
	"storage.monitoring.prometheusReplicas":         "Prometheus instances, each with a full copy",
	"storage.monitoring.alertmanagerGiB":            "volume of each Alertmanager instance",
	"storage.monitoring.alertmanagerReplicas":       "Alertmanager instances",
	"storage.monitoring.headroomPercent":            "extra space on Prometheus, percent",
}

// FieldDocs lists every field of a plan file with its default, in declaration order.
func FieldDocs() []FieldDoc {
	var docs []FieldDoc
	walkLeaves("", reflect.ValueOf(DefaultInput()), func(path string, v reflect.Value) {
		docs = append(docs, FieldDoc{Path: path, Default: fmtDefault(v), Help: fieldHelp[path]})
	})
	return docs
}

// walkLeaves calls fn for every exported non-struct field of v, with its JSON path.
func walkLeaves(prefix string, v reflect.Value, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			walkLeaves(path, fv, fn)
			continue
		}
		fn(path, fv)
	}
}

func fmtDefault(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case []ClusterNetworkEntry:
		var parts []string
		for _, e := range x {
			if e.HostSubnetLength != nil {
				parts = append(parts, fmt.Sprintf("{cidr: %s, hostSubnetLength: %d}", e.CIDR, *e.HostSubnetLength))
			} else {
				parts = append(parts, e.CIDR)
			}
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		return "[" + strings.Join(x, ", ") + "]"
	case float64:
		return fmtFloat(x)
	default:
		return fmt.Sprint(x)
	}
}

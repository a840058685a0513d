package plan

import (
	"fmt"
	"math/big"
)

// StoragePlan sizes each storage component as the storage part of OpenShift's
// capacity-planning chapter does: the fixed minimums of a node's local disks, the registries, the logging
// stack's Elasticsearch and the monitoring stack.
type StoragePlan struct {
	Etcd              Size `json:"etcd"`
	ContainerRuntime  Size `json:"containerRuntime"`
	NodeLogs          Size `json:"nodeLogs"`
	BuildRegistry     Size `json:"buildRegistry"`
	BaseImageRegistry Size `json:"baseImageRegistry"`
	ReleaseRegistry   Size `json:"releaseRegistry"`
	Logging           Size `json:"logging"`
	Prometheus        Size `json:"prometheus"`
	Alertmanager      Size `json:"alertmanager"`
}

// Size is one component's storage. Bytes is exact (rounded up to a whole byte); GiB is the
// same rounded up to two decimals. Per says what the size is for: each control-plane node,
// each node, or the cluster as a whole (the sum of the component's volumes).
type Size struct {
	Bytes    int64   `json:"bytes"`
	GiB      float64 `json:"gib"`
	Per      string  `json:"per"`
	Formula  string  `json:"formula"`
	Workings string  `json:"workings"`
	Parts    []Part  `json:"parts,omitempty"`
}

// Part is an intermediate quantity of a Size, such as one pod's logs per day.
type Part struct {
	Name     string  `json:"name"`
	Bytes    int64   `json:"bytes"`
	GiB      float64 `json:"gib"`
	Workings string  `json:"workings,omitempty"`
}

// The storage formulas, as the answers and --help print them.
const (
	formulaEtcd              = "storage.etcdGiB: fixed minimum for /var/lib/etcd"
	formulaRuntime           = "storage.containerRuntimeGiB: images and container root filesystems; a dedicated disk is recommended"
	formulaNodeLogs          = "storage.nodeLogsGiB: fixed minimum for /var/log"
	formulaBuildRegistry     = "buildsPerDay × buildSizeMiB × retainDays + baseImagesGiB"
	formulaBaseImageRegistry = "storage.baseImageRegistry.sizeGiB: base images barely grow; a fixed size"
	formulaReleaseRegistry   = "releasesPerDay × imageSizeMiB × retainDays"
	formulaLogging           = "bytesPerLine × linesPerSecond × 86400 s × pods × retainDays × (1 + headroomPercent / 100) × replicas"
	formulaPrometheus        = "nodes × prometheusGiBPerNodePerDay × retentionDays × (1 + headroomPercent / 100) × prometheusReplicas"
	formulaAlertmanager      = "alertmanagerGiB × alertmanagerReplicas"
)

const (
	perControlPlaneNode = "control-plane node"
	perNode             = "node"
	perCluster          = "cluster"
	secondsPerDay       = 86400
)

var (
	gibRat = ratInt(gib)
	mibRat = ratInt(mib)
)

func size(bytes *big.Rat, per, formula, workings string, parts ...Part) Size {
	b := ceilRat(bytes)
	return Size{Bytes: b, GiB: gibOf(b), Per: per, Formula: formula, Workings: workings + " = " + fmtBytes(b), Parts: parts}
}

func part(name string, bytes *big.Rat, workings string) Part {
	b := ceilRat(bytes)
	return Part{Name: name, Bytes: b, GiB: gibOf(b), Workings: workings + " = " + fmtBytes(b)}
}

func fixed(gibs float64, per, formula string) Size {
	return size(mul(rat(gibs), gibRat), per, formula, fmtFloat(gibs)+" GiB")
}

func storagePlan(in Input, nodesNeeded int64) StoragePlan {
	s := in.Storage
	var p StoragePlan

	p.Etcd = fixed(s.EtcdGiB, perControlPlaneNode, formulaEtcd)
	p.ContainerRuntime = fixed(s.ContainerRuntimeGiB, perNode, formulaRuntime)
	p.NodeLogs = fixed(s.NodeLogsGiB, perNode, formulaNodeLogs)

	b := s.BuildRegistry
	builds := mul(rat(b.BuildsPerDay), rat(b.BuildSizeMiB), mibRat, ratInt(b.RetainDays))
	p.BuildRegistry = size(add(builds, mul(rat(b.BaseImagesGiB), gibRat)), perCluster,
		formulaBuildRegistry,
		fmt.Sprintf("%s × %s MiB × %d days + %s GiB", fmtFloat(b.BuildsPerDay), fmtFloat(b.BuildSizeMiB), b.RetainDays, fmtFloat(b.BaseImagesGiB)))

	p.BaseImageRegistry = fixed(s.BaseImageRegistry.SizeGiB, perCluster, formulaBaseImageRegistry)

	rr := s.ReleaseRegistry
	p.ReleaseRegistry = size(mul(rat(rr.ReleasesPerDay), rat(rr.ImageSizeMiB), mibRat, ratInt(rr.RetainDays)), perCluster,
		formulaReleaseRegistry,
		fmt.Sprintf("%s × %s MiB × %d days", fmtFloat(rr.ReleasesPerDay), fmtFloat(rr.ImageSizeMiB), rr.RetainDays))

	l := s.Logging
	podDay := mul(rat(l.BytesPerLine), rat(l.LinesPerSecond), ratInt(secondsPerDay))
	day := mul(podDay, ratInt(l.Pods))
	kept := mul(day, ratInt(l.RetainDays))
	p.Logging = size(mul(kept, onePlusPercent(l.HeadroomPercent), ratInt(l.Replicas)), perCluster,
		formulaLogging,
		fmt.Sprintf("%s B × %s lines/s × 86400 s × %d pods × %d days × (1 + %s%%) × %d",
			fmtFloat(l.BytesPerLine), fmtFloat(l.LinesPerSecond), l.Pods, l.RetainDays, fmtFloat(l.HeadroomPercent), l.Replicas),
		part("one pod, one day", podDay, fmt.Sprintf("%s B × %s lines/s × 86400 s", fmtFloat(l.BytesPerLine), fmtFloat(l.LinesPerSecond))),
		part("all pods, one day", day, fmt.Sprintf("× %d pods", l.Pods)),
		part("retained, one copy", kept, fmt.Sprintf("× %d days", l.RetainDays)),
	)

	m := s.Monitoring
	nodes, nodesFrom := m.Nodes, "storage.monitoring.nodes"
	if nodes == 0 {
		nodes, nodesFrom = nodesNeeded, "nodesNeeded"
	}
	replica := mul(ratInt(nodes), rat(m.PrometheusGiBPerNodePerDay), gibRat, ratInt(m.RetentionDays), onePlusPercent(m.HeadroomPercent))
	replicaWork := fmt.Sprintf("%d nodes (%s) × %s GiB × %d days × (1 + %s%%)",
		nodes, nodesFrom, fmtFloat(m.PrometheusGiBPerNodePerDay), m.RetentionDays, fmtFloat(m.HeadroomPercent))
	p.Prometheus = size(mul(replica, ratInt(m.PrometheusReplicas)), perCluster,
		formulaPrometheus,
		fmt.Sprintf("%s × %d replicas", replicaWork, m.PrometheusReplicas),
		part("one replica's volume", replica, replicaWork))

	am := mul(rat(m.AlertmanagerGiB), gibRat)
	p.Alertmanager = size(mul(am, ratInt(m.AlertmanagerReplicas)), perCluster,
		formulaAlertmanager,
		fmt.Sprintf("%s GiB × %d replicas", fmtFloat(m.AlertmanagerGiB), m.AlertmanagerReplicas),
		part("one replica's volume", am, fmtFloat(m.AlertmanagerGiB)+" GiB"))
	return p
}

package plan

import (
	"math"
	"math/big"

	"github.com/sluice-net/sluice/pkg/fielderr"
)

// Validate checks every value of the plan and returns a fielderr.List, one entry per problem,
// each naming the field and the value: an invalid or non-canonical CIDR, a hostSubnetLength
// that leaves no pod address or not more than one host subnet, a negative or zero size, a
// node that can run no pod. Overlaps between networks are not errors; Compute reports them as conflicts.
func (in Input) Validate() error {
	_, errs := in.validate()
	return errs.Err()
}

func (in Input) validate() (parsedNetwork, fielderr.List) {
	var v validator

	v.positiveInt("release.maxNodes", in.Release.MaxNodes)
	v.positiveInt("release.maxPods", in.Release.MaxPods)
	v.positiveInt("release.maxPodsPerNode", in.Release.MaxPodsPerNode)

	v.positiveInt("node.vCPU", in.Node.VCPU)
	v.positive("node.memoryGiB", in.Node.MemoryGiB)
	v.positiveInt("node.vCPUPerCore", in.Node.VCPUPerCore)
	if v.nonNegativeInt("node.podsPerCore", in.Node.PodsPerCore, " (0 = no limit)") &&
		in.Node.PodsPerCore > 0 && in.Node.VCPU > 0 && in.Node.VCPUPerCore > 0 &&
		podsByCPU(in.Node) == 0 {
		v.add(fielderr.New("node.podsPerCore", "%d pods per core on %d vCPU at %d vCPU per core allows no pod on a node",
			in.Node.PodsPerCore, in.Node.VCPU, in.Node.VCPUPerCore))
	}

	net, errs := in.Network.parse()
	v.errs = append(v.errs, errs...)

	v.positive("workload.cpuCores", in.Workload.CPUCores)
	v.positive("workload.memoryGiB", in.Workload.MemoryGiB)
	v.nonNegative("workload.reservePercent", in.Workload.ReservePercent)

	s := in.Storage
	v.positive("storage.etcdGiB", s.EtcdGiB)
	v.positive("storage.containerRuntimeGiB", s.ContainerRuntimeGiB)
	v.positive("storage.nodeLogsGiB", s.NodeLogsGiB)
	v.nonNegative("storage.buildRegistry.buildsPerDay", s.BuildRegistry.BuildsPerDay)
	v.positive("storage.buildRegistry.buildSizeMiB", s.BuildRegistry.BuildSizeMiB)
	v.positiveInt("storage.buildRegistry.retainDays", s.BuildRegistry.RetainDays)
	v.positive("storage.buildRegistry.baseImagesGiB", s.BuildRegistry.BaseImagesGiB)
	v.positive("storage.baseImageRegistry.sizeGiB", s.BaseImageRegistry.SizeGiB)
	v.nonNegative("storage.releaseRegistry.releasesPerDay", s.ReleaseRegistry.ReleasesPerDay)
	v.positive("storage.releaseRegistry.imageSizeMiB", s.ReleaseRegistry.ImageSizeMiB)
	v.positiveInt("storage.releaseRegistry.retainDays", s.ReleaseRegistry.RetainDays)
	v.positive("storage.logging.bytesPerLine", s.Logging.BytesPerLine)
	v.positive("storage.logging.linesPerSecond", s.Logging.LinesPerSecond)
	v.positiveInt("storage.logging.pods", s.Logging.Pods)
	v.positiveInt("storage.logging.retainDays", s.Logging.RetainDays)
	v.nonNegative("storage.logging.headroomPercent", s.Logging.HeadroomPercent)
	v.positiveInt("storage.logging.replicas", s.Logging.Replicas)
	v.nonNegativeInt("storage.monitoring.nodes", s.Monitoring.Nodes, " (0 = nodesNeeded)")
	v.positive("storage.monitoring.prometheusGiBPerNodePerDay", s.Monitoring.PrometheusGiBPerNodePerDay)
	v.positiveInt("storage.monitoring.retentionDays", s.Monitoring.RetentionDays)
	v.positiveInt("storage.monitoring.prometheusReplicas", s.Monitoring.PrometheusReplicas)
	v.positive("storage.monitoring.alertmanagerGiB", s.Monitoring.AlertmanagerGiB)
	v.positiveInt("storage.monitoring.alertmanagerReplicas", s.Monitoring.AlertmanagerReplicas)
	v.nonNegative("storage.monitoring.headroomPercent", s.Monitoring.HeadroomPercent)

	return net, v.errs
}

type validator struct{ errs fielderr.List }

func (v *validator) add(e *fielderr.Error) { v.errs = append(v.errs, e) }

func (v *validator) positiveInt(path string, n int64) {
	if n <= 0 {
		v.add(fielderr.New(path, "%d must be greater than 0", n))
	}
}

func (v *validator) nonNegativeInt(path string, n int64, meaning string) bool {
	if n < 0 {
		v.add(fielderr.New(path, "%d must not be negative%s", n, meaning))
		return false
	}
	return true
}

func (v *validator) finite(path string, f float64) bool {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		v.add(fielderr.New(path, "%v is not a finite number", f))
		return false
	}
	return true
}

func (v *validator) positive(path string, f float64) {
	if v.finite(path, f) && f <= 0 {
		v.add(fielderr.New(path, "%s must be greater than 0", fmtFloat(f)))
	}
}

func (v *validator) nonNegative(path string, f float64) {
	if v.finite(path, f) && f < 0 {
		v.add(fielderr.New(path, "%s must not be negative", fmtFloat(f)))
	}
}

// podsByCPU is floor(vCPU / vCPUPerCore × podsPerCore): the chapter's 8 vCPU node is 4 cores,
// so 10 pods per core allow 40 pods.
func podsByCPU(n Node) int64 {
	return floorRat(big.NewRat(satMul(n.VCPU, n.PodsPerCore), n.VCPUPerCore))
}

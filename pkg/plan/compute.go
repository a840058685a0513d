package plan

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Result answers a plan. Every answer carries its value, the formula it comes from and the
// workings with this plan's numbers; an answer that is the minimum or maximum of several
// terms lists the terms and names the binding one (several, comma-separated, on a tie).
type Result struct {
	PodsPerNode    Count       `json:"podsPerNode"`
	MaxNodes       Count       `json:"maxNodes"`
	MaxClusterPods Count       `json:"maxClusterPods"`
	NodesByCPU     Ratio       `json:"nodesByCPU"`
	NodesByMemory  Ratio       `json:"nodesByMemory"`
	NodesNeeded    Count       `json:"nodesNeeded"`
	Conflicts      []Conflict  `json:"conflicts"`
	Storage        StoragePlan `json:"storage"`
	// Notes are observations that are not errors: the workload does not fit the network,
	// what a ClusterNetwork's MTU asks of the underlay.
	Notes []string `json:"notes,omitempty"`
}

// Count is a whole-number answer.
type Count struct {
	Value    int64  `json:"value"`
	Binding  string `json:"binding,omitempty"`
	Formula  string `json:"formula"`
	Workings string `json:"workings"`
	Terms    []Term `json:"terms,omitempty"`
}

// Term is one candidate of a min or max.
type Term struct {
	Name     string `json:"name"`
	Value    int64  `json:"value"`
	Workings string `json:"workings,omitempty"`
}

// Ratio is a fractional answer (a number of nodes before rounding up).
type Ratio struct {
	Value    float64 `json:"value"`
	Formula  string  `json:"formula"`
	Workings string  `json:"workings"`
}

// The formulas, as the answers and --help print them.
const (
	formulaPodsPerNode    = "min(node.vCPU / node.vCPUPerCore × node.podsPerCore, release.maxPodsPerNode, 2^hostSubnetLength − 2)"
	formulaMaxNodes       = "min(release.maxNodes, Σ 2^(address bits − prefix length − hostSubnetLength) over the cluster networks)"
	formulaMaxClusterPods = "min(maxNodes × podsPerNode, release.maxPods)"
	formulaNodesByCPU     = "workload.cpuCores × node.vCPUPerCore × (1 + workload.reservePercent / 100) / node.vCPU"
	formulaNodesByMemory  = "workload.memoryGiB × (1 + workload.reservePercent / 100) / node.memoryGiB"
	formulaNodesNeeded    = "ceil(max(nodesByCPU, nodesByMemory)), or ceil(min(...)) with workload.cpuOvercommit; + 1 when that is 5 or fewer"
	formulaConflicts      = "every overlap between the cluster, service and datacenter networks, by name"
)

// Formula names an answer and how it is computed.
type Formula struct {
	Answer  string
	Formula string
}

// Formulas lists every answer of a Result with its formula, in the order of the JSON keys.
func Formulas() []Formula {
	return []Formula{
		{"podsPerNode", formulaPodsPerNode},
		{"maxNodes", formulaMaxNodes},
		{"maxClusterPods", formulaMaxClusterPods},
		{"nodesByCPU", formulaNodesByCPU},
		{"nodesByMemory", formulaNodesByMemory},
		{"nodesNeeded", formulaNodesNeeded},
		{"conflicts", formulaConflicts},
		{"storage.etcd", formulaEtcd},
		{"storage.containerRuntime", formulaRuntime},
		{"storage.nodeLogs", formulaNodeLogs},
		{"storage.buildRegistry", formulaBuildRegistry},
		{"storage.baseImageRegistry", formulaBaseImageRegistry},
		{"storage.releaseRegistry", formulaReleaseRegistry},
		{"storage.logging", formulaLogging},
		{"storage.prometheus", formulaPrometheus},
		{"storage.alertmanager", formulaAlertmanager},
	}
}

// Compute validates the plan and answers it. It is deterministic and does no I/O.
func Compute(in Input) (Result, error) {
	net, errs := in.validate()
	if len(errs) > 0 {
		return Result{}, errs
	}
	var r Result
	r.PodsPerNode = podsPerNode(in, net)
	r.MaxNodes = maxNodes(in, net)
	r.MaxClusterPods = maxClusterPods(in, r.MaxNodes.Value, r.PodsPerNode.Value)
	var byCPU, byMemory *big.Rat
	r.NodesByCPU, byCPU = nodesByCPU(in)
	r.NodesByMemory, byMemory = nodesByMemory(in)
	r.NodesNeeded = nodesNeeded(in, byCPU, byMemory)
	r.Conflicts = net.conflicts()
	r.Storage = storagePlan(in, r.NodesNeeded.Value)

	if r.NodesNeeded.Value > r.MaxNodes.Value {
		r.Notes = append(r.Notes, fmt.Sprintf(
			"nodesNeeded %d exceeds maxNodes %d (%s): use larger nodes, a larger cluster network or a shorter hostSubnetLength, or split the workload across clusters",
			r.NodesNeeded.Value, r.MaxNodes.Value, r.MaxNodes.Binding))
	}
	return r, nil
}

// minOf picks the smallest term; the binding names every term that attains it.
func minOf(terms []Term) (int64, string) {
	return pick(terms, func(a, b int64) bool { return a < b })
}

func maxOf(terms []Term) (int64, string) {
	return pick(terms, func(a, b int64) bool { return a > b })
}

func pick(terms []Term, better func(a, b int64) bool) (int64, string) {
	best := terms[0].Value
	for _, t := range terms[1:] {
		if better(t.Value, best) {
			best = t.Value
		}
	}
	var names []string
	for _, t := range terms {
		if t.Value == best {
			names = append(names, t.Name)
		}
	}
	return best, strings.Join(names, ", ")
}

// Term names; they are the binding strings of the answers.
const (
	termCoresPods      = "cores × podsPerCore"
	termMaxPodsPerNode = "release maxPodsPerNode"
	termSubnetAddrs    = "addresses per host subnet − 2"
	termMaxNodes       = "release maxNodes"
	termHostSubnets    = "host subnets"
	termNodesPods      = "maxNodes × podsPerNode"
	termMaxPods        = "release maxPods"
	termByCPU          = "nodesByCPU"
	termByMemory       = "nodesByMemory"
)

func podsPerNode(in Input, net parsedNetwork) Count {
	var terms []Term
	var work []string
	n := in.Node
	if n.PodsPerCore > 0 {
		v := podsByCPU(n)
		cores := big.NewRat(n.VCPU, n.VCPUPerCore)
		w := fmt.Sprintf("%d vCPU / %d vCPUPerCore = %s cores × %d = %d", n.VCPU, n.VCPUPerCore, fmtRat(cores), n.PodsPerCore, v)
		terms = append(terms, Term{Name: termCoresPods, Value: v, Workings: w})
		work = append(work, w)
	} else {
		work = append(work, "podsPerCore 0: no CPU limit")
	}
	terms = append(terms, Term{Name: termMaxPodsPerNode, Value: in.Release.MaxPodsPerNode})
	work = append(work, fmt.Sprint(in.Release.MaxPodsPerNode))

	// A node's subnet may come from any pod network; the smallest subnet bounds every node.
	small := net.clusters[0]
	for _, c := range net.clusters[1:] {
		if c.hostSubnetLength < small.hostSubnetLength {
			small = c
		}
	}
	addrs := satPow2(small.hostSubnetLength)
	if addrs != math.MaxInt64 { // a saturated count stays saturated
		addrs -= 2
	}
	w := fmt.Sprintf("%s − 2 = %s", fmtPow2(small.hostSubnetLength), fmtCount(addrs))
	if len(net.clusters) > 1 {
		w += " (smallest, " + small.name + ")"
	}
	terms = append(terms, Term{Name: termSubnetAddrs, Value: addrs, Workings: w})
	work = append(work, w)

	v, binding := minOf(terms)
	return Count{
		Value:    v,
		Binding:  binding,
		Formula:  formulaPodsPerNode,
		Workings: fmt.Sprintf("min(%s) = %s", strings.Join(work, ", "), fmtCount(v)),
		Terms:    terms,
	}
}

func maxNodes(in Input, net parsedNetwork) Count {
	var subnets int64
	var parts []string
	for i, c := range net.clusters {
		// CIDRs nest or are disjoint: a pod network inside another adds no subnet (the
		// overlap is reported as a conflict).
		if inside := containedBy(net.clusters, i); inside != "" {
			parts = append(parts, fmt.Sprintf("%s lies inside %s and adds none", c.prefix, inside))
			continue
		}
		bits := c.prefix.Addr().BitLen()
		exp := bits - c.prefix.Bits() - c.hostSubnetLength
		n := satPow2(exp)
		subnets = satAdd(subnets, n)
		parts = append(parts, fmt.Sprintf("2^(%d − %d − %d) = %s in %s", bits, c.prefix.Bits(), c.hostSubnetLength, fmtCount(n), c.prefix))
	}
	hostWork := strings.Join(parts, " + ")
	terms := []Term{
		{Name: termMaxNodes, Value: in.Release.MaxNodes},
		{Name: termHostSubnets, Value: subnets, Workings: hostWork},
	}
	v, binding := minOf(terms)
	return Count{
		Value:    v,
		Binding:  binding,
		Formula:  formulaMaxNodes,
		Workings: fmt.Sprintf("min(%d, %s) = %s", in.Release.MaxNodes, fmtCount(subnets), fmtCount(v)),
		Terms:    terms,
	}
}

// containedBy names the pod network that holds clusters[i], if any: a larger one, or an
// equal one listed earlier.
func containedBy(clusters []parsedCluster, i int) string {
	c := clusters[i].prefix
	for j, o := range clusters {
		if j == i || !o.prefix.Overlaps(c) {
			continue
		}
		if o.prefix.Bits() < c.Bits() || (o.prefix.Bits() == c.Bits() && j < i) {
			return o.name
		}
	}
	return ""
}

func maxClusterPods(in Input, nodes, podsPerNode int64) Count {
	product := satMul(nodes, podsPerNode)
	terms := []Term{
		{Name: termNodesPods, Value: product, Workings: fmt.Sprintf("%s × %s", fmtCount(nodes), fmtCount(podsPerNode))},
		{Name: termMaxPods, Value: in.Release.MaxPods},
	}
	v, binding := minOf(terms)
	return Count{
		Value:   v,
		Binding: binding,
		Formula: formulaMaxClusterPods,
		Workings: fmt.Sprintf("min(%s × %s = %s, %d) = %s",
			fmtCount(nodes), fmtCount(podsPerNode), fmtCount(product), in.Release.MaxPods, fmtCount(v)),
		Terms: terms,
	}
}

func nodesByCPU(in Input) (Ratio, *big.Rat) {
	w, n := in.Workload, in.Node
	r := quo(mul(rat(w.CPUCores), ratInt(n.VCPUPerCore), onePlusPercent(w.ReservePercent)), ratInt(n.VCPU))
	return Ratio{
		Value:   ratFloat(r),
		Formula: formulaNodesByCPU,
		Workings: fmt.Sprintf("%s cores × %d vCPU per core × (1 + %s%%) / %d vCPU = %s",
			fmtFloat(w.CPUCores), n.VCPUPerCore, fmtFloat(w.ReservePercent), n.VCPU, fmtRat(r)),
	}, r
}

func nodesByMemory(in Input) (Ratio, *big.Rat) {
	w, n := in.Workload, in.Node
	r := quo(mul(rat(w.MemoryGiB), onePlusPercent(w.ReservePercent)), rat(n.MemoryGiB))
	return Ratio{
		Value:   ratFloat(r),
		Formula: formulaNodesByMemory,
		Workings: fmt.Sprintf("%s GiB × (1 + %s%%) / %s GiB = %s",
			fmtFloat(w.MemoryGiB), fmtFloat(w.ReservePercent), fmtFloat(n.MemoryGiB), fmtRat(r)),
	}, r
}

// smallCluster is the size at or below which one node is added so that the others can take
// a failed node's pods (the chapter: "four to five compute nodes"). Larger clusters carry that
// room in workload.reservePercent.
const smallCluster = 5

func nodesNeeded(in Input, byCPU, byMemory *big.Rat) Count {
	terms := []Term{
		{Name: termByCPU, Value: ceilRat(byCPU), Workings: "ceil(" + fmtRat(byCPU) + ")"},
		{Name: termByMemory, Value: ceilRat(byMemory), Workings: "ceil(" + fmtRat(byMemory) + ")"},
	}
	fn, formula := "max", "ceil(max(nodesByCPU, nodesByMemory))"
	v, binding := maxOf(terms)
	if in.Workload.CPUOvercommit {
		fn, formula = "min", "ceil(min(nodesByCPU, nodesByMemory)), as CPU overcommits"
		v, binding = minOf(terms)
	}
	formula += fmt.Sprintf(", + 1 when that is %d or fewer", smallCluster)
	work := fmt.Sprintf("ceil(%s(%s, %s)) = %d", fn, fmtRat(byCPU), fmtRat(byMemory), v)
	if v <= smallCluster {
		v++
		work += fmt.Sprintf(", + 1 to fail over a node = %d", v)
		binding += " + 1 for fail-over"
	}
	return Count{Value: v, Binding: binding, Formula: formula, Workings: work, Terms: terms}
}

// Package plan is the capacity and address planner behind `sluicectl plan`: the method of
// OpenShift's capacity-planning chapter (compute, network and storage planning for an
// OpenShift cluster, with a worked example; "the chapter" in this package). docs/planning.md
// states the figures taken from it and where the tool departs from its text.
//
// It is a deterministic core with no I/O. DecodeInput reads a plan document strictly on top of
// DefaultInput; Input.Validate reports bad values as one-line fielderr.Errors that name the field
// and the value; Compute answers pods per node, maximum nodes and pods, the nodes a workload
// needs, the overlaps between networks and the storage of each platform component, each
// answer with its formula, its workings and the term that binds it. CheckClusterNetwork does
// the same for a ClusterNetwork manifest. docs/planning.md walks through a plan.
//
// All arithmetic is on exact rationals (math/big), so whole-number answers are never pushed
// over an integer by binary rounding before they are rounded up.
package plan

// This file checks the planner's node limit against the allocator (allocate
// until exhaustion) and times the controller at its shipped rate limit.

package main

import (
	"context"
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/controller/hostsubnet"
	"github.com/sluice-net/sluice/pkg/plan"
)

type exhaustResult struct {
	network     string
	planner     int64  // the planner's maxNodes for the live ClusterNetwork (release limit lifted)
	workings    string // the planner's arithmetic
	nodes       int    // Nodes in the API
	allocated   int    // HostSubnets once the controller settled
	took        time.Duration
	without     []string // nodes left without a HostSubnet
	event       string   // the SubnetsExhausted event on such a node
	condition   string   // the ClusterNetwork's SubnetsExhausted condition
	statusCount int32    // status.allocatedSubnets
	capacity    int64    // status.capacity
}

// plannerMaxNodes is what `sluicectl plan` says of the live ClusterNetwork:
// maxNodes with the release's own limit lifted, so that the address
// arithmetic binds.
func plannerMaxNodes(cn *v1alpha1.ClusterNetwork) (plan.Count, error) {
	pcn := plan.ClusterNetwork{APIVersion: plan.ClusterNetworkAPIVersion, Kind: plan.ClusterNetworkKind,
		Spec: plan.ClusterNetworkSpec{ServiceNetwork: cn.Spec.ServiceNetwork, Mode: cn.Spec.Mode,
			Encapsulation: cn.Spec.Encapsulation, VXLANPort: int(cn.Spec.VXLANPort), MTU: int(cn.Spec.MTU) - 50}}
	for _, e := range cn.Spec.ClusterNetworks {
		hsl := int(e.HostSubnetLength)
		pcn.Spec.ClusterNetworks = append(pcn.Spec.ClusterNetworks, plan.ClusterNetworkCIDR{CIDR: e.CIDR, HostSubnetLength: &hsl})
	}
	in := plan.DefaultInput()
	in.Release.MaxNodes = math.MaxInt32
	r, err := plan.CheckClusterNetwork(in, pcn)
	return r.MaxNodes, err
}

// exhaust allocates the lab's default network (10.128.0.0/14, /23 host
// subnets) to one node more than the planner says fit.
func (b *bench) exhaust(ctx context.Context) (exhaustResult, error) {
	var r exhaustResult
	if err := b.stopController(); err != nil {
		return r, err
	}
	if err := b.setNetwork(ctx, exhaustNetwork); err != nil {
		return r, err
	}
	cn, err := b.sluice.SluiceV1alpha1().ClusterNetworks().Get(ctx, v1alpha1.ClusterNetworkName, metav1.GetOptions{})
	if err != nil {
		return r, err
	}
	r.network = fmt.Sprintf("%s hostSubnetLength %d", exhaustNetwork[0].CIDR, exhaustNetwork[0].HostSubnetLength)
	count, err := plannerMaxNodes(cn)
	if err != nil {
		return r, fmt.Errorf("planner: %w", err)
	}
	r.planner, r.workings = count.Value, count.Workings
	have, err := b.nodeCount(ctx)
	if err != nil {
		return r, err
	}
	want := int(r.planner) + 1
	logf("exhaustion: planner says %d nodes (%s); %d nodes, creating %d", r.planner, r.workings, have, want-have)
	if err := b.createNodes(ctx, "exhaust", blockExhaust, 0, want-have, func(i int) string { return fmt.Sprintf("ex-%05d", i) }); err != nil {
		return r, err
	}
	if r.nodes, err = b.nodeCount(ctx); err != nil {
		return r, err
	}
	if err := b.clearSubnets(ctx); err != nil {
		return r, err
	}
	start := time.Now()
	if err := b.startController(ctx, false); err != nil {
		return r, err
	}
	// Settled: the status says exhausted and counts what exists.
	var status v1alpha1.ClusterNetworkStatus
	for {
		cn, err := b.sluice.SluiceV1alpha1().ClusterNetworks().Get(ctx, v1alpha1.ClusterNetworkName, metav1.GetOptions{})
		if err != nil {
			return r, err
		}
		c := meta.FindStatusCondition(cn.Status.Conditions, v1alpha1.ClusterNetworkSubnetsExhausted)
		if c != nil && c.Status == metav1.ConditionTrue && int(cn.Status.AllocatedSubnets) == b.obs.count() {
			status = cn.Status
			r.condition = fmt.Sprintf("%s=%s (%s): %s", c.Type, c.Status, c.Reason, c.Message)
			break
		}
		if time.Since(start) > 5*time.Minute {
			return r, fmt.Errorf("ClusterNetwork not exhausted after 5 minutes: %+v, %d HostSubnets", cn.Status, b.obs.count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	o := b.obs
	o.mu.Lock()
	r.took = o.lastAdded(0).Sub(start)
	o.mu.Unlock()
	time.Sleep(3 * time.Second) // nothing more comes
	r.allocated, r.statusCount, r.capacity = b.obs.count(), status.AllocatedSubnets, status.Capacity
	nodes, err := b.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return r, err
	}
	for _, n := range nodes.Items {
		if _, ok := b.obs.get(n.Name); !ok {
			r.without = append(r.without, n.Name)
		}
	}
	if len(r.without) > 0 {
		evs, err := b.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + r.without[0]})
		if err != nil {
			return r, err
		}
		for _, e := range evs.Items {
			if e.Reason == hostsubnet.ReasonSubnetsExhausted && e.Type == corev1.EventTypeWarning {
				r.event = fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message)
			}
		}
	}
	if err := b.stopController(); err != nil {
		return r, err
	}
	if err := b.deleteNodes(ctx, "exhaust"); err != nil {
		return r, err
	}
	return r, b.clearSubnets(ctx)
}

// shipped times the controller with client-go's default rate limit, as
// cmd/sluice-controller runs it, allocating n nodes from a cold start.
func (b *bench) shipped(ctx context.Context, n int) (time.Duration, error) {
	if err := b.stopController(); err != nil {
		return 0, err
	}
	if err := b.createNodes(ctx, "shipped", blockShipped, 0, n, func(i int) string { return fmt.Sprintf("qps-%05d", i) }); err != nil {
		return 0, err
	}
	total, err := b.nodeCount(ctx)
	if err != nil {
		return 0, err
	}
	if err := b.clearSubnets(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := b.startController(ctx, true); err != nil {
		return 0, err
	}
	last, err := b.obs.waitAll(ctx, total, 20*time.Minute)
	if err != nil {
		return 0, err
	}
	if err := b.stopController(); err != nil {
		return 0, err
	}
	if err := b.deleteNodes(ctx, "shipped"); err != nil {
		return 0, err
	}
	return last.Sub(start), b.clearSubnets(ctx)
}

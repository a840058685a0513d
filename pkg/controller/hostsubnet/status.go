package hostsubnet

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/subnet"
)

// Condition reasons of the ClusterNetwork (ReasonSubnetsExhausted too, for Ready=False).
const (
	ReasonValid             = "Valid"
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonHostSubnetsFree   = "HostSubnetsAvailable"
	ReasonNoFreeHostSubnet  = "NoFreeHostSubnet"
	ReasonAllocating        = "Allocating"
	maxNamesInConditionText = 5
)

// syncStatus computes the ClusterNetwork's status from the caches and writes it when it
// changed.
func (c *Controller) syncStatus(ctx context.Context) error {
	cn, err := c.networks.Get(sluicev1alpha1.ClusterNetworkName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	status, err := c.desiredStatus(cn)
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(status, &cn.Status) {
		return nil
	}
	updated := cn.DeepCopy()
	updated.Status = *status
	if _, err := c.sluice.SluiceV1alpha1().ClusterNetworks().UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of ClusterNetwork %s: %w", cn.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Updated ClusterNetwork status",
		"allocated", status.AllocatedSubnets, "capacity", status.Capacity)
	return nil
}

func (c *Controller) desiredStatus(cn *sluicev1alpha1.ClusterNetwork) (*sluicev1alpha1.ClusterNetworkStatus, error) {
	status := cn.Status.DeepCopy()
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: cn.Generation,
		})
	}

	subnets, err := c.subnets.List(everything())
	if err != nil {
		return nil, err
	}
	alloc, specErr := subnet.New(cn.Spec.ClusterNetworks, cn.Spec.ServiceNetwork)
	if specErr != nil {
		set(sluicev1alpha1.ClusterNetworkInvalidSpec, true, ReasonInvalidSpec, specErr.Error())
		set(sluicev1alpha1.ClusterNetworkReady, false, ReasonInvalidSpec, fmt.Sprintf(
			"the spec is invalid, so no new host subnet is allocated; the %d existing HostSubnets are kept", len(subnets)))
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: sluicev1alpha1.ClusterNetworkSubnetsExhausted, Status: metav1.ConditionUnknown,
			Reason: ReasonInvalidSpec, Message: "unknown while the spec is invalid", ObservedGeneration: cn.Generation,
		})
		status.AllocatedSubnets = clampInt32(int64(len(subnets)))
		status.Capacity = 0
		return status, nil
	}
	set(sluicev1alpha1.ClusterNetworkInvalidSpec, false, ReasonValid, "the spec is valid")

	c.mu.Lock()
	inUse := c.indexFor(alloc).Used()
	c.mu.Unlock()
	capacity := alloc.Capacity()
	status.AllocatedSubnets = clampInt32(inUse)
	status.Capacity = capacity

	waiting, err := c.waitingNodes()
	if err != nil {
		return nil, err
	}
	pools := make([]string, 0, len(alloc.Pools()))
	for _, p := range alloc.Pools() {
		pools = append(pools, p.String())
	}
	if free := capacity - inUse; free <= 0 && len(waiting) > 0 {
		msg := fmt.Sprintf("%d node(s) have no host subnet (%s): all %d host subnets of %s are allocated; add a cluster network or remove nodes",
			len(waiting), names(waiting), capacity, strings.Join(pools, ", "))
		set(sluicev1alpha1.ClusterNetworkSubnetsExhausted, true, ReasonNoFreeHostSubnet, msg)
		set(sluicev1alpha1.ClusterNetworkReady, false, ReasonSubnetsExhausted, msg)
		return status, nil
	}
	set(sluicev1alpha1.ClusterNetworkSubnetsExhausted, false, ReasonHostSubnetsFree,
		fmt.Sprintf("%d of %d host subnets of %s are free", capacity-inUse, capacity, strings.Join(pools, ", ")))
	msg := fmt.Sprintf("%d of %d host subnets allocated", inUse, capacity)
	if len(waiting) > 0 {
		msg += fmt.Sprintf("; %d node(s) waiting for one (%s)", len(waiting), names(waiting))
	}
	set(sluicev1alpha1.ClusterNetworkReady, true, ReasonAllocating, msg)
	return status, nil
}

// waitingNodes are the nodes that could have a host subnet (they have an InternalIP) and
// have none yet.
func (c *Controller) waitingNodes() ([]string, error) {
	nodes, err := c.nodes.List(everything())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes {
		if internalIP(n) == "" || c.pendingFor(n.Name) {
			continue
		}
		if _, err := c.subnets.Get(n.Name); apierrors.IsNotFound(err) {
			out = append(out, n.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func names(ns []string) string {
	if len(ns) <= maxNamesInConditionText {
		return strings.Join(ns, ", ")
	}
	return strings.Join(ns[:maxNamesInConditionText], ", ") + fmt.Sprintf(" and %d more", len(ns)-maxNamesInConditionText)
}

func clampInt32(n int64) int32 {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n)
}

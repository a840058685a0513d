package kubelet

import (
	"context"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

var everything = labels.Everything()

// Version is what the lab kubelet reports as its kubelet version.
var Version = "v1.36.3-sluice-lab"

const leaseDuration = 40 // seconds, as the kubelet's default

// registerNode creates the Node object if it is missing and posts its status.
func (k *Kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   k.NodeName,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: runtime.GOARCH,
			},
		},
	}
	_, err := k.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	k.heartbeat(ctx)
	k.renewLease(ctx)
	return nil
}

// heartbeat posts the node's status: addresses, capacity and a Ready
// condition. The lab kubelet is Ready whenever it runs; a missing pod network
// shows up on the pods it cannot start, not on the node.
func (k *Kubelet) heartbeat(ctx context.Context) {
	n, err := k.Client.CoreV1().Nodes().Get(ctx, k.NodeName, metav1.GetOptions{})
	if err != nil {
		k.Log.Error(err, "Node status: get the Node")
		return
	}
	now := metav1.Now()
	n = n.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.NodeIP.String()},
		{Type: corev1.NodeHostName, Address: k.NodeName},
	}
	rl := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("32Gi"),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	n.Status.Capacity, n.Status.Allocatable = rl, rl
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion:          Version,
		OperatingSystem:         "linux",
		Architecture:            runtime.GOARCH,
		ContainerRuntimeVersion: "sluice-lab://" + Version,
		OSImage:                 "sluice-lab network namespace",
	}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "lab kubelet is posting ready status"},
	}
	for i := range conds {
		c := &conds[i]
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
		for _, old := range n.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	n.Status.Conditions = conds
	if _, err := k.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		k.Log.Error(err, "Node status: update")
	}
}

// renewLease keeps the node's Lease in kube-node-lease fresh; the node
// lifecycle controller reads node health from it.
func (k *Kubelet) renewLease(ctx context.Context) {
	leases := k.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err := k.Client.CoreV1().Nodes().Get(ctx, k.NodeName, metav1.GetOptions{})
		if err != nil {
			k.Log.Error(err, "Lease: get the Node")
			return
		}
		holder, dur := k.NodeName, int32(leaseDuration)
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name:      k.NodeName,
				Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now},
		}
		if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); err != nil {
			k.Log.Error(err, "Lease: create")
		}
		return
	}
	if err != nil {
		k.Log.Error(err, "Lease: get")
		return
	}
	l = l.DeepCopy()
	l.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		k.Log.Error(err, "Lease: renew")
	}
}

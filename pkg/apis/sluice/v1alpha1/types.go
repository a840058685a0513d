package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Isolation modes of a ClusterNetwork.
const (
	ModeSubnet        = "Subnet"
	ModeMultitenant   = "Multitenant"
	ModeNetworkPolicy = "NetworkPolicy"
)

// Encapsulations between nodes.
const (
	EncapsulationVXLAN = "VXLAN"
	EncapsulationNone  = "None"
)

// Service proxies.
const (
	ServiceProxySluice   = "Sluice"
	ServiceProxyExternal = "External"
)

// Defaults of a ClusterNetwork's optional fields, as the CRD's schema applies them.
const (
	DefaultMode             = ModeNetworkPolicy
	DefaultEncapsulation    = EncapsulationVXLAN
	DefaultVXLANPort        = 4789 // IANA's VXLAN port
	DefaultMTU              = 1500
	DefaultServiceProxy     = ServiceProxySluice
	DefaultHostSubnetLength = 9 // /23 host subnets in IPv4, 510 pods per node
)

// MaxNetID is the largest VNID (24 bits); NetID 0 is global.
const MaxNetID = 1<<24 - 1

// ClusterNetworkName is the name of the singleton ClusterNetwork.
const ClusterNetworkName = "default"

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterNetwork is the cluster's pod network: the CIDRs host subnets are
// carved from, the service network, the isolation mode and the overlay. A
// cluster has one, named "default".
type ClusterNetwork struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterNetworkSpec   `json:"spec"`
	Status ClusterNetworkStatus `json:"status,omitempty"`
}

// ClusterNetworkSpec is the desired pod network.
type ClusterNetworkSpec struct {
	// ClusterNetworks are the CIDRs pods get addresses from; each node gets
	// one host subnet of 2^hostSubnetLength addresses from one of them.
	ClusterNetworks []ClusterNetworkEntry `json:"clusterNetworks"`
	// ServiceNetwork is the Services' ClusterIP range.
	ServiceNetwork string `json:"serviceNetwork"`
	// Mode is Subnet, Multitenant or NetworkPolicy (default).
	// +optional
	Mode string `json:"mode,omitempty"`
	// Encapsulation between nodes: VXLAN (default) or None (direct routes
	// between L2-adjacent nodes).
	// +optional
	Encapsulation string `json:"encapsulation,omitempty"`
	// VXLANPort is the UDP port of the overlay (default 4789).
	// +optional
	VXLANPort int32 `json:"vxlanPort,omitempty"`
	// MTU of the node's underlay interface (default 1500); pods get this less
	// the VXLAN overhead (50 bytes) when encapsulating.
	// +optional
	MTU int32 `json:"mtu,omitempty"`
	// ServiceProxy is Sluice (default: the agent load-balances Services) or
	// External (an existing kube-proxy does).
	// +optional
	ServiceProxy string `json:"serviceProxy,omitempty"`
}

// ClusterNetworkEntry is one pod CIDR and the size of the host subnets
// carved from it.
type ClusterNetworkEntry struct {
	// CIDR, e.g. 10.128.0.0/14.
	CIDR string `json:"cidr"`
	// HostSubnetLength is the number of host bits of each node's subnet
	// (OpenShift's meaning: 9 means /23 subnets in an IPv4 network).
	HostSubnetLength uint32 `json:"hostSubnetLength"`
}

// ClusterNetworkStatus reports how the pod network is doing.
type ClusterNetworkStatus struct {
	// Conditions: Ready, SubnetsExhausted, InvalidSpec.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AllocatedSubnets is how many host subnets are in use, of Capacity.
	// +optional
	AllocatedSubnets int32 `json:"allocatedSubnets,omitempty"`
	// +optional
	Capacity int64 `json:"capacity,omitempty"`
}

// Condition types of a ClusterNetwork.
const (
	ClusterNetworkReady            = "Ready"
	ClusterNetworkSubnetsExhausted = "SubnetsExhausted"
	ClusterNetworkInvalidSpec      = "InvalidSpec"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterNetworkList is a list of ClusterNetworks.
type ClusterNetworkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNetwork `json:"items"`
}

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostSubnet is one node's share of the cluster network. It is named after
// the node.
type HostSubnet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec HostSubnetSpec `json:"spec"`
}

// HostSubnetSpec says which subnet a node has and where the node is.
type HostSubnetSpec struct {
	// Host is the node's name.
	Host string `json:"host"`
	// HostIP is the node's InternalIP, the overlay's tunnel endpoint.
	HostIP string `json:"hostIP"`
	// Subnet is the node's pod CIDR.
	Subnet string `json:"subnet"`
	// EgressIPs held by this node.
	// +optional
	EgressIPs []string `json:"egressIPs,omitempty"`
	// EgressCIDRs from which egress IPs may be assigned to this node.
	// +optional
	EgressCIDRs []string `json:"egressCIDRs,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HostSubnetList is a list of HostSubnets.
type HostSubnetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HostSubnet `json:"items"`
}

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetNamespace carries a namespace's VNID for Multitenant isolation. It is
// named after the namespace.
type NetNamespace struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NetNamespaceSpec `json:"spec"`
}

// NetNamespaceSpec is a namespace's virtual network.
type NetNamespaceSpec struct {
	// NetName is the namespace's name.
	NetName string `json:"netname"`
	// NetID is the 24-bit VNID; 0 is global (reaches and is reached by all).
	NetID uint32 `json:"netID"`
	// EgressIPs of the namespace.
	// +optional
	EgressIPs []string `json:"egressIPs,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// NetNamespaceList is a list of NetNamespaces.
type NetNamespaceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetNamespace `json:"items"`
}

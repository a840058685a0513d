package plan

import (
	"fmt"
	"slices"

	"github.com/sluice-net/sluice/pkg/fielderr"
)

// ClusterNetwork is the part of a sluice.dev/v1alpha1 ClusterNetwork manifest that planning
// reads: the spec of the API type (pkg/apis/sluice/v1alpha1), declared again so that a
// manifest is decoded as strictly as a plan and a missing hostSubnetLength can be told from
// zero. It predates the API types and does not follow them in one respect: here spec.mtu is
// the pods' MTU (default 1450), where the API and the CRD define it as the underlay's (default
// 1500, pods getting 50 bytes less with VXLAN). Metadata and status are accepted and
// ignored, so that the output of `kubectl get clusternetwork default -o yaml` can be checked
// as it is.
type ClusterNetwork struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   map[string]any     `json:"metadata,omitempty"`
	Spec       ClusterNetworkSpec `json:"spec"`
	Status     map[string]any     `json:"status,omitempty"`
}

// ClusterNetworkSpec is the desired cluster network.
type ClusterNetworkSpec struct {
	ClusterNetworks []ClusterNetworkCIDR `json:"clusterNetworks"`
	ServiceNetwork  string               `json:"serviceNetwork"`
	Mode            string               `json:"mode"`
	Encapsulation   string               `json:"encapsulation"`
	VXLANPort       int                  `json:"vxlanPort"`
	MTU             int                  `json:"mtu"`
}

// ClusterNetworkCIDR is one pod network of a ClusterNetwork. A missing hostSubnetLength is
// DefaultHostSubnetLength.
type ClusterNetworkCIDR struct {
	CIDR             string `json:"cidr"`
	HostSubnetLength *int   `json:"hostSubnetLength,omitempty"`
}

// The ClusterNetwork's identity and the defaults of its optional fields.
const (
	ClusterNetworkAPIVersion = "sluice.dev/v1alpha1"
	ClusterNetworkKind       = "ClusterNetwork"

	DefaultMode          = "NetworkPolicy"
	DefaultEncapsulation = "VXLAN"
	DefaultVXLANPort     = 4789 // IANA's VXLAN port
	DefaultMTU           = 1450 // a 1500-byte underlay less VXLAN's 50 bytes

	vxlanOverhead = 50 // outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
	minMTU        = 576
	minMTUIPv6    = 1280
	maxMTU        = 9216
)

var (
	modes          = []string{"Subnet", "Multitenant", "NetworkPolicy"}
	encapsulations = []string{"VXLAN", "None"}
)

// DefaultClusterNetwork is what the fields a manifest leaves out default to.
func DefaultClusterNetwork() ClusterNetwork {
	hsl := DefaultHostSubnetLength
	return ClusterNetwork{
		APIVersion: ClusterNetworkAPIVersion,
		Kind:       ClusterNetworkKind,
		Spec: ClusterNetworkSpec{
			ClusterNetworks: []ClusterNetworkCIDR{{CIDR: "10.128.0.0/14", HostSubnetLength: &hsl}},
			ServiceNetwork:  "172.30.0.0/16",
			Mode:            DefaultMode,
			Encapsulation:   DefaultEncapsulation,
			VXLANPort:       DefaultVXLANPort,
			MTU:             DefaultMTU,
		},
	}
}

// DecodeClusterNetwork reads one ClusterNetwork manifest, as strictly as DecodeInput. The
// apiVersion and kind must be given; the spec's fields default as DefaultClusterNetwork.
func DecodeClusterNetwork(data []byte) (ClusterNetwork, error) {
	cn := DefaultClusterNetwork()
	cn.APIVersion, cn.Kind = "", ""
	if err := decodeStrict(data, &cn); err != nil {
		return ClusterNetwork{}, err
	}
	for i := range cn.Spec.ClusterNetworks {
		if cn.Spec.ClusterNetworks[i].HostSubnetLength == nil {
			hsl := DefaultHostSubnetLength
			cn.Spec.ClusterNetworks[i].HostSubnetLength = &hsl
		}
	}
	return cn, nil
}

// validateIdentity checks apiVersion and kind.
func (cn ClusterNetwork) validateIdentity() fielderr.List {
	var errs fielderr.List
	if cn.APIVersion != ClusterNetworkAPIVersion {
		errs = append(errs, fielderr.New("apiVersion", "%q is not %s", cn.APIVersion, ClusterNetworkAPIVersion))
	}
	if cn.Kind != ClusterNetworkKind {
		errs = append(errs, fielderr.New("kind", "%q is not %s", cn.Kind, ClusterNetworkKind))
	}
	return errs
}

// validateSpec checks the spec's fields other than the addresses, which are checked with
// the plan.
func (cn ClusterNetwork) validateSpec(net parsedNetwork) fielderr.List {
	var errs fielderr.List
	s := cn.Spec
	if !slices.Contains(modes, s.Mode) {
		errs = append(errs, fielderr.New("spec.mode", "%q is not one of Subnet, Multitenant, NetworkPolicy", s.Mode))
	}
	if !slices.Contains(encapsulations, s.Encapsulation) {
		errs = append(errs, fielderr.New("spec.encapsulation", "%q is not one of VXLAN, None", s.Encapsulation))
	}
	if s.VXLANPort < 1 || s.VXLANPort > 65535 {
		errs = append(errs, fielderr.New("spec.vxlanPort", "%d is not a port (1–65535)", s.VXLANPort))
	}
	low := minMTU
	if len(net.clusters) > 0 && !net.clusters[0].prefix.Addr().Is4() {
		low = minMTUIPv6
	}
	if s.MTU < low || s.MTU > maxMTU {
		errs = append(errs, fielderr.New("spec.mtu", "%d is outside %d–%d", s.MTU, low, maxMTU))
	}
	return errs
}

// WithClusterNetwork returns the plan with its pod and service networks taken from the
// manifest (each pod network keeping its own hostSubnetLength); the datacenter networks, the
// release, the node and the rest stay the plan's.
func (in Input) WithClusterNetwork(cn ClusterNetwork) Input {
	out := in
	out.Network.ClusterNetwork = make([]ClusterNetworkEntry, len(cn.Spec.ClusterNetworks))
	for i, c := range cn.Spec.ClusterNetworks {
		out.Network.ClusterNetwork[i] = ClusterNetworkEntry{CIDR: c.CIDR, HostSubnetLength: c.HostSubnetLength}
		if c.HostSubnetLength == nil {
			hsl := DefaultHostSubnetLength
			out.Network.ClusterNetwork[i].HostSubnetLength = &hsl
		}
	}
	out.Network.ServiceNetwork = cn.Spec.ServiceNetwork
	out.Network.fromManifest = true
	return out
}

// CheckClusterNetwork checks a ClusterNetwork manifest against a plan, the way Compute checks
// a plan: its fields, its CIDRs and host subnet lengths (errors), its overlaps with the
// service and datacenter networks (conflicts), and the nodes and pods it allows.
func CheckClusterNetwork(in Input, cn ClusterNetwork) (Result, error) {
	merged := in.WithClusterNetwork(cn)
	net, addrErrs := merged.validate()
	// In the order of the manifest: identity, addresses, then the other spec fields.
	errs := append(cn.validateIdentity(), addrErrs...)
	errs = append(errs, cn.validateSpec(net)...)
	if len(errs) > 0 {
		return Result{}, errs
	}
	r, err := Compute(merged)
	if err != nil {
		return Result{}, err
	}
	if cn.Spec.Encapsulation == "VXLAN" {
		r.Notes = append(r.Notes, fmt.Sprintf(
			"encapsulation VXLAN on UDP port %d: the underlay must carry %d-byte packets (mtu %d + %d bytes of VXLAN over IPv4) and let UDP %d through between nodes",
			cn.Spec.VXLANPort, cn.Spec.MTU+vxlanOverhead, cn.Spec.MTU, vxlanOverhead, cn.Spec.VXLANPort))
	} else {
		r.Notes = append(r.Notes, "encapsulation None: nodes must share a layer-2 segment, as pod traffic is routed directly between them")
	}
	return r, nil
}

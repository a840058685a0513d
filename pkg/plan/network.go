package plan

import (
	"fmt"
	"net/netip"

	"github.com/sluice-net/sluice/pkg/subnet"
)

// parsedNetwork is Network after its CIDRs are parsed, each named by the field it came from.
type parsedNetwork struct {
	clusters   []parsedCluster
	service    *namedPrefix // nil when the service network is missing or invalid
	datacenter []namedPrefix
}

type parsedCluster struct {
	namedPrefix
	hostSubnetLength int
	hslPath          string
}

type namedPrefix struct {
	name   string
	prefix netip.Prefix
}

// Field paths. A network that came from a ClusterNetwork manifest is named by the
// manifest's fields, so that an error points at the line the user has to change.
func (n Network) clusterName(i int) string {
	if n.fromManifest {
		return fmt.Sprintf("spec.clusterNetworks[%d]", i)
	}
	return fmt.Sprintf("network.clusterNetwork[%d]", i)
}

func (n Network) clusterCIDRPath(i int) string {
	if n.fromManifest || n.ClusterNetwork[i].HostSubnetLength != nil {
		return n.clusterName(i) + ".cidr"
	}
	return n.clusterName(i)
}

func (n Network) hostSubnetLengthPath(i int) string {
	if n.fromManifest || n.ClusterNetwork[i].HostSubnetLength != nil {
		return n.clusterName(i) + ".hostSubnetLength"
	}
	return "network.hostSubnetLength"
}

func (n Network) hostSubnetLength(i int) int {
	if l := n.ClusterNetwork[i].HostSubnetLength; l != nil {
		return *l
	}
	return n.HostSubnetLength
}

func (n Network) serviceName() string {
	if n.fromManifest {
		return "spec.serviceNetwork"
	}
	return "network.serviceNetwork"
}

// parse parses and checks the address plan. It reports every bad CIDR and every host subnet
// length that leaves no host subnet or no pod address; a check that needs a value that is
// itself bad is skipped, so one mistake gives one error.
func (n Network) parse() (parsedNetwork, ErrorList) {
	var p parsedNetwork
	var errs ErrorList

	if len(n.ClusterNetwork) == 0 {
		name := "network.clusterNetwork"
		if n.fromManifest {
			name = "spec.clusterNetworks"
		}
		errs = append(errs, fieldErr(name, "is empty; at least one pod network is needed"))
	}
	globalChecked := false
	for i, e := range n.ClusterNetwork {
		prefix, err := parseCIDR(n.clusterCIDRPath(i), e.CIDR)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(p.clusters) > 0 && p.clusters[0].prefix.Addr().Is4() != prefix.Addr().Is4() {
			errs = append(errs, fieldErr(n.clusterCIDRPath(i), "%s is %s but %s is %s; all pod networks must be one address family",
				prefix, family(prefix), p.clusters[0].name, family(p.clusters[0].prefix)))
			continue
		}
		hsl, hslPath := n.hostSubnetLength(i), n.hostSubnetLengthPath(i)
		if hsl < 2 {
			// A global length is reported once, not once per network.
			if hslPath != "network.hostSubnetLength" || !globalChecked {
				errs = append(errs, fieldErr(hslPath, "%d leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)", hsl))
			}
			if hslPath == "network.hostSubnetLength" {
				globalChecked = true
			}
			continue
		}
		if room := prefix.Addr().BitLen() - prefix.Bits(); hsl > room {
			msg := fmt.Sprintf("%d leaves no host subnet in %s, which has %d host bits", hsl, prefix, room)
			if bits := prefix.Addr().BitLen() - hsl; bits >= 2 && bits <= room {
				// The usual slip: writing the subnet's prefix length (/23) instead of its
				// host bits (9).
				msg += fmt.Sprintf(" (hostSubnetLength counts host bits: /%d host subnets are hostSubnetLength %d)", hsl, bits)
			}
			errs = append(errs, &FieldError{Path: hslPath, Message: msg})
			continue
		}
		p.clusters = append(p.clusters, parsedCluster{
			namedPrefix:      namedPrefix{name: n.clusterName(i), prefix: prefix},
			hostSubnetLength: hsl,
			hslPath:          hslPath,
		})
	}

	if prefix, err := parseCIDR(n.serviceName(), n.ServiceNetwork); err != nil {
		errs = append(errs, err)
	} else {
		p.service = &namedPrefix{name: n.serviceName(), prefix: prefix}
	}

	for i, s := range n.Datacenter {
		name := fmt.Sprintf("network.datacenter[%d]", i)
		prefix, err := parseCIDR(name, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.datacenter = append(p.datacenter, namedPrefix{name: name, prefix: prefix})
	}
	return p, errs
}

// parseCIDR parses a network strictly (subnet.ParseCIDR, shared with the controller) and
// names the field it came from in the error.
func parseCIDR(path, s string) (netip.Prefix, *FieldError) {
	p, err := subnet.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, fieldErr(path, "%v", err)
	}
	return p, nil
}

func family(p netip.Prefix) string { return subnet.Family(p) }

// Conflict is an overlap between two networks of the plan. CIDRs either nest or are
// disjoint, so the overlap is the smaller of the two.
type Conflict struct {
	A       NamedCIDR `json:"a"`
	B       NamedCIDR `json:"b"`
	Overlap string    `json:"overlap"`
}

// NamedCIDR is a network and the field it came from.
type NamedCIDR struct {
	Name string `json:"name"`
	CIDR string `json:"cidr"`
}

func (c Conflict) String() string {
	return fmt.Sprintf("%s %s overlaps %s %s (common: %s)", c.A.Name, c.A.CIDR, c.B.Name, c.B.CIDR, c.Overlap)
}

// conflicts lists every overlap between pod networks, the service network and the
// datacenter networks, in a fixed order: pod/pod, pod/service, pod/datacenter,
// service/datacenter. Datacenter networks may overlap one another; that is not the
// cluster's business.
func (p parsedNetwork) conflicts() []Conflict {
	out := []Conflict{}
	check := func(a, b namedPrefix) {
		if overlap, ok := subnet.Overlap(a.prefix, b.prefix); ok {
			out = append(out, Conflict{
				A:       NamedCIDR{Name: a.name, CIDR: a.prefix.String()},
				B:       NamedCIDR{Name: b.name, CIDR: b.prefix.String()},
				Overlap: overlap.String(),
			})
		}
	}
	for i, a := range p.clusters {
		for _, b := range p.clusters[i+1:] {
			check(a.namedPrefix, b.namedPrefix)
		}
	}
	if p.service != nil {
		for _, a := range p.clusters {
			check(a.namedPrefix, *p.service)
		}
	}
	for _, a := range p.clusters {
		for _, d := range p.datacenter {
			check(a.namedPrefix, d)
		}
	}
	if p.service != nil {
		for _, d := range p.datacenter {
			check(*p.service, d)
		}
	}
	return out
}

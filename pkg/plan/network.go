package plan

import (
	"fmt"
	"net/netip"

	"github.com/sluice-net/sluice/pkg/fielderr"
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

// parse parses and checks the address plan with pkg/subnet's rules for a ClusterNetwork, so
// that a plan passes exactly when its ClusterNetwork would. It reports every bad CIDR and
// every host subnet length that leaves no pod address or not more than one host subnet; a
// check that needs a value that is itself bad is skipped, so one mistake gives one error.
// Overlaps are not errors here: Compute reports them as conflicts.
func (n Network) parse() (parsedNetwork, fielderr.List) {
	var p parsedNetwork
	var errs fielderr.List
	seen := map[string]bool{}
	add := func(e *fielderr.Error) {
		// network.hostSubnetLength applies to every network: a problem of its own (no pod
		// address) is reported once, one that depends on the network once per network.
		if !seen[e.Error()] {
			seen[e.Error()] = true
			errs = append(errs, e)
		}
	}

	if len(n.ClusterNetwork) == 0 {
		name := "network.clusterNetwork"
		if n.fromManifest {
			name = "spec.clusterNetworks"
		}
		add(fielderr.New(name, "is empty; at least one pod network is needed"))
	}
	var first *namedPrefix // the first valid CIDR, which fixes the address family
	for i, e := range n.ClusterNetwork {
		prefix, err := parseCIDR(n.clusterCIDRPath(i), e.CIDR)
		if err != nil {
			add(err)
			continue
		}
		if first == nil {
			first = &namedPrefix{name: n.clusterName(i), prefix: prefix}
		} else if err := subnet.CheckFamily(prefix, first.name, first.prefix); err != nil {
			add(fielderr.New(n.clusterCIDRPath(i), "%v", err))
			continue
		}
		hsl, hslPath := n.hostSubnetLength(i), n.hostSubnetLengthPath(i)
		if err := subnet.CheckHostSubnetLength(prefix, int64(hsl)); err != nil {
			add(fielderr.New(hslPath, "%v", err))
			continue
		}
		p.clusters = append(p.clusters, parsedCluster{
			namedPrefix:      namedPrefix{name: n.clusterName(i), prefix: prefix},
			hostSubnetLength: hsl,
			hslPath:          hslPath,
		})
	}

	if prefix, err := parseCIDR(n.serviceName(), n.ServiceNetwork); err != nil {
		add(err)
	} else {
		p.service = &namedPrefix{name: n.serviceName(), prefix: prefix}
	}

	for i, s := range n.Datacenter {
		name := fmt.Sprintf("network.datacenter[%d]", i)
		prefix, err := parseCIDR(name, s)
		if err != nil {
			add(err)
			continue
		}
		p.datacenter = append(p.datacenter, namedPrefix{name: name, prefix: prefix})
	}
	return p, errs
}

// parseCIDR parses a network strictly (subnet.ParseCIDR, shared with the controller) and
// names the field it came from in the error.
func parseCIDR(path, s string) (netip.Prefix, *fielderr.Error) {
	p, err := subnet.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, fielderr.New(path, "%v", err)
	}
	return p, nil
}

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

package subnet

import (
	"errors"
	"fmt"
	"net/netip"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/fielderr"
)

// Pool is one valid cluster network: its CIDR and the host bits of the host subnets carved
// from it.
type Pool struct {
	CIDR             netip.Prefix
	HostSubnetLength int
}

// Count is how many host subnets the pool holds: 2^(host bits of the CIDR − hostSubnetLength),
// saturated at math.MaxInt64.
func (p Pool) Count() int64 { return saturate(pow2(HostBits(p.CIDR) - p.HostSubnetLength)) }

// SubnetBits is the prefix length of the pool's host subnets: 23 for hostSubnetLength 9 in IPv4.
func (p Pool) SubnetBits() int { return p.CIDR.Addr().BitLen() - p.HostSubnetLength }

func (p Pool) String() string {
	return fmt.Sprintf("%s (/%d host subnets)", p.CIDR, p.SubnetBits())
}

// The fields' paths in a ClusterNetwork.
const (
	clusterNetworksPath = "spec.clusterNetworks"
	serviceNetworkPath  = "spec.serviceNetwork"
)

func cidrPath(i int) string { return fmt.Sprintf("%s[%d].cidr", clusterNetworksPath, i) }
func hslPath(i int) string  { return fmt.Sprintf("%s[%d].hostSubnetLength", clusterNetworksPath, i) }

// MinHostBits is the smallest host subnet: 2 host bits are 4 addresses, of which the network
// and broadcast addresses leave 2, the node's gateway and one pod.
const MinHostBits = 2

// CheckHostSubnetLength checks host subnets of hsl host bits in the cluster network cidr:
// hsl must be at least MinHostBits (room for a gateway and a pod) and less than cidr's host
// bits (room for more than one host subnet). Its error is one line that shows the values;
// callers put the field's path in front.
func CheckHostSubnetLength(cidr netip.Prefix, hsl int64) error {
	room := int64(HostBits(cidr))
	switch {
	case hsl < MinHostBits:
		return fmt.Errorf("%d leaves no pod address: a host subnet needs at least %d host bits (2^%d − 2 = 2 addresses)",
			hsl, MinHostBits, MinHostBits)
	case hsl >= room:
		what := "no host subnet"
		if hsl == room {
			what = "only one host subnet"
		}
		msg := fmt.Sprintf("%d leaves %s in %s, which has %d host bits; it must be less than %d", hsl, what, cidr, room, room)
		if bits := int64(cidr.Addr().BitLen()) - hsl; bits >= MinHostBits && bits < room {
			// The usual slip: the subnet's prefix length (/23) written for its host bits (9).
			msg += fmt.Sprintf(" (hostSubnetLength counts host bits: /%d host subnets are hostSubnetLength %d)", hsl, bits)
		}
		return errors.New(msg)
	}
	return nil
}

// CheckFamily checks that the cluster network p is of the address family of first, the
// first cluster network, found at firstField. Its error is one line, as CheckHostSubnetLength's.
func CheckFamily(p netip.Prefix, firstField string, first netip.Prefix) error {
	if p.Addr().Is4() == first.Addr().Is4() {
		return nil
	}
	return fmt.Errorf("%s is %s but %s %s is %s; all cluster networks must be one address family",
		p, Family(p), firstField, first, Family(first))
}

// Parse checks the address part of a ClusterNetwork spec and returns its pools in order.
// It reports every problem, each once: a check that needs a value that is itself bad is
// skipped. The rules are those of the CRD's CEL validation (deploy/helm/sluice/crds), so that a spec the
// API server admitted and the controller's view of it agree:
//
//   - at least one cluster network;
//   - each cidr a network in CIDR notation without host bits, all of one address family;
//   - each hostSubnetLength at least 2 (room for a gateway and a pod) and less than the
//     cidr's host bits (room for more than one host subnet);
//   - no two cluster networks overlap, and the service network overlaps none of them.
func Parse(entries []sluicev1alpha1.ClusterNetworkEntry, serviceNetwork string) ([]Pool, error) {
	var errs fielderr.List
	if len(entries) == 0 {
		errs = append(errs, fielderr.New(clusterNetworksPath, "is empty; at least one cluster network is needed"))
	}

	type indexed struct {
		Pool
		i int
	}
	var valid []indexed
	firstFamily := -1 // index of the first valid entry, which fixes the address family
	for i, e := range entries {
		p, err := ParseCIDR(e.CIDR)
		if err != nil {
			errs = append(errs, fielderr.New(cidrPath(i), "%v", err))
			continue
		}
		if firstFamily >= 0 {
			first, _ := ParseCIDR(entries[firstFamily].CIDR)
			if err := CheckFamily(p, cidrPath(firstFamily), first); err != nil {
				errs = append(errs, fielderr.New(cidrPath(i), "%v", err))
				continue
			}
		} else {
			firstFamily = i
		}
		if err := CheckHostSubnetLength(p, int64(e.HostSubnetLength)); err != nil {
			errs = append(errs, fielderr.New(hslPath(i), "%v", err))
			continue
		}
		valid = append(valid, indexed{Pool{CIDR: p, HostSubnetLength: int(e.HostSubnetLength)}, i})
	}

	// Overlaps are reported on the later entry, naming the earlier one.
	for b := range valid {
		for a := range b {
			if valid[a].CIDR.Overlaps(valid[b].CIDR) {
				errs = append(errs, fielderr.New(cidrPath(valid[b].i), "%s overlaps %s %s",
					valid[b].CIDR, cidrPath(valid[a].i), valid[a].CIDR))
			}
		}
	}

	if serviceNetwork == "" {
		errs = append(errs, fielderr.New(serviceNetworkPath, "is required; want a CIDR such as 172.30.0.0/16"))
	} else if svc, err := ParseCIDR(serviceNetwork); err != nil {
		errs = append(errs, fielderr.New(serviceNetworkPath, "%v", err))
	} else {
		for _, v := range valid {
			if svc.Overlaps(v.CIDR) {
				errs = append(errs, fielderr.New(serviceNetworkPath, "%s overlaps %s %s", svc, cidrPath(v.i), v.CIDR))
			}
		}
	}

	if len(errs) > 0 {
		return nil, errs
	}
	pools := make([]Pool, len(valid))
	for i, v := range valid {
		pools[i] = v.Pool
	}
	return pools, nil
}

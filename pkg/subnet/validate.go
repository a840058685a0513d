package subnet

import (
	"fmt"
	"net/netip"
	"strings"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

// FieldError is one bad value of a ClusterNetwork spec, named by its path
// (spec.clusterNetworks[1].cidr).
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorList is every problem of one spec, in the order of its fields.
type ErrorList []*FieldError

// Error joins the problems on one line, so that it fits a condition's message.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// Unwrap lets errors.As find each FieldError.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

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

// minHostBits is the smallest host subnet: 2 host bits are 4 addresses, of which the network
// and broadcast addresses leave 2, the node's gateway and one pod.
const minHostBits = 2

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
	var errs ErrorList
	if len(entries) == 0 {
		errs = append(errs, fieldErr(clusterNetworksPath, "is empty; at least one cluster network is needed"))
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
			errs = append(errs, fieldErr(cidrPath(i), "%v", err))
			continue
		}
		if firstFamily >= 0 {
			if first, _ := ParseCIDR(entries[firstFamily].CIDR); first.Addr().Is4() != p.Addr().Is4() {
				errs = append(errs, fieldErr(cidrPath(i), "%s is %s but %s %s is %s; all cluster networks must be one address family",
					p, Family(p), cidrPath(firstFamily), first, Family(first)))
				continue
			}
		} else {
			firstFamily = i
		}
		hsl, room := int64(e.HostSubnetLength), int64(HostBits(p))
		switch {
		case hsl < minHostBits:
			errs = append(errs, fieldErr(hslPath(i), "%d leaves no pod address: a host subnet needs at least %d host bits (2^%d − 2 = 2 addresses)",
				hsl, minHostBits, minHostBits))
			continue
		case hsl >= room:
			what := "no host subnet"
			if hsl == room {
				what = "only one host subnet"
			}
			msg := fmt.Sprintf("%d leaves %s in %s, which has %d host bits; it must be less than %d", hsl, what, p, room, room)
			if bits := int64(p.Addr().BitLen()) - hsl; bits >= minHostBits && bits < room {
				// The usual slip: the subnet's prefix length (/23) written for its host bits (9).
				msg += fmt.Sprintf(" (hostSubnetLength counts host bits: /%d host subnets are hostSubnetLength %d)", hsl, bits)
			}
			errs = append(errs, &FieldError{Field: hslPath(i), Message: msg})
			continue
		}
		valid = append(valid, indexed{Pool{CIDR: p, HostSubnetLength: int(hsl)}, i})
	}

	// Overlaps are reported on the later entry, naming the earlier one.
	for b := range valid {
		for a := range b {
			if valid[a].CIDR.Overlaps(valid[b].CIDR) {
				errs = append(errs, fieldErr(cidrPath(valid[b].i), "%s overlaps %s %s",
					valid[b].CIDR, cidrPath(valid[a].i), valid[a].CIDR))
			}
		}
	}

	if serviceNetwork == "" {
		errs = append(errs, fieldErr(serviceNetworkPath, "is required; want a CIDR such as 172.30.0.0/16"))
	} else if svc, err := ParseCIDR(serviceNetwork); err != nil {
		errs = append(errs, fieldErr(serviceNetworkPath, "%v", err))
	} else {
		for _, v := range valid {
			if svc.Overlaps(v.CIDR) {
				errs = append(errs, fieldErr(serviceNetworkPath, "%s overlaps %s %s", svc, cidrPath(v.i), v.CIDR))
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

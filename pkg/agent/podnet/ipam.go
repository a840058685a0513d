package podnet

import (
	"net/netip"

	"github.com/sluice-net/sluice/pkg/agent/ipam"
)

// OpenIPAM opens the node's crash-safe IPAM (package ipam) as the pod
// network uses it.
func OpenIPAM(dir string, subnet netip.Prefix) (IPAM, error) {
	a, err := ipam.Open(dir, subnet)
	if err != nil {
		return nil, err
	}
	return ipamAdapter{a}, nil
}

type ipamAdapter struct{ *ipam.Allocator }

func (a ipamAdapter) Attachments() ([]Attachment, error) {
	var l []Attachment
	for _, x := range a.List() {
		if !x.Stale {
			l = append(l, Attachment{ContainerID: x.ContainerID, IfName: x.IfName, IP: x.Addr, Owner: x.Owner})
		}
	}
	return l, nil
}

func (a ipamAdapter) GC(keep []Attachment) error {
	valid := make(map[ipam.Key]bool, len(keep))
	for _, k := range keep {
		valid[ipam.Key{ContainerID: k.ContainerID, IfName: k.IfName}] = true
	}
	_, err := a.Allocator.GC(valid)
	return err
}

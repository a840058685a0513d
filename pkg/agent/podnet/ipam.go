package node

import (
	"net/netip"

	"github.com/sluice-net/sluice/pkg/agent/ipam"
	"github.com/sluice-net/sluice/pkg/agent/podnet"
)

// OpenIPAM opens the node's crash-safe IPAM as the pod network uses it.
func OpenIPAM(dir string, subnet netip.Prefix) (podnet.IPAM, error) {
	a, err := ipam.Open(dir, subnet)
	if err != nil {
		return nil, err
	}
	return ipamAdapter{a}, nil
}

func openIPAM(dir string, subnet netip.Prefix) (podnet.IPAM, error) { return OpenIPAM(dir, subnet) }

type ipamAdapter struct{ *ipam.Allocator }

func (a ipamAdapter) Attachments() ([]podnet.Attachment, error) {
	var l []podnet.Attachment
	for _, x := range a.List() {
		if !x.Stale {
			l = append(l, podnet.Attachment{ContainerID: x.ContainerID, IfName: x.IfName, IP: x.Addr, Owner: x.Owner})
		}
	}
	return l, nil
}

func (a ipamAdapter) GC(keep []podnet.Attachment) error {
	valid := make(map[ipam.Key]bool, len(keep))
	for _, k := range keep {
		valid[ipam.Key{ContainerID: k.ContainerID, IfName: k.IfName}] = true
	}
	_, err := a.Allocator.GC(valid)
	return err
}

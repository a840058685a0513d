package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"
)

// NewNFT returns the real nftables interface for the agent's table.
//
// Its List asks nft for one object type with set contents omitted
// (`nft -j -t list chains|sets|maps inet`): knftables' own List reads the
// whole table, and with 30k services that takes the nft binary ~10 s
// (it fetches every element of the endpoint maps even when told to be
// terse), against ~50 ms this way. Listing happens once after the agent
// starts, before the first full sync, so this is the time a restarted agent
// takes to re-assert its services and policies.
func NewNFT() (knftables.Interface, error) {
	nft, err := knftables.New(knftables.InetFamily, Table)
	if err != nil {
		return nil, err
	}
	return quickList{Interface: nft}, nil
}

type quickList struct{ knftables.Interface }

func (q quickList) List(ctx context.Context, objectType string) ([]string, error) {
	kind := strings.TrimSuffix(objectType, "s")
	switch kind {
	case "chain", "set", "map":
	default:
		return q.Interface.List(ctx, objectType)
	}
	out, err := exec.CommandContext(ctx, "nft", "-j", "-t", "list", kind+"s", string(knftables.InetFamily)).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("nft list %ss: %w: %s", kind, err, ee.Stderr)
		}
		return nil, fmt.Errorf("nft list %ss: %w", kind, err)
	}
	return parseNames(out, kind)
}

// parseNames picks the names of the objects of kind in table Table from
// nft's JSON output.
func parseNames(out []byte, kind string) ([]string, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("nft list %ss: %w", kind, err)
	}
	names := []string{}
	for _, o := range doc.Nftables {
		raw, ok := o[kind]
		if !ok {
			continue
		}
		var v struct{ Name, Table string }
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("nft list %ss: %w", kind, err)
		}
		if v.Table == Table {
			names = append(names, v.Name)
		}
	}
	return names, nil
}

package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func state() State {
	return State{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16")},
		Pods: []Pod{
			{Iface: "slp0123456789ab", IP: netip.MustParseAddr("10.128.0.2")},
			{Iface: "slp0123456789ac", IP: netip.MustParseAddr("10.128.0.3")},
		},
	}
}

func TestFullSyncRendersContract(t *testing.T) {
	f := knftables.NewFake(knftables.InetFamily, Table)
	d := New(f)
	if err := d.Sync(context.Background(), state()); err != nil {
		t.Fatal(err)
	}
	dump := f.Dump()
	for _, want := range []string{
		"add set inet sluice cluster-cidrs { type ipv4_addr ; flags interval ;",
		"add element inet sluice cluster-cidrs { 10.128.0.0/14 }",
		"add element inet sluice service-cidrs { 172.30.0.0/16 }",
		"add element inet sluice pod-ifaddrs { slp0123456789ab . 10.128.0.2 }",
		"add chain inet sluice pod-antispoof { type filter hook prerouting priority -300 ; }",
		`iifname "slp*" meta nfproto ipv4 iifname . ip saddr != @pod-ifaddrs counter drop`,
		"ip saddr @cluster-cidrs ip daddr != @cluster-cidrs ip daddr != @service-cidrs counter masquerade",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
}

// After incremental changes the kernel holds exactly what a fresh full sync
// of the same state would build.
func TestPartialEqualsFull(t *testing.T) {
	ctx := context.Background()
	f := knftables.NewFake(knftables.InetFamily, Table)
	d := New(f)
	s := state()
	if err := d.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	p := Pod{Iface: "slp00000000000f", IP: netip.MustParseAddr("10.128.0.9")}
	if err := d.AddPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePod(ctx, "slp0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePod(ctx, "slp-unknown"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(f.LastTransaction.String(), "flush") {
		t.Errorf("incremental change ran a full sync")
	}
	want := knftables.NewFake(knftables.InetFamily, Table)
	s.Pods = []Pod{s.Pods[1], p}
	if err := New(want).Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, exp := f.Dump(), want.Dump(); got != exp {
		t.Errorf("partial:\n%s\nfull:\n%s", got, exp)
	}
}

type failing struct {
	knftables.Interface
	fail bool
	txs  []string
}

func (f *failing) Run(ctx context.Context, tx *knftables.Transaction) error {
	f.txs = append(f.txs, tx.String())
	if f.fail {
		return errors.New("netlink: busy")
	}
	return f.Interface.Run(ctx, tx)
}

func TestFailureForcesFullSync(t *testing.T) {
	ctx := context.Background()
	f := &failing{Interface: knftables.NewFake(knftables.InetFamily, Table)}
	d := New(f)
	if err := d.Sync(ctx, state()); err != nil {
		t.Fatal(err)
	}
	f.fail = true
	if err := d.AddPod(ctx, Pod{Iface: "slp1", IP: netip.MustParseAddr("10.128.0.7")}); err == nil {
		t.Fatal("failure not reported")
	}
	f.fail = false
	if err := d.AddPod(ctx, Pod{Iface: "slp2", IP: netip.MustParseAddr("10.128.0.8")}); err != nil {
		t.Fatal(err)
	}
	last := f.txs[len(f.txs)-1]
	if !strings.Contains(last, "flush set inet sluice pod-ifaddrs") || !strings.Contains(last, "slp1 . 10.128.0.7") {
		t.Errorf("the change after a failure was not a full sync including the failed pod:\n%s", last)
	}
}

func TestParseNames(t *testing.T) {
	out := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"chain": {"family": "inet", "table": "sluice", "name": "pod-antispoof", "handle": 1}},
 {"chain": {"family": "inet", "table": "other", "name": "x", "handle": 2}},
 {"set": {"family": "inet", "name": "cluster-cidrs", "table": "sluice", "type": "ipv4_addr"}},
 {"chain": {"family": "inet", "table": "sluice", "name": "services", "handle": 3}}]}`)
	got, err := parseNames(out, "chain")
	if err != nil || !slices.Equal(got, []string{"pod-antispoof", "services"}) {
		t.Errorf("chains: %v %v", got, err)
	}
	if got, _ := parseNames(out, "map"); len(got) != 0 {
		t.Errorf("maps: %v, want none", got)
	}
	if _, err := parseNames([]byte("not json"), "set"); err == nil {
		t.Error("bad output accepted")
	}
}

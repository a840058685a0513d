package dataplane

import (
	"context"
	"errors"
	"github.com/go-logr/logr"
	"net/netip"
	"slices"
	"strings"
	"sync"
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

// newBase returns a base holding s, and an owner of f running it.
func newBase(t *testing.T, f knftables.Interface, s State) (*Owner, *Base) {
	t.Helper()
	b := NewBase()
	b.SetNetworks(s.ClusterCIDRs, s.ServiceCIDRs)
	for _, p := range s.Pods {
		b.PodAdded(p)
	}
	o := NewOwner(f, logr.Discard())
	o.Register(b)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go o.Run(ctx)
	return o, b
}

func TestFullSyncRendersContract(t *testing.T) {
	f := knftables.NewFake(knftables.InetFamily, Table)
	o, _ := newBase(t, f, state())
	if err := o.Sync(context.Background()); err != nil {
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
// of the same state would build, and the changes were element operations.
func TestPartialEqualsFull(t *testing.T) {
	ctx := context.Background()
	f := knftables.NewFake(knftables.InetFamily, Table)
	s := state()
	o, b := newBase(t, f, s)
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p := Pod{Iface: "slp00000000000f", IP: netip.MustParseAddr("10.128.0.9")}
	b.PodAdded(p)
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b.PodRemoved("slp0123456789ab")
	b.PodRemoved("slp-unknown")
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if last := f.LastTransaction.String(); strings.Contains(last, "flush") || !strings.Contains(last, "delete element") {
		t.Errorf("incremental change was not an element change:\n%s", last)
	}
	want := knftables.NewFake(knftables.InetFamily, Table)
	s.Pods = []Pod{s.Pods[1], p}
	wo, _ := newBase(t, want, s)
	if err := wo.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, exp := sortedLines(f.Dump()), sortedLines(want.Dump()); got != exp {
		t.Errorf("partial:\n%s\nfull:\n%s", got, exp)
	}
}

type failing struct {
	knftables.Interface
	mu   sync.Mutex
	fail func(tx string) bool // nil: never
	txs  []string
	runs int
}

func (f *failing) Run(ctx context.Context, tx *knftables.Transaction) error {
	f.mu.Lock()
	s := tx.String()
	f.txs = append(f.txs, s)
	f.runs++
	fail := f.fail != nil && f.fail(s)
	f.mu.Unlock()
	if fail {
		return errors.New("netlink: busy")
	}
	return f.Interface.Run(ctx, tx)
}

func (f *failing) set(fail func(string) bool) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

func (f *failing) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.txs[len(f.txs)-1]
}

func TestFailureForcesFullSync(t *testing.T) {
	ctx := context.Background()
	f := &failing{Interface: knftables.NewFake(knftables.InetFamily, Table)}
	o, b := newBase(t, f, state())
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	f.set(func(string) bool { return true })
	b.PodAdded(Pod{Iface: "slp1", IP: netip.MustParseAddr("10.128.0.7")})
	if err := o.Sync(ctx); err == nil {
		t.Fatal("failure not reported")
	}
	f.set(nil)
	b.PodAdded(Pod{Iface: "slp2", IP: netip.MustParseAddr("10.128.0.8")})
	if err := o.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	last := f.last()
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

// sortedLines: the fake dumps elements in the order they were added.
func sortedLines(dump string) string {
	l := strings.Split(dump, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

func slicesSort(s []string) { slices.Sort(s) }

package subnet

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/fielderr"
)

type entry = sluicev1alpha1.ClusterNetworkEntry

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		service string
		want    []string // every error, in order; nil means valid
	}{
		{"valid", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, "172.30.0.0/16", nil},
		{"valid two", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}, {CIDR: "10.132.0.0/14", HostSubnetLength: 8}}, "172.30.0.0/16", nil},
		{"valid IPv6", []entry{{CIDR: "fd00:10::/48", HostSubnetLength: 64}}, "fd00:30::/112", nil},
		{"empty", nil, "172.30.0.0/16", []string{"spec.clusterNetworks: is empty; at least one cluster network is needed"}},
		{"bad cidr", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}, {CIDR: "10.136.0.0/40", HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{`spec.clusterNetworks[1].cidr: "10.136.0.0/40" is not a valid CIDR`}},
		{"missing cidr", []entry{{HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{`spec.clusterNetworks[0].cidr: "" is not a CIDR; want one such as 10.128.0.0/14`}},
		{"host bits set", []entry{{CIDR: "10.128.0.1/14", HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].cidr: 10.128.0.1/14 has host bits set; the network is 10.128.0.0/14"}},
		{"mapped", []entry{{CIDR: "::ffff:10.128.0.0/110", HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{`spec.clusterNetworks[0].cidr: "::ffff:10.128.0.0/110" is an IPv4-mapped IPv6 network; write the IPv4 network`}},
		{"mixed families", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}, {CIDR: "fd00::/48", HostSubnetLength: 64}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[1].cidr: fd00::/48 is IPv6 but spec.clusterNetworks[0].cidr 10.128.0.0/14 is IPv4; all cluster networks must be one address family"}},
		{"no pod address", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 1}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].hostSubnetLength: 1 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)"}},
		{"zero", []entry{{CIDR: "10.128.0.0/14"}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].hostSubnetLength: 0 leaves no pod address: a host subnet needs at least 2 host bits (2^2 − 2 = 2 addresses)"}},
		{"one subnet only", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 8}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].hostSubnetLength: 8 leaves only one host subnet in 10.0.0.0/24, which has 8 host bits; it must be less than 8"}},
		{"prefix length for host bits", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 23}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].hostSubnetLength: 23 leaves no host subnet in 10.128.0.0/14, which has 18 host bits; it must be less than 18 (hostSubnetLength counts host bits: /23 host subnets are hostSubnetLength 9)"}},
		{"huge", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: math.MaxUint32}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[0].hostSubnetLength: 4294967295 leaves no host subnet in 10.128.0.0/14, which has 18 host bits; it must be less than 18"}},
		{"overlap", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}, {CIDR: "10.128.0.0/15", HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{"spec.clusterNetworks[1].cidr: 10.128.0.0/15 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14"}},
		{"overlap skipping a bad one", []entry{{CIDR: "10.0.0.0/8", HostSubnetLength: 9}, {CIDR: "x", HostSubnetLength: 9}, {CIDR: "10.1.0.0/16", HostSubnetLength: 9}}, "172.30.0.0/16",
			[]string{`spec.clusterNetworks[1].cidr: "x" is not a valid CIDR`, "spec.clusterNetworks[2].cidr: 10.1.0.0/16 overlaps spec.clusterNetworks[0].cidr 10.0.0.0/8"}},
		{"service overlaps", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, "10.130.0.0/16",
			[]string{"spec.serviceNetwork: 10.130.0.0/16 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14"}},
		{"service missing", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, "",
			[]string{"spec.serviceNetwork: is required; want a CIDR such as 172.30.0.0/16"}},
		{"service bad", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, "172.30.0.0",
			[]string{`spec.serviceNetwork: "172.30.0.0" is not a valid CIDR`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools, err := Parse(tc.entries, tc.service)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if len(pools) != len(tc.entries) {
					t.Fatalf("pools = %v", pools)
				}
				return
			}
			var list fielderr.List
			if !errors.As(err, &list) {
				t.Fatalf("Parse error = %v, want a fielderr.List", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			var fe *fielderr.Error
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Errorf("errors.As(fielderr.Error) = %v", fe)
			}
		})
	}
}

func TestAllocator(t *testing.T) {
	for _, tc := range []struct {
		name      string
		entries   []entry
		allocated []string
		next      string // "" = exhausted
		capacity  int64
		used      int64
	}{
		{"first", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, nil, "10.128.0.0/23", 512, 0},
		{"second", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, []string{"10.128.0.0/23"}, "10.128.2.0/23", 512, 1},
		{"fills the lowest hole", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}},
			[]string{"10.128.4.0/23", "10.128.0.0/23"}, "10.128.2.0/23", 512, 2},
		{"unordered and duplicate input", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}},
			[]string{"10.128.2.0/23", "10.128.0.0/23", "10.128.2.0/23"}, "10.128.4.0/23", 512, 2},
		{"ignores other networks and families", []entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}},
			[]string{"192.168.0.0/23", "fd00::/64"}, "10.128.0.0/23", 512, 0},
		{"second entry when the first is full", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 7}, {CIDR: "10.1.0.0/24", HostSubnetLength: 6}},
			[]string{"10.0.0.0/25", "10.0.0.128/25"}, "10.1.0.0/26", 6, 2},
		{"earlier entry wins even at a higher address", []entry{{CIDR: "10.9.0.0/24", HostSubnetLength: 7}, {CIDR: "10.1.0.0/24", HostSubnetLength: 7}},
			nil, "10.9.0.0/25", 4, 0},
		{"exhausted", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 7}}, []string{"10.0.0.0/25", "10.0.0.128/25"}, "", 2, 2},
		{"exhausted by a larger old subnet", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 6}}, []string{"10.0.0.0/24"}, "", 4, 4},
		{"a larger old subnet blocks all it covers", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 6}}, []string{"10.0.0.0/25"}, "10.0.0.128/26", 4, 2},
		{"a smaller old subnet blocks its whole host subnet", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 6}},
			[]string{"10.0.0.64/28", "10.0.0.0/26"}, "10.0.0.128/26", 4, 2},
		{"a subnet larger than the pool", []entry{{CIDR: "10.0.0.0/24", HostSubnetLength: 6}}, []string{"10.0.0.0/8"}, "", 4, 4},
		{"top of the IPv4 space", []entry{{CIDR: "255.255.255.0/24", HostSubnetLength: 7}}, []string{"255.255.255.0/25"}, "255.255.255.128/25", 2, 1},
		{"smallest host subnet", []entry{{CIDR: "10.0.0.0/29", HostSubnetLength: 2}}, []string{"10.0.0.0/30"}, "10.0.0.4/30", 2, 1},
		{"IPv6", []entry{{CIDR: "fd00:10::/48", HostSubnetLength: 64}}, []string{"fd00:10::/64"}, "fd00:10:0:1::/64", 65536, 1},
		{"top of the IPv6 space", []entry{{CIDR: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", HostSubnetLength: 4}},
			[]string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/122", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/123"},
			"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffe0/124", 16, 14},
		{"IPv6 capacity saturates", []entry{{CIDR: "2000::/3", HostSubnetLength: 2}}, nil, "2000::/126", math.MaxInt64, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := "172.30.0.0/16"
			if !netip.MustParsePrefix(tc.entries[0].CIDR).Addr().Is4() {
				svc = "fd00:30::/112"
			}
			a, err := New(tc.entries, svc)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			alloc := prefixes(t, tc.allocated...)
			got, err := a.Next(alloc)
			if tc.next == "" {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("Next = %v, %v; want exhausted", got, err)
				}
				for _, p := range a.Pools() {
					if !strings.Contains(err.Error(), p.CIDR.String()) {
						t.Errorf("exhausted error %q does not name %s", err, p.CIDR)
					}
				}
			} else if err != nil || got.String() != tc.next {
				t.Fatalf("Next = %v, %v; want %s", got, err, tc.next)
			}
			if c := a.Capacity(); c != tc.capacity {
				t.Errorf("Capacity = %d, want %d", c, tc.capacity)
			}
			if u := a.Used(alloc); u != tc.used {
				t.Errorf("Used = %d, want %d", u, tc.used)
			}
			// Next always agrees with the counts.
			if free := a.Free(alloc); (free > 0) != (tc.next != "") {
				t.Errorf("Free = %d but Next = %v", free, got)
			}
		})
	}
}

// TestAllocatorFillsEverything allocates a small network to the end: every host subnet once,
// in address order, never overlapping, then exhaustion.
func TestAllocatorFillsEverything(t *testing.T) {
	a, err := New([]entry{{CIDR: "10.0.0.0/22", HostSubnetLength: 6}, {CIDR: "10.8.0.0/24", HostSubnetLength: 7}}, "10.96.0.0/12")
	if err != nil {
		t.Fatal(err)
	}
	var alloc []netip.Prefix
	for i := int64(0); i < a.Capacity(); i++ {
		s, err := a.Next(alloc)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		for _, o := range alloc {
			if o.Overlaps(s) {
				t.Fatalf("allocation %d: %s overlaps %s", i, s, o)
			}
		}
		if len(alloc) > 0 && i < 16 && s.Addr().Less(alloc[len(alloc)-1].Addr()) {
			t.Fatalf("allocation %d: %s is below %s", i, s, alloc[len(alloc)-1])
		}
		alloc = append(alloc, s)
		if u := a.Used(alloc); u != i+1 {
			t.Fatalf("Used after %d allocations = %d", i+1, u)
		}
	}
	if len(alloc) != 18 || alloc[15].String() != "10.0.3.192/26" || alloc[16].String() != "10.8.0.0/25" {
		t.Fatalf("allocations = %v", alloc)
	}
	if _, err := a.Next(alloc); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Next after filling = %v", err)
	}
	// Freeing one in the middle makes exactly that one the next.
	freed := append(append([]netip.Prefix{}, alloc[:5]...), alloc[6:]...)
	if s, err := a.Next(freed); err != nil || s != alloc[5] {
		t.Fatalf("Next after freeing %s = %v, %v", alloc[5], s, err)
	}
}

func TestContains(t *testing.T) {
	a, err := New([]entry{{CIDR: "10.128.0.0/14", HostSubnetLength: 9}}, "172.30.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{"10.128.0.0/23": true, "10.131.254.0/23": true, "10.128.0.0/12": false, "10.132.0.0/23": false, "fd00::/64": false} {
		if got := a.Contains(netip.MustParsePrefix(s)); got != want {
			t.Errorf("Contains(%s) = %v", s, got)
		}
	}
}

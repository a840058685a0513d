package proxy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mutate(st State, f func(sp *ServicePort) bool) State {
	out := State{NodeIPs: slices.Clone(st.NodeIPs)}
	for _, sp := range st.Services {
		sp.Cluster, sp.Local = slices.Clone(sp.Cluster), slices.Clone(sp.Local)
		if f(&sp) {
			out.Services = append(out.Services, sp)
		}
	}
	return out
}

// A partial sync leaves exactly what a fresh full render of the new state
// builds, and touches only the service ports that changed.
func TestRenderPartialEqualsFull(t *testing.T) {
	ctx := context.Background()
	base := scenario(t)
	named := func(n string) func(sp *ServicePort) bool {
		return func(sp *ServicePort) bool { return sp.Name.Name == n }
	}
	_ = named
	for _, tc := range []struct {
		name    string
		next    State
		touched []string // service names whose objects may appear in the transaction
	}{
		{"no change", base, nil},
		{"endpoint gone", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "web" {
				sp.Cluster = sp.Cluster[1:]
			}
			return true
		}), []string{"web"}},
		{"endpoint moved: the dispatch element stays", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "web" {
				sp.Cluster[1].IP = netip.MustParseAddr("10.128.3.9")
			}
			return true
		}), []string{"web"}},
		{"endpoint added, affinity kept", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "sticky" {
				sp.Cluster = append(sp.Cluster, Endpoint{IP: netip.MustParseAddr("10.128.2.2"), Port: 8080, Ready: true, Serving: true})
			}
			return true
		}), []string{"sticky"}},
		{"affinity timeout changed", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "sticky" {
				sp.AffinitySeconds = 60
			}
			return true
		}), []string{"sticky"}},
		{"affinity off", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "sticky" {
				sp.AffinitySeconds = 0
			}
			return true
		}), []string{"sticky"}},
		{"lost all endpoints", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "web" {
				sp.Cluster, sp.HasEndpoints = nil, false
			}
			return true
		}), []string{"web"}},
		{"node port and IPs changed", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "local" {
				sp.NodePort = 30099
				sp.LoadBalancerIPs = nil
			}
			return true
		}), []string{"local"}},
		{"source ranges changed", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "fw" {
				sp.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			}
			return true
		}), []string{"fw"}},
		{"source ranges lifted", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "fw" {
				sp.Firewalled, sp.SourceRanges = false, nil
			}
			return true
		}), []string{"fw"}},
		{"one port of a two-port service removed: its cluster IP stays", mutate(base, func(sp *ServicePort) bool {
			return sp.Name.Name != "dns" || sp.Protocol != "SCTP"
		}), []string{"dns"}},
		{"cluster IP changed", mutate(base, func(sp *ServicePort) bool {
			if sp.Name.Name == "web" {
				sp.ClusterIPs = []netip.Addr{netip.MustParseAddr("172.30.0.99")}
			}
			return true
		}), []string{"web"}},
		{"service removed", mutate(base, func(sp *ServicePort) bool { return sp.Name.Name != "sticky" }), []string{"sticky"}},
		{"service added", base, []string{"sticky"}},
		{"node address changed", func() State {
			s := mutate(base, func(*ServicePort) bool { return true })
			s.NodeIPs = []netip.Addr{netip.MustParseAddr("192.168.1.20")}
			return s
		}(), []string{"*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := base
			if tc.name == "service added" {
				prev = mutate(base, func(sp *ServicePort) bool { return sp.Name.Name != "sticky" })
			}
			f := render(t, prev)
			tx := f.NewTransaction()
			RenderPartial(tx, prev, tc.next)
			if err := f.Run(ctx, tx); err != nil {
				t.Fatalf("partial transaction refused: %v\n%s", err, tx)
			}
			if got, want := normalize(f.Dump()), normalize(render(t, tc.next).Dump()); got != want {
				t.Errorf("partial differs from full:\n--- partial\n%s\n--- full\n%s\n--- transaction\n%s", got, want, tx)
			}
			if strings.HasPrefix(tc.name, "endpoint moved") {
				for _, l := range strings.Split(tx.String(), "\n") {
					if strings.Contains(l, MapServiceIPs+" ") || strings.Contains(l, MapServiceNodePorts+" ") {
						t.Errorf("an endpoint move rewrote a dispatch element: %s", l)
					}
				}
				if !strings.Contains(tx.String(), "10.128.3.9") {
					t.Errorf("the moved endpoint is not in the transaction:\n%s", tx)
				}
			}
			if tc.name == "endpoint added, affinity kept" && strings.Contains(tx.String(), "delete set") {
				t.Errorf("affinity sets of kept endpoints were recreated:\n%s", tx)
			}
			if slices.Contains(tc.touched, "*") {
				return
			}
			if tc.touched == nil && tx.NumOperations() != 0 {
				t.Errorf("no change, yet:\n%s", tx)
			}
			var forbidden []string
			for _, st := range []State{prev, tc.next} {
				for i := range st.Services {
					sp := &st.Services[i]
					if slices.Contains(tc.touched, sp.Name.Name) {
						continue
					}
					chains, sets := Objects(State{Services: []ServicePort{*sp}})
					forbidden = append(forbidden, chains...)
					forbidden = append(forbidden, sets...)
					for _, e := range elements(sp, st.NodeIPs) {
						forbidden = append(forbidden, "{ "+strings.Join(e.Key, " . ")+" ")
					}
				}
			}
			for _, line := range strings.Split(tx.String(), "\n") {
				for _, f := range forbidden {
					if strings.Contains(line, f) {
						t.Errorf("partial sync touched an unchanged object (%s): %s", f, line)
					}
				}
			}
		})
	}
}

// normalize sorts a dump's element lines: the kernel keeps no element order,
// the fake keeps insertion order. Rule order, which matters, is untouched.
func normalize(dump string) string {
	var rest, elems []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
		} else {
			rest = append(rest, l)
		}
	}
	slices.Sort(elems)
	return strings.Join(append(rest, elems...), "\n")
}

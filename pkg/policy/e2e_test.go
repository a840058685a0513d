package policy

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluice-net/sluice/pkg/policy/netpolcases"
)

// TestUpstreamNetpolE2E checks the model against the upstream Kubernetes netpol e2e cases
// (test/e2e/network/netpol/network_policy.go, v1.36), transcribed in netpolcases with their
// namespaces, pods, ports, port names, policies and expected truth tables; the lab e2e test
// replays the same cases with real packets. Loopback pairs are ignored, as upstream does.
func TestUpstreamNetpolE2E(t *testing.T) {
	cases := netpolcases.Cases(fixtureIPs())
	if len(cases) != 39 {
		t.Errorf("%d upstream cases, want 39", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			m := mustCompile(t, fixtureInput(ModeNetworkPolicy, c.Policies...))
			for _, p := range c.Probes {
				checkTruth(t, m, p.Want, p.Port, p.Proto)
			}
		})
	}
}

func checkTruth(t *testing.T, m *Model, want netpolcases.Truth, port int, p corev1.Protocol) {
	t.Helper()
	var wrong []string
	for k, w := range want {
		from, to := strings.SplitN(k[0], "/", 2), strings.SplitN(k[1], "/", 2)
		v := m.Evaluate(Query{Src: PodEndpoint(from[0], from[1]), Dst: PodEndpoint(to[0], to[1]), Port: port, Protocol: p})
		if v.Allowed != w {
			wrong = append(wrong, fmt.Sprintf("%s → %s %d/%s: got %v want %v (%s)", k[0], k[1], port, p, v.Allowed, w, v.Reason))
		}
	}
	sort.Strings(wrong)
	for _, w := range wrong {
		t.Error(w)
	}
}

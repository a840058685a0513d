package deploy

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// use names the code that needs one permission: a file of the repository and a piece of
// code in it that makes the request (or builds the informer that lists and watches).
type use struct{ file, code string }

// permissions is every permission the manifest's roles grant, by role, and the code that
// uses it. The test fails on a granted permission that is not listed here (grant only what
// is used), on a listed one that is not granted, and on a use whose code is gone.
var permissions = map[string]map[string]use{
	"ClusterRole/sluice-controller": {
		"/nodes get":                               {"pkg/controller/hostsubnet/reconcile.go", "CoreV1().Nodes().Get("},
		"/nodes list":                              {"cmd/sluice-controller/run.go", "kubeInf.Core().V1().Nodes()"},
		"/nodes watch":                             {"cmd/sluice-controller/run.go", "kubeInf.Core().V1().Nodes()"},
		"/namespaces get":                          {"pkg/controller/netnamespace/reconcile.go", "CoreV1().Namespaces().Get("},
		"/namespaces list":                         {"cmd/sluice-controller/run.go", "kubeInf.Core().V1().Namespaces()"},
		"/namespaces watch":                        {"cmd/sluice-controller/run.go", "kubeInf.Core().V1().Namespaces()"},
		"/events create":                           {"cmd/sluice-controller/run.go", "EventSinkImpl"}, // a new event
		"/events patch":                            {"cmd/sluice-controller/run.go", "EventSinkImpl"}, // the count of a repeated one
		"sluice.dev/clusternetworks list":          {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().ClusterNetworks()"},
		"sluice.dev/clusternetworks watch":         {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().ClusterNetworks()"},
		"sluice.dev/clusternetworks/status update": {"pkg/controller/hostsubnet/status.go", "ClusterNetworks().UpdateStatus("},
		"sluice.dev/hostsubnets get":               {"pkg/controller/hostsubnet/reconcile.go", "HostSubnets().Get("},
		"sluice.dev/hostsubnets list":              {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().HostSubnets()"},
		"sluice.dev/hostsubnets watch":             {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().HostSubnets()"},
		"sluice.dev/hostsubnets create":            {"pkg/controller/hostsubnet/reconcile.go", "HostSubnets().Create("},
		"sluice.dev/hostsubnets update":            {"pkg/controller/hostsubnet/reconcile.go", "HostSubnets().Update("},
		"sluice.dev/hostsubnets delete":            {"pkg/controller/hostsubnet/reconcile.go", "HostSubnets().Delete("},
		"sluice.dev/netnamespaces get":             {"pkg/controller/netnamespace/reconcile.go", "NetNamespaces().Get("},
		"sluice.dev/netnamespaces list":            {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().NetNamespaces()"},
		"sluice.dev/netnamespaces watch":           {"cmd/sluice-controller/run.go", "sluiceInf.Sluice().V1alpha1().NetNamespaces()"},
		"sluice.dev/netnamespaces create":          {"pkg/controller/netnamespace/reconcile.go", "NetNamespaces().Create("},
		"sluice.dev/netnamespaces update":          {"pkg/controller/netnamespace/reconcile.go", "NetNamespaces().Update("},
		"sluice.dev/netnamespaces delete":          {"pkg/controller/netnamespace/reconcile.go", "NetNamespaces().Delete("},
		// client-go's LeaseLock creates the Lease, reads it, and updates it to renew or release.
		"coordination.k8s.io/leases create":                     {"cmd/sluice-controller/run.go", "resourcelock.LeaseLock"},
		"coordination.k8s.io/leases get [sluice-controller]":    {"cmd/sluice-controller/run.go", "resourcelock.LeaseLock"},
		"coordination.k8s.io/leases update [sluice-controller]": {"cmd/sluice-controller/run.go", "resourcelock.LeaseLock"},
	},
	"ClusterRole/sluice-agent": {
		"/nodes list":                             {"pkg/agent/proxy/runner.go", "nodes.Core().V1().Nodes()"}, // its own Node, by field selector
		"/nodes watch":                            {"pkg/agent/proxy/runner.go", "nodes.Core().V1().Nodes()"},
		"/pods list":                              {"pkg/agent/node/agent.go", "kf.Core().V1().Pods()"},
		"/pods watch":                             {"pkg/agent/node/agent.go", "kf.Core().V1().Pods()"},
		"/namespaces list":                        {"pkg/agent/node/agent.go", "kf.Core().V1().Namespaces()"},
		"/namespaces watch":                       {"pkg/agent/node/agent.go", "kf.Core().V1().Namespaces()"},
		"/services list":                          {"pkg/agent/proxy/runner.go", "f.Core().V1().Services()"},
		"/services watch":                         {"pkg/agent/proxy/runner.go", "f.Core().V1().Services()"},
		"/events create":                          {"cmd/sluice-agent/main.go", "EventSinkImpl"}, // SluiceAgentMissingPrivileges on the Node
		"/events patch":                           {"cmd/sluice-agent/main.go", "EventSinkImpl"},
		"discovery.k8s.io/endpointslices list":    {"pkg/agent/proxy/runner.go", "f.Discovery().V1().EndpointSlices()"},
		"discovery.k8s.io/endpointslices watch":   {"pkg/agent/proxy/runner.go", "f.Discovery().V1().EndpointSlices()"},
		"networking.k8s.io/networkpolicies list":  {"pkg/agent/node/agent.go", "kf.Networking().V1().NetworkPolicies()"},
		"networking.k8s.io/networkpolicies watch": {"pkg/agent/node/agent.go", "kf.Networking().V1().NetworkPolicies()"},
		"sluice.dev/clusternetworks list":         {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().ClusterNetworks()"},
		"sluice.dev/clusternetworks watch":        {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().ClusterNetworks()"},
		"sluice.dev/hostsubnets list":             {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().HostSubnets()"},
		"sluice.dev/hostsubnets watch":            {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().HostSubnets()"},
		"sluice.dev/netnamespaces list":           {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().NetNamespaces()"},
		"sluice.dev/netnamespaces watch":          {"pkg/agent/node/agent.go", "f.Sluice().V1alpha1().NetNamespaces()"},
	},
	"Role/sluice-agent": {
		"apps/daemonsets list":  {"pkg/agent/host/uninstall.go", "DaemonSets(w.Namespace).List("},
		"apps/daemonsets watch": {"pkg/agent/host/uninstall.go", "f.Apps().V1().DaemonSets()"},
	},
	"ClusterRole/sluice-pod-network-admin": {
		"/namespaces get":                {"cmd/sluicectl/podnetwork.go", "CoreV1().Namespaces().Get("},
		"sluice.dev/netnamespaces get":   {"cmd/sluicectl/podnetwork.go", "NetNamespaces().Get("},
		"sluice.dev/netnamespaces patch": {"cmd/sluicectl/podnetwork.go", "NetNamespaces().Patch("},
		"sluice.dev/clusternetworks get": {"cmd/sluicectl/podnetwork.go", "ClusterNetworks().Get("},
	},
}

func TestEveryPermissionIsUsed(t *testing.T) {
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string][]string{}
	for _, o := range objs {
		if o.Kind != "ClusterRole" && o.Kind != "Role" {
			continue
		}
		var role rbacv1.ClusterRole // a Role has the same rules
		if err := yaml.UnmarshalStrict(o.YAML, &role); err != nil {
			t.Fatalf("%s/%s: %v", o.Kind, o.Name, err)
		}
		key := o.Kind + "/" + o.Name
		for _, r := range role.Rules {
			names := ""
			if len(r.ResourceNames) > 0 {
				names = " [" + strings.Join(r.ResourceNames, ",") + "]"
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if g == "*" || res == "*" || v == "*" {
							t.Errorf("%s grants a wildcard (%s/%s %s)", key, g, res, v)
						}
						granted[key] = append(granted[key], g+"/"+res+" "+v+names)
					}
				}
			}
		}
	}
	if len(granted) != len(permissions) {
		t.Errorf("roles in the manifest: %v; the table names %d", keys(granted), len(permissions))
	}
	for role, perms := range granted {
		want, ok := permissions[role]
		if !ok {
			t.Errorf("%s is in the manifest but not in this test's table", role)
			continue
		}
		seen := map[string]bool{}
		for _, p := range perms {
			seen[p] = true
			if _, ok := want[p]; !ok {
				t.Errorf("%s grants %q, which no code is known to use: remove it, or name the code here", role, p)
			}
		}
		for p := range want {
			if !seen[p] {
				t.Errorf("%s does not grant %q, which %s uses", role, p, want[p].file)
			}
		}
	}
	for role, perms := range permissions {
		for p, u := range perms {
			b, err := os.ReadFile(filepath.Join("..", u.file))
			if err != nil {
				t.Errorf("%s %q: %v", role, p, err)
				continue
			}
			if !strings.Contains(string(b), u.code) {
				t.Errorf("%s %q: %s no longer contains %q; is the permission still used?", role, p, u.file, u.code)
			}
		}
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

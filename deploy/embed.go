// Package deploy holds Sluice's Kubernetes manifests — the CRDs (crds/) and RBAC (rbac/) —
// and embeds them so that programs (the lab, tests) install exactly what is in the repository.
package deploy

import (
	"embed"
	"io/fs"
	"path"
	"sort"
)

// The ClusterRoles of rbac/, for programs that bind their own identities to them.
const (
	ControllerClusterRole = "sluice-controller"
	AgentClusterRole      = "sluice-agent"
)

//go:embed crds/*.yaml
var crds embed.FS

//go:embed rbac/*.yaml
var rbac embed.FS

// CRDs returns the CustomResourceDefinitions, one YAML document each, by file name
// (sluice.dev_clusternetworks.yaml …).
func CRDs() map[string][]byte { return readDir(crds, "crds") }

// CRDFiles returns the CRDs' file names in lexical order.
func CRDFiles() []string { return names(crds, "crds") }

// RBAC returns the RBAC manifests (ServiceAccounts, ClusterRoles and ClusterRoleBindings of
// the controller and the agent), one multi-document YAML file each, in file-name order.
func RBAC() [][]byte {
	files := readDir(rbac, "rbac")
	var out [][]byte
	for _, n := range names(rbac, "rbac") {
		out = append(out, files[n])
	}
	return out
}

func readDir(fsys embed.FS, dir string) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range names(fsys, dir) {
		b, err := fsys.ReadFile(path.Join(dir, n))
		if err != nil {
			panic(err) // embedded at build time: cannot fail
		}
		out[n] = b
	}
	return out
}

func names(fsys embed.FS, dir string) []string {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		panic(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// Package deploy holds Sluice's Kubernetes manifests: the Helm chart (helm/sluice, with the
// CRDs in its crds/ directory) and the single-file manifest generated from it (sluice.yaml,
// `make manifests`). It embeds them so that programs (the lab, tests) install exactly what is
// in the repository.
package deploy

import (
	"bytes"
	"embed"
	"io/fs"
	"path"
	"sort"

	"sigs.k8s.io/yaml"
)

// The ClusterRoles of the chart, for programs that bind their own identities to them.
const (
	ControllerClusterRole = "sluice-controller"
	AgentClusterRole      = "sluice-agent"
	PodNetworkAdminRole   = "sluice-pod-network-admin"
)

//go:embed helm/sluice/crds/*.yaml
var crds embed.FS

//go:embed all:helm/sluice
var chart embed.FS

// Chart returns the Helm chart's files, rooted at the chart's directory (Chart.yaml,
// values.yaml, templates/…), for programs that install it (the lab).
func Chart() fs.FS {
	sub, err := fs.Sub(chart, "helm/sluice")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	return sub
}

// manifest is `helm template` of the chart with its defaults (plus the namespace).
//
//go:embed sluice.yaml
var manifest []byte

// Manifest returns deploy/sluice.yaml: every object of a default installation, for
// `kubectl apply -f`.
func Manifest() []byte { return manifest }

// CRDs returns the CustomResourceDefinitions, one YAML document each, by file name
// (sluice.dev_clusternetworks.yaml …).
func CRDs() map[string][]byte {
	out := map[string][]byte{}
	for _, n := range CRDFiles() {
		b, err := crds.ReadFile(path.Join("helm/sluice/crds", n))
		if err != nil {
			panic(err) // embedded at build time: cannot fail
		}
		out[n] = b
	}
	return out
}

// CRDFiles returns the CRDs' file names in lexical order.
func CRDFiles() []string {
	entries, err := fs.ReadDir(crds, "helm/sluice/crds")
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

// Object is one document of the manifest: its kind, name and YAML.
type Object struct {
	Kind, Namespace, Name string
	YAML                  []byte
}

// Objects splits the manifest into its documents, in order.
func Objects() ([]Object, error) {
	var out []Object
	for _, doc := range bytes.Split(manifest, []byte("\n---")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, err
		}
		if meta.Kind == "" {
			continue // comments only
		}
		out = append(out, Object{Kind: meta.Kind, Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name, YAML: bytes.TrimSpace(doc)})
	}
	return out, nil
}

// ClusterRoles returns the manifest's ClusterRoles (the controller's, the agent's and the
// pod-network administrators'), for programs that bind their own identities to them.
func ClusterRoles() [][]byte {
	objs, err := Objects()
	if err != nil {
		panic(err) // generated and tested: cannot fail
	}
	var out [][]byte
	for _, o := range objs {
		if o.Kind == "ClusterRole" {
			out = append(out, o.YAML)
		}
	}
	return out
}

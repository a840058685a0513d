package plan

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Table renders a result for people: each answer with its value, the binding term, the
// workings with this plan's numbers and the formula; then conflicts, storage and notes.
func Table(r Result) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	line := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }

	line("ANSWER", "VALUE", "BINDING", "WORKINGS / FORMULA")
	count := func(name string, c Count) {
		line(name, fmtCount(c.Value), c.Binding, c.Workings)
		for _, t := range c.Terms {
			if t.Workings != "" && !strings.Contains(c.Workings, t.Workings) {
				line("", "", "", "  "+t.Name+": "+t.Workings)
			}
		}
		line("", "", "", "  formula: "+c.Formula)
	}
	ratio := func(name string, q Ratio) {
		line(name, fmtFloat(q.Value), "", q.Workings)
		line("", "", "", "  formula: "+q.Formula)
	}
	count("podsPerNode", r.PodsPerNode)
	count("maxNodes", r.MaxNodes)
	count("maxClusterPods", r.MaxClusterPods)
	ratio("nodesByCPU", r.NodesByCPU)
	ratio("nodesByMemory", r.NodesByMemory)
	count("nodesNeeded", r.NodesNeeded)
	line()

	line("CONFLICTS")
	if len(r.Conflicts) == 0 {
		line("none")
	}
	for _, c := range r.Conflicts {
		line(c.String())
	}
	line()

	line("STORAGE", "SIZE", "PER", "WORKINGS / FORMULA")
	s := r.Storage
	for _, row := range []struct {
		name string
		size Size
	}{
		{"etcd", s.Etcd},
		{"containerRuntime", s.ContainerRuntime},
		{"nodeLogs", s.NodeLogs},
		{"buildRegistry", s.BuildRegistry},
		{"baseImageRegistry", s.BaseImageRegistry},
		{"releaseRegistry", s.ReleaseRegistry},
		{"logging", s.Logging},
		{"prometheus", s.Prometheus},
		{"alertmanager", s.Alertmanager},
	} {
		line(row.name, fmtBytes(row.size.Bytes), row.size.Per, row.size.Workings)
		for _, p := range row.size.Parts {
			line("", "", "", "  "+p.Name+": "+p.Workings)
		}
		line("", "", "", "  formula: "+row.size.Formula)
	}
	tw.Flush()

	if len(r.Notes) > 0 {
		b.WriteString("\nNOTES\n")
		for _, n := range r.Notes {
			b.WriteString(n + "\n")
		}
	}
	return b.String()
}

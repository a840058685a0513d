package docgen

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/bench/internal/stats"
)

// goBenchLine is one result line of `go test -bench`: name-GOMAXPROCS, iterations, ns/op
// and further "value unit" pairs.
var goBenchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)

// IsGoBench says whether b is the output of `go test -bench` rather than a results file.
func IsGoBench(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		if goBenchLine.MatchString(l) {
			return true
		}
	}
	return false
}

// ParseGoBench reads `go test -bench -count=N` output (after "# " header lines naming the
// command, commit and machine) into a report: one row per benchmark with the median
// (min–max) of its runs' ms/op and its other metrics' medians. When anchor names a
// sub-benchmark variant (the last element of a name, e.g. "scratch"), each row of another
// variant with the same parent gets the ratio of the anchor's median to its own.
func ParseGoBench(b []byte, anchor string) (Results, error) {
	var r Results
	type bench struct {
		ms    []float64
		extra map[string][]float64
		units []string
	}
	benches := map[string]*bench{}
	var order []string
	for _, l := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(l, "# "); ok && len(order) == 0 {
			r.Header = append(r.Header, h)
			continue
		}
		m := goBenchLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return r, fmt.Errorf("%q: %w", l, err)
		}
		x := benches[m[1]]
		if x == nil {
			x = &bench{extra: map[string][]float64{}}
			benches[m[1]] = x
			order = append(order, m[1])
		}
		x.ms = append(x.ms, ns/1e6)
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			if _, seen := x.extra[f[i+1]]; !seen {
				x.units = append(x.units, f[i+1])
			}
			x.extra[f[i+1]] = append(x.extra[f[i+1]], v)
		}
	}
	if len(order) == 0 {
		return r, fmt.Errorf("no benchmark result lines")
	}
	if len(r.Header) == 0 {
		return r, fmt.Errorf("no header (command, commit, machine) at the top")
	}
	median := stats.Median[float64]
	var t strings.Builder
	t.WriteString("| benchmark | runs | ms/op median (min–max) |")
	if anchor != "" {
		fmt.Fprintf(&t, " %s / this |", anchor)
	}
	t.WriteString(" other metrics (median) |\n|---|---|---|")
	if anchor != "" {
		t.WriteString("---|")
	}
	t.WriteString("---|\n")
	for _, name := range order {
		x := benches[name]
		med, lo, hi := stats.Spread(x.ms)
		fmt.Fprintf(&t, "| %s | %d | %s (%s–%s) |", strings.TrimPrefix(name, "Benchmark"), len(x.ms), num(med), num(lo), num(hi))
		if anchor != "" {
			ratio := "—"
			if i := strings.LastIndex(name, "/"); i >= 0 && name[i+1:] != anchor {
				if a := benches[name[:i+1]+anchor]; a != nil {
					ratio = fmt.Sprintf("**%.1f×**", median(a.ms)/median(x.ms))
				}
			}
			fmt.Fprintf(&t, " %s |", ratio)
		}
		var extra []string
		for _, u := range x.units {
			extra = append(extra, fmt.Sprintf("%s %s", num(median(x.extra[u])), u))
		}
		fmt.Fprintf(&t, " %s |\n", strings.Join(extra, ", "))
	}
	r.Report = t.String()
	return r, nil
}

// num prints a figure with three significant digits at most (no exponent).
func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

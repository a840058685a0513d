// Package results is where a benchmark's raw output goes and how its
// summary is printed: one file per run, bench/results/<bench>-<UTC
// timestamp>-<short commit>.txt, holding the commit, the machine, the
// command line, every sample as it was taken, and the report (Markdown)
// between two marker lines that bench/docgen copies into
// docs/performance.md. Medians are printed with their spread over repeats,
// "median (min–max)".
package results

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/stats"
)

// The report's marker lines in a results file.
const (
	ReportBegin = "<!-- report begin -->"
	ReportEnd   = "<!-- report end -->"
)

// File is one run's raw output.
type File struct {
	Path   string
	Commit string // short commit, "-dirty" when tracked files differ from it
	f      *os.File
	// Log goes to stderr and the file: progress and raw samples.
	Log io.Writer
}

// Open creates bench/results/<bench>-<UTC timestamp>-<commit>.txt under the
// source tree root and writes its header: the commit, the machine and the
// command line.
func Open(root, bench string) (*File, error) {
	commit := Commit(root)
	dir := filepath.Join(root, "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.txt", bench, time.Now().UTC().Format("20060102T150405Z"), commit))
	f, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	r := &File{Path: p, Commit: commit, f: f, Log: io.MultiWriter(os.Stderr, f)}
	hostname, _ := os.Hostname()
	fmt.Fprintf(f, "# %s at commit %s, %s UTC\n", bench, commit, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(f, "# machine: %s, %d CPUs (%s), kernel %s, %s\n", hostname, runtime.NumCPU(), CPUModel(), host.Kernel(), runtime.Version())
	fmt.Fprintf(f, "# command: %s\n", strings.Join(os.Args, " "))
	return r, nil
}

// Logf writes a time-stamped line to stderr and the file.
func (r *File) Logf(format string, a ...any) {
	fmt.Fprintf(r.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// Sample records one raw measurement line ("sample KEY=VALUE …") in the file
// only.
func (r *File) Sample(format string, a ...any) {
	fmt.Fprintf(r.f, "sample "+format+"\n", a...)
}

// Raw writes a block of raw output (e.g. an iperf3 JSON report) to the file
// only, between lines naming it.
func (r *File) Raw(what string, b []byte) {
	fmt.Fprintf(r.f, "raw begin %s\n%s\nraw end %s\n", what, strings.TrimSpace(string(b)), what)
}

// Report writes the Markdown report to stdout and, between the marker
// lines, to the file.
func (r *File) Report(md string) {
	fmt.Print(md)
	fmt.Fprintf(r.f, "%s\n%s%s\n", ReportBegin, md, ReportEnd)
}

// Close closes the file.
func (r *File) Close() error { return r.f.Close() }

// Commit is the source tree's short commit, with "-dirty" when tracked files
// differ from it; "unknown" without git.
func Commit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if dirty, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); len(dirty) > 0 {
		rev += "-dirty"
	}
	return rev
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// Spread formats median (min–max) of the values with the given verb
// (e.g. "%.1f"); with one value, just that value.
func Spread(format string, v []float64) string {
	med, lo, hi := stats.Spread(v)
	if len(v) <= 1 {
		return fmt.Sprintf(format, med)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", med, lo, hi)
}

// Order is the order of a and b in repeat r (0-based): a first in even
// repeats, b first in odd ones, so neither always runs first.
func Order[T any](r int, a, b T) []T {
	if r%2 == 0 {
		return []T{a, b}
	}
	return []T{b, a}
}

// Rotate is vs in repeat r: forward in even repeats, reversed in odd ones.
func Rotate[T any](r int, vs []T) []T {
	out := make([]T, len(vs))
	for i := range vs {
		if r%2 == 0 {
			out[i] = vs[i]
		} else {
			out[i] = vs[len(vs)-1-i]
		}
	}
	return out
}

// Ratio is a/b, 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

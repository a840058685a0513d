// Command docgen rewrites a generated section of docs/performance.md from a
// benchmark's results file (see bench/internal/docgen):
//
//	go run ./bench/docgen [--doc docs/performance.md] [--anchor VARIANT] SECTION bench/results/FILE.txt
//
// FILE is a results file (bench/internal/results) or the output of `go test -bench
// -count=N` after "# " lines naming the command, commit and machine; for the latter a
// table of medians is generated, with ratios to the sub-benchmark variant --anchor.
//
// SECTION names the markers <!-- BEGIN GENERATED SECTION --> and
// <!-- END GENERATED SECTION --> in the document.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sluice-net/sluice/bench/internal/docgen"
)

func main() {
	doc := flag.String("doc", "docs/performance.md", "the document to rewrite")
	anchor := flag.String("anchor", "", "Go benchmark output only: the sub-benchmark variant the others are compared with (e.g. scratch)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: docgen [--doc FILE] SECTION RESULTS-FILE")
		os.Exit(2)
	}
	section, file := flag.Arg(0), flag.Arg(1)
	if err := run(*doc, section, file, *anchor); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func run(doc, section, file, anchor string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	parse := docgen.Parse
	cmd := fmt.Sprintf("go run ./bench/docgen %s %s", section, file)
	if docgen.IsGoBench(b) {
		parse = func(b []byte) (docgen.Results, error) { return docgen.ParseGoBench(b, anchor) }
		if anchor != "" {
			cmd = fmt.Sprintf("go run ./bench/docgen --anchor %s %s %s", anchor, section, file)
		}
	} else if anchor != "" {
		return fmt.Errorf("--anchor %q: only for Go benchmark output, and %s is a results file", anchor, file)
	}
	r, err := parse(b)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	d, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	out, err := docgen.Replace(d, section, docgen.Section(file, cmd, r))
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	return os.WriteFile(doc, out, 0o644)
}

// Command docgen rewrites a generated section of docs/performance.md from a
// benchmark's results file (see bench/internal/docgen):
//
//	go run ./bench/docgen [--doc docs/performance.md] SECTION bench/results/FILE.txt
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
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: docgen [--doc FILE] SECTION RESULTS-FILE")
		os.Exit(2)
	}
	section, file := flag.Arg(0), flag.Arg(1)
	if err := run(*doc, section, file); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func run(doc, section, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	r, err := docgen.Parse(b)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	d, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	out, err := docgen.Replace(d, section, docgen.Section(file, fmt.Sprintf("go run ./bench/docgen %s %s", section, file), r))
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	return os.WriteFile(doc, out, 0o644)
}

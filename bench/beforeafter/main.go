// Command beforeafter summarises interleaved before/after benchmark runs:
// given the Markdown a benchmark printed once per run, each run under a
// heading "### run N: VERSION (...)", it finds the table rows that start
// with the given prefix and prints, for each version, the median (min–max)
// of every number in every cell of those rows, as a Markdown table. The
// figures in docs/performance.md for before/after comparisons come from it.
//
//	go run ./bench/beforeafter FILE '| sluice-cni | 1 |' [more row prefixes]
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/bench/internal/stats"
)

var (
	runHeading = regexp.MustCompile(`^### run \d+: (\S+)`)
	number     = regexp.MustCompile(`-?\d+(\.\d+)?`)
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: beforeafter FILE ROW-PREFIX...")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "beforeafter:", err)
		os.Exit(1)
	}
}

// samples[prefix][version][cell][i] are the i-th numbers of a cell, one per run.
type samples map[string]map[string][][][]float64

func run(file string, prefixes []string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	s := samples{}
	var versions []string
	version := ""
	header := map[string][]string{}
	var lastHeader []string
	prev := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "|---") { // the line above is a table's header
			lastHeader = split(prev)
		}
		prev = line
		if m := runHeading.FindStringSubmatch(line); m != nil {
			version = m[1]
			if !slices.Contains(versions, version) {
				versions = append(versions, version)
			}
			continue
		}
		if strings.HasPrefix(line, "|") && !strings.HasPrefix(line, "|---") {
			cells := split(line)
			for _, p := range prefixes {
				if !strings.HasPrefix(line, p) || version == "" {
					continue
				}
				if header[p] == nil {
					header[p] = lastHeader
				}
				add(s, p, version, cells[len(split(p)):])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, p := range prefixes {
		if s[p] == nil {
			return fmt.Errorf("no row starts with %q under a \"### run N: VERSION\" heading", p)
		}
		h := header[p]
		fmt.Printf("%s\n\n| version | runs |", strings.TrimSpace(p))
		n := len(split(p))
		for i := range s[p][versions[0]] {
			name := fmt.Sprintf("column %d", n+i+1)
			if n+i < len(h) {
				name = h[n+i]
			}
			fmt.Printf(" %s |", name)
		}
		fmt.Print("\n|---|---|" + strings.Repeat("---|", len(s[p][versions[0]])) + "\n")
		for _, v := range versions {
			cells := s[p][v]
			if cells == nil {
				continue
			}
			fmt.Printf("| %s | %d |", v, len(cells[0][0]))
			for _, c := range cells {
				var parts []string
				for _, xs := range c {
					med, lo, hi := stats.Spread(xs)
					parts = append(parts, fmt.Sprintf("%s (%s–%s)", fmtNum(med), fmtNum(lo), fmtNum(hi)))
				}
				fmt.Printf(" %s |", strings.Join(parts, " / "))
			}
			fmt.Println()
		}
		fmt.Println()
	}
	return nil
}

func split(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(row, "|")
	row = strings.TrimSuffix(row, "|")
	var out []string
	for _, c := range strings.Split(row, "|") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

func add(s samples, prefix, version string, cells []string) {
	if s[prefix] == nil {
		s[prefix] = map[string][][][]float64{}
	}
	cur := s[prefix][version]
	for ci, c := range cells {
		nums := number.FindAllString(c, -1)
		if ci >= len(cur) {
			cur = append(cur, nil)
		}
		for ni, n := range nums {
			x, _ := strconv.ParseFloat(n, 64)
			if ni >= len(cur[ci]) {
				cur[ci] = append(cur[ci], nil)
			}
			cur[ci][ni] = append(cur[ci][ni], x)
		}
	}
	s[prefix][version] = cur
}

func fmtNum(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

#!/bin/bash
# Interleaved before/after runs of one benchmark: the baseline build's copy of it (BASE/bin,
# built from an earlier commit in a worktree, with its own sluice-lab and agent beside it) and
# the current tree's (bin/), in the order given by ORDER (e.g. "baseline current current
# baseline"). Each run's Markdown goes to OUT.md under "### run N: VERSION (command)", its
# stderr to OUT.txt; summarise with `go run ./bench/beforeafter OUT.md 'ROW PREFIX'`.
#
#   BASE=/tmp/base ORDER="current baseline baseline current" \
#     bench/beforeafter/interleave.sh bench-netpol bench/results/NAME --sizes 2500x250
set -u
bench=$1 out=$2
shift 2
base=${BASE:-/tmp/base}
i=0
for v in ${ORDER:-baseline current current baseline baseline current}; do
  i=$((i+1))
  if [ "$v" = baseline ]; then b=$base/bin/$bench; else b=bin/$bench; fi
  echo "### run $i: $v ($b $*)" >> "$out.md"
  "$b" "$@" >> "$out.md" 2>> "$out.txt"
  echo "rc=$? ($v run $i)" >> "$out.txt"
done

// Package stats holds the order statistics the benchmarks report.
//
// Two percentile definitions coexist on purpose: bench/podnet and
// bench/proxy have always reported the nearest-rank percentile, bench/netpol
// and bench/proxyscale the sample at floor((n-1)·q). The published figures
// in docs/performance were computed that way; choosing one definition for
// all is a change to what is measured (issue 13), not a clean-up.
package stats

import (
	"cmp"
	"slices"
	"time"
)

// NearestRank is the p-th percentile (p in 0…100) by the nearest-rank
// method: the smallest sample with at least p % of the samples at or below
// it. With 20 samples p99 is the maximum. No samples give 0.
func NearestRank(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := sorted(d)
	i := (len(s)*p + 99) / 100 // ceil(n·p/100), the 1-based rank
	return s[max(0, min(len(s)-1, i-1))]
}

// FloorQuantile is the q-quantile (q in 0…1) as the sample at index
// floor((n-1)·q) of the sorted samples, without interpolation: with 20
// samples p99 is the maximum but one. No samples give 0.
func FloorQuantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return sorted(d)[int(float64(len(d)-1)*q)]
}

// Median is the upper median, the sample at index n/2 of the sorted samples
// (for an even count the larger of the middle two). No samples give zero.
func Median[T cmp.Ordered](v []T) T {
	med, _, _ := Spread(v)
	return med
}

// Spread is the upper median, the minimum and the maximum. No samples give
// zeros.
func Spread[T cmp.Ordered](v []T) (med, lo, hi T) {
	if len(v) == 0 {
		return
	}
	s := sorted(v)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// Mean is the arithmetic mean, truncated to the nanosecond. No samples
// give 0.
func Mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// Millis is d in milliseconds, truncated to the microsecond, for tables
// printed with %.1f–%.3f.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sorted copies: the callers' samples stay in the order they were taken.
func sorted[T cmp.Ordered](v []T) []T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}

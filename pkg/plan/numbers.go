package plan

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// The arithmetic runs on exact rationals so that a result such as 325/8 = 40.625 is not
// nudged across an integer by binary rounding before it is rounded up (ceil(40.000000001)
// would buy a node too many).

// rat returns the decimal the user wrote for f (the shortest representation that reads back
// as f), as an exact rational: 0.1 becomes 1/10, not the nearest binary fraction.
func rat(f float64) *big.Rat {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
	if !ok {
		// Unreachable for finite f; Validate rejects NaN and infinities.
		return new(big.Rat)
	}
	return r
}

func ratInt(n int64) *big.Rat { return new(big.Rat).SetInt64(n) }

func mul(xs ...*big.Rat) *big.Rat {
	r := big.NewRat(1, 1)
	for _, x := range xs {
		r.Mul(r, x)
	}
	return r
}

func quo(a, b *big.Rat) *big.Rat { return new(big.Rat).Quo(a, b) }

func add(a, b *big.Rat) *big.Rat { return new(big.Rat).Add(a, b) }

// onePlusPercent is 1 + p/100.
func onePlusPercent(p float64) *big.Rat {
	return add(big.NewRat(1, 1), quo(rat(p), ratInt(100)))
}

// ceilRat rounds r up to an integer, saturating at math.MaxInt64.
func ceilRat(r *big.Rat) int64 {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		if q.Sign() < 0 {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return q.Int64()
}

// floorRat rounds r down to an integer, saturating at math.MaxInt64.
func floorRat(r *big.Rat) int64 {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() < 0 {
		q.Sub(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		if q.Sign() < 0 {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return q.Int64()
}

func ratFloat(r *big.Rat) float64 {
	f, _ := r.Float64()
	return f
}

// fmtRat prints r exactly when it has at most six decimals, else rounded to six.
func fmtRat(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	s := r.FloatString(6)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// satPow2 is 2^n, saturating at math.MaxInt64 (IPv6 networks can hold more host subnets
// than an int64 counts; every limit that is then compared with it is far smaller).
func satPow2(n int) int64 {
	if n >= 63 {
		return math.MaxInt64
	}
	return int64(1) << n
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// fmtCount prints a count, marking a saturated one.
func fmtCount(n int64) string {
	if n == math.MaxInt64 {
		return "≥ 2^63"
	}
	return strconv.FormatInt(n, 10)
}

// fmtPow2 prints "2^n" for the workings.
func fmtPow2(n int) string { return fmt.Sprintf("2^%d", n) }

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40
)

// fmtBytes prints a size in the largest binary unit that keeps it at least 1, with two
// decimals (sizes are capacity to provision, so the table rounds them up).
func fmtBytes(b int64) string {
	units := []struct {
		size int64
		name string
	}{{tib, "TiB"}, {gib, "GiB"}, {mib, "MiB"}, {kib, "KiB"}}
	for _, u := range units {
		if b >= u.size {
			v := math.Ceil(float64(b)/float64(u.size)*100) / 100
			return strconv.FormatFloat(v, 'f', 2, 64) + " " + u.name
		}
	}
	return strconv.FormatInt(b, 10) + " B"
}

// gibOf is b in GiB, rounded up to two decimals.
func gibOf(b int64) float64 {
	return math.Ceil(float64(b)/float64(gib)*100) / 100
}

package stats

import (
	"testing"
	"time"
)

// ms builds samples of whole milliseconds, deliberately out of order.
func ms(v ...int) []time.Duration {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x) * time.Millisecond
	}
	return d
}

func TestNearestRank(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 … 1
	}
	for _, tc := range []struct {
		name string
		d    []time.Duration
		p    int
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", ms(7), 50, 7 * time.Millisecond},
		{"one sample p99", ms(7), 99, 7 * time.Millisecond},
		{"one sample p0", ms(7), 0, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(9, 3), 50, 3 * time.Millisecond},
		{"two samples p99 is the upper", ms(9, 3), 99, 9 * time.Millisecond},
		{"odd count p50", ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{"p100 is the maximum", ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{"20 samples p99 is the maximum", ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 99, 20 * time.Millisecond},
		{"100 samples p99", ms(hundred...), 99, 99 * time.Millisecond},
		{"100 samples p50", ms(hundred...), 50, 50 * time.Millisecond},
	} {
		if got := NearestRank(tc.d, tc.p); got != tc.want {
			t.Errorf("%s: NearestRank(…, %d) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestFloorQuantile(t *testing.T) {
	twenty := ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
	for _, tc := range []struct {
		name string
		d    []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, .5, 0},
		{"one sample p50", ms(7), .5, 7 * time.Millisecond},
		{"one sample p99", ms(7), .99, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(9, 3), .5, 3 * time.Millisecond},
		{"two samples p99 is the lower", ms(9, 3), .99, 3 * time.Millisecond},
		{"odd count p50", ms(5, 1, 4, 2, 3), .5, 3 * time.Millisecond},
		{"q 1 is the maximum", ms(5, 1, 4, 2, 3), 1, 5 * time.Millisecond},
		{"20 samples p50", twenty, .5, 10 * time.Millisecond},
		{"20 samples p99 is the maximum but one", twenty, .99, 19 * time.Millisecond},
	} {
		if got := FloorQuantile(tc.d, tc.q); got != tc.want {
			t.Errorf("%s: FloorQuantile(…, %v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func TestMedianAndSpread(t *testing.T) {
	if got := Median([]float64{}); got != 0 {
		t.Errorf("Median(empty) = %v, want 0", got)
	}
	if got := Median([]float64{2.5}); got != 2.5 {
		t.Errorf("Median(one) = %v, want 2.5", got)
	}
	if got := Median([]float64{4, 1, 3}); got != 3 {
		t.Errorf("Median(odd) = %v, want 3", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 3 {
		t.Errorf("Median(even) = %v, want the upper middle 3", got)
	}
	med, lo, hi := Spread(ms(30, 10, 20))
	if med != 20*time.Millisecond || lo != 10*time.Millisecond || hi != 30*time.Millisecond {
		t.Errorf("Spread = %v %v %v, want 20ms 10ms 30ms", med, lo, hi)
	}
	if med, lo, hi := Spread(ms(8)); med != lo || lo != hi || hi != 8*time.Millisecond {
		t.Errorf("Spread(one) = %v %v %v, want 8ms three times", med, lo, hi)
	}
	if med, lo, hi := Spread[time.Duration](nil); med != 0 || lo != 0 || hi != 0 {
		t.Errorf("Spread(empty) = %v %v %v, want zeros", med, lo, hi)
	}
}

func TestInputUntouched(t *testing.T) {
	d := ms(3, 1, 2)
	NearestRank(d, 50)
	FloorQuantile(d, .5)
	Spread(d)
	if d[0] != 3*time.Millisecond || d[1] != time.Millisecond || d[2] != 2*time.Millisecond {
		t.Errorf("samples reordered: %v", d)
	}
}

func TestMeanAndMillis(t *testing.T) {
	if got := Mean(nil); got != 0 {
		t.Errorf("Mean(empty) = %v, want 0", got)
	}
	if got := Mean(ms(1, 2)); got != 1500*time.Microsecond {
		t.Errorf("Mean = %v, want 1.5ms", got)
	}
	if got := Mean([]time.Duration{1, 2}); got != 1 {
		t.Errorf("Mean truncates: got %v, want 1ns", got)
	}
	if got := Millis(1234567 * time.Nanosecond); got != 1.234 {
		t.Errorf("Millis = %v, want 1.234", got)
	}
}

package apiclient

import (
	"math"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		qps   float64
		burst int
		want  string // "" for valid; else every part must be in the error
	}{
		{DefaultQPS, DefaultBurst, ""},
		{5, 10, ""},
		{0.5, 1, ""},
		{0, 10, "--kube-api-qps 0: want a positive number"},
		{-1, 10, "--kube-api-qps -1: want a positive number"},
		{math.NaN(), 10, "--kube-api-qps NaN"},
		{math.Inf(1), 10, "--kube-api-qps +Inf"},
		{100, 0, "--kube-api-burst 0: want at least 1"},
		{100, 50, "--kube-api-burst 50 is less than --kube-api-qps 100"},
	} {
		err := Check(tc.qps, tc.burst)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Check(%v, %d) = %v, want nil", tc.qps, tc.burst, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Check(%v, %d) = %v, want an error with %q", tc.qps, tc.burst, err, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	base := &rest.Config{Host: "https://api", QPS: 5, Burst: 10}
	c := Config(base, 300, 600, "sluice-controller/x")
	if c.QPS != 300 || c.Burst != 600 || c.UserAgent != "sluice-controller/x" || c.Host != "https://api" {
		t.Errorf("Config: %+v", c)
	}
	if base.QPS != 5 || base.UserAgent != "" {
		t.Errorf("Config changed its input: %+v", base)
	}
}

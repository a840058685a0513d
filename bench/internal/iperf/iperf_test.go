package iperf

import "testing"

func TestParseGbps(t *testing.T) {
	report := `{"start":{},"end":{"sum_sent":{"bits_per_second":9.9e9},"sum_received":{"bits_per_second":2.5e10}}}`
	got, err := ParseGbps([]byte(report))
	if err != nil || got != 25 {
		t.Errorf("ParseGbps = %v, %v; want 25 (the received rate)", got, err)
	}
	if _, err := ParseGbps([]byte("iperf3: error - unable to connect")); err == nil {
		t.Errorf("ParseGbps of a non-JSON report: want an error")
	}
}

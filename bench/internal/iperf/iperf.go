// Package iperf runs one iperf3 TCP throughput measurement between two
// network namespaces and reads its JSON report.
package iperf

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"time"
)

// Gbps starts server (iperf3 -s -1, wrapped to run in the server's
// namespace), gives it 300 ms to listen, runs client (iperf3 -c … -J in the
// client's namespace) and returns the received rate in Gbit/s. what names
// the client run in its error.
func Gbps(server, client *exec.Cmd, what string) (float64, error) {
	g, _, err := GbpsRaw(server, client, what)
	return g, err
}

// GbpsRaw is Gbps that also returns the client's JSON report, for a
// benchmark's raw output.
func GbpsRaw(server, client *exec.Cmd, what string) (float64, []byte, error) {
	if err := server.Start(); err != nil {
		return 0, nil, err
	}
	defer server.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	out, err := client.Output()
	if err != nil {
		return 0, out, fmt.Errorf("%s: %w: %s", what, err, out)
	}
	g, err := ParseGbps(out)
	if err != nil {
		return 0, out, err
	}
	server.Wait() // -1: the server exits after its one client
	return g, out, nil
}

// ParseGbps reads end.sum_received.bits_per_second of an iperf3 -J report,
// in Gbit/s: what the receiver got, not what the sender pushed.
func ParseGbps(report []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(report, &r); err != nil {
		return 0, err
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// This file holds the probe every measurement uses and the
// connection-rate measurement built on it.

package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// probe opens one TCP connection, reads the test server's line and resets
// the connection (no TIME_WAIT left on either side); it returns the server's name.
func probe(to netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", to.String(), timeout)
	if err != nil {
		return "", err
	}
	tc := c.(*net.TCPConn)
	defer func() {
		tc.SetLinger(0)
		tc.Close()
	}()
	tc.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return "", err
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", fmt.Errorf("empty reply")
	}
	return f[0], nil
}

// connStats is one connection-rate run.
type connStats struct {
	rate  float64 // answered connections per second of wall time
	clean float64 // the same, not counting the time spent in failed attempts
	lat   []time.Duration
	errs  int
}

// connRate opens connections one after another for --conn-time and returns
// the rate of answered ones and each one's connect+reply latency.
func (b *bench) connRate(to netip.AddrPort) connStats {
	var lat []time.Duration
	var lost time.Duration
	errs := 0
	kinds := map[string]int{}
	start := time.Now()
	end := start.Add(*connSecsF)
	for time.Now().Before(end) && b.ctx.Err() == nil {
		t := time.Now()
		if _, err := probe(to, *connTimeoutF); err != nil {
			lost += time.Since(t)
			errs++
			kinds[err.Error()[max(0, len(err.Error())-60):]]++
			continue
		}
		lat = append(lat, time.Since(t))
	}
	if errs > 0 {
		logf("  %d of %d connections to %s failed: %v", errs, errs+len(lat), to, kinds)
	}
	el := time.Since(start)
	return connStats{rate: float64(len(lat)) / el.Seconds(), clean: float64(len(lat)) / (el - lost).Seconds(), lat: lat, errs: errs}
}

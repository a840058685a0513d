package testserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestServeAndProbe(t *testing.T) {
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Name: "pod-a", Ports: Ports{TCP: []int{port}, UDP: []int{port}, SCTP: []int{port}}}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String()
	for _, proto := range []string{"tcp", "udp"} {
		var line string
		var err error
		for range 50 { // the server may still be starting
			if line, err = Probe(context.Background(), proto, addr, time.Second); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		name, client, err := ParseReply(line)
		if err != nil || name != "pod-a" || client.Addr().String() != "127.0.0.1" || client.Port() == 0 {
			t.Errorf("%s reply %q: name %q client %s err %v", proto, line, name, client, err)
		}
	}
	// SCTP either answers or says plainly that the kernel lacks it.
	line, err := Probe(context.Background(), "sctp", addr, time.Second)
	if err != nil && !errors.Is(err, ErrSCTPUnsupported) {
		t.Errorf("sctp: %v", err)
	}
	if err == nil && !strings.HasPrefix(line, "pod-a 127.0.0.1:") {
		t.Errorf("sctp reply %q", line)
	}
}

func TestProbeFailures(t *testing.T) {
	port := freePort(t) // nothing listens
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String()
	if _, err := Probe(context.Background(), "tcp", addr, 500*time.Millisecond); err == nil {
		t.Error("tcp probe of a closed port succeeded")
	}
	if _, err := Probe(context.Background(), "udp", addr, 300*time.Millisecond); err == nil {
		t.Error("udp probe of a closed port succeeded")
	}
	if _, err := Probe(context.Background(), "icmp", addr, time.Second); err == nil || !strings.Contains(err.Error(), `"icmp"`) {
		t.Errorf("unknown protocol: %v", err)
	}
}

func TestParseReply(t *testing.T) {
	for _, bad := range []string{"", "name", "name 1.2.3.4", "a b c"} {
		if _, _, err := ParseReply(bad); err == nil {
			t.Errorf("ParseReply(%q) accepted", bad)
		}
	}
	name, ap, err := ParseReply("x [fd00::1]:80")
	if err != nil || name != "x" || ap.Port() != 80 {
		t.Errorf("IPv6 reply: %q %s %v", name, ap, err)
	}
}

// Package testserver is the lab's stand-in for a pod's containers: a server
// that answers every TCP connection, UDP datagram and SCTP association with a
// single line naming itself and the client as it saw it, and the matching
// probe. The line is the lab's contract ("NAME CLIENT_IP:PORT"), so tests see
// which backend answered and whether the source address was kept or NATed.
package testserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Ports lists what one server listens on, per protocol.
type Ports struct {
	TCP, UDP, SCTP []int
}

// Empty reports whether no port is listed.
func (p Ports) Empty() bool { return len(p.TCP)+len(p.UDP)+len(p.SCTP) == 0 }

// Reply is the line a server sends for one connection or datagram.
func Reply(name string, client netip.AddrPort) string {
	return fmt.Sprintf("%s %s\n", name, client)
}

// ParseReply splits a reply line into the server name and client address.
func ParseReply(line string) (name string, client netip.AddrPort, err error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", netip.AddrPort{}, fmt.Errorf("malformed reply %q: want \"NAME CLIENT_IP:PORT\"", line)
	}
	client, err = netip.ParseAddrPort(f[1])
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("malformed reply %q: %w", line, err)
	}
	return f[0], client, nil
}

// Server serves Ports until its context ends.
type Server struct {
	Name  string
	Ports Ports
}

// Run listens on every port and serves until ctx is cancelled, logging to
// klog.FromContext(ctx). A port that cannot be opened is an error, except SCTP
// on a kernel built without it, which is logged (the lab's kernel may lack
// SCTP; probes then fail, loudly).
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	var wg sync.WaitGroup
	for _, p := range s.Ports.TCP {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("tcp port %d: %w", p, err)
		}
		closers = append(closers, func() { l.Close() })
		wg.Go(func() { s.serveTCP(l) })
	}
	for _, p := range s.Ports.UDP {
		c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("udp port %d: %w", p, err)
		}
		closers = append(closers, func() { c.Close() })
		wg.Go(func() { s.serveUDP(c) })
	}
	for _, p := range s.Ports.SCTP {
		l, err := listenSCTP(p)
		if errors.Is(err, ErrSCTPUnsupported) {
			logger.Error(err, "SCTP port not served", "port", p)
			continue
		}
		if err != nil {
			return fmt.Errorf("sctp port %d: %w", p, err)
		}
		closers = append(closers, l.close)
		wg.Go(func() { s.serveSCTP(l) })
	}
	logger.Info("Serving", "name", s.Name, "tcp", s.Ports.TCP, "udp", s.Ports.UDP, "sctp", s.Ports.SCTP)
	<-ctx.Done()
	for _, c := range closers {
		c()
	}
	closers = nil
	wg.Wait()
	return nil
}

func (s *Server) serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			c.Write([]byte(Reply(s.Name, unmap(ap))))
		}()
	}
}

func (s *Server) serveUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		ap, _ := netip.ParseAddrPort(from.String())
		c.WriteTo([]byte(Reply(s.Name, unmap(ap))), from)
	}
}

func (s *Server) serveSCTP(l *sctpListener) {
	for {
		c, peer, err := l.accept()
		if err != nil {
			return
		}
		go func() {
			defer c.close()
			c.write([]byte(Reply(s.Name, unmap(peer))))
		}()
	}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Probe sends one connection or datagram to addr and returns the reply line
// (without its newline). UDP sends up to three datagrams within the timeout,
// since a single one may be lost while conntrack or a route is being set up.
func Probe(ctx context.Context, proto, addr string, timeout time.Duration) (string, error) {
	return ProbeFrom(ctx, proto, netip.AddrPort{}, addr, timeout)
}

// ProbeFrom is Probe with the source address and port chosen (for TCP and
// UDP; an invalid address or port 0 lets the kernel choose): the address
// must be assigned locally, and lets tests show that a pod cannot send with
// an address that is not its own; a fixed UDP source port keeps datagrams
// in one conntrack entry, as a long-lived UDP client's are.
func ProbeFrom(ctx context.Context, proto string, source netip.AddrPort, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	switch proto {
	case "tcp":
		var d net.Dialer
		if source.Addr().IsValid() || source.Port() != 0 {
			d.LocalAddr = &net.TCPAddr{IP: sourceIP(source), Port: int(source.Port())}
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(deadline)
		return readLine(c)
	case "udp":
		var d net.Dialer
		if source.Addr().IsValid() || source.Port() != 0 {
			d.LocalAddr = &net.UDPAddr{IP: sourceIP(source), Port: int(source.Port())}
		}
		c, err := d.Dial("udp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		buf := make([]byte, 2048)
		tries := 3
		for i := range tries {
			if _, err := c.Write([]byte("probe\n")); err != nil {
				return "", err
			}
			wait := time.Until(deadline) / time.Duration(tries-i)
			c.SetReadDeadline(time.Now().Add(wait))
			n, err := c.Read(buf)
			if err == nil {
				return strings.TrimRight(string(buf[:n]), "\n"), nil
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return "", err
			}
		}
		return "", fmt.Errorf("udp %s: no reply within %s", addr, timeout)
	case "sctp":
		if source.Addr().IsValid() || source.Port() != 0 {
			return "", errors.New("sctp: choosing the source address is not supported")
		}
		return probeSCTP(addr, deadline)
	}
	return "", fmt.Errorf("protocol %q: want tcp, udp or sctp", proto)
}

func sourceIP(ap netip.AddrPort) net.IP {
	if !ap.Addr().IsValid() {
		return nil
	}
	return ap.Addr().AsSlice()
}

func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if strings.Contains(b.String(), "\n") {
			return strings.TrimRight(b.String(), "\n"), nil
		}
		if err != nil {
			if b.Len() > 0 {
				return b.String(), nil
			}
			return "", err
		}
	}
}

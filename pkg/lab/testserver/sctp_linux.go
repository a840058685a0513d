package testserver

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The standard library has no SCTP. One-to-one (SOCK_STREAM) SCTP sockets
// behave like TCP sockets at the system-call level, which is all the lab
// needs: bind, listen, accept, connect, read and write.

// ErrSCTPUnsupported means the running kernel has no SCTP.
var ErrSCTPUnsupported = errors.New("this kernel does not support SCTP (CONFIG_IP_SCTP)")

const ipprotoSCTP = 132

type sctpListener struct{ fd int }

type sctpConn struct{ fd int }

func sctpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, ipprotoSCTP)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
		return -1, ErrSCTPUnsupported
	}
	if errors.Is(err, unix.EAFNOSUPPORT) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, ipprotoSCTP)
	}
	return fd, err
}

func listenSCTP(port int) (*sctpListener, error) {
	fd, err := sctpSocket()
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	sa, _ := unix.Getsockname(fd)
	var bindAddr unix.Sockaddr = &unix.SockaddrInet6{Port: port}
	if _, v4 := sa.(*unix.SockaddrInet4); v4 {
		bindAddr = &unix.SockaddrInet4{Port: port}
	}
	if err := unix.Bind(fd, bindAddr); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &sctpListener{fd: fd}, nil
}

func (l *sctpListener) close() { unix.Shutdown(l.fd, unix.SHUT_RDWR); unix.Close(l.fd) }

func (l *sctpListener) accept() (*sctpConn, netip.AddrPort, error) {
	nfd, sa, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(nfd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return &sctpConn{fd: nfd}, sockaddrToAddrPort(sa), nil
}

func (c *sctpConn) write(b []byte) error { _, err := unix.Write(c.fd, b); return err }
func (c *sctpConn) close()               { unix.Close(c.fd) }

func sockaddrToAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func probeSCTP(addr string, deadline time.Time) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", fmt.Errorf("sctp address %q: %w", addr, err)
	}
	fd, err := sctpSocket()
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	sa, _ := unix.Getsockname(fd)
	var to unix.Sockaddr
	if _, v4 := sa.(*unix.SockaddrInet4); v4 {
		if !ap.Addr().Unmap().Is4() {
			return "", fmt.Errorf("sctp: no IPv6 socket for %s", addr)
		}
		to = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else {
		to = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	tv := unix.NsecToTimeval(max(time.Until(deadline), time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Connect(fd, to); err != nil {
		return "", fmt.Errorf("sctp connect %s: %w", addr, err)
	}
	var b strings.Builder
	buf := make([]byte, 256)
	for !strings.Contains(b.String(), "\n") {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "", fmt.Errorf("sctp read from %s: %w", addr, err)
		}
		if n <= 0 {
			break
		}
		b.Write(buf[:n])
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("sctp %s: closed without a reply", addr)
	}
	return strings.TrimRight(b.String(), "\n"), nil
}

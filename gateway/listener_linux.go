package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenBacklog asks for the largest accept queue; the kernel caps it at
// net.core.somaxconn.
const listenBacklog = 65535

// listenTCP opens a raw, non-blocking listening socket. The gateway accepts
// on it with accept4(2) from its event loops; no net.Listener is involved,
// so no Go netpoller state exists per connection. With reusePort, several
// processes bind the same address and the kernel spreads connections over
// them (SO_REUSEPORT).
func listenTCP(addr string, reusePort bool) (int, *net.TCPAddr, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return -1, nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return -1, nil, err
	}
	port = max(port, 0)
	var ip net.IP
	switch host {
	case "":
	case "localhost":
		ip = net.IPv4(127, 0, 0, 1)
	default:
		if ip = net.ParseIP(host); ip == nil {
			return -1, nil, fmt.Errorf("%q is not an IP address", host)
		}
	}
	fd, sa, err := socketFor(ip, port)
	if err != nil {
		return -1, nil, err
	}
	fail := func(what string, err error) (int, *net.TCPAddr, error) {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("%s %s: %w", what, addr, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fail("bind", fmt.Errorf("%w (another process listens there; several gateways share a port only with --reuseport on all of them)", err))
		}
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var ta *net.TCPAddr
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		ta = &net.TCPAddr{IP: net.IP(b.Addr[:]).To16(), Port: b.Port}
	case *unix.SockaddrInet6:
		ta = &net.TCPAddr{IP: net.IP(b.Addr[:]), Port: b.Port}
	}
	return fd, ta, nil
}

// socketFor creates the socket and address for ip (nil: every address,
// dual-stack where IPv6 is available).
func socketFor(ip net.IP, port int) (int, unix.Sockaddr, error) {
	const flags = unix.SOCK_STREAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC
	if ip != nil && ip.To4() != nil {
		fd, err := unix.Socket(unix.AF_INET, flags, 0)
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip.To4())
		return fd, sa, err
	}
	fd, err := unix.Socket(unix.AF_INET6, flags, 0)
	if err != nil {
		if ip == nil && errors.Is(err, unix.EAFNOSUPPORT) {
			fd, err = unix.Socket(unix.AF_INET, flags, 0)
			return fd, &unix.SockaddrInet4{Port: port}, err
		}
		return -1, nil, err
	}
	if ip == nil {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	sa := &unix.SockaddrInet6{Port: port}
	if ip != nil {
		copy(sa.Addr[:], ip.To16())
	}
	return fd, sa, nil
}

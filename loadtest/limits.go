package loadtest

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"golang.org/x/sys/unix"
)

// DefaultConnsPerWorker is the most connections one process holds: under
// the 20,000 open files a process may have here, with room for the
// process's own files.
const DefaultConnsPerWorker = 19000

// fdReserve is what a process keeps for itself besides its sockets
// (epoll, eventfd and timerfd per loop, NATS, HTTP, stdio, the binary).
const fdReserve = 200

// Limits are what the machine allows, found before a run, and the plan
// made from them.
type Limits struct {
	FDSoft         uint64   `json:"fd_soft"`
	FDHard         uint64   `json:"fd_hard"`
	PortLow        int      `json:"port_low"`
	PortHigh       int      `json:"port_high"`
	SourceIPs      []string `json:"source_ips"`
	Targets        []string `json:"targets"`
	Workers        int      `json:"workers"`
	Processes      int      `json:"processes"` // worker processes started (0: the run is in this process)
	ConnsPerWorker int      `json:"conns_per_worker"`
	CPUs           int      `json:"cpus"`
	Advice         []string `json:"advice"` // why the run cannot reach --conns
	Notes          []string `json:"notes"`  // what will make it slower than it could be
}

// raiseNoFile raises the soft open-file limit to the hard limit and
// returns both.
func raiseNoFile() (soft, hard uint64) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur, rl.Max
}

// parseSourceIPs reads "127.0.0.2-127.0.0.60", "10.0.0.1,10.0.0.2" or a mix.
func parseSourceIPs(spec string) ([]string, error) {
	var out []string
	seen := map[netip.Addr]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return nil, usagef("--source-ips: %q is not an address", from)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(strings.TrimSpace(to)); err != nil {
				return nil, usagef("--source-ips: %q is not an address", to)
			}
			if a.Is4() != b.Is4() || b.Less(a) {
				return nil, usagef("--source-ips: %q is not an ascending range of one family", part)
			}
		}
		for ip := a; ; ip = ip.Next() {
			if !seen[ip] {
				seen[ip] = true
				out = append(out, ip.String())
				if len(out) > 65536 {
					return nil, usagef("--source-ips: more than 65,536 addresses")
				}
			}
			if ip == b {
				break
			}
		}
	}
	return out, nil
}

// checkBindable binds a socket to each source address: an address the
// machine does not have fails here, not in the middle of the ramp.
func checkBindable(ips []string) error {
	for _, s := range ips {
		a := netip.MustParseAddr(s)
		fam := unix.AF_INET
		if !a.Is4() {
			fam = unix.AF_INET6
		}
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Bind(fd, sockaddr(a, 0))
		unix.Close(fd)
		if err != nil {
			return usagef("--source-ips: cannot bind %s: %v (on loopback any 127.x.y.z works; elsewhere add the addresses to an interface)", s, err)
		}
	}
	return nil
}

// checkWorkers checks --workers: auto or a number from 1 to 4096.
func checkWorkers(workers string) error {
	if workers == "" || workers == "auto" {
		return nil
	}
	if n, err := strconv.Atoi(workers); err != nil || n < 1 || n > 4096 {
		return usagef("--workers %q: want auto or a number from 1 to 4096", workers)
	}
	return nil
}

// planWorkers works out the processes a run needs and says what the
// machine cannot give. conns is the number of connections; workers is
// "auto" or a number; perWorker the most connections one process holds.
func planWorkers(lim *Limits, conns int, workers string, perWorker int, pairs int) error {
	capacity := int(lim.FDHard) - fdReserve
	if lim.FDHard == unix.RLIM_INFINITY || capacity > 1<<24 {
		capacity = 1 << 24
	}
	if perWorker <= 0 {
		perWorker = DefaultConnsPerWorker
	}
	perWorker = min(perWorker, capacity)
	if perWorker < 1 {
		return fmt.Errorf("the open-file limit (%d) leaves no room for connections", lim.FDHard)
	}
	lim.ConnsPerWorker = perWorker
	need := (conns + perWorker - 1) / perWorker
	switch workers {
	case "", "auto":
		lim.Workers = max(need, 1)
		if lim.Workers > 1 {
			lim.Processes = lim.Workers
		}
	default:
		if err := checkWorkers(workers); err != nil {
			return err
		}
		n, _ := strconv.Atoi(workers)
		lim.Workers = n
		if n > 1 {
			lim.Processes = n
		}
		if n < need {
			lim.Advice = append(lim.Advice, fmt.Sprintf("N=%s needs %d workers for fds (%s connections per process); --workers %d is too few: use --workers auto",
				numfmt.Thousands(int64(conns)), need, numfmt.Thousands(int64(perWorker)), n))
		}
	}
	ports := lim.PortHigh - lim.PortLow + 1
	srcs := max(len(lim.SourceIPs), 1)
	pairs = max(pairs, 1)
	if capPorts := srcs * pairs * ports; conns > capPorts*95/100 {
		needSrc := (conns*100/95 + pairs*ports - 1) / (pairs * ports)
		lim.Advice = append(lim.Advice, fmt.Sprintf("N=%s needs %d source IPs for ports (%s ephemeral ports %d-%d per source address and target; %d source address(es) × %d target(s) give %s): add --source-ips 127.0.0.2-127.0.0.%d or widen net.ipv4.ip_local_port_range",
			numfmt.Thousands(int64(conns)), needSrc, numfmt.Thousands(int64(ports)), lim.PortLow, lim.PortHigh, srcs, pairs, numfmt.Thousands(int64(capPorts)), min(needSrc+1, 254)))
	}
	if capPorts := srcs * pairs * ports; conns <= capPorts*95/100 && conns > capPorts/2 {
		// connect(2) searches the range for a free port: the fuller it is,
		// the longer (measured: ramping 50,000 connections over 3 source
		// addresses reached 2,948/s, over 20 addresses 4,861/s).
		lim.Notes = append(lim.Notes, fmt.Sprintf("N=%s fills %d%% of the ephemeral ports of %d source address(es) × %d target(s); connect(2) slows down as the range fills: spread over at least %d source IPs (--source-ips) to keep it under half",
			numfmt.Thousands(int64(conns)), conns*100/capPorts, srcs, pairs, (2*conns+pairs*ports-1)/(pairs*ports)))
	}
	if len(lim.Advice) > 0 {
		return errors.New(strings.Join(lim.Advice, "\n"))
	}
	return nil
}

func sockaddr(a netip.Addr, port int) unix.Sockaddr {
	a = a.Unmap()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: port, Addr: a.As16()}
}

package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/wsfleet/wsfleet/internal/hostinfo"
	"github.com/wsfleet/wsfleet/internal/numfmt"
	"golang.org/x/sys/unix"
)

// Machine is what the host allows, read before a run.
type Machine struct {
	FDHard         uint64 `json:"fd_hard"` // RLIMIT_NOFILE hard limit (inherited by every process started)
	PortLow        int    `json:"port_low"`
	PortHigh       int    `json:"port_high"`
	MemTotal       uint64 `json:"mem_total_bytes"`
	MemAvailable   uint64 `json:"mem_available_bytes"`
	CPUs           int    `json:"cpus"`
	FileMax        uint64 `json:"file_max"`        // fs.file-max (0: unknown)
	ConntrackMax   int64  `json:"conntrack_max"`   // -1: no conntrack
	ConntrackCount int64  `json:"conntrack_count"` // -1: no conntrack
	// TCP established-connection hash buckets of the run's network
	// namespace (0: unknown); OwnNetns: bench-fleet made that namespace
	// (--netns).
	EhashBuckets int  `json:"ehash_buckets,omitempty"`
	OwnNetns     bool `json:"own_netns,omitempty"`
}

// Estimates of the memory a run takes, per process and per connection,
// measured on the development machine (docs/benchmarks.md, trial runs of
// this harness). They only decide whether a run can fit; the run measures
// the real figures.
const (
	kernelPerConn     = 2 * 5300 // two loopback sockets per connection (client and gateway side)
	gatewayBase       = 30 << 20
	gatewayPerConn    = 2 << 10 // wsfleet: ~1 KB measured, room for the ramp's garbage
	baselineBase      = 20 << 20
	baselinePerConn   = 40 << 10 // goroutines, bufio buffers, a 256-slot channel, a NATS subscription goroutine
	natsBase          = 40 << 20
	natsPerSub        = 1500 // one subscription per user (and per gateway with a device of it)
	loadtestBase      = 40 << 20
	loadtestPerConn   = 2 << 10
	routerBase        = 60 << 20
	routerPerUser     = 200
	loadtestPerWorker = 19000 // bin/loadtest's --conns-per-worker default
	gatewayFDReserve  = 256   // the gateway's --max-connections default: the open-file limit less 256
	maxSourceIP       = 253   // 127.0.0.2 … 127.0.0.254
)

// PlanInput is what the user asked for.
type PlanInput struct {
	Conns           int
	Gateways        int    // 0: enough for the open-file limit
	ConnsPerGateway int    // 0: 85 % of what the open-file limit allows
	SourceIPs       string // "": enough addresses on 127.0.0.0/8 to keep the port ranges under a quarter full
	Baseline        bool   // the baseline fleet runs too (one fleet at a time)
	ListenPorts     []int  // the ports the fleet listens on (must be outside the ephemeral range)
}

// Plan is how a run fits the machine, or why it does not.
type Plan struct {
	Conns           int      `json:"conns"`
	Gateways        int      `json:"gateways"`
	ConnsPerGateway int      `json:"conns_per_gateway"` // the most one gateway process can hold
	LoadWorkers     int      `json:"loadtest_workers"`
	SourceIPs       string   `json:"source_ips"`
	SourceIPCount   int      `json:"source_ip_count"`
	PortCapacity    int      `json:"port_capacity"` // source addresses × ephemeral ports, to the one gateway port
	MemNeed         uint64   `json:"mem_need_bytes"`
	MemNeedWsfleet  uint64   `json:"mem_need_wsfleet_bytes"`
	MemNeedBaseline uint64   `json:"mem_need_baseline_bytes,omitempty"`
	Advice          []string `json:"advice,omitempty"` // why the run cannot be made
	Notes           []string `json:"notes,omitempty"`
}

// memNeed estimates the machine memory of a fleet of k gateways holding n
// connections, with NATS, the router and the load generator.
func memNeed(n, k, workers int, baseline bool) uint64 {
	N, K, W := uint64(n), uint64(k), uint64(workers)
	m := N*kernelPerConn + natsBase + N*natsPerSub + loadtestBase*(W+1) + N*loadtestPerConn + routerBase + N*routerPerUser
	if baseline {
		return m + K*baselineBase + N*baselinePerConn
	}
	return m + K*gatewayBase + N*gatewayPerConn
}

// makePlan sizes a run on m: gateway processes for the open-file limit,
// source addresses for the ephemeral ports, and memory. It never fails:
// what cannot fit is said in Advice.
func makePlan(m Machine, in PlanInput) Plan {
	p := Plan{Conns: in.Conns}
	n := in.Conns
	capacity := int(min(m.FDHard, 1<<24)) - gatewayFDReserve
	if capacity < 100 {
		p.Advice = append(p.Advice, fmt.Sprintf("the open-file limit (%d) leaves a gateway process no room for connections: raise `ulimit -Hn`", m.FDHard))
		capacity = 100
	}
	p.ConnsPerGateway = capacity
	per := in.ConnsPerGateway
	if per <= 0 {
		per = capacity * 85 / 100 // SO_REUSEPORT spreads by hash: leave room for an uneven share
	}
	if per > capacity {
		p.Advice = append(p.Advice, fmt.Sprintf("--conns-per-gateway %s is over what one process can hold (%s: open-file limit %s less %d)",
			numfmt.Thousands(int64(per)), numfmt.Thousands(int64(capacity)), numfmt.Thousands(int64(m.FDHard)), gatewayFDReserve))
		per = capacity
	}
	p.Gateways = in.Gateways
	if p.Gateways <= 0 {
		p.Gateways = max(1, (n+per-1)/per)
	} else if p.Gateways*capacity < n*105/100 {
		p.Advice = append(p.Advice, fmt.Sprintf("--gateways %d cannot hold %s connections (%s per process at the open-file limit %s): use at least %d, or --gateways 0 (auto)",
			p.Gateways, numfmt.Thousands(int64(n)), numfmt.Thousands(int64(capacity)), numfmt.Thousands(int64(m.FDHard)), (n*105/100+capacity-1)/capacity))
	}
	p.LoadWorkers = max(1, (n+loadtestPerWorker-1)/loadtestPerWorker)

	ports := m.PortHigh - m.PortLow + 1
	if ports < 1 {
		ports = 1
	}
	if in.SourceIPs == "" {
		want := (4*n + ports - 1) / ports // keep each range under a quarter full: connect(2) slows down as it fills
		want = min(max(want, 1), maxSourceIP)
		p.SourceIPCount = want
		p.SourceIPs = sourceRange(want)
	} else {
		ips, err := countLoopbackIPs(in.SourceIPs)
		if err != nil {
			p.Advice = append(p.Advice, err.Error())
		}
		p.SourceIPCount = ips
		p.SourceIPs = in.SourceIPs
	}
	p.PortCapacity = max(p.SourceIPCount, 1) * ports
	if n > p.PortCapacity*95/100 {
		need := (n*100/95 + ports - 1) / ports
		adv := fmt.Sprintf("%s connections need %d source addresses (%s ephemeral ports %d-%d each, 5 %% headroom); %d give %s",
			numfmt.Thousands(int64(n)), need, numfmt.Thousands(int64(ports)), m.PortLow, m.PortHigh, p.SourceIPCount, numfmt.Thousands(int64(p.PortCapacity)))
		if need <= maxSourceIP {
			adv += fmt.Sprintf(": use --source-ips %s (or leave it unset)", sourceRange(need))
		} else {
			adv += ": widen the ephemeral port range with --port-range 1024-65000 (set for the run, restored after)"
		}
		p.Advice = append(p.Advice, adv)
	} else if n > p.PortCapacity/2 {
		p.Notes = append(p.Notes, fmt.Sprintf("%s connections fill %d %% of the ephemeral ports of %d source address(es): connect(2) slows down as the ranges fill",
			numfmt.Thousands(int64(n)), n*100/p.PortCapacity, p.SourceIPCount))
	}
	for _, port := range in.ListenPorts {
		if port >= m.PortLow && port <= m.PortHigh {
			p.Notes = append(p.Notes, fmt.Sprintf("listen port %d is inside the ephemeral range %d-%d: a client socket may hold it when a fleet starts; pick --base-port below %d",
				port, m.PortLow, m.PortHigh, m.PortLow))
			break
		}
	}

	p.MemNeedWsfleet = memNeed(n, p.Gateways, p.LoadWorkers, false)
	p.MemNeed = p.MemNeedWsfleet
	if in.Baseline {
		p.MemNeedBaseline = memNeed(n, p.Gateways, p.LoadWorkers, true)
		p.MemNeed = max(p.MemNeed, p.MemNeedBaseline) // one fleet at a time
	}
	if m.MemAvailable > 0 && p.MemNeed > m.MemAvailable*9/10 {
		adv := fmt.Sprintf("%s connections need about %s of memory (kernel sockets %s, processes the rest) and %s is available",
			numfmt.Thousands(int64(n)), gib(p.MemNeed), gib(uint64(n)*kernelPerConn), gib(m.MemAvailable))
		if in.Baseline && p.MemNeedWsfleet <= m.MemAvailable*9/10 {
			adv += ": the naive baseline is what does not fit; add --skip-baseline, or lower --conns"
		} else {
			adv += fmt.Sprintf(": lower --conns to about %s", numfmt.Thousands(int64(maxConnsFor(m.MemAvailable*9/10, in.Baseline, per))))
		}
		p.Advice = append(p.Advice, adv)
	}
	if m.FileMax > 0 && uint64(2*n+10000) > m.FileMax {
		p.Advice = append(p.Advice, fmt.Sprintf("fs.file-max %s is below the %s open files the run needs (two sockets per connection): raise it with sysctl",
			numfmt.Thousands(int64(m.FileMax)), numfmt.Thousands(int64(2*n+10000))))
	}
	if m.ConntrackCount > 0 && m.ConntrackMax > 0 && int64(n)+m.ConntrackCount > m.ConntrackMax {
		p.Advice = append(p.Advice, fmt.Sprintf("connection tracking is active and nf_conntrack_max %s is below %s connections: raise net.netfilter.nf_conntrack_max",
			numfmt.Thousands(m.ConntrackMax), numfmt.Thousands(int64(n))))
	}
	if m.CPUs > 0 && m.CPUs < 4 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d CPUs: the gateways, NATS, the router and the load generator share them; CPU-bound figures are the machine's", m.CPUs))
	}
	return p
}

// maxConnsFor is the largest connection count whose estimate fits mem.
func maxConnsFor(mem uint64, baseline bool, per int) int {
	lo, hi := 0, 10_000_000
	for lo < hi {
		mid := (lo + hi + 1) / 2
		k := max(1, (mid+per-1)/per)
		w := max(1, (mid+loadtestPerWorker-1)/loadtestPerWorker)
		if memNeed(mid, k, w, baseline) <= mem {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo / 1000 * 1000
}

// sourceRange is n consecutive loopback source addresses from 127.0.0.2.
func sourceRange(n int) string {
	if n <= 1 {
		return "127.0.0.2"
	}
	return fmt.Sprintf("127.0.0.2-127.0.0.%d", 1+n)
}

// countLoopbackIPs counts the addresses of a --source-ips spec
// ("127.0.0.2-127.0.0.60", a comma list, or both) and refuses any outside
// 127.0.0.0/8: the harness touches nothing but loopback.
func countLoopbackIPs(spec string) (int, error) {
	loop := netip.MustParsePrefix("127.0.0.0/8")
	seen := map[netip.Addr]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(from))
		if err != nil {
			return 0, fmt.Errorf("--source-ips: %q is not an address", from)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(strings.TrimSpace(to)); err != nil {
				return 0, fmt.Errorf("--source-ips: %q is not an address", to)
			}
		}
		if !loop.Contains(a) || !loop.Contains(b) || b.Less(a) {
			return 0, fmt.Errorf("--source-ips: %q is not an ascending range inside 127.0.0.0/8 (loopback only)", part)
		}
		for ip := a; ; ip = ip.Next() {
			seen[ip] = true
			if ip == b || len(seen) > 1<<20 {
				break
			}
		}
	}
	if len(seen) == 0 {
		return 0, fmt.Errorf("--source-ips %q: no addresses", spec)
	}
	return len(seen), nil
}

// readMachine reads the limits of this host.
func readMachine() Machine {
	m := Machine{ConntrackMax: -1, ConntrackCount: -1, CPUs: hostinfo.CPUs()}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		m.FDHard = rl.Max
	}
	m.PortLow, m.PortHigh = hostinfo.PortRange()
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			v, _ := strconv.ParseUint(fs[1], 10, 64)
			switch fs[0] {
			case "MemTotal:":
				m.MemTotal = v << 10
			case "MemAvailable:":
				m.MemAvailable = v << 10
			}
		}
		f.Close()
	}
	m.FileMax = uint64(readInt("/proc/sys/fs/file-max", 0))
	m.ConntrackMax = readInt("/proc/sys/net/netfilter/nf_conntrack_max", -1)
	m.ConntrackCount = readInt("/proc/sys/net/netfilter/nf_conntrack_count", -1)
	m.EhashBuckets, m.OwnNetns = ehashSize(), inNetns()
	return m
}

func readInt(path string, def int64) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return def
	}
	return v
}

// parsePortRange reads "LO-HI".
func parsePortRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || hi-lo < 1000 {
		return 0, 0, fmt.Errorf("port range %q: want LO-HI within 1024-65535, at least 1,000 ports", s)
	}
	return lo, hi, nil
}

// setPortRange writes net.ipv4.ip_local_port_range (only with --port-range).
func setPortRange(lo, hi int) error {
	return os.WriteFile(hostinfo.PortRangeFile, []byte(fmt.Sprintf("%d %d\n", lo, hi)), 0o644)
}

// limitsLine is the printed summary of the machine's limits.
func limitsLine(m Machine, p Plan) string {
	ct := "no connection tracking"
	if m.ConntrackCount > 0 {
		ct = fmt.Sprintf("nf_conntrack %s/%s", numfmt.Thousands(m.ConntrackCount), numfmt.Thousands(m.ConntrackMax))
	}
	if m.EhashBuckets > 0 {
		where := "this network namespace"
		if m.OwnNetns {
			where = "a network namespace of its own, --netns"
		}
		ct += fmt.Sprintf("; TCP established hash %s buckets (%s)", numfmt.Thousands(int64(m.EhashBuckets)), where)
	}
	return fmt.Sprintf("limits: open files %s per process (hard) → %s connections per gateway process; ephemeral ports %d-%d (%s per source address); source addresses %s (%d) → %s ports to the gateway port; memory available %s of %s; fs.file-max %s; %s; CPUs %d",
		numfmt.Thousands(int64(m.FDHard)), numfmt.Thousands(int64(p.ConnsPerGateway)), m.PortLow, m.PortHigh, numfmt.Thousands(int64(m.PortHigh-m.PortLow+1)),
		p.SourceIPs, p.SourceIPCount, numfmt.Thousands(int64(p.PortCapacity)), gib(m.MemAvailable), gib(m.MemTotal), numfmt.Thousands(int64(m.FileMax)), ct, m.CPUs)
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

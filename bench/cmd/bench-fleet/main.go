// Command bench-fleet measures a wsfleet fleet against the naive baseline
// gateway on this machine: it starts NATS (bin/nats-server), K gateway
// processes sharing one port (SO_REUSEPORT), the router, and bin/loadtest,
// runs connect → hold → deliver → broadcast at --conns connections, the
// same load against K bin/baseline-gateway processes, and prints one table:
// each figure for wsfleet and the baseline (median and range over --runs),
// their ratio and the target. `--million` holds 1,000,000 connections on
// wsfleet instead. Loopback only; every run is bounded in time; every
// process it starts is stopped on exit, error or Ctrl-C.
//
// `make bench-fleet` builds what it needs and runs it (BENCHFLAGS=...).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
	"github.com/wsfleet/wsfleet/internal/hostinfo"
	"github.com/wsfleet/wsfleet/internal/numfmt"
)

type config struct {
	conns              int
	runs               int
	hold               time.Duration
	settle             time.Duration
	connectRate        float64
	msgRate            float64
	peakRange          string
	peakLo, peakHi     float64
	peakProbes         int
	peakDuration       time.Duration
	peakConns          int
	deliverDuration    time.Duration
	broadcasts         int
	broadcastInterval  time.Duration
	via                string
	msgBytes           int
	publishConcurrency int
	gateways           int
	connsPerGateway    int
	sourceIPs          string
	basePort           int
	portRange          string
	skipBaseline       bool
	resume             bool
	million            bool
	millionConns       int
	netns              bool
	dryRun             bool
	jsonFile           string
	bin                string
	logDir             string
	maxTime            time.Duration
	gatewayEnv         []string
}

const usage = `Usage: bench-fleet [flags]

Measures a wsfleet fleet against the naive baseline gateway on this machine,
loopback only: NATS, K gateway processes on one port (SO_REUSEPORT), the
router and bin/loadtest; connect → hold → deliver → broadcast at --conns,
the same against K baseline-gateway processes; prints one table (wsfleet,
baseline, ratio, target; median and range over --runs) and writes --json.
--million holds 1,000,000 connections on wsfleet instead.

Before starting it prints the machine's limits (open files, ephemeral ports,
source addresses, memory) and refuses, with advice, a scale that cannot fit.
Every process it starts is stopped on exit, error or Ctrl-C.`

func parseFlags(args []string) (config, error) {
	var c config
	fs := flagenv.New("bench-fleet", "BENCH_FLEET_", usage)
	fs.Int(&c.conns, "conns", 100000, "connections (N), 100 to 1,000,000")
	fs.Int(&c.runs, "runs", 3, "measurements of each figure per system (1-10): min, median and max are reported")
	fs.Duration(&c.hold, "hold", 10*time.Second, "how long the connections stay idle before the GC and the RSS reading (--million: at least 60s)")
	fs.Duration(&c.settle, "settle-timeout", 10*time.Second, "after a forced GC, read RSS every 500 ms until it settles, at most this long")
	fs.Float(&c.connectRate, "connect-rate", 0, "new connections per second during each ramp, 100-50,000 (0: 8,000; 3,000 with --million)")
	fs.Float(&c.msgRate, "msg-rate", 0, "messages/s of the deliver phase (both systems); 0: search wsfleet's peak and use half of it")
	fs.String(&c.peakRange, "peak-range", "2000-64000", "messages/s the peak search starts at (doubling) and never goes past")
	fs.Int(&c.peakProbes, "peak-probes", 6, "most deliver runs the peak search makes (1-12)")
	fs.Duration(&c.peakDuration, "peak-duration", 10*time.Second, "publishing time of each peak search probe")
	fs.Int(&c.peakConns, "peak-conns", 0, "connections during the peak search (0: --conns)")
	fs.Duration(&c.deliverDuration, "deliver-duration", 10*time.Second, "publishing time of the deliver phase")
	fs.Int(&c.broadcasts, "broadcasts", 3, "broadcasts per run (1-20); each is a sample of the broadcast figure")
	fs.Duration(&c.broadcastInterval, "broadcast-interval", time.Second, "time between broadcasts")
	fs.String(&c.via, "via", "router", "publish through the router's HTTP API (router) or on NATS (nats)")
	fs.Int(&c.msgBytes, "msg-bytes", 128, "size of each message's data")
	fs.Int(&c.publishConcurrency, "publish-concurrency", 0, "router requests in flight per load process (0: loadtest's default)")
	fs.Int(&c.gateways, "gateways", 0, "gateway processes per system (0: enough for the open-file limit)")
	fs.Int(&c.connsPerGateway, "conns-per-gateway", 0, "plan for this many connections per gateway process (0: 85 % of what the open-file limit allows)")
	fs.String(&c.sourceIPs, "source-ips", "", "client source addresses on 127.0.0.0/8 (default: enough to keep the ephemeral port ranges under a quarter full)")
	fs.Int(&c.basePort, "base-port", 27000, "fleet ports on 127.0.0.1: WebSocket BASE, router BASE+1 (admin +2), NATS BASE+3, gateway admin BASE+100+i")
	fs.String(&c.portRange, "port-range", "", "set net.ipv4.ip_local_port_range to LO-HI for the run (restored after); only when asked")
	fs.Bool(&c.skipBaseline, "skip-baseline", false, "measure wsfleet only")
	fs.Bool(&c.resume, "resume", false, "run wsfleet with resumable delivery: NATS with JetStream (its store in the log directory), gateways and router with --resume (file storage); the naive baseline has none, so this implies --skip-baseline")
	fs.Bool(&c.million, "million", false, "hold 1,000,000 connections on wsfleet for --hold (≥ 60s), then broadcast to all (no baseline)")
	fs.Int(&c.millionConns, "million-conns", 1000000, "connections of --million (less only to try the mode out; the figure needs 1,000,000)")
	fs.Bool(&c.netns, "netns", true, "--million: run in a network namespace of its own whose TCP established hash fits 2,000,000 sockets (needs root and Linux 6.1+; otherwise, or false, this namespace)")
	fs.Bool(&c.dryRun, "dry-run", false, "print the limits and the plan, then exit")
	fs.String(&c.jsonFile, "json", "", "write the whole result as JSON to this file")
	fs.String(&c.bin, "bin", "bin", "directory of gateway, baseline-gateway, router, loadtest and nats-server")
	fs.List(&c.gatewayEnv, "gateway-env", nil, "NAME=VALUE environment of every gateway process, both systems (e.g. GOGC=50); GOMAXPROCS defaults to the CPUs divided among the gateway processes (at least 1)")
	fs.String(&c.logDir, "log-dir", "", "where each process's log and loadtest's JSON go (default: a new temporary directory)")
	fs.Duration(&c.maxTime, "max-time", 45*time.Minute, "stop everything after this long, whatever is left (a partial table)")
	if err := fs.Parse(args, nil); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *config) validate() error {
	if c.resume {
		c.skipBaseline = true
	}
	if c.million {
		if c.millionConns < 100 || c.millionConns > 1_000_000 {
			return errors.New("--million-conns must be between 100 and 1,000,000")
		}
		c.conns = c.millionConns
		c.skipBaseline = true
		if c.hold < 60*time.Second {
			c.hold = 60 * time.Second
		}
	}
	if c.connectRate == 0 {
		c.connectRate = 8000
		if c.million {
			// A million connections saturate the 2 cores: 4,000/s asked
			// averaged 2,250/s over the million, on a busy day, with the
			// ramp backing off (docs/benchmarks.md).
			c.connectRate = 3000
		}
	}
	if c.million {
		c.gatewayEnv = withDefaults(c.gatewayEnv, millionGatewayEnv)
	}
	lo, hi, ok := strings.Cut(c.peakRange, "-")
	var err1, err2 error
	c.peakLo, err1 = parseFloat(lo)
	c.peakHi, err2 = parseFloat(hi)
	if c.peakConns == 0 {
		c.peakConns = c.conns
	}
	switch {
	case c.conns < 100 || c.conns > 1_000_000:
		return errors.New("--conns must be between 100 and 1,000,000")
	case c.runs < 1 || c.runs > 10:
		return errors.New("--runs must be between 1 and 10")
	case c.hold < time.Second || c.hold > 10*time.Minute:
		return errors.New("--hold must be between 1s and 10m")
	case c.settle < time.Second || c.settle > 2*time.Minute:
		return errors.New("--settle-timeout must be between 1s and 2m")
	case c.connectRate < 100 || c.connectRate > 50000:
		return errors.New("--connect-rate must be between 100 and 50,000")
	case c.msgRate < 0 || c.msgRate > 500000:
		return errors.New("--msg-rate must be between 0 and 500,000")
	case !ok || err1 != nil || err2 != nil || c.peakLo < 100 || c.peakHi > 500000 || c.peakHi <= c.peakLo:
		return errors.New("--peak-range must be LO-HI messages/s, 100 ≤ LO < HI ≤ 500,000")
	case c.peakProbes < 1 || c.peakProbes > 12:
		return errors.New("--peak-probes must be between 1 and 12")
	case c.peakDuration < 3*time.Second || c.peakDuration > 2*time.Minute:
		return errors.New("--peak-duration must be between 3s and 2m")
	case c.peakConns < 100 || c.peakConns > c.conns:
		return errors.New("--peak-conns must be between 100 and --conns")
	case c.deliverDuration < 3*time.Second || c.deliverDuration > 5*time.Minute:
		return errors.New("--deliver-duration must be between 3s and 5m")
	case c.broadcasts < 1 || c.broadcasts > 20:
		return errors.New("--broadcasts must be between 1 and 20")
	case c.broadcastInterval < 100*time.Millisecond || c.broadcastInterval > time.Minute:
		return errors.New("--broadcast-interval must be between 100ms and 1m")
	case c.via != "router" && c.via != "nats":
		return errors.New("--via must be router or nats")
	case c.msgBytes < 16 || c.msgBytes > 65536:
		return errors.New("--msg-bytes must be between 16 and 65,536")
	case c.publishConcurrency < 0 || c.publishConcurrency > 4096:
		return errors.New("--publish-concurrency must be between 0 and 4,096")
	case c.gateways < 0 || c.gateways > 400:
		return errors.New("--gateways must be between 0 (auto) and 400")
	case c.connsPerGateway < 0:
		return errors.New("--conns-per-gateway must not be negative")
	case c.basePort < 1024 || c.basePort > 65535-600:
		return errors.New("--base-port must be between 1024 and 64935")
	case c.maxTime < time.Minute || c.maxTime > 3*time.Hour:
		return errors.New("--max-time must be between 1m and 3h")
	}
	if c.portRange != "" {
		if _, _, err := parsePortRange(c.portRange); err != nil {
			return fmt.Errorf("--port-range: %v", err)
		}
	}
	return nil
}

func parseFloat(s string) (float64, error) {
	var f float64
	_, err := fmt.Sscan(strings.TrimSpace(s), &f)
	return f, err
}

// harness is one bench-fleet run.
type harness struct {
	cfg    config
	plan   Plan
	ps     *procs
	secret string
	apiKey string
	logDir string
	t0     time.Time
	log    io.Writer

	mu  sync.Mutex
	rep *Report
}

func (h *harness) logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.log, "[%7.1fs] %s\n", time.Since(h.t0).Seconds(), fmt.Sprintf(format, args...))
}

func (h *harness) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.rep.Problems = append(h.rep.Problems, msg)
	h.mu.Unlock()
	h.logf("problem: %s", msg)
}

// fleet starts one system's fleet.
func (h *harness) fleet(ctx context.Context, system, tag string) (*fleet, error) {
	start := time.Now()
	f, err := startFleet(ctx, h.ps, fleetConfig{system: system, gateways: h.plan.Gateways, bin: h.cfg.bin,
		ports: ports{base: h.cfg.basePort}, secret: h.secret, apiKey: h.apiKey, tag: tag, env: gatewayEnv(h.cfg.gatewayEnv, h.plan.Gateways), resume: h.cfg.resume})
	if err != nil {
		return nil, fmt.Errorf("%s fleet: %v", system, err)
	}
	h.logf("%s: fleet up in %.1f s: NATS, %d %s processes on 127.0.0.1:%d (SO_REUSEPORT), router",
		tag, time.Since(start).Seconds(), len(f.gateways), map[string]string{sysWsfleet: "gateway", sysBaseline: "baseline-gateway"}[system], h.cfg.basePort)
	return f, nil
}

// runOne is one run of one system on a fresh fleet.
func (h *harness) runOne(ctx context.Context, rec *RunRecord, rate float64) {
	c := h.cfg
	tag := fmt.Sprintf("%s-run%d", rec.System, rec.Run)
	label := fmt.Sprintf("%s run %d/%d", rec.System, rec.Run, c.runs)
	fail := func(phase string, err error) {
		if ctx.Err() != nil {
			return
		}
		rec.Errors = append(rec.Errors, fmt.Sprintf("%s: %v", phase, err))
		h.problem("%s %s: %v", label, phase, err)
	}
	f, err := h.fleet(ctx, rec.System, tag)
	if err != nil {
		fail("fleet", err)
		return
	}
	defer func() {
		f.stop()
		h.logf("%s: fleet stopped", label)
	}()
	rec.Connect, err = h.connectPhase(ctx, f, label+" connect", tag+"-connect")
	if err != nil {
		fail("connect", err)
	}
	if ctx.Err() != nil {
		return
	}
	var d *DeliverSample
	d, _, err = h.deliverPhase(ctx, f, label+" deliver", tag+"-deliver", c.conns, rate, c.deliverDuration)
	rec.Deliver = d
	if d != nil && rec.Connect != nil && rec.Connect.IdleSplit != nil && d.WindowSeconds > 0 {
		if net := d.CPU - rec.Connect.IdleSplit.Gateways*d.WindowSeconds; net > 0 {
			d.NetDeliveriesPerCPU = float64(d.Delivered) / net
		}
	}
	if d != nil {
		h.logf("%s deliver: %s of %s delivered at %s msg/s (lost %d, skipped %d), drain %s; gateway CPU %.2f s → %s deliveries per CPU-second; latency p50 %.2f ms, p99 %.2f ms, max %.1f ms",
			label, numfmt.Thousands(d.Delivered), numfmt.Thousands(d.Expected), numfmt.Thousands(int64(rate)), d.Lost, d.Skipped, d.DrainEnd, d.CPU,
			numfmt.Thousands(int64(d.DeliveriesPerCPU)), d.P50, d.P99, d.Max)
		h.logf("%s deliver: net of the idle connections' CPU (%.3f cores in the hold): %s deliveries per CPU-second; CPU: %v",
			label, idleCores(rec.Connect), numfmt.Thousands(int64(d.NetDeliveriesPerCPU)), d.Split)
		if d.Lost > 0 || d.Delivered < d.Expected {
			h.problem("%s deliver: %s of %s delivered, %s lost", label, numfmt.Thousands(d.Delivered), numfmt.Thousands(d.Expected), numfmt.Thousands(d.Lost))
		}
	}
	if err != nil {
		fail("deliver", err)
	}
	if ctx.Err() != nil {
		return
	}
	rec.Broadcast, err = h.broadcastPhase(ctx, f, label+" broadcast", tag+"-broadcast")
	if err != nil {
		fail("broadcast", err)
	}
}

func (h *harness) run(ctx context.Context) {
	c := h.cfg
	rep := h.rep
	if c.million {
		mr, err := h.millionPhase(ctx)
		rep.Million = mr
		if err != nil && ctx.Err() == nil {
			h.problem("million: %v", err)
		}
		return
	}
	if c.msgRate > 0 {
		rep.Peak = &PeakSearch{Given: true, Rate: c.msgRate}
	} else {
		h.logf("peak search: deliver runs at %s connections from %s msg/s, doubling, then bisecting (at most %d probes of %s)",
			numfmt.Thousands(int64(c.peakConns)), numfmt.Thousands(int64(c.peakLo)), c.peakProbes, c.peakDuration)
		ps, err := h.peakSearch(ctx)
		rep.Peak = ps
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.problem("peak search: %v", err)
			if ps.Rate == 0 {
				ps.Rate = c.peakLo / 2
			}
		}
		h.logf("peak search: peak %s msg/s; the deliver phase runs at %s msg/s", numfmt.Thousands(int64(ps.Peak)), numfmt.Thousands(int64(ps.Rate)))
	}
	systems := []string{sysWsfleet}
	if !c.skipBaseline {
		systems = append(systems, sysBaseline)
	}
	for run := 1; run <= c.runs && ctx.Err() == nil; run++ {
		for _, sys := range systems {
			if ctx.Err() != nil {
				break
			}
			rec := &RunRecord{System: sys, Run: run}
			h.mu.Lock()
			rep.Runs = append(rep.Runs, rec)
			h.mu.Unlock()
			h.runOne(ctx, rec, rep.Peak.Rate)
		}
	}
}

func idleCores(c *ConnectSample) float64 {
	if c == nil || c.IdleSplit == nil {
		return 0
	}
	return c.IdleSplit.Gateways
}

// estimate is a rough duration of the whole run, printed before it starts.
func estimate(c config) time.Duration {
	rate := min(c.connectRate, 6000) // what a ramp achieved on 2 shared cores
	ramp := func(n int) time.Duration {
		return time.Duration(float64(n)/rate*float64(time.Second)) + 5*time.Second // startup, close
	}
	if c.million {
		return ramp(c.conns) + c.hold + 2*time.Minute
	}
	var d time.Duration
	if c.msgRate == 0 {
		d += time.Duration(c.peakProbes) * (ramp(c.peakConns) + c.peakDuration + 3*time.Second)
	}
	one := 3*ramp(c.conns) + c.hold + 3*time.Second + c.deliverDuration + 3*time.Second + time.Duration(c.broadcasts)*c.broadcastInterval + 6*time.Second
	systems := 1
	if !c.skipBaseline {
		systems = 2
	}
	return d + time.Duration(c.runs*systems)*one
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	c, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench-fleet:", err)
		return 2
	}
	switch {
	case inNetns():
		if err := loopbackUp(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fleet: bringing up loopback in its network namespace:", err)
			return 1
		}
	case c.million && c.netns && !c.dryRun:
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "bench-fleet: --netns needs root; running in this network namespace (its TCP hash was sized at boot)")
			break
		}
		code, err := runInNetns(args)
		if err == nil {
			return code
		}
		fmt.Fprintf(os.Stderr, "bench-fleet: --netns: %v; running in this network namespace\n", err)
	}
	m := readMachine()
	var portLo, portHi int
	if c.portRange != "" {
		portLo, portHi, _ = parsePortRange(c.portRange)
		fmt.Fprintf(os.Stderr, "bench-fleet: --port-range: net.ipv4.ip_local_port_range %d-%d for this run (now %d-%d; restored after)\n", portLo, portHi, m.PortLow, m.PortHigh)
		m.PortLow, m.PortHigh = portLo, portHi
	}
	p := makePlan(m, PlanInput{Conns: c.conns, Gateways: c.gateways, ConnsPerGateway: c.connsPerGateway, SourceIPs: c.sourceIPs,
		Baseline: !c.skipBaseline, ListenPorts: ports{base: c.basePort}.all(1)})
	fmt.Fprintln(os.Stderr, limitsLine(m, p))
	systems := "wsfleet and the naive baseline, one after the other"
	if c.skipBaseline {
		systems = "wsfleet only"
	}
	memLine := "estimated memory " + gib(p.MemNeedWsfleet) + " (wsfleet)"
	if p.MemNeedBaseline > 0 {
		memLine += ", " + gib(p.MemNeedBaseline) + " (baseline)"
	}
	runs := fmt.Sprintf("%d run(s)", c.runs)
	if c.million {
		runs = fmt.Sprintf("held %s, then a broadcast", c.hold)
	}
	est := estimate(c)
	fmt.Fprintf(os.Stderr, "plan: %s connections, %s: %d gateway processes per system (at most %s each), NATS, router; loadtest with %d worker process(es); %s; %s; about %s (bounded by --max-time %s)\n",
		numfmt.Thousands(int64(c.conns)), systems, p.Gateways, numfmt.Thousands(int64(p.ConnsPerGateway)), p.LoadWorkers, memLine, runs,
		est.Round(time.Minute), c.maxTime)
	if est > c.maxTime {
		p.Notes = append(p.Notes, fmt.Sprintf("the run may take about %s, over --max-time %s: lower --runs or --conns, or raise --max-time", est.Round(time.Minute), c.maxTime))
	}
	for _, n := range p.Notes {
		fmt.Fprintln(os.Stderr, "note:", n)
	}
	for _, a := range p.Advice {
		fmt.Fprintln(os.Stderr, "advice:", a)
	}
	if len(p.Advice) > 0 {
		fmt.Fprintln(os.Stderr, "bench-fleet: this scale cannot fit this machine; see the advice above")
		return 2
	}
	if c.dryRun {
		return 0
	}
	need := []string{"gateway", "router", "loadtest", "nats-server"}
	if !c.skipBaseline {
		need = append(need, "baseline-gateway")
	}
	for _, b := range need {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "bench-fleet: %s not found: run `make build bench-build` (or `make bench-fleet`)\n",
				filepath.Join(c.bin, b))
			return 1
		}
	}
	if c.bin, err = filepath.Abs(c.bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench-fleet:", err)
		return 1
	}
	logDir := c.logDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "bench-fleet-"); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fleet:", err)
			return 1
		}
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench-fleet:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "logs: %s\n", logDir)

	ps := newProcs(logDir)
	ctx, cancel := context.WithTimeout(context.Background(), c.maxTime)
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\nbench-fleet: stopping every process it started (Ctrl-C again to kill them at once)")
		cancel()
		<-sig
		ps.KillNow()
		os.Exit(130)
	}()
	if c.portRange != "" {
		origLo, origHi := hostinfo.PortRange()
		if err := setPortRange(portLo, portHi); err != nil {
			fmt.Fprintf(os.Stderr, "bench-fleet: --port-range: %v\n", err)
			return 1
		}
		defer func() {
			if err := setPortRange(origLo, origHi); err != nil {
				fmt.Fprintf(os.Stderr, "bench-fleet: restoring net.ipv4.ip_local_port_range %d-%d: %v\n", origLo, origHi, err)
			}
		}()
	}

	h := &harness{cfg: c, plan: p, ps: ps, secret: randomHex(32), apiKey: randomHex(24), logDir: logDir, t0: time.Now(), log: os.Stderr}
	h.rep = &Report{Tool: "wsfleet-bench-fleet", Started: time.Now(), Machine: m, Plan: p, LogDir: logDir,
		Settings: Settings{Conns: c.conns, Runs: c.runs, Hold: c.hold.String(), ConnectRate: c.connectRate, MsgRate: c.msgRate,
			DeliverDuration: c.deliverDuration.String(), Broadcasts: c.broadcasts, BroadcastInterval: c.broadcastInterval.String(),
			Via: c.via, MsgBytes: c.msgBytes, Gateways: p.Gateways, Baseline: !c.skipBaseline, Million: c.million}}
	if c.msgRate == 0 && !c.million {
		h.rep.Settings.PeakRange, h.rep.Settings.PeakConns = c.peakRange, c.peakConns
	}
	h.run(ctx)
	ps.KillAll(10 * time.Second)

	rep := h.rep
	rep.ElapsedS = time.Since(h.t0).Seconds()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		rep.Interrupted = true
		rep.Problems = append(rep.Problems, fmt.Sprintf("--max-time %s reached: the table is partial", c.maxTime))
	case ctx.Err() != nil:
		rep.Interrupted = true
		rep.Problems = append(rep.Problems, "interrupted: the table is partial")
	}
	rep.Figures = figures(rep)
	printReport(os.Stdout, rep)
	if c.jsonFile != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(c.jsonFile, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fleet:", err)
			return 1
		}
	}
	if rep.Interrupted {
		return 130
	}
	if c.million && !millionHeld(rep) {
		return 1
	}
	return 0
}

// millionHeld reports whether --million held every connection it asked
// for (a trial at --million-conns too): otherwise the exit status is 1.
func millionHeld(rep *Report) bool { return rep.Million != nil && rep.Million.HeldAll }

// printReport writes the table, then what went wrong.
func printReport(w io.Writer, rep *Report) {
	s := rep.Settings
	runs := fmt.Sprintf("%d run(s)", s.Runs)
	if s.Million {
		runs = "--million, held " + s.Hold
	}
	fmt.Fprintf(w, "\nwsfleet bench-fleet: %s connections, %d gateway processes per system, %s, %s, %.1f min, %s\n\n",
		numfmt.Thousands(int64(s.Conns)), s.Gateways, runs, rep.Started.UTC().Format(time.RFC3339), rep.ElapsedS/60, machineLine(rep.Machine))
	figs := rep.Figures
	if s.Million { // the other figures are not measured in this mode
		figs = nil
		for _, f := range rep.Figures {
			if f.ID == "million" {
				figs = append(figs, f)
			}
		}
	}
	writeTable(w, tableRows(figs))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Medians decide \"met\"; ranges are min–max over the runs (broadcast: over every broadcast). RSS is summed over the gateway")
	fmt.Fprintln(w, "processes (NATS runs in its own process), read after a forced GC once it settled; CPU is the gateways' process_cpu_seconds_total.")
	for _, l := range diagnostics(rep) {
		fmt.Fprintln(w, l)
	}
	if ps := rep.Peak; ps != nil && len(ps.Probes) > 0 {
		var parts []string
		for _, p := range ps.Probes {
			v := "pass"
			if !p.Pass {
				v = "fail: " + p.Why
			}
			parts = append(parts, fmt.Sprintf("%s msg/s %s", numfmt.Thousands(int64(p.Rate)), v))
		}
		fmt.Fprintf(w, "peak search (wsfleet, %s connections, via %s): %s\n", numfmt.Thousands(int64(ps.Conns)), s.Via, strings.Join(parts, "; "))
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
	fmt.Fprintf(w, "logs and loadtest results: %s\n", rep.LogDir)
}

func machineLine(m Machine) string {
	return fmt.Sprintf("%d CPUs, %s", m.CPUs, gib(m.MemTotal))
}

// millionGatewayEnv is the gateways' environment in --million unless
// --gateway-env sets the same names. With 60 gateways, NATS, the router and
// 53 load generators on 2 cores, a process can wait seconds for CPU during
// the ramp: the gateways' defaults (5s auth and handshake timeouts, 30s
// heartbeat, 90s idle timeout) then close connections that are only
// starved, and the run measures the machine's overload instead of the
// hold. The shedding lag grows with those budgets: a loop or a NATS
// confirmation a second late is this machine's normal under the ramp, and
// a 3s one still leaves each admitted connection most of its 30s handshake
// and 60s authentication budgets. The heartbeat is every connection's
// ping and pong once per period, 8,300 of each a second at a million and
// 120s, on the same 2 cores as the ramp and the broadcast.
var millionGatewayEnv = []string{"WSFLEET_GATEWAY_AUTH_TIMEOUT=60s", "WSFLEET_GATEWAY_HANDSHAKE_TIMEOUT=30s", "WSFLEET_GATEWAY_SHED_LAG=3s",
	"WSFLEET_GATEWAY_HEARTBEAT=120s", "WSFLEET_GATEWAY_IDLE_TIMEOUT=360s"}

// withDefaults returns env with each NAME=VALUE of defs whose NAME env does
// not set appended.
func withDefaults(env, defs []string) []string {
	out := slices.Clone(env)
	for _, d := range defs {
		name, _, _ := strings.Cut(d, "=")
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
			out = append(out, d)
		}
	}
	return out
}

// gatewayEnv is the environment of the gateway processes: --gateway-env,
// and GOMAXPROCS set to the machine's CPUs divided among the K processes
// (at least 1), as a deployment running several processes per host sets
// it, unless --gateway-env names it. Both systems get the same.
func gatewayEnv(extra []string, k int) []string {
	for _, kv := range extra {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return extra
		}
	}
	return append([]string{fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/max(k, 1)))}, extra...)
}

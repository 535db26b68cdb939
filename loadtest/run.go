package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/wsfleet/wsfleet/internal/hostinfo"
	"github.com/wsfleet/wsfleet/internal/numfmt"
)

// runner is the parent of one run: it plans, starts the workers (in this
// process or as processes), drives the scenario's phases and merges what
// the workers report.
type runner struct {
	cfg     Config
	lim     Limits
	targets []Target
	runID   string
	t0      int64
	started time.Time
	out     io.Writer // the report
	log     io.Writer // progress and notes

	handles []workerHandle
	spawn   *spawner
	plans   []*workerPlan

	mu          sync.Mutex
	prog        []Progress
	results     []*workerResult
	workerErrs  []string
	series      []map[int]seriesWire
	seriesLat   map[int]*hdrhistogram.Histogram
	live        *liveMerger
	replies     chan event
	resultsDone chan struct{}
	nresults    int

	phase        string
	phases       []phaseMark // guarded by phaseMu
	phaseMu      sync.Mutex
	interrupted  bool
	bcasts       []bcastPub
	lp           *livePub             // live: the parent's publishes
	probe        *ProbeResult         // rooms --room-publish client: the check before publishing
	subscribedAt int64                // live, rooms: when the last connection's first subscribe came (0: not all did)
	scrapes      map[string][]*Scrape // url -> start, peak, end, before close
	drainEnd     string
	rampStart    int64
	peakLive     int64
	stormDrop    time.Time
	kicks        *KickResult // --kick-users
}

type bcastPub struct {
	seq    int
	t      int64
	ok     bool
	reason string
}

// Run executes one scenario. When ctx is canceled (Ctrl-C) the run stops
// early, its workers too, and the partial result is returned with
// Interrupted set.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	r := &runner{cfg: cfg, out: cfg.Stdout, log: cfg.Stderr, scrapes: map[string][]*Scrape{}}
	if cfg.Scenario == ScenarioLive {
		r.lp = &livePub{errs: map[string]int64{}}
	}
	if err := r.plan(); err != nil {
		return nil, err
	}
	r.printLimits()
	if len(r.lim.Advice) > 0 {
		return nil, errors.New("the machine's limits cannot reach --conns; see the advice above")
	}
	if cfg.needsRouter() {
		if err := checkRouter(ctx, cfg.Publish, cfg.ConnectTimeout); err != nil {
			return nil, err
		}
	}
	if cfg.Publish.JetStream {
		if err := checkHistory(ctx, cfg.Publish, cfg.ConnectTimeout); err != nil {
			return nil, err
		}
	}
	res, err := r.run(ctx)
	if err != nil {
		return res, err
	}
	return res, nil
}

func (r *runner) plan() error {
	c := &r.cfg
	var err error
	if r.targets, err = resolveTargets(c.URLs, c.Transport); err != nil {
		return err
	}
	soft, hard := raiseNoFile()
	lo, hi := hostinfo.PortRange()
	r.lim = Limits{FDSoft: soft, FDHard: hard, PortLow: lo, PortHigh: hi, CPUs: hostinfo.CPUs()}
	if c.SourceIPs != "" {
		if r.lim.SourceIPs, err = parseSourceIPs(c.SourceIPs); err != nil {
			return err
		}
		if err := checkBindable(r.lim.SourceIPs); err != nil {
			return err
		}
		for _, s := range r.lim.SourceIPs {
			if netip.MustParseAddr(s).Is4() != netip.MustParseAddrPort(r.targets[0].Addr).Addr().Is4() {
				return usagef("--source-ips and the gateway addresses are of different families")
			}
		}
	}
	pairs := map[string]bool{}
	for _, t := range r.targets {
		pairs[t.Addr] = true
		r.lim.Targets = append(r.lim.Targets, t.Addr)
	}
	if err := planWorkers(&r.lim, c.Conns, c.Workers, c.ConnsPerWorker, len(pairs)); err != nil && len(r.lim.Advice) == 0 {
		return err
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	r.runID = hex.EncodeToString(id[:])
	if c.Seed == 0 {
		var s [8]byte
		_, _ = rand.Read(s[:])
		for _, b := range s {
			c.Seed = c.Seed<<8 | uint64(b)
		}
	}
	// Whole users per worker, as evenly as possible; in a rooms run whole
	// rooms (each of whole users), so a room's messages are published and
	// checked in one process.
	unit := c.Devices
	if c.Scenario == ScenarioRooms {
		unit = c.RoomSize
	}
	users := (c.Conns + unit - 1) / unit
	w := min(r.lim.Workers, users)
	if unit > c.Devices && r.lim.Processes > 0 && c.Workers == "auto" {
		// whole rooms must not take a process past its connections
		w = min(max(w, (users+max(1, r.lim.ConnsPerWorker/unit)-1)/max(1, r.lim.ConnsPerWorker/unit)), users)
	}
	r.lim.Workers = w
	if w <= 1 && c.Workers == "auto" {
		r.lim.Processes = 0
	} else if r.lim.Processes > 0 {
		r.lim.Processes = w
	}
	if c.Scenario == ScenarioRooms && c.RoomPublish == RoomPublishClient {
		if perConn := c.MsgRate / float64(c.Conns); perConn > 50 {
			r.lim.Notes = append(r.lim.Notes, fmt.Sprintf("--room-publish client: each member sends %.0f publish frames a second on average; the gateways refuse a connection's frames past their --max-client-msgs-per-sec (default 100) and close it past its burst", perConn))
		}
	}
	from := 0
	for i := 0; i < w; i++ {
		n := users / w
		if i < users%w {
			n++
		}
		p := &workerPlan{
			Index: i, Workers: w, RunID: r.runID, Targets: r.targets, SourceIPs: r.lim.SourceIPs,
			SlotFrom: from * unit, SlotTo: min((from+n)*unit, c.Conns),
			Devices: c.Devices, UserPrefix: c.UserPrefix, Auth: c.Auth, Publish: c.Publish,
			NeedPublisher:  c.publishes() || (c.Scenario == ScenarioRooms && c.RoomPublish != RoomPublishClient),
			ConnectTimeout: c.ConnectTimeout, BackoffMin: c.BackoffMin, BackoffMax: c.BackoffMax,
			CloseTimeout: c.CloseTimeout, OpenLoopRamp: c.OpenLoopRamp, Resume: c.Resume, Transport: c.Transport, Pollers: c.Pollers, Seed: c.Seed + uint64(i)*0x9e3779b97f4a7c15,
			Scenario: c.Scenario, Topic: c.Topic, RoomSize: c.RoomSize, RoomPrefix: c.RoomPrefix, RoomPublish: c.RoomPublish,
		}
		if !c.topics() {
			p.Topic, p.RoomSize, p.RoomPrefix, p.RoomPublish = "", 0, "", ""
		}
		from += n
		r.plans = append(r.plans, p)
	}
	return nil
}

func (r *runner) printLimits() {
	l := &r.lim
	src := "the kernel's choice (one per target)"
	if n := len(l.SourceIPs); n > 0 {
		src = fmt.Sprintf("%d (%s … %s)", n, l.SourceIPs[0], l.SourceIPs[n-1])
	}
	where := "in this process"
	if l.Processes > 0 {
		where = fmt.Sprintf("%d worker processes", l.Processes)
	}
	fmt.Fprintf(r.log, "limits: open files %s (hard %s), ephemeral ports %d-%d (%s per source address and target), source addresses: %s, targets: %s, CPUs: %d\n",
		numfmt.Thousands(int64(l.FDSoft)), numfmt.Thousands(int64(l.FDHard)), l.PortLow, l.PortHigh, numfmt.Thousands(int64(l.PortHigh-l.PortLow+1)), src, strings.Join(l.Targets, ", "), l.CPUs)
	fmt.Fprintf(r.log, "plan: %s connections (%d per user), %s, at most %s connections per process\n",
		numfmt.Thousands(int64(r.cfg.Conns)), r.cfg.Devices, where, numfmt.Thousands(int64(l.ConnsPerWorker)))
	for _, a := range l.Advice {
		fmt.Fprintln(r.log, "advice:", a)
	}
	for _, n := range l.Notes {
		fmt.Fprintln(r.log, "note:", n)
	}
}

func (r *runner) setPhase(p string) {
	r.phaseMu.Lock()
	r.phase = p
	r.phases = append(r.phases, phaseMark{at: mono(), phase: p})
	r.phaseMu.Unlock()
}

func (r *runner) getPhase() string {
	r.phaseMu.Lock()
	defer r.phaseMu.Unlock()
	return r.phase
}

// run drives the phases; the deferred clean-up stops every worker.
func (r *runner) run(ctx context.Context) (*Result, error) {
	c := &r.cfg
	r.started = time.Now()
	r.t0 = mono()
	for _, p := range r.plans {
		p.T0 = r.t0
	}
	w := len(r.plans)
	r.prog = make([]Progress, w)
	r.series = make([]map[int]seriesWire, w)
	for i := range r.series {
		r.series[i] = map[int]seriesWire{}
	}
	r.seriesLat = map[int]*hdrhistogram.Histogram{}
	r.live = newLiveMerger(w)
	r.replies = make(chan event, 4*w+16)
	r.resultsDone = make(chan struct{})

	if r.lim.Processes > 0 {
		r.spawn = newSpawner()
		exe, env := c.WorkerExe, c.WorkerEnv
		if exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		for range r.plans {
			h, err := r.spawn.spawn(exe, env)
			if err != nil {
				r.stopAll()
				return nil, err
			}
			r.handles = append(r.handles, h)
		}
	} else {
		r.handles = append(r.handles, startLocal())
	}
	defer r.stopAll()
	for i, h := range r.handles {
		go r.collect(i, h)
	}

	disp := newDisplay(r)
	disp.start()
	defer disp.stop()

	// init
	r.setPhase("init")
	for i, h := range r.handles {
		if err := h.send(command{Cmd: "init", Plan: r.plans[i]}); err != nil {
			return nil, err
		}
	}
	if err := r.waitReplies(ctx, "ready", 2*time.Minute); err != nil {
		return nil, err
	}
	var bsink *sink
	if c.Scenario == ScenarioBroadcast || c.Scenario == ScenarioLive {
		var err error
		if bsink, err = newSink(c.Publish); err != nil {
			return nil, err
		}
		defer bsink.close()
	}
	r.scrape(ctx, scrapeStart)

	// ramp
	r.setPhase("ramp")
	r.rampStart = mono()
	for i, h := range r.handles {
		share := float64(r.plans[i].SlotTo-r.plans[i].SlotFrom) / float64(c.Conns)
		_ = h.send(command{Cmd: "connect", Rate: c.ConnectRate * share})
	}
	r.waitUntil(ctx, c.RampLimit(), func(p Progress, all []Progress) bool {
		for _, q := range all {
			if q.RampDone == 0 {
				return false
			}
		}
		return true
	})
	r.notePeak()
	r.scrape(ctx, scrapePeak)

	// the scenario
	switch c.Scenario {
	case ScenarioConnect:
		r.setPhase("hold")
		r.sleep(ctx, c.Duration)
	case ScenarioDeliver:
		r.setPhase("deliver")
		r.sendShares("publish", c.MsgRate)
		r.holdKicking(ctx, c.Duration)
		r.stopPublishing(ctx)
		r.drain(ctx)
	case ScenarioBroadcast:
		r.setPhase("broadcast")
		for k := 1; k <= c.Broadcasts && ctx.Err() == nil; k++ {
			t := mono()
			body := appendBody(nil, r.runID, 0, true, uint32(k), t, c.Publish.MsgBytes)
			reason, id := bsink.broadcast(body, fmt.Sprintf("lt.%s.b.%d", r.runID, k))
			r.bcasts = append(r.bcasts, bcastPub{seq: k, t: t, ok: reason == "", reason: reason})
			r.sendAll(command{Cmd: "bcast", Seq: k, T: t, OK: reason == "", ID: id})
			_ = r.waitReplies(ctx, "announced", time.Minute)
			if k < c.Broadcasts {
				r.sleep(ctx, c.BroadcastInterval-time.Duration(mono()-t))
			}
		}
		r.drain(ctx)
	case ScenarioStorm:
		r.setPhase("storm")
		start := time.Now()
		if c.MsgRate > 0 {
			r.sendShares("publish", c.MsgRate)
		}
		r.sleep(ctx, c.DropAfter)
		if ctx.Err() == nil {
			r.setPhase("dropped")
			r.stormDrop = time.Now()
			r.sendAll(command{Cmd: "drop", Share: c.DropShare})
			_ = r.waitReplies(ctx, "dropped", time.Minute)
			r.waitUntil(ctx, c.Duration-time.Since(start), func(p Progress, _ []Progress) bool {
				return p.Recovered >= p.Dropped
			})
			r.setPhase("recovered")
			r.sleep(ctx, c.Duration-time.Since(start))
		}
		if c.MsgRate > 0 {
			r.stopPublishing(ctx)
		}
		r.drain(ctx)
	case ScenarioLive:
		r.waitSubscribed(ctx)
		r.setPhase("live")
		r.publishLive(ctx, bsink)
		r.drain(ctx)
	case ScenarioRooms:
		r.waitSubscribed(ctx)
		if c.RoomPublish != RoomPublishClient || r.probeClientPublish(ctx) {
			r.setPhase("rooms")
			r.sendShares("publish", c.MsgRate)
			r.sleep(ctx, c.Duration)
			r.stopPublishing(ctx)
			r.drain(ctx)
		}
	case ScenarioChurn:
		r.setPhase("churn")
		if c.MsgRate > 0 {
			r.sendShares("publish", c.MsgRate)
		}
		for i, h := range r.handles {
			share := float64(r.plans[i].SlotTo-r.plans[i].SlotFrom) / float64(c.Conns)
			_ = h.send(command{Cmd: "churn", Rate: c.ChurnRate * share, Down: c.ChurnDown})
		}
		r.sleep(ctx, c.Duration)
		r.sendAll(command{Cmd: "churn", Rate: 0})
		if c.MsgRate > 0 {
			r.stopPublishing(ctx)
		}
		r.drain(ctx)
	}
	r.notePeak()
	if ctx.Err() != nil {
		r.interrupted = true
		fmt.Fprintln(r.log, "\ninterrupted: stopping the workers for a partial report")
		// Messages in flight are not lost: stop publishing and give them
		// --drain-quiet (at most --drain) to arrive.
		if c.publishes() || c.Scenario == ScenarioBroadcast || c.topics() {
			r.sendAll(command{Cmd: "churn", Rate: 0})
			r.stopPublishing(context.Background())
			saved := c.Drain
			c.Drain = min(c.Drain, c.DrainQuiet)
			r.drain(context.Background())
			c.Drain = saved
		}
	}

	// finish
	r.scrape(context.Background(), scrapeBeforeClose)
	r.setPhase("closing")
	r.sendAll(command{Cmd: "finish"})
	select {
	case <-r.resultsDone:
	case <-time.After(c.CloseTimeout + time.Minute):
		r.mu.Lock()
		r.workerErrs = append(r.workerErrs, "some workers sent no result within the close timeout + 1m")
		r.mu.Unlock()
	}
	end := mono()
	r.stopAll()
	disp.stop()
	r.scrape(context.Background(), scrapeEnd)
	res := r.result(end)
	if err := r.writeOutputs(res); err != nil {
		return res, err
	}
	return res, nil
}

// sendShares sends a rate command, each worker getting its share of the
// connections' share of the rate.
func (r *runner) sendShares(cmd string, rate float64) {
	for i, h := range r.handles {
		share := float64(r.plans[i].SlotTo-r.plans[i].SlotFrom) / float64(r.cfg.Conns)
		_ = h.send(command{Cmd: cmd, Rate: rate * share})
	}
}

func (r *runner) sendAll(c command) {
	for _, h := range r.handles {
		_ = h.send(c)
	}
}

func (r *runner) stopPublishing(ctx context.Context) {
	r.sendAll(command{Cmd: "stop_publish"})
	_ = r.waitReplies(ctx, "stopped", r.cfg.Publish.Timeout+30*time.Second)
}

// drain waits for the deliveries still owed: until nothing is outstanding,
// or DrainQuiet passed without a delivery, or Drain passed. With --resume
// deliveries owed to devices that are away are outstanding too, and the
// drain does not end for quiet while such devices are still to come back
// (a churned device's --churn-down may be longer than --drain-quiet).
func (r *runner) drain(ctx context.Context) {
	r.setPhase("drain")
	start := mono()
	quiet := int64(r.cfg.DrainQuiet)
	r.drainEnd = "timeout"
	r.waitUntil(ctx, r.cfg.Drain, func(p Progress, all []Progress) bool {
		now := mono()
		fresh := true // every worker's figures were taken after the drain began
		for _, q := range all {
			fresh = fresh && q.At > start
		}
		if fresh && p.Outstanding == 0 {
			r.drainEnd = "complete"
			return true
		}
		if now-max(p.LastRecv, start) >= quiet && (p.Away == 0 || p.Outstanding <= 0) {
			r.drainEnd = "quiet"
			return true
		}
		return false
	})
}

// sleep waits d or until ctx ends.
func (r *runner) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waitUntil polls the summed progress until cond holds, d passes or ctx ends.
func (r *runner) waitUntil(ctx context.Context, d time.Duration, cond func(Progress, []Progress) bool) bool {
	deadline := time.Now().Add(d)
	for {
		sum, all := r.progress()
		if cond(sum, all) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitReplies waits for one event of kind from every worker.
func (r *runner) waitReplies(ctx context.Context, kind string, d time.Duration) error {
	got := map[int]bool{}
	t := time.NewTimer(d)
	defer t.Stop()
	for len(got) < len(r.handles) {
		select {
		case ev := <-r.replies:
			if ev.Ev == "error" || ev.Ev == "exit" {
				return fmt.Errorf("worker %d: %s", ev.Worker, ev.Err)
			}
			if ev.Ev == kind {
				got[ev.Worker] = true
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("workers did not answer %q within %s", kind, d)
		}
	}
	return nil
}

// collect reads one worker's events until it ends.
func (r *runner) collect(i int, h workerHandle) {
	for ev := range h.events() {
		r.mu.Lock()
		// Events carrying progress (progress, and the replies to stop,
		// announce and drop) can arrive out of the order they were taken
		// in: keep the newest.
		if ev.Progress != nil && ev.Progress.At >= r.prog[i].At {
			r.prog[i] = *ev.Progress
		}
		r.addSeries(i, ev.Series, ev.Lats)
		r.live.add(i, ev.Live)
		switch ev.Ev {
		case "result":
			ev.Result.Index = i
			r.results = append(r.results, ev.Result)
			if ev.Result.Final.At >= r.prog[i].At {
				r.prog[i] = ev.Result.Final
			}
			r.addSeries(i, ev.Result.Series, ev.Result.Lats)
			r.live.add(i, ev.Result.Live)
			r.live.end(i)
			r.nresults++
			if r.nresults == len(r.handles) {
				close(r.resultsDone)
			}
		case "error", "exit":
			r.workerErrs = append(r.workerErrs, fmt.Sprintf("worker %d: %s", i, ev.Err))
			r.live.end(i)
		}
		r.mu.Unlock()
		switch ev.Ev {
		case "ready", "stopped", "announced", "tannounced", "probing", "probe_ended", "dropped", "error", "exit":
			ev.Worker = i
			select {
			case r.replies <- ev:
			default:
			}
		}
	}
}

// addSeries files worker i's points and per-second histograms (r.mu held).
func (r *runner) addSeries(i int, pts []seriesWire, lats []secHist) {
	for _, s := range pts {
		r.series[i][s.I] = s
	}
	for _, l := range lats {
		if h, err := mergeWire(r.seriesLat[l.Sec], l.H); err == nil {
			r.seriesLat[l.Sec] = h
		} else {
			r.workerErrs = append(r.workerErrs, fmt.Sprintf("worker %d: latency histogram of second %d: %v", i, l.Sec, err))
		}
	}
}

// progress returns the summed latest progress and each worker's.
func (r *runner) progress() (Progress, []Progress) {
	r.mu.Lock()
	all := append([]Progress(nil), r.prog...)
	r.mu.Unlock()
	var s Progress
	for _, p := range all {
		s.Slots += p.Slots
		s.Live += p.Live
		s.Connecting += p.Connecting
		s.Attempts += p.Attempts
		s.Welcomes += p.Welcomes
		s.EverWelcomed += p.EverWelcomed
		s.Fails += p.Fails
		s.Closes += p.Closes
		s.Published += p.Published
		s.Acked += p.Acked
		s.PubFailed += p.PubFailed
		s.Receipts += p.Receipts
		s.BReceipts += p.BReceipts
		s.Dups += p.Dups
		s.OOO += p.OOO
		s.Outstanding += p.Outstanding
		s.Dropped += p.Dropped
		s.Recovered += p.Recovered
		s.Refused += p.Refused
		s.Away += p.Away
		s.Replayed += p.Replayed
		s.Subscribed += p.Subscribed
		s.TLive += p.TLive
		s.TReceipts += p.TReceipts
		s.ProbeSent += p.ProbeSent
		s.ProbeOK += p.ProbeOK
		s.SubDone = max(s.SubDone, p.SubDone)
		s.RampRate += p.RampRate
		s.RampTarget += p.RampTarget
		s.LastRecv = max(s.LastRecv, p.LastRecv)
		s.RampDone = max(s.RampDone, p.RampDone)
		s.LastRecovery = max(s.LastRecovery, p.LastRecovery)
		if p.RampStart != 0 && (s.RampStart == 0 || p.RampStart < s.RampStart) {
			s.RampStart = p.RampStart
		}
		if p.FirstDrop != 0 && (s.FirstDrop == 0 || p.FirstDrop < s.FirstDrop) {
			s.FirstDrop = p.FirstDrop
		}
	}
	if lp := r.lp; lp != nil {
		s.Published += lp.published.Load()
		s.Acked += lp.acked.Load()
		s.PubFailed += lp.failed.Load()
	}
	return s, all
}

func (r *runner) notePeak() {
	p, _ := r.progress()
	r.mu.Lock()
	r.peakLive = max(r.peakLive, p.Live)
	r.mu.Unlock()
}

// stopAll ends every worker (closing its input; a process that has not
// exited in 5 s is killed, then the whole group).
func (r *runner) stopAll() {
	var wg sync.WaitGroup
	for _, h := range r.handles {
		wg.Add(1)
		go func(h workerHandle) { defer wg.Done(); h.stop(5 * time.Second) }(h)
	}
	wg.Wait()
	if r.spawn != nil {
		r.spawn.close()
		r.spawn = nil
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

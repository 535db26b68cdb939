package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"github.com/wsfleet/wsfleet/loadtest"
)

// connectPhase measures one fresh fleet: GC'd RSS before the ramp, the
// ramp's CPU, and GC'd, settled RSS after holding the connections idle.
func (h *harness) connectPhase(ctx context.Context, f *fleet, label, tag string) (*ConnectSample, error) {
	c := h.cfg
	h.logf("%s: GC and RSS before the ramp", label)
	before, _, goBefore, _, err := gcAndSettle(ctx, f.admins, c.settle)
	if err != nil {
		return nil, err
	}
	held, measured := make(chan struct{}), make(chan struct{})
	var once bool
	// The hold lasts until the RSS reading is taken; then the harness ends
	// loadtest's run early. Its duration is only a bound.
	job := ltJob{tag: tag, label: label, scenario: "connect", conns: c.conns, stop: measured,
		args: []string{"--duration", (c.hold + c.settle + time.Minute).String()},
		onPhase: func(p string) {
			if p == "hold" && !once {
				once = true
				close(held)
			}
		},
		timeout: rampBound(c.conns, c.connectRate) + c.hold + c.settle + 90*time.Second,
	}
	type ltOut struct {
		res   *loadtest.Result
		snaps *phaseSnaps
		err   error
	}
	done := make(chan ltOut, 1)
	go func() {
		res, snaps, err := h.runLoadtest(ctx, f, job)
		done <- ltOut{res, snaps, err}
	}()
	var out ltOut
	var after Sample
	var each []Sample
	var goAfter memStats
	var settledAfter bool
	var idle *CPUSplit
	var natsRSS, routerRSS float64
	select {
	case <-held:
		h.logf("%s: ramp done; holding %s, then GC and RSS", label, c.hold)
		// The idle connections' CPU: the hold after the ramp's tail.
		select {
		case <-time.After(min(time.Second, c.hold/4)):
		case <-ctx.Done():
		}
		a := f.snap()
		select {
		case <-time.After(time.Until(a.At.Add(c.hold - min(time.Second, c.hold/4)))):
		case <-ctx.Done():
		}
		idle = split("hold (idle)", a, f.snap())
		if ctx.Err() == nil {
			after, each, goAfter, settledAfter, err = gcAndSettle(ctx, f.admins, c.settle)
		}
		natsRSS, routerRSS = procRSS(f.nats.Pid()), procRSS(f.router.Pid())
		close(measured)
		out = <-done
	case out = <-done:
		if out.err == nil {
			out.err = errors.New("loadtest ended before its hold phase")
		}
	}
	if out.err != nil {
		return nil, out.err
	}
	if err != nil {
		return nil, err
	}
	s := &ConnectSample{Conns: after.Conns, RSSBefore: before.RSS, RSSAfter: after.RSS, Settled: settledAfter, Gateways: each,
		RampSeconds: out.res.Connections.RampSeconds, ConnectRate: out.res.Connections.Rate,
		HandshakeP99: out.res.Connections.Handshake.P99, Failures: out.res.Connections.Failures, Closes: out.res.Closes,
		GoBefore: goBefore, GoAfter: goAfter, RampSplit: out.snaps.window("ramp", "hold"), IdleSplit: idle,
		NATSRSS: natsRSS, RouterRSS: routerRSS}
	if after.Conns > 0 {
		s.RSSPerConn = (after.RSS - before.RSS) / after.Conns
		per := func(a, b float64) float64 { return (b - a) / after.Conns }
		s.GoPerConn = &GoPerConn{
			HeapLive:         per(goBefore.HeapAlloc, goAfter.HeapAlloc),
			HeapFragment:     per(goBefore.HeapInuse-goBefore.HeapAlloc, goAfter.HeapInuse-goAfter.HeapAlloc),
			HeapIdleRetained: per(goBefore.HeapIdle-goBefore.HeapReleased, goAfter.HeapIdle-goAfter.HeapReleased),
			Stacks:           per(goBefore.StackInuse, goAfter.StackInuse),
		}
		s.GoPerConn.Other = s.RSSPerConn - s.GoPerConn.HeapLive - s.GoPerConn.HeapFragment - s.GoPerConn.HeapIdleRetained - s.GoPerConn.Stacks
	}
	cpu, conns, err := gatewayCPU(out.res, atStart, atPeak)
	if err != nil {
		return s, fmt.Errorf("ramp CPU: %v", err)
	}
	s.RampCPU, s.RampConns = cpu, conns
	if cpu > 0 {
		s.ConnsPerCPU = conns / cpu
	}
	h.logf("%s: %s connections; RSS %s → %s (%s B per connection%s); ramp %.1f s at %s/s, gateway CPU %.2f s → %s connections per CPU-second",
		label, numfmt.Thousands(int64(after.Conns)), mib(before.RSS), mib(after.RSS), numfmt.Thousands(int64(s.RSSPerConn)), unsettled(settledAfter),
		s.RampSeconds, numfmt.Thousands(int64(s.ConnectRate)), cpu, numfmt.Thousands(int64(s.ConnsPerCPU)))
	if g := s.GoPerConn; g != nil {
		h.logf("%s: per connection: Go heap live %s B, heap fragmentation %s B, idle heap kept from the OS %s B, stacks %s B, the rest of RSS %s B",
			label, numfmt.Thousands(int64(g.HeapLive)), numfmt.Thousands(int64(g.HeapFragment)), numfmt.Thousands(int64(g.HeapIdleRetained)), numfmt.Thousands(int64(g.Stacks)), numfmt.Thousands(int64(g.Other)))
	}
	h.logf("%s: CPU: %v; %v", label, s.RampSplit, s.IdleSplit)
	h.logf("%s: NATS RSS %s, router RSS %s", label, mib(natsRSS), mib(routerRSS))
	if int(after.Conns) < c.conns {
		h.problem("%s: only %s of %s connections were open at the RSS reading", label, numfmt.Thousands(int64(after.Conns)), numfmt.Thousands(int64(c.conns)))
	}
	if n := sumCloses(out.res.Closes); n > 0 {
		h.problem("%s: the gateways closed %d connections (%v)", label, n, out.res.Closes)
	}
	return s, nil
}

func unsettled(ok bool) string {
	if ok {
		return ""
	}
	return "; RSS had not settled"
}

func sumCloses(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// deliverPhase publishes rate messages/s to random users for d.
func (h *harness) deliverPhase(ctx context.Context, f *fleet, label, tag string, conns int, rate float64, d time.Duration) (*DeliverSample, *loadtest.Result, error) {
	job := ltJob{tag: tag, label: label, scenario: "deliver", conns: conns,
		args:    []string{"--msg-rate", strconv.FormatFloat(rate, 'f', 0, 64), "--duration", d.String()},
		timeout: rampBound(conns, h.cfg.connectRate) + d + 60*time.Second,
	}
	res, snaps, err := h.runLoadtest(ctx, f, job)
	if err != nil {
		return nil, res, err
	}
	m := res.Messages
	if m == nil {
		return nil, res, errors.New("loadtest reported no messages")
	}
	s := &DeliverSample{Rate: rate, Published: m.Acked, Expected: m.Counts.Expected, Delivered: m.Counts.Delivered, Lost: m.Counts.Lost,
		Skipped: m.Skipped, Failed: m.Failed, P50: m.Latency.P50, P99: m.Latency.P99, Max: m.Latency.Max, DrainEnd: m.DrainEnd,
		Conns: res.Connections.Peak, Split: snaps.window("deliver", "drain", "closing", "end")}
	cpu, _, err := gatewayCPU(res, atPeak, atBeforeClose)
	if err != nil {
		return s, res, fmt.Errorf("deliver CPU: %v", err)
	}
	s.CPU = cpu
	if g := res.Gateways[0]; g.Peak != nil && g.BeforeClose != nil {
		s.WindowSeconds = g.BeforeClose.At.Sub(g.Peak.At).Seconds()
	}
	if cpu > 0 {
		s.DeliveriesPerCPU = float64(s.Delivered) / cpu
	}
	return s, res, nil
}

// broadcastPhase publishes --broadcasts broadcasts to every connection.
func (h *harness) broadcastPhase(ctx context.Context, f *fleet, label, tag string) (*BroadcastSample, error) {
	c := h.cfg
	job := ltJob{tag: tag, label: label, scenario: "broadcast", conns: c.conns,
		args:    []string{"--broadcasts", strconv.Itoa(c.broadcasts), "--broadcast-interval", c.broadcastInterval.String()},
		timeout: rampBound(c.conns, c.connectRate) + time.Duration(c.broadcasts)*c.broadcastInterval + 60*time.Second,
	}
	res, snaps, err := h.runLoadtest(ctx, f, job)
	if err != nil {
		return nil, err
	}
	if res.Broadcasts == nil {
		return nil, errors.New("loadtest reported no broadcasts")
	}
	s := &BroadcastSample{Conns: res.Connections.Peak, Split: snaps.window("broadcast", "drain", "closing", "end"),
		ClientCPU: res.CPU.UserSeconds + res.CPU.SysSeconds}
	var lasts []string
	for _, e := range res.Broadcasts.Each {
		s.Each = append(s.Each, BcastOne{Receivers: e.Receivers, FirstMs: e.FirstMs, LastMs: e.LastMs, Error: e.Error})
		lasts = append(lasts, fmt.Sprintf("%s receivers, last %.1f ms", numfmt.Thousands(e.Receivers), e.LastMs))
		if e.Receivers < res.Connections.Peak {
			h.problem("%s: a broadcast reached %s of %s connections", label, numfmt.Thousands(e.Receivers), numfmt.Thousands(res.Connections.Peak))
		}
	}
	h.logf("%s: %s", label, joinSemi(lasts))
	h.logf("%s: CPU: %v", label, s.Split)
	return s, nil
}

func joinSemi(xs []string) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += "; "
		}
		out += x
	}
	return out
}

// judgeProbe says whether a deliver run kept up: every message
// acknowledged and delivered, nothing skipped, the drain complete, the
// rate achieved, and the latency at the end of publishing not far above
// the latency at its start (a growing backlog shows as a growing latency).
func judgeProbe(res *loadtest.Result) (bool, string) {
	m := res.Messages
	switch {
	case m == nil:
		return false, "no messages"
	case m.Failed > 0:
		return false, fmt.Sprintf("%s publishes failed", numfmt.Thousands(m.Failed))
	case m.Skipped > 0:
		return false, fmt.Sprintf("the publisher fell behind (%s skipped)", numfmt.Thousands(m.Skipped))
	case m.Counts.Lost > 0:
		return false, fmt.Sprintf("%s lost", numfmt.Thousands(m.Counts.Lost))
	case m.Counts.Delivered < m.Counts.Expected:
		return false, fmt.Sprintf("%s of %s delivered", numfmt.Thousands(m.Counts.Delivered), numfmt.Thousands(m.Counts.Expected))
	case m.DrainEnd != "complete":
		return false, "the drain ended " + m.DrainEnd
	case m.RateTarget > 0 && m.Rate < 0.95*m.RateTarget:
		return false, fmt.Sprintf("%.0f/s acknowledged of %.0f/s", m.Rate, m.RateTarget)
	}
	if first, last, ok := latencyTrend(res.Series); ok && last > 2*first+10 {
		return false, fmt.Sprintf("the backlog grew: per-second p50 latency %.1f ms at the start of publishing, %.1f ms at the end", first, last)
	}
	return true, ""
}

// latencyTrend is the median per-second p50 latency over the first and
// the last third of the seconds that delivered messages (the partial first
// and last seconds left out).
func latencyTrend(series []loadtest.Point) (first, last float64, ok bool) {
	var p50 []float64
	for _, p := range series {
		if p.Acked > 0 && p.LatCount > 0 {
			p50 = append(p50, p.LatP50)
		}
	}
	if len(p50) < 5 {
		return 0, 0, false
	}
	p50 = p50[1 : len(p50)-1]
	third := max(1, len(p50)/3)
	return medianOf(p50[:third]), medianOf(p50[len(p50)-third:]), true
}

// nextProbe is the search's next rate: doubling while probes pass, then
// bisecting (geometrically) between the highest pass and the lowest fail
// until they are within 20 %. 0: done.
func nextProbe(probes []Probe, lo, hi float64) float64 {
	if len(probes) == 0 {
		return lo
	}
	pass, fail := 0.0, math.Inf(1)
	for _, p := range probes {
		if p.Pass {
			pass = max(pass, p.Rate)
		} else {
			fail = min(fail, p.Rate)
		}
	}
	switch {
	case pass == 0: // the bottom of the range failed
		return 0
	case math.IsInf(fail, 1):
		if pass >= hi {
			return 0
		}
		return min(pass*2, hi)
	case fail/pass <= 1.2:
		return 0
	}
	r := math.Sqrt(pass * fail)
	return math.Round(r/100) * 100
}

// peakSearch finds wsfleet's peak delivery rate on a fresh fleet.
func (h *harness) peakSearch(ctx context.Context) (*PeakSearch, error) {
	c := h.cfg
	ps := &PeakSearch{Conns: c.peakConns}
	f, err := h.fleet(ctx, sysWsfleet, "peak")
	if err != nil {
		return ps, err
	}
	defer f.stop()
	for i := 0; i < c.peakProbes; i++ {
		rate := nextProbe(ps.Probes, c.peakLo, c.peakHi)
		if rate == 0 {
			break
		}
		label := fmt.Sprintf("peak search %d/%d at %s msg/s", i+1, c.peakProbes, numfmt.Thousands(int64(rate)))
		s, res, err := h.deliverPhase(ctx, f, label, fmt.Sprintf("peak-%d", i+1), c.peakConns, rate, c.peakDuration)
		if err != nil {
			if ctx.Err() != nil {
				return ps, err
			}
			ps.Probes = append(ps.Probes, Probe{Rate: rate, Why: err.Error()})
			h.logf("%s: fail (%v)", label, err)
			continue
		}
		pass, why := judgeProbe(res)
		ps.Probes = append(ps.Probes, Probe{Rate: rate, Pass: pass, Why: why, Delivered: s.Delivered, P50: s.P50, P99: s.P99, CPU: s.Split})
		verdict := "pass"
		if !pass {
			verdict = "fail: " + why
		}
		h.logf("%s: %s (delivered %s, p50 %.2f ms, p99 %.2f ms); CPU: %v", label, verdict, numfmt.Thousands(s.Delivered), s.P50, s.P99, s.Split)
	}
	for _, p := range ps.Probes {
		if p.Pass {
			ps.Peak = max(ps.Peak, p.Rate)
		}
	}
	ps.AtLeast = ps.Peak >= c.peakHi
	if ps.Peak > 0 {
		ps.Rate = math.Round(ps.Peak / 2)
	} else {
		ps.Rate = math.Round(c.peakLo / 2)
		h.problem("peak search: no probe passed, not even %s msg/s; the deliver phase runs at %s msg/s", numfmt.Thousands(int64(c.peakLo)), numfmt.Thousands(int64(ps.Rate)))
	}
	sort.Slice(ps.Probes, func(i, j int) bool { return ps.Probes[i].Rate < ps.Probes[j].Rate })
	return ps, nil
}

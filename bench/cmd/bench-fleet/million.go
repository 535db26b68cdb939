package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"github.com/wsfleet/wsfleet/loadtest"
)

// millionDrain is how long loadtest waits for the last broadcast's
// deliveries (it stops as soon as all arrived): a broadcast to a million on
// 2 cores took 20-25 s on a quiet machine, and minutes on a busy one.
const millionDrain = 2 * time.Minute

// millionConnectTimeout is loadtest's --connect-timeout in --million.
const millionConnectTimeout = time.Minute

// millionRampTimeout is loadtest's bound on the ramp in --million: the
// claim is the million held, not the rate it came at, and on a busy
// machine the ramp backs off. Twice loadtest's default bound (1.5 ×
// conns/rate + the connect timeout + 5 s): at 3,000/s, 1,130 s, for a
// ramp that took 512 and 565 s at 3,000/s asked.
func millionRampTimeout(conns int, rate float64) time.Duration {
	c := loadtest.Config{Conns: conns, ConnectRate: rate, ConnectTimeout: millionConnectTimeout}
	return 2 * c.RampLimit()
}

// millionPhase holds c.conns (1,000,000) connections on a wsfleet fleet:
// loadtest's broadcast scenario with two broadcasts c.hold apart, the
// first as the ramp ends, the second after the hold; the gateways'
// connection counts are polled during the hold.
func (h *harness) millionPhase(ctx context.Context) (*MillionResult, error) {
	c := h.cfg
	mr := &MillionResult{Conns: c.conns, MinDuringHold: math.Inf(1)}
	m0 := readMachine()
	f, err := h.fleet(ctx, sysWsfleet, "million")
	if err != nil {
		return mr, err
	}
	defer f.stop()
	rw := watchRouter(ctx, f)
	defer rw.close()
	cStart := readCounters(ctx, f)
	var cRamp, cHold counters
	var upRamp, upHold []float64
	interval := c.hold + time.Second
	holdStarted := make(chan struct{})
	var once sync.Once
	job := ltJob{tag: "million", label: "million", scenario: "broadcast", conns: c.conns,
		args: []string{"--broadcasts", "2", "--broadcast-interval", interval.String(), "--drain", millionDrain.String(), "--connect-timeout", millionConnectTimeout.String(),
			"--ramp-timeout", millionRampTimeout(c.conns, c.connectRate).String()},
		onPhase: func(p string) {
			if p == "broadcast" {
				once.Do(func() { close(holdStarted) })
			}
		},
		timeout: millionRampTimeout(c.conns, c.connectRate) + interval + millionDrain + 4*time.Minute,
	}
	done := make(chan struct{})
	var runErr error
	var r *loadtest.Result
	go func() {
		defer close(done)
		r, _, runErr = h.runLoadtest(ctx, f, job)
	}()
	var memUsed uint64
	select {
	case <-holdStarted:
		cRamp, upRamp = readCounters(ctx, f), rw.take()
		h.logf("million: ramp done; holding %s, polling the gateways every 5 s", interval)
		end := time.Now().Add(c.hold - 2*time.Second)
		for time.Now().Before(end) {
			if s, _, err := scrapeAll(ctx, f.admins); err == nil {
				mr.MinDuringHold = min(mr.MinDuringHold, s.Conns)
				mr.GatewayRSS = max(mr.GatewayRSS, s.RSS)
			}
			if m := readMachine(); m.MemTotal > 0 {
				memUsed = max(memUsed, m.MemTotal-m.MemAvailable)
			}
			select {
			case <-done:
				end = time.Now()
			case <-ctx.Done():
				end = time.Now()
			case <-time.After(5 * time.Second):
			}
		}
		cHold, upHold = readCounters(ctx, f), rw.take()
	case <-done:
	case <-ctx.Done():
	}
	<-done
	cEnd, upEnd := readCounters(ctx, f), rw.take()
	if cRamp.at.IsZero() { // the ramp never ended
		mr.Phases = []PhaseDiag{diagBetween("ramp", cStart, cEnd, upEnd)}
	} else {
		if cHold.at.IsZero() {
			cHold = cRamp
		}
		mr.Phases = []PhaseDiag{diagBetween("ramp", cStart, cRamp, upRamp), diagBetween("hold", cRamp, cHold, upHold),
			diagBetween("broadcast", cHold, cEnd, upEnd)}
	}
	var unconfirmed float64
	for _, p := range mr.Phases {
		h.logf("million: %s", p)
		unconfirmed += p.Unconfirmed
	}
	if math.IsInf(mr.MinDuringHold, 1) {
		mr.MinDuringHold = 0
	}
	if used0 := m0.MemTotal - m0.MemAvailable; memUsed > used0 {
		mr.MachineMemUsed = memUsed - used0
	}
	if runErr != nil {
		mr.Why = runErr.Error()
		return mr, runErr
	}
	mr.Peak = r.Connections.Peak
	mr.Attempts, mr.Failures, mr.Refusals, mr.Ramp = r.Connections.Attempts, r.Connections.Errors, r.Connections.Refusals, r.Connections.Ramp
	if mr.Ramp != nil {
		h.logf("million: %s attempts for %s connections; refused %v; ramp: %d pushbacks, %d rate cuts, lowest %.0f/s, %.0f s below target, %.0f s paused",
			numfmt.Thousands(mr.Attempts), numfmt.Thousands(int64(c.conns)), mr.Refusals, mr.Ramp.Pushbacks, mr.Ramp.RateCuts, mr.Ramp.MinRate, mr.Ramp.BelowTargetSeconds, mr.Ramp.PausedSeconds)
	}
	mr.RampSeconds = r.Connections.RampSeconds
	mr.Closes = r.Closes
	mr.Unexpected = sumCloses(r.Closes)
	mr.HeldSeconds = interval.Seconds()
	if b := r.Broadcasts; b != nil && len(b.Each) > 0 {
		last := b.Each[len(b.Each)-1]
		mr.Receivers, mr.LastMs = last.Receivers, last.LastMs
	}
	var why []string
	if mr.Peak < int64(c.conns) {
		why = append(why, fmt.Sprintf("peak %s of %s connections", numfmt.Thousands(mr.Peak), numfmt.Thousands(int64(c.conns))))
	}
	if mr.MinDuringHold < float64(c.conns) {
		why = append(why, fmt.Sprintf("the gateways held %s at the lowest during the hold", numfmt.Thousands(int64(mr.MinDuringHold))))
	}
	if mr.Unexpected > 0 {
		why = append(why, fmt.Sprintf("%d unexpected closes %v", mr.Unexpected, mr.Closes))
	}
	if unconfirmed > 0 {
		why = append(why, fmt.Sprintf("%.0f clients welcomed on a subscription NATS had not confirmed", unconfirmed))
	}
	if mr.Receivers < int64(c.conns) {
		why = append(why, fmt.Sprintf("the broadcast after the hold reached %s", numfmt.Thousands(mr.Receivers)))
	}
	mr.HeldAll = len(why) == 0
	if c.conns < 1_000_000 {
		why = append(why, fmt.Sprintf("a trial at %s connections (--million-conns), not 1,000,000", numfmt.Thousands(int64(c.conns))))
	}
	mr.Yes = len(why) == 0
	if len(why) == 0 || (len(why) == 1 && c.conns < 1_000_000) {
		mr.Why = fmt.Sprintf("%s held %.0f s (ramp %.0f s), 0 unexpected closes, broadcast reached %s, last after %.0f ms; gateways' RSS %s, the machine's MemAvailable fell by %s",
			numfmt.Thousands(mr.Peak), mr.HeldSeconds, mr.RampSeconds, numfmt.Thousands(mr.Receivers), mr.LastMs, mib(mr.GatewayRSS), gib(mr.MachineMemUsed))
		if !mr.Yes {
			mr.Why = why[0] + ": " + mr.Why
		}
	} else {
		mr.Why = joinSemi(why)
	}
	h.logf("million: %s: %s", map[bool]string{true: "yes", false: "no"}[mr.Yes], mr.Why)
	return mr, nil
}

package loadtest

import (
	"strings"
	"time"
)

// The ramp's back-off (--ramp-backoff, on by default): each loop runs its
// share of --connect-rate through a rampControl and starts a new ramp
// connect only while fewer than its window of attempts are in flight.
const (
	// rampCut multiplies a loop's rate at a pushback,
	rampCut = 0.5
	// at most once per rampCutEvery (the answers to attempts started
	// before a cut still arrive after it);
	rampCutEvery = 250 * time.Millisecond
	// each rampQuiet without a pushback adds rampStep of the target back,
	// up to the target.
	rampQuiet = time.Second
	rampStep  = 0.1
	// The rate never falls below rampFloorShare of the target, nor below
	// rampFloorMin connects per second (unless the target is lower).
	rampFloorShare = 0.01
	rampFloorMin   = 1.0
	// rampWindow × the target, at least rampMinWindow: the attempts a loop
	// may have in flight (connecting, upgrading or waiting for the welcome)
	// and still start new ramp connects. At the target rate that is a
	// second's worth, so the ramp holds its rate while an attempt takes
	// under rampWindow and slows in proportion beyond (Little's law).
	rampWindow    = time.Second
	rampMinWindow = 16
)

// rampControl is one loop's AIMD control of its ramp rate. A pushback (the
// fleet refusing an attempt or answering it too slowly) halves the rate,
// at most once per rampCutEvery, down to the floor; a refusal's
// Retry-After also pauses the new connects. Every rampQuiet without a
// pushback adds a tenth of the target back. Times are mono ns. Off (the
// open-loop ramp) it only counts the pushbacks.
type rampControl struct {
	on      bool
	target  float64 // connects per second asked for
	rate    float64 // connects per second allowed now
	floor   float64
	window  int   // attempts in flight that stop new connects
	lastCut int64 // when the rate was last cut
	quiet   int64 // start of the current stretch without a pushback
	pauseTo int64 // no new connects before it
	last    int64 // time accounted up to

	pushbacks int64   // pushbacks seen
	cuts      int64   // times the rate was lowered
	minRate   float64 // lowest rate allowed
	below     int64   // ns below the target or paused
	paused    int64   // ns paused
}

// start sets the target rate at now (on: back off).
func (c *rampControl) start(target float64, on bool, now int64) {
	*c = rampControl{on: on, target: target, rate: target, minRate: target,
		lastCut: now - int64(rampCutEvery), quiet: now, last: now}
	c.floor = min(target, max(rampFloorMin, target*rampFloorShare))
	c.window = max(rampMinWindow, int(target*rampWindow.Seconds()+0.5))
}

// holding reports whether a Retry-After holds new connects at now.
func (c *rampControl) holding(now int64) bool { return now < c.pauseTo }

// allowed is the rate new connects may be started at now: 0 while paused.
func (c *rampControl) allowed(now int64) float64 {
	if c.holding(now) {
		return 0
	}
	return c.rate
}

// advance accounts the time up to now and adds back a step of the target
// for every rampQuiet without a pushback.
func (c *rampControl) advance(now int64) {
	if now <= c.last {
		return
	}
	var paused int64
	if c.pauseTo > c.last {
		paused = min(now, c.pauseTo) - c.last
	}
	c.paused += paused
	if c.rate < c.target {
		c.below += now - c.last
	} else {
		c.below += paused
	}
	c.last = now
	if c.rate >= c.target {
		c.quiet = now
		return
	}
	for now-c.quiet >= int64(rampQuiet) && c.rate < c.target {
		c.rate = min(c.target, c.rate+c.target*rampStep)
		c.quiet += int64(rampQuiet)
	}
}

// pushback takes a sign that the fleet is behind at now; pause (a
// refusal's Retry-After, jittered by the caller) holds new connects that
// long.
func (c *rampControl) pushback(now int64, pause time.Duration) {
	c.pushbacks++
	if !c.on {
		return
	}
	c.advance(now)
	c.quiet = max(c.quiet, now)
	if pause > 0 {
		c.pauseTo = max(c.pauseTo, now+int64(pause))
	}
	if now-c.lastCut >= int64(rampCutEvery) && c.rate > c.floor {
		c.rate = max(c.floor, c.rate*rampCut)
		c.lastCut = now
		c.cuts++
		c.minRate = min(c.minRate, c.rate)
	}
}

// classify tells what a failed attempt's reason says about the fleet:
// refused, the gateway declined it for now (HTTP 503 whatever its code,
// 429, a close 1013 "try again later" before the welcome); pushback, it is
// behind (a refusal, a 408 handshake timeout, or an attempt that timed out
// connecting, upgrading or waiting for the welcome).
func classify(reason string) (refused, pushback bool) {
	switch {
	case isStatus(reason, "503"), isStatus(reason, "429"), reason == "closed_1013_before_welcome":
		return true, true
	case isStatus(reason, "408"), reason == "timeout_connect", reason == "timeout_upgrade", reason == "timeout_welcome":
		return false, true
	}
	return false, false
}

// isStatus reports whether reason is an HTTP answer of status code
// ("http_503", "http_503_node_full").
func isStatus(reason, code string) bool {
	r, ok := strings.CutPrefix(reason, "http_"+code)
	return ok && (r == "" || r[0] == '_')
}

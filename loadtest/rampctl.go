package loadtest

import (
	"strings"
	"time"
)

// The ramp's back-off (--ramp-backoff, on by default): each loop runs its
// share of --connect-rate through a rampControl and starts a new ramp
// connect only while fewer than its window of attempts are in flight.
//
// The control looks at the share of attempts the fleet pushed back in each
// rampPeriod, not at single answers: a fleet that sheds load refuses some
// attempts early and cheaply and admits the rest, so a few refusals are
// the fleet working as meant (the refused clients retry after their
// Retry-After), while a large share says the ramp runs ahead of it.
const (
	// rampPeriod is how often a loop weighs its pushbacks.
	rampPeriod = time.Second
	// A period whose pushbacks are rampCutShare or more of the attempts
	// that ended in it multiplies the rate by rampCut;
	rampCutShare = 0.1
	rampCut      = 0.7
	// one where they are rampPauseShare or more also holds new connects for
	// the Retry-After the fleet asked for (jittered by the caller);
	rampPauseShare = 0.5
	// any other period adds rampStep of the target back, up to the target.
	rampStep = 0.1
	// A period at least rampEarlyAge old is weighed early, and a new one
	// starts, once rampEarly pushbacks are that share: a fleet refusing
	// most of a fast ramp is answered within its first answers, not a
	// period later (the age lets the answers to attempts started before a
	// cut arrive before the next).
	rampEarly    = 8
	rampEarlyAge = rampPeriod / 10
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
	// rampCatchUp is the most connects a loop owes that one tick starts
	// (as time at the allowed rate): a loop starved of CPU for a while
	// catches up to that, and no more.
	rampCatchUp = time.Second
)

// rampControl is one loop's AIMD control of its ramp rate. At the end of
// each rampPeriod (or once rampEarly pushbacks make the share) it weighs
// the period's pushbacks (the fleet refusing an attempt or answering it
// too slowly) against the attempts that ended: a share of rampCutShare or more cuts the rate by rampCut, down to the
// floor, and a share of rampPauseShare or more with a Retry-After also
// holds new connects that long; a smaller share adds a tenth of the target
// back. Times are mono ns. Off (the open-loop ramp) it only counts the
// pushbacks.
type rampControl struct {
	on      bool
	target  float64 // connects per second asked for
	rate    float64 // connects per second allowed now
	floor   float64
	window  int   // attempts in flight that stop new connects
	period  int64 // start of the current period
	ended   int64 // attempts that ended in the current period
	pushed  int64 // of them, pushed back
	pause   int64 // longest Retry-After pause asked for in the period, ns
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
	*c = rampControl{on: on, target: target, rate: target, minRate: target, period: now, last: now}
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

// advance accounts the time up to now and closes every period that ended
// by then.
func (c *rampControl) advance(now int64) {
	if now <= c.last {
		return
	}
	for now-c.period >= int64(rampPeriod) {
		end := c.period + int64(rampPeriod)
		c.account(end)
		c.weigh(end)
		c.period = end
	}
	c.account(now)
}

// account adds the time from c.last to now to below and paused.
func (c *rampControl) account(now int64) {
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
}

// weigh closes the period that ends at end.
func (c *rampControl) weigh(end int64) {
	share, pause := c.share(), c.pause
	c.ended, c.pushed, c.pause = 0, 0, 0
	if !c.on {
		return
	}
	switch {
	case share >= rampCutShare:
		if c.rate > c.floor {
			c.rate = max(c.floor, c.rate*rampCut)
			c.cuts++
			c.minRate = min(c.minRate, c.rate)
		}
		if share >= rampPauseShare && pause > 0 {
			c.pauseTo = max(c.pauseTo, end+pause)
		}
	case c.rate < c.target:
		c.rate = min(c.target, c.rate+c.target*rampStep)
	}
}

// share is the part of the current period's ended attempts pushed back.
func (c *rampControl) share() float64 {
	if c.pushed == 0 {
		return 0
	}
	return float64(c.pushed) / float64(max(c.ended, c.pushed))
}

// attemptEnded counts an attempt that ended at now, welcomed or not (a
// pushback is counted by pushback as well).
func (c *rampControl) attemptEnded(now int64) {
	c.advance(now)
	c.ended++
}

// pushback takes a sign that the fleet is behind at now; pause is the
// refusal's Retry-After, jittered by the caller. Call it after
// attemptEnded for the same attempt.
func (c *rampControl) pushback(now int64, pause time.Duration) {
	c.advance(now)
	c.pushbacks++
	c.pushed++
	c.pause = max(c.pause, int64(pause))
	if c.on && now-c.period >= int64(rampEarlyAge) && c.pushed >= rampEarly && c.share() >= rampCutShare {
		c.weigh(now)
		c.period = now
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

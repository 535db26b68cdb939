package gateway

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Load shedding at the edge. A node that falls behind refuses new
// connections before it spends anything on them: the check runs once the
// upgrade request's head is buffered, before gobwas/ws parses it, before
// the accept key's SHA-1, the token and the registry. The refusal is a
// ready-made 503 {"code":"overloaded"} with Retry-After, so the client
// (or the load balancer in front) tries again later or elsewhere, and the
// connections already admitted keep their guarantees: an authentication
// inside AuthTimeout, a welcome only on a confirmed subscription, timers
// and writes on time.
//
// A node is behind when any of these holds (shedReason, in this order):
//   - "pending": MaxPendingConnects connections are admitted and not yet
//     welcomed;
//   - "loop_lag": this event loop's last tick came ShedLag or more after
//     it was due (the process is starved of CPU);
//   - "auth_lag": tokens are queued and the last one an auth worker took
//     had waited ShedLag or more;
//   - "nats_lag": a subscription has waited ShedLag or more for NATS to
//     confirm it (NATS is slow or away).
//
// Every signal clears itself once the backlog that raised it is gone, and
// the refused clients come back after Retry-After, so the node admits at
// the rate it can serve. The lags are read on the real monotonic clock
// (CPU starvation is real time, whatever Options.Clock says).

// Shed reasons, the label values of wsfleet_gateway_connections_shed_total.
const (
	shedPending = "pending"
	shedLoopLag = "loop_lag"
	shedAuthLag = "auth_lag"
	shedNATSLag = "nats_lag"
)

var shedReasons = []string{shedPending, shedLoopLag, shedAuthLag, shedNATSLag}

// procStart anchors mono.
var procStart = time.Now()

// mono is the real monotonic time since the process started, in ns.
func mono() int64 { return int64(time.Since(procStart)) }

// admission holds the node-wide load signals the loops read when an
// upgrade request arrives.
type admission struct {
	pending  atomic.Int64 // connections admitted, not yet welcomed or closed
	authWait atomic.Int64 // ns the last token taken by an auth worker had waited
	// natsSince is mono()+1 when the oldest subscription still waiting for
	// NATS's confirmation was queued; 0 when none waits.
	natsSince atomic.Int64
	lastShed  atomic.Int64 // mono()+1 of the last refusal; 0: never
}

// shedReason returns why the loop must refuse a new connection now, or "".
// It runs on the loop goroutine for each upgrade request: a few atomic
// loads.
func (l *loop) shedReason() string {
	s := l.s
	a := &s.adm
	lag := int64(s.opts.ShedLag)
	switch {
	case a.pending.Load() >= int64(s.opts.MaxPendingConnects):
		return shedPending
	case l.lag >= lag:
		return shedLoopLag
	case len(s.auth.jobs) > 0 && a.authWait.Load() >= lag:
		return shedAuthLag
	}
	if since := a.natsSince.Load(); since != 0 && mono()-(since-1) >= lag {
		return shedNATSLag
	}
	return ""
}

// shed answers an upgrade request with 503 overloaded: the node is behind
// for reason. Retry-After grows with how far behind the loop is, from 1 to
// 5 seconds.
func (c *conn) shed(reason string) {
	l := c.l
	s := l.s
	s.adm.lastShed.Store(mono() + 1)
	s.m.shed.WithLabelValues(reason).Inc()
	l.uio.retryAfter = int(min(max(1+l.lag/int64(time.Second), 1), 5))
	c.rejectHTTP(http.StatusServiceUnavailable, "overloaded",
		"the node is behind ("+reason+") and takes no new connections for now; retry after the Retry-After seconds, here or on another node")
}

// shedding reports whether the node refused a connection in the last d.
func (a *admission) shedding(d time.Duration) bool {
	t := a.lastShed.Load()
	return t != 0 && mono()-(t-1) < int64(d)
}

// beginPending counts c as admitted and not yet welcomed.
func (c *conn) beginPending() {
	if !c.has(flPending) {
		c.set(flPending, true)
		c.l.s.adm.pending.Add(1)
	}
}

// endPending stops counting c as pending: it was welcomed or is closing.
func (c *conn) endPending() {
	if c.has(flPending) {
		c.set(flPending, false)
		c.l.s.adm.pending.Add(-1)
	}
}

// measureLag records how late this tick came: the real time since the
// previous tick less the tick period. Called at each tick.
func (l *loop) measureLag() {
	now := mono()
	if l.lastTick != 0 {
		l.lag = max(now-l.lastTick-int64(l.s.tick), 0)
	}
	l.lastTick = now
}

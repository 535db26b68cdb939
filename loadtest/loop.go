package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/engine"
)

// loopStats are a loop's counters, read by the reporter goroutine.
type loopStats struct {
	live, connecting, attempts, welcomes, fails, closes atomic.Int64
	receipts, breceipts, dups, ooo, foreign, misrouted  atomic.Int64
	refreshed, dropped, recovered, churned, lastRecv    atomic.Int64
	unexpected                                          atomic.Int64 // live sessions the gateway or the network ended
	refused                                             atomic.Int64
	// live, rooms: topic sessions subscribed now, receipts, frames of
	// another run or publisher, of another topic; the client publish
	// check's test messages sent and back
	tlive, treceipts, tforeign, tmisrouted atomic.Int64
	probeSent, probeOK                     atomic.Int64
	away                                   atomic.Int64 // --resume: devices welcomed before and down now
	replayed                               atomic.Int64 // --resume: first receipts replayed from history
	// the ramp's allowed rate (0 while paused) and target while the loop
	// has connections left to start, as math.Float64bits
	rampRate, rampTarget atomic.Uint64
}

// loop is one epoll poller and the slots it owns; everything in it but st
// is touched only by its goroutine.
type loop struct {
	e     *clientSet
	idx   int
	p     *engine.Loop[func()]
	slots []*slot
	w     *engine.Wheel[*slot]
	now   uint32 // ticks of the run clock
	fbuf  []byte // frame scratch
	pbuf  []byte // a client publish frame's scratch (rooms)
	rng   *rand.Rand
	dsts  []unix.Sockaddr // per target (a Sockaddr is not safe to share across goroutines)
	srcs  []unix.Sockaddr
	fam   int
	reqs  [][]byte // upgrade request up to the key, per target
	// --transport sse: the request per target, and the event parser
	// (its scratch; each slot keeps its scan)
	sseReqs []sseReq
	ssep    sseParser

	ramp        []*slot
	rampNext    int
	rampRate    float64 // connects per second
	rampBudget  float64
	rc          rampControl
	rampHeld    int64 // ns the ramp had connects due but its window was full
	inFlight    int   // attempts connecting, upgrading or waiting for the welcome
	churnRate   float64
	churnDown   time.Duration
	lastTick    int64
	finishing   bool
	finished    chan struct{}
	churnBudget float64

	hUpgrade, hWelcome, hE2E, hBcast, hReconnect *hdrhistogram.Histogram
	hReplay                                      *hdrhistogram.Histogram // --resume: publish → receipt of replayed messages
	hTopic, hSub                                 *hdrhistogram.Histogram // live, rooms: publish → receipt; subscribe → subscribed
	ivE2E                                        *hdrhistogram.Histogram
	ivIdx                                        int

	res resumeWire // --resume: reconnects with since and their answers

	closes   map[string]int64
	errs     map[string]int64
	refusals map[string]int64
	bstats   []BroadcastStat // by seq-1

	terrs       map[string]int64 // live, rooms: refused subscribes and publishes, unsubscribes by the gateway
	fan         []fanStat        // live: receipts per message, by seq-1
	probeClosed bool             // rooms: the client publish check is over

	st loopStats
}

func newLoop(e *clientSet, idx int, targets []netip.AddrPort, srcs []netip.Addr) (*loop, error) {
	l := &loop{
		e: e, idx: idx,
		rng:        rand.New(rand.NewPCG(e.plan.Seed, uint64(e.plan.Index)<<16|uint64(idx))),
		finished:   make(chan struct{}),
		hUpgrade:   newHist(),
		hWelcome:   newHist(),
		hE2E:       newHist(),
		hBcast:     newHist(),
		hReconnect: newHist(),
		hReplay:    newHist(),
		hTopic:     newHist(),
		hSub:       newHist(),
		terrs:      map[string]int64{},
		ivE2E:      newSeriesHist(),
		closes:     map[string]int64{},
		errs:       map[string]int64{},
		refusals:   map[string]int64{},
	}
	l.fam = unix.AF_INET
	if targets[0].Addr().Is6() && !targets[0].Addr().Is4In6() {
		l.fam = unix.AF_INET6
	}
	for i, t := range targets {
		l.dsts = append(l.dsts, sockaddr(t.Addr(), int(t.Port())))
		tg := e.plan.Targets[i]
		l.sseReqs = append(l.sseReqs, newSSEReq(tg))
		l.reqs = append(l.reqs, []byte("GET "+tg.Path+" HTTP/1.1\r\nHost: "+tg.Host+
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wsfleet.v1\r\nSec-WebSocket-Key: "))
	}
	for _, a := range srcs {
		l.srcs = append(l.srcs, sockaddr(a, 0))
	}
	l.lastTick = mono()
	l.ivIdx = int((mono() - e.plan.T0) / int64(time.Second))
	p, err := engine.New(engine.Config[func()]{
		OnTask:   func(f *func()) bool { (*f)(); return false },
		Tick:     tick,
		OnTick:   l.onTick,
		Nanotime: func() int64 { return mono() - e.plan.T0 },
		OnError: func(err error) {
			l.errs["epoll_wait: "+err.Error()]++
		},
	})
	if err != nil {
		return nil, err
	}
	l.p = p
	l.now = p.Now()
	l.w = engine.NewWheel[*slot](1024, l.now)
	if err := p.StartTicks(); err != nil {
		p.Close()
		return nil, err
	}
	return l, nil
}

// ticks converts a mono time to ticks of the run clock.
func (l *loop) ticks(t int64) uint32 {
	return uint32((t - l.e.plan.T0) / int64(tick))
}

func (l *loop) ticksOf(d time.Duration) uint32 { return uint32((d + tick - 1) / tick) }

func (l *loop) onTick() {
	now := mono()
	l.now = l.p.Now()
	l.w.Advance(l.now, l.fire)
	dt := float64(now-l.lastTick) / 1e9
	l.lastTick = now
	if l.ramping() && l.e.running.Load() {
		l.rampTick(now, dt)
	}
	if l.churnRate > 0 && l.e.running.Load() {
		l.churnBudget += l.churnRate * dt
		for ; l.churnBudget >= 1; l.churnBudget-- {
			if s := l.randomLive(); s != nil {
				s.churned = true
				l.st.churned.Add(1)
				s.closeGracefully(1000)
			}
		}
	}
	if iv := int((now - l.e.plan.T0) / int64(time.Second)); iv != l.ivIdx {
		if l.ivE2E.TotalCount() > 0 {
			l.e.series.addHist(l.ivIdx, l.ivE2E)
			l.ivE2E.Reset()
		}
		l.ivIdx = iv
	}
}

// ramping reports whether the loop has ramp connections left to start.
func (l *loop) ramping() bool { return l.rampRate > 0 && l.rampNext < len(l.ramp) }

// rampTick starts the ramp connects due: at the rate the ramp control
// allows (the target, open-loop), while fewer than its window of attempts
// are in flight (open-loop: whatever is in flight).
func (l *loop) rampTick(now int64, dt float64) {
	c := &l.rc
	c.advance(now)
	rate := c.allowed(now)
	if rate == 0 {
		l.rampBudget = min(l.rampBudget, 1) // no burst after a pause
	} else {
		// A tick that came late (the process waited for CPU) starts the
		// connects it owes, up to rampCatchUp's worth: the ramp keeps its
		// rate on a busy machine, and the window still bounds what is in
		// flight.
		l.rampBudget = min(l.rampBudget+rate*dt, max(rate*rampCatchUp.Seconds(), 1)+1)
	}
	for l.rampBudget >= 1 && l.rampNext < len(l.ramp) && rate > 0 {
		if c.on && l.inFlight >= c.window {
			l.rampHeld += int64(dt * 1e9)
			break
		}
		s := l.ramp[l.rampNext]
		l.ramp[l.rampNext] = nil
		l.rampNext++
		if s.state == stDown && !s.want {
			s.want = true
			l.rampBudget--
			s.connect()
		}
	}
	if l.rampNext >= len(l.ramp) {
		l.rampStopped() // nothing is left to start: the figures stop here
		return
	}
	l.st.rampRate.Store(math.Float64bits(rate))
	l.st.rampTarget.Store(math.Float64bits(c.target))
}

// rampStopped clears the ramp's rate from the loop's progress.
func (l *loop) rampStopped() {
	l.st.rampRate.Store(0)
	l.st.rampTarget.Store(0)
}

// attemptFailed takes a failed attempt's reason: a refusal is counted,
// and while the loop ramps a pushback counts against its rate (a
// Retry-After of ra seconds, when most attempts are pushed back, pauses
// its new connects for a random ½–1 of it).
func (l *loop) attemptFailed(reason string, ra int) {
	refused, push := classify(reason)
	if refused {
		l.refusals[reason]++
		l.st.refused.Add(1)
	}
	if !push || !l.ramping() {
		return
	}
	var pause time.Duration
	if ra > 0 {
		d := time.Duration(ra) * time.Second
		pause = d/2 + time.Duration(l.rng.Int64N(int64(d/2)+1))
	}
	l.rc.pushback(mono(), pause)
}

// addInFlight counts attempts starting (1) or ending (-1); the ramp
// control weighs its pushbacks against the attempts that ended.
func (l *loop) addInFlight(n int) {
	l.inFlight += n
	if n < 0 && l.ramping() {
		l.rc.attemptEnded(mono())
	}
}

// randomLive returns a random open connection of this loop, or nil.
func (l *loop) randomLive() *slot {
	if len(l.slots) == 0 {
		return nil
	}
	for i := 0; i < 16; i++ {
		if s := l.slots[l.rng.IntN(len(l.slots))]; s.state == stLive && !s.churned {
			return s
		}
	}
	return nil
}

// drop closes share of this loop's open connections without a close frame.
func (l *loop) drop(share float64) {
	var live []*slot
	for _, s := range l.slots {
		if s.state == stLive {
			live = append(live, s)
		}
	}
	n := int(share*float64(len(live)) + 0.5)
	l.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	now := mono()
	l.e.firstDrop.CompareAndSwap(0, now)
	for _, s := range live[:n] {
		s.dropped, s.tDrop = true, now
		s.closeOK = true
		s.attempts = 0
		l.st.dropped.Add(1)
		_ = unix.SetsockoptLinger(s.FD(), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		s.finalClose("")
	}
}

// fire handles a slot whose deadline passed.
func (l *loop) fire(s *slot) {
	switch s.state {
	case stDown:
		if s.want && l.e.running.Load() {
			s.connect()
		}
	case stConnecting:
		s.fail("timeout_connect")
	case stUpgrading:
		s.fail("timeout_upgrade")
	case stAuthing:
		s.fail("timeout_welcome")
	case stLive:
		s.refresh()
	case stClosing:
		s.finalClose("")
	}
}

// checkFinished signals finish once every slot is down.
func (l *loop) checkFinished() {
	if !l.finishing {
		return
	}
	for _, s := range l.slots {
		if s.state != stDown {
			return
		}
	}
	select {
	case <-l.finished:
	default:
		close(l.finished)
	}
}

func (l *loop) errorf(reason string) { l.errs[reason]++ }

func (l *loop) terr(reason string) { l.terrs[reason]++ }

func (l *loop) closeCode(code int) { l.closes[strconv.Itoa(code)]++ }

func errName(err error) string {
	if en, ok := err.(unix.Errno); ok {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
	}
	return fmt.Sprint(err)
}

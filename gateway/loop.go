package gateway

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// taskKind says what a task posted to a loop does.
type taskKind uint8

const (
	taskAuth          taskKind = iota // an auth worker's verdict on c
	taskClose                         // close c with code (torn: without a close frame)
	taskBroadcast                     // write sh to every welcomed connection
	taskStopAccept                    // stop accepting connections
	taskDrain                         // start closing connections with 1012
	taskCloseAll                      // close every connection now
	taskRead                          // go on reading c (its read budget ran out; torn: read to EOF)
	taskWelcome                       // c's subscription is live: welcome it (ok: false if it failed)
	taskBehind                        // c's socket stopped taking frames: watch its write timeout
	taskDeliver                       // resume: write sh (stream sequence seq, previous on its subject last) to c
	taskCatchUp                       // resume: c missed a message: replay from its positions
	taskCatchUpAll                    // resume: every connection of the loop replays from its positions
	taskReplayed                      // resume: rj, c's replay round, is done
	taskTopic                         // write sh to the members of topic t
	taskSubscribed                    // topic t's subscription is confirmed (ok: false if it failed): its waiters on the loop go live
	taskTopicAuth                     // an auth worker's verdict on c's subscription token for topic name
	taskTopicCtl                      // a service (un)subscribes c to topic name (ok: subscribe); cw collects the answers
	taskTopicCatchUp                  // resume: the loop missed a message of topic t: its members catch up
	taskTopicBatch                    // resume: write rj's batch of a topic's messages to the topic's members (a catch-up)
	taskTopicReplayed                 // resume: rj, c's replay of one topic, is done (or its history checked)
)

// task is work for a loop goroutine, posted from other goroutines.
type task struct {
	c      *conn
	sh     *bufpool.Shared
	next   int    // taskBroadcast: the connections written so far
	reason string // close reason, or auth failure text
	sub    string // authenticated user id
	tok    string // its user token
	exp    int64
	rj     *replayJob   // taskWelcome after an initial replay, taskReplayed, taskTopicBatch, taskTopicReplayed
	t      *topic       // taskTopic, taskSubscribed
	cw     *ctlWait     // taskTopicCtl: the control message to answer
	name   string       // taskTopicAuth: the topic
	tc     *topicClaims // taskAuth: the token's topic claims
	// Resume: a message's stream sequence and the previous one on its
	// subject (taskDeliver, taskBroadcast, taskTopic); for taskWelcome, the
	// stream's last and first sequence when the subscription was confirmed;
	// for taskSubscribed, the confirmation's generation and the stream's
	// last sequence.
	seq, last uint64
	kind      taskKind
	code      protocol.CloseCode
	torn      bool
	ok        bool
	refresh   bool // taskAuth: the verdict on a refreshed token
}

// loop is one event loop: an engine loop (epoll, wake-ups, ticks) and
// everything its connections share. All of it but stats is touched only by
// the loop goroutine.
type loop struct {
	s        *Server
	p        *engine.Loop[task]
	dead     atomic.Bool // epoll_wait failed: posted tasks never run
	idx      int
	conns    []*conn
	wheel    *engine.Wheel[*conn]
	now      uint32 // the engine's clock, in ticks since the server started
	wall     int64  // unix ns on the server's clock at the last tick (token expiry)
	uio      upgradeIO
	upgrader ws.Upgrader
	stats    loopStats
	bconns   []*conn // the connections of the broadcast in progress, as it started
	// fanT and fanLid (resume) name the loop topic whose message fans out
	// now (fanT nil: none): a member joining it meanwhile gets a floor.
	fanT   *topic
	fanLid int32
	// skips holds, for each connection catching up (resume), the newest
	// live message it skipped meanwhile.
	skips          map[*conn]uint64
	catchAllPosted atomic.Bool // a taskCatchUpAll is queued
	// Topics (topic_loop.go): the topics of the loop's connections.
	ctp        []*connTopics // by connection, as conns: its topics (topic_loop.go)
	tops       []loopTopic
	topFree    []int32            // free indices of tops
	topByName  map[string]int32   // topic name → index in tops
	tokChecks  map[*conn][]string // subscription tokens being checked, by connection (a few each)
	confirmGen uint32             // numbers the loop topics' confirmations
	// tjobs (resume) are the subscribes with "since" (topic_resume.go), from
	// the subscribe until the connection is a live member of the topic.
	tjobs map[tjKey]*replayJob
	// sseReqs holds what stream requests asked for beyond their token
	// (sse.go), from the request to the welcome.
	sseReqs map[*conn]*sseReq

	authTicks, hbTicks, idleTicks, handshakeTicks, closeTicks, writeTicks uint32

	lag      int64 // ns the last tick came after it was due (admission.go)
	lastTick int64 // mono() at the last tick

	accepting  bool // the listener is registered with this loop
	acceptHold uint32
	draining   bool
	drainDone  bool
	mv         move   // connections being moved to other nodes
	moveEvery  uint32 // ticks between two steps of a move (each walks every connection)
}

// move is the loop's connections being moved to other nodes, "make before
// break": each open connection gets a reconnect notice, spread over
// noticeEnd so they do not all reconnect at once, and is closed with code
// graceTicks after its notice if the client has not closed it. A drain
// (the node is going away) also closes connections not yet welcomed at
// once and whatever is left at end; a NATS outage longer than
// NATSOutageGrace (nothing reaches the clients) moves only open
// connections and stops when NATS is back.
type move struct {
	active     bool
	drain      bool
	last       uint32           // tick of the last step
	noticeEnd  uint32           // notices go out until this tick
	end        uint32           // drain: every connection is closed by this tick
	graceTicks uint32           // a noticed connection is closed this long after its notice
	noticed    map[*conn]uint32 // when each connection got its notice
	frame      []byte           // the notice
	code       protocol.CloseCode
	reason     string
}

// loopStats are a loop's counters, written by its goroutine (and, for
// bytes out, by dispatchers writing to its connections) and summed when
// the metrics are scraped: no counter is shared by every loop.
type loopStats struct {
	bytesIn, bytesOut, msgsIn, msgsOut atomic.Uint64
	bcastDropped                       atomic.Uint64 // broadcasts refused by a full loop queue
	_                                  [24]byte      // keep loops' counters off each other's cache lines
}

func newLoop(s *Server, idx int) (*loop, error) {
	l := &loop{s: s, idx: idx}
	o := &s.opts
	l.authTicks = s.ticks(o.AuthTimeout)
	l.hbTicks = s.ticks(o.Heartbeat)
	l.idleTicks = s.ticks(o.IdleTimeout)
	l.handshakeTicks = s.ticks(o.HandshakeTimeout)
	l.closeTicks = s.ticks(o.CloseTimeout)
	l.writeTicks = s.ticks(o.WriteTimeout)
	l.moveEvery = max(s.ticks(20*time.Millisecond), 1)
	l.upgrader = l.newUpgrader()
	l.accepting = true // Start adds the listener right after; set before the loop runs
	p, err := engine.New(engine.Config[task]{
		OnTask:   l.onTask,
		Tick:     s.tick,
		OnTick:   l.onTick,
		Nanotime: s.nanotime,
		MaxCost:  int64(o.LoopQueueBytes),
		OnError: func(err error) {
			// easygo's wait loop ends after this: the loop's connections are
			// dead. /healthz turns 503 so the node is restarted.
			l.dead.Store(true)
			s.loopFailed.Store(true)
			s.log.Error("epoll_wait failed; this event loop stopped", zap.Int("loop", idx), zap.Error(err))
		},
	})
	if err != nil {
		return nil, err
	}
	l.p = p
	l.now = p.Now()
	l.wall = s.clock.Now().UnixNano()
	l.wheel = engine.NewWheel[*conn](max(l.authTicks, l.hbTicks, l.handshakeTicks, l.closeTicks)+1, l.now)
	if err := p.StartTicks(); err != nil {
		p.Close()
		return nil, err
	}
	return l, nil
}

// startAccept registers the listening socket with this loop. Every loop
// registers it with EPOLLEXCLUSIVE, so one loop is woken per burst and
// the connections it accepts are its own: no hand-off between loops.
// Start calls it from its goroutine with accepting already set by newLoop
// (so the loop never sees it change); after a pause the loop calls
// resumeAccept.
func (l *loop) startAccept() error {
	return l.p.Add(l.s.lfd, engine.EventRead|engine.EventExclusive, l.onAccept)
}

// resumeAccept registers the listener again after a pause, on the loop.
func (l *loop) resumeAccept() error {
	if err := l.startAccept(); err != nil {
		return err
	}
	l.accepting = true
	return nil
}

const acceptBatch = 128

func (l *loop) onAccept(ev engine.Event) {
	if ev == engine.EventClosed || !l.accepting {
		return
	}
	for i := 0; i < acceptBatch; i++ {
		r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(l.s.lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
			l.newConn(int(r))
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			l.pauseAccept(e)
			return
		default:
			l.s.log.Error("accept failed", zap.Error(e))
			return
		}
	}
}

// pauseAccept stops accepting for a short back-off when the process is out
// of file descriptors or memory: a level-triggered listener would otherwise
// spin a core on the same error.
func (l *loop) pauseAccept(err error) {
	if !l.accepting {
		return
	}
	_ = l.p.Del(l.s.lfd)
	l.accepting = false
	l.acceptHold = l.now + l.s.ticks(100*time.Millisecond)
	l.s.m.acceptPauses.Inc()
	l.s.logAcceptPause(err)
}

func (l *loop) newConn(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &conn{
		l:        l,
		id:       l.s.connSeq.Add(1),
		lastPing: l.s.micros(), // the accept time until the welcome
		lastRead: l.now,
		idx:      int32(len(l.conns)),
	}
	c.Init(fd)
	l.conns = append(l.conns, c)
	l.ctp = append(l.ctp, nil)
	l.s.nconns.Add(1)
	l.s.m.accepted.Inc()
	l.wheel.Schedule(c, l.now+l.handshakeTicks)
	if err := l.p.Add(fd, engine.EventRead|engine.EventWrite|engine.EventRdHup|engine.EventEdge, c.onEvent); err != nil {
		l.s.log.Error("epoll add failed", zap.Error(err))
		c.finalClose()
	}
}

// remove drops c from the loop's list (swap with the last).
func (l *loop) remove(c *conn) {
	i := int(c.idx)
	last := len(l.conns) - 1
	if i < 0 || i > last || l.conns[i] != c {
		return
	}
	l.conns[i] = l.conns[last]
	l.conns[i].idx = int32(i)
	l.ctp[i] = l.ctp[last]
	l.movedConn(l.conns[i], int32(i))
	l.conns[last] = nil
	l.conns = l.conns[:last]
	l.ctp[last] = nil
	l.ctp = l.ctp[:last]
	c.idx = -1
}

func (l *loop) onTask(t *task) (again bool) {
	switch t.kind {
	case taskAuth:
		l.authDone(t)
	case taskClose:
		c := t.c
		if c.State == stClosed {
			return
		}
		if t.torn || t.code == 0 {
			c.finalClose()
			return
		}
		// For a slow consumer the close frame is already queued (wdone):
		// closeWith only moves the connection to closing.
		c.closeWith(t.code, t.reason)
	case taskRead:
		t.c.set(flReadAgain, false)
		if t.c.State != stClosed {
			t.c.readEvent(t.torn)
		}
	case taskWelcome:
		l.welcome(t)
	case taskDeliver:
		if l.deliverSeq(t.c, t.sh, t.seq, t.last, true) {
			l.stats.msgsOut.Add(1)
		}
		if t.sh != nil {
			t.sh.Release()
		}
	case taskCatchUp:
		l.catchUpOne(t.c)
	case taskCatchUpAll:
		l.catchAllPosted.Store(false)
		for _, c := range l.conns {
			switch c.State {
			case stSubscribing:
				c.set(flSkipped, true)
			case stOpen:
				l.catchUp(c, 0)
			}
		}
		for lid := range l.tops {
			if l.tops[lid].t != nil {
				l.topicCatchUp(int32(lid), 0)
			}
		}
	case taskTopicCatchUp:
		t.t.loops[l.idx].catchPosted.Store(false)
		if lid := t.t.loops[l.idx].lid; lid >= 0 && l.tops[lid].t == t.t {
			l.topicCatchUp(lid, 0)
		}
	case taskTopicBatch:
		if l.topicBatchStep(t) {
			return true
		}
	case taskTopicReplayed:
		l.topicReplayed(t.c, t.rj)
	case taskReplayed:
		l.replayed(t.c, t.rj)
	case taskBehind:
		if t.c.State == stOpen {
			l.schedule(t.c)
		}
	case taskBroadcast:
		if l.broadcast(t) {
			return true
		}
		t.sh.Release()
	case taskTopic:
		if l.topicStep(t) {
			return true
		}
		t.sh.Release()
	case taskSubscribed:
		l.subscribedDone(t.t, t.ok, uint32(t.seq), t.last)
	case taskTopicAuth:
		l.topicAuthDone(t)
	case taskTopicCtl:
		l.topicControlDone(t)
	case taskStopAccept:
		if l.accepting {
			_ = l.p.Del(l.s.lfd)
			l.accepting = false
		}
		l.acceptHold = 0
		l.s.acceptStopped.Done()
	case taskDrain:
		d := l.s.opts.DrainTimeout
		l.draining = true
		l.mv = move{
			active: true, drain: true, last: l.now - l.moveEvery,
			noticed:    map[*conn]uint32{},
			noticeEnd:  l.now + l.s.ticks(d/2),
			end:        l.now + l.s.ticks(d*8/10),
			graceTicks: l.s.ticks(min(10*time.Second, d/3)),
			frame:      protocol.ReconnectJSON,
			code:       protocol.CloseServiceRestart, reason: "node draining, reconnect",
		}
	case taskCloseAll:
		for len(l.conns) > 0 {
			l.conns[len(l.conns)-1].finalClose()
		}
		l.checkDrained()
	}
	return false
}

// authDone applies an auth worker's verdict.
func (l *loop) authDone(t *task) {
	c := t.c
	if t.refresh {
		l.refreshDone(t)
		return
	}
	if c.State != stAuthing {
		return // closed or timed out meanwhile
	}
	if !t.ok {
		c.closeWith(protocol.CloseUnauthorized, t.reason)
		return
	}
	u, evict, ok := l.s.reg.add(c, t.sub, t.tok)
	if !ok {
		l.s.m.deviceLimit.Inc()
		c.closeWith(protocol.CloseDeviceLimit, "device limit reached for this user on this node")
		return
	}
	if evict != nil {
		l.s.m.deviceLimit.Inc()
		evict.l.p.Post(task{kind: taskClose, c: evict, code: protocol.CloseDeviceLimit, reason: "replaced by a newer connection of the same user (device limit)"})
	}
	c.State = stSubscribing
	c.user = u
	c.set(flRegistered, true)
	c.expUnix = expUnix(t.exp)
	l.setTopicClaim(c, t.tc, false)
	l.s.subs.welcome(c)
}

// refreshDone applies the verdict on a token sent on an open connection:
// the same user's fresh token moves the expiry; anything else closes 4401.
func (l *loop) refreshDone(t *task) {
	c := t.c
	c.set(flRefreshing, false)
	if c.State != stOpen {
		return
	}
	switch {
	case !t.ok:
		c.closeWith(protocol.CloseUnauthorized, t.reason)
		return
	case t.sub != c.user.id:
		l.s.m.authFailure("refresh_other_user")
		c.closeWith(protocol.CloseUnauthorized, "the refreshed token names another user")
		return
	}
	c.expUnix = expUnix(t.exp)
	l.schedule(c)
	l.setTopicClaim(c, t.tc, true)
	var buf [64]byte
	body := append(buf[:0], `{"type":"refreshed","exp":`...)
	body = strconv.AppendInt(body, t.exp, 10)
	c.writeFrame(ws.OpText, append(body, '}'))
}

// expUnix is a token's exp (unix seconds; 0: none) as kept per
// connection: 32 bits hold every second until 2106, and later ones are
// that far.
func expUnix(exp int64) uint32 {
	switch {
	case exp <= 0:
		return 0
	case exp > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(exp)
}

// expDue is the tick at which a token expiring at exp (unix seconds) is
// due, on the loop's clock: the time left by the wall clock of the last
// tick, in ticks. The wheel holds deadlines up to engine.MaxAhead ticks
// away; a later expiry fires early and is re-armed against the real time
// then (fire), so any lifetime is exact at any tick.
func (l *loop) expDue(exp uint32) uint32 {
	left := time.Duration(int64(exp)*1e9 - l.wall)
	if left <= 0 {
		return l.now // expired (within the leeway): the next tick closes it
	}
	tick := l.s.tick
	return l.now + uint32(min(int64((left+tick-1)/tick), engine.MaxAhead))
}

// expired reports whether the token of c expired by the wall clock.
func (l *loop) expired(c *conn) bool {
	return c.expUnix != 0 && int64(c.expUnix)*1e9 <= l.wall
}

// welcome sends the welcome frame once the subscription manager confirmed
// the user's subscription, opens the connection to deliveries, and goes on
// with frames the client sent meanwhile: nothing reaches a client before its
// welcome.
func (l *loop) welcome(t *task) {
	c := t.c
	if c.State != stSubscribing {
		return // closed or timed out meanwhile
	}
	if !t.ok {
		c.closeWith(protocol.CloseTryAgainLater, "NATS subscription failed, retry later")
		return
	}
	s := l.s
	// Resume: where the connection is covered from, and whether its
	// "since" was recovered.
	var position uint64
	var recovered, replay bool
	if s.rs != nil {
		last, first := t.seq, t.last
		switch {
		case t.rj != nil: // the initial replay checked history
			j := t.rj
			recovered = j.recovered
			position = j.upTo
			if recovered {
				position, replay = j.since, j.upTo > min(j.uFrom, j.bFrom)
			}
		case c.has(flSince):
			since := c.uPos
			switch {
			case since == last:
				position, recovered = since, true
			case since > last || since+1 < first:
				// An id this stream never gave, or history expired past it.
				position = last
			default:
				// Check what history still holds first (it writes nothing).
				s.rs.rp.submit(&replayJob{c: c, tok: c.user.token(), uFrom: since, bFrom: since, since: since, upTo: last, initial: true})
				return
			}
		default:
			position = last
		}
		c.uPos, c.bPos = position, position
	}
	var buf [1024]byte
	body := append(buf[:0], `{"type":"welcome","user":`...)
	body = protocol.AppendJSONString(body, []byte(c.user.id))
	body = append(body, `,"conn_id":"`...)
	body = s.appendConnID(body, c.id)
	body = append(body, `","node":`...)
	body = protocol.AppendJSONString(body, []byte(s.opts.NodeID))
	body = append(body, `,"heartbeat":`...)
	body = strconv.AppendInt(body, int64((s.opts.Heartbeat+time.Second-1)/time.Second), 10)
	if s.rs != nil {
		body = append(body, `,"position":"`...)
		body = strconv.AppendUint(body, position, 10)
		body = append(body, '"')
		if c.has(flSince) {
			body = append(body, `,"recovered":`...)
			body = strconv.AppendBool(body, recovered)
			if recovered {
				s.rs.recovered.Add(1)
			} else {
				s.rs.unrecovered.Add(1)
			}
		}
	}
	body = append(body, '}')
	var fbuf [1024]byte
	var frame []byte
	if c.Kind == connSSE {
		frame = l.sseOpen(fbuf[:0], c, body, position)
	} else {
		frame = wsframe.AppendFrame(fbuf[:0], ws.OpText, body)
	}
	c.endPending() // admitted: whatever the write's outcome, it waits no more
	c.Mu.Lock()
	c.writeLocked(frame)
	ok := !c.WritesDoneLocked() // else the write failed or overflowed: its close is posted
	c.setWelcomedLocked(ok)
	c.Mu.Unlock()
	if !ok {
		return
	}
	if c.user.confirmed.Load() != s.natsEpoch.Load()+1 {
		s.m.unconfirmed.Inc() // NATS was lost since the confirmation: see welcomes_unconfirmed_total
	}
	s.m.authSeconds.Observe(float64(s.micros()-c.lastPing) / 1e6) // lastPing: still the accept time
	c.State = stOpen
	c.lastPing = l.now
	l.schedule(c)
	if s.rs != nil {
		switch {
		case replay:
			// Writes what came after "since", then goes live.
			j := t.rj
			j.initial, j.tries, j.notBefore = false, 0, 0
			c.set(flCatchUp, true)
			if l.skips == nil {
				l.skips = map[*conn]uint64{}
			}
			l.skips[c] = 0
			if c.has(flSkipped) {
				// A live message came while history was checked: another
				// round after this one, from a fresh position.
				l.skips[c] = math.MaxUint64
			}
			s.rs.rp.submit(j)
		case c.has(flSkipped):
			// A live message came while it waited for its welcome.
			l.catchUp(c, 0)
		}
		c.set(flSkipped, false)
	}
	if c.in != nil {
		c.input(nil) // frames the client sent while it was authenticated
	}
	if c.Kind == connSSE {
		l.sseOpened(c)
	}
}

// schedule places an open connection at its next deadline: the next ping,
// the idle timeout, the token's expiry or, while frames are queued, the
// write timeout, whichever comes first.
func (l *loop) schedule(c *conn) {
	next := c.lastPing + l.hbTicks
	earlier := func(t uint32) {
		if int32(t-next) < 0 {
			next = t
		}
	}
	if c.Kind != connSSE { // a stream's client sends nothing: no idle deadline
		earlier(c.lastRead + l.idleTicks)
	}
	if c.expUnix != 0 && !c.has(flRefreshing) {
		earlier(l.expDue(c.expUnix))
	}
	c.Mu.Lock()
	if prog, behind := c.ProgressLocked(); behind {
		earlier(prog + l.writeTicks)
	}
	c.Mu.Unlock()
	l.wheel.Schedule(c, next)
}

func (l *loop) onTick() {
	l.measureLag()
	l.now = l.p.Now()
	l.wall = l.s.clock.Now().UnixNano()
	l.wheel.Advance(l.now, l.fire)
	if !l.accepting && l.acceptHold != 0 && int32(l.now-l.acceptHold) >= 0 {
		l.acceptHold = 0
		if err := l.resumeAccept(); err != nil {
			l.s.log.Error("resume accepting failed", zap.Error(err))
		}
	}
	if !l.draining {
		l.checkNATSOutage()
	}
	if l.mv.active && int32(l.now-l.mv.last) >= int32(l.moveEvery) {
		l.mv.last = l.now
		l.moveStep()
	}
}

// checkNATSOutage starts moving the open connections to other nodes once
// the node has been cut off from NATS for NATSOutageGrace, and stops when
// NATS is back (connections already noticed may have left; the others
// stay).
func (l *loop) checkNATSOutage() {
	down := l.s.natsDown.Load()
	switch {
	case down == 0 && l.mv.active:
		l.mv = move{}
	case down != 0 && !l.mv.active && l.s.nanotime()-(down-1) >= int64(l.s.opts.NATSOutageGrace):
		g := l.s.opts.NATSOutageGrace
		l.mv = move{
			active:     true,
			last:       l.now - l.moveEvery,
			noticed:    map[*conn]uint32{},
			noticeEnd:  l.now + l.s.ticks(min(g/2, 10*time.Second)),
			graceTicks: l.s.ticks(min(g, 10*time.Second)),
			frame:      protocol.ReconnectNATSJSON,
			code:       protocol.CloseTryAgainLater, reason: "node lost NATS, reconnect",
		}
		if l.idx == 0 {
			l.s.log.Warn("NATS unavailable past the outage grace: moving clients to other nodes",
				zap.Duration("nats_outage_grace", g))
		}
	}
}

// fire handles a connection whose wheel deadline passed.
func (l *loop) fire(c *conn) {
	switch c.State {
	case stHandshake:
		l.s.m.handshakeTimeouts.Inc()
		c.rejectHTTP(408, "handshake_timeout", "the upgrade request did not complete in time")
	case stAuthWait, stAuthing:
		l.s.m.authFailure("timeout")
		c.closeWith(protocol.CloseAuthTimeout, "authentication timed out")
	case stSubscribing:
		c.closeWith(protocol.CloseTryAgainLater, "NATS subscription not confirmed in time, retry later")
	case stOpen:
		if !c.has(flRefreshing) && l.expired(c) {
			l.s.m.authFailure("expired_while_connected")
			c.closeWith(protocol.CloseUnauthorized, "token expired")
			return
		}
		c.Mu.Lock()
		prog, behind := c.ProgressLocked()
		if behind && int32(l.now-(prog+l.writeTicks)) >= 0 {
			l.s.m.writeTimeouts.Inc()
			c.overflowLocked("slow consumer: no write progress within the write timeout")
			c.Mu.Unlock()
			return
		}
		c.Mu.Unlock()
		// A stream's client sends nothing: a vanished one is found by its
		// writes (the heartbeat's bytes stop making progress).
		if c.Kind != connSSE && int32(l.now-(c.lastRead+l.idleTicks)) >= 0 {
			c.closeWith(protocol.CloseHeartbeatTimeout, "no data from the client within the idle timeout")
			return
		}
		if int32(l.now-(c.lastPing+l.hbTicks)) >= 0 {
			c.lastPing = l.now
			c.Mu.Lock()
			if c.welcomedLocked() {
				if c.Kind == connSSE {
					c.writeLocked(ssePing)
				} else {
					c.writeLocked(l.s.pingFrame)
				}
			}
			c.Mu.Unlock()
		}
		l.schedule(c)
	case stClosing, stLinger:
		c.finalClose()
	}
}

// broadcastStep is how many connections one step of a broadcast writes
// to: a broadcast to a loop of many connections is spread over wake-ups,
// so it never holds the loop's reads, flushes and tick for long.
const broadcastStep = 256

// broadcast writes one shared frame to the next step of the loop's
// welcomed connections and reports whether some are left. It goes over the
// connections the loop had at its first step (one that closes meanwhile is
// skipped; one accepted after that step does not get it, as if it had
// connected after the message), so no connection gets it twice and none
// that was there is missed.
func (l *loop) broadcast(t *task) (more bool) {
	if t.next == 0 {
		l.bconns = append(l.bconns[:0], l.conns...)
	}
	if l.s.rs != nil {
		return l.step(t, func(c *conn) bool { return l.deliverSeq(c, t.sh, t.seq, t.last, false) })
	}
	return l.step(t, func(c *conn) bool { return c.State == stOpen && c.writeShared(t.sh) })
}

// step writes to the next broadcastStep connections of l.bconns, from
// t.next, with write (which reports whether it wrote), and reports whether
// some are left. A fan-out (a broadcast, a topic message) fills l.bconns
// at its first step; only one is in progress on a loop at a time (the
// loop's droppable tasks run in order, a task asking to run again staying
// first).
func (l *loop) step(t *task, write func(c *conn) bool) (more bool) {
	end := min(t.next+broadcastStep, len(l.bconns))
	n := 0
	for i, c := range l.bconns[t.next:end] {
		l.bconns[t.next+i] = nil
		if write(c) {
			n++
		}
	}
	l.stats.msgsOut.Add(uint64(n))
	t.next = end
	if end < len(l.bconns) {
		return true
	}
	l.bconns = l.bconns[:0]
	return false
}

// writeShared writes a shared frame to a welcomed connection and reports
// whether it was queued.
func (c *conn) writeShared(sh *bufpool.Shared) bool {
	c.Mu.Lock()
	ok := c.welcomedLocked() && c.writeSharedLocked(sh)
	c.Mu.Unlock()
	return ok
}

// moveStep sends the next reconnect notices and closes the connections
// whose grace passed (see move). During a drain the node keeps delivering
// to a noticed connection until it closes, so a client that follows the
// notice loses nothing.
func (l *loop) moveStep() {
	now := l.now
	m := &l.mv
	pending := 0
	for _, c := range l.conns {
		if _, ok := m.noticed[c]; !ok && c.State == stOpen {
			pending++
		}
	}
	quota := pending
	if left := int32(m.noticeEnd - now); left > int32(l.moveEvery) {
		steps := int(left) / int(l.moveEvery) // the steps left to spread the notices over
		quota = (pending + steps - 1) / steps
	}
	for _, c := range l.conns { // a notice removes nothing from the list
		if quota == 0 {
			break
		}
		if _, ok := m.noticed[c]; !ok && c.State == stOpen {
			c.writeFrame(ws.OpText, m.frame)
			m.noticed[c] = now
			quota--
		}
	}
	final := m.drain && int32(now-m.end) >= 0
	// From the end: closing may remove a connection (swapping the last one
	// into its place), which never moves one not yet visited.
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		c := l.conns[i]
		if c.State >= stClosing {
			continue
		}
		at, noticed := m.noticed[c]
		graceOver := noticed && int32(now-(at+m.graceTicks)) >= 0
		if graceOver || (m.drain && (final || c.State != stOpen)) {
			delete(m.noticed, c)
			c.closeWith(m.code, m.reason)
		}
	}
	if m.drain {
		l.checkDrained()
	}
}

func (l *loop) checkDrained() {
	if l.draining && !l.drainDone && len(l.conns) == 0 {
		l.drainDone = true
		l.s.loopDrained.Done()
	}
}

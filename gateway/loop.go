package gateway

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/mailru/easygo/netpoll"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/poller"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// taskKind says what a task posted to a loop does.
type taskKind uint8

const (
	taskAuth       taskKind = iota // an auth worker's verdict on c
	taskClose                      // close c with code (torn: without a close frame)
	taskBroadcast                  // write sh to every welcomed connection
	taskStopAccept                 // stop accepting connections
	taskDrain                      // start closing connections with 1012
	taskCloseAll                   // close every connection now
	taskRead                       // go on reading c (its read budget ran out; torn: read to EOF)
	taskWelcome                    // c's subscription is live: welcome it (ok: false if it failed)
	taskBehind                     // c's socket stopped taking frames: watch its write timeout
)

// task is work for a loop goroutine, posted from other goroutines.
type task struct {
	c       *conn
	sh      *bufpool.Shared
	reason  string // close reason, or auth failure text
	sub     string // authenticated user id
	tok     string // its user token
	exp     int64
	kind    taskKind
	code    protocol.CloseCode
	torn    bool
	ok      bool
	refresh bool // taskAuth: the verdict on a refreshed token
}

// loop is one event loop: an epoll poller and everything its connections
// share. All of it is touched only by the poller goroutine.
type loop struct {
	s        *Server
	p        *poller.Poller[task]
	dead     atomic.Bool // epoll_wait failed: posted tasks never run
	idx      int
	conns    []*conn
	wheel    wheel
	now      uint32 // ticks since the server started
	rbuf     []byte // read scratch: input is parsed here and copied only when incomplete
	iov      []unix.Iovec
	uio      upgradeIO
	upgrader ws.Upgrader

	authTicks, hbTicks, idleTicks, handshakeTicks, closeTicks, writeTicks uint32

	accepting  bool // the listener is registered with this loop
	acceptHold uint32
	draining   bool
	noticeEnd  uint32           // reconnect notices go out until this tick
	drainEnd   uint32           // every connection is closed by this tick
	graceTicks uint32           // a noticed connection is closed this long after its notice
	noticed    map[*conn]uint32 // during a drain: when each connection got its notice
	drainDone  bool
}

const readBufSize = 64 << 10

func newLoop(s *Server, idx int) (*loop, error) {
	l := &loop{
		s:    s,
		idx:  idx,
		rbuf: make([]byte, readBufSize),
		iov:  make([]unix.Iovec, 0, maxIovecs),
	}
	o := &s.opts
	l.authTicks = s.ticks(o.AuthTimeout)
	l.hbTicks = s.ticks(o.Heartbeat)
	l.idleTicks = s.ticks(o.IdleTimeout)
	l.handshakeTicks = s.ticks(o.HandshakeTimeout)
	l.closeTicks = s.ticks(o.CloseTimeout)
	l.writeTicks = s.ticks(o.WriteTimeout)
	l.wheel = newWheel(max(l.authTicks, l.hbTicks, l.handshakeTicks, l.closeTicks) + 1)
	l.upgrader = l.newUpgrader()
	l.accepting = true // Start adds the listener right after; set before the loop runs
	p, err := poller.New(poller.Config[task]{
		OnTask: l.onTask,
		Tick:   s.tick,
		OnTick: l.onTick,
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
	return l, nil
}

// startAccept registers the listening socket with this loop. Every loop
// registers it with EPOLLEXCLUSIVE, so one loop is woken per burst and
// the connections it accepts are its own: no hand-off between loops.
// Start calls it from its goroutine with accepting already set by newLoop
// (so the loop never sees it change); after a pause the loop calls
// resumeAccept.
func (l *loop) startAccept() error {
	return l.p.Add(l.s.lfd, poller.EventRead|poller.EventExclusive, l.onAccept)
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

func (l *loop) onAccept(ev netpoll.EpollEvent) {
	if ev == poller.EventClosed || !l.accepting {
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
		fd:       int32(fd),
		id:       l.s.connSeq.Add(1),
		lastPing: l.s.micros(), // the accept time until the welcome
		lastRead: l.now,
		idx:      int32(len(l.conns)),
	}
	l.conns = append(l.conns, c)
	l.s.nconns.Add(1)
	l.s.m.accepted.Inc()
	l.wheel.schedule(c, l.now+l.handshakeTicks)
	if err := l.p.Add(fd, poller.EventRead|poller.EventWrite|poller.EventRdHup|poller.EventEdge, c.onEvent); err != nil {
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
	l.conns[last] = nil
	l.conns = l.conns[:last]
	c.idx = -1
}

func (l *loop) onTask(t task) {
	switch t.kind {
	case taskAuth:
		l.authDone(t)
	case taskClose:
		c := t.c
		if c.state == stClosed {
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
		if t.c.state != stClosed {
			t.c.readEvent(t.torn)
		}
	case taskWelcome:
		l.welcome(t.c, t.ok)
	case taskBehind:
		if t.c.state == stOpen {
			l.schedule(t.c)
		}
	case taskBroadcast:
		l.broadcast(t.sh)
		t.sh.Release()
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
		l.noticed = map[*conn]uint32{}
		l.noticeEnd = l.now + l.s.ticks(d/2)
		l.drainEnd = l.now + l.s.ticks(d*8/10)
		l.graceTicks = l.s.ticks(min(10*time.Second, d/3))
	case taskCloseAll:
		for len(l.conns) > 0 {
			l.conns[len(l.conns)-1].finalClose()
		}
		l.checkDrained()
	}
}

// authDone applies an auth worker's verdict.
func (l *loop) authDone(t task) {
	c := t.c
	if t.refresh {
		l.refreshDone(t)
		return
	}
	if c.state != stAuthing {
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
	c.state = stSubscribing
	c.user = u
	c.registered = true
	c.expAt = l.expTick(t.exp)
	l.s.subs.welcome(c)
}

// refreshDone applies the verdict on a token sent on an open connection:
// the same user's fresh token moves the expiry; anything else closes 4401.
func (l *loop) refreshDone(t task) {
	c := t.c
	c.refreshing = false
	if c.state != stOpen {
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
	c.expAt = l.expTick(t.exp)
	l.schedule(c)
	var buf [64]byte
	body := append(buf[:0], `{"type":"refreshed","exp":`...)
	body = strconv.AppendInt(body, t.exp, 10)
	c.writeFrame(ws.OpText, append(body, '}'))
}

// expTick converts a token's exp (unix seconds; 0: none) to a loop tick.
func (l *loop) expTick(exp int64) uint32 {
	if exp == 0 {
		return 0
	}
	left := time.Until(time.Unix(exp, 0))
	if left <= 0 {
		return l.now // already expired (within the leeway): the next tick closes it
	}
	return l.now + min(l.s.ticks(left), 1<<30)
}

// welcome sends the welcome frame once the subscription manager confirmed
// the user's subscription, opens the connection to deliveries, and goes on
// with frames the client sent meanwhile: nothing reaches a client before its
// welcome.
func (l *loop) welcome(c *conn, subscribed bool) {
	if c.state != stSubscribing {
		return // closed or timed out meanwhile
	}
	if !subscribed {
		c.closeWith(protocol.CloseTryAgainLater, "NATS subscription failed, retry later")
		return
	}
	s := l.s
	var buf [1024]byte
	body := append(buf[:0], `{"type":"welcome","user":`...)
	body = protocol.AppendJSONString(body, []byte(c.user.id))
	body = append(body, `,"conn_id":"`...)
	body = s.appendConnID(body, c.id)
	body = append(body, `","node":`...)
	body = protocol.AppendJSONString(body, []byte(s.opts.NodeID))
	body = append(body, `,"heartbeat":`...)
	body = strconv.AppendInt(body, int64((s.opts.Heartbeat+time.Second-1)/time.Second), 10)
	body = append(body, '}')
	var fbuf [1024]byte
	frame := wsframe.AppendFrame(fbuf[:0], ws.OpText, body)
	c.mu.Lock()
	if !c.wdone {
		c.writeLocked(frame)
		c.welcomed = !c.wdone
	}
	c.mu.Unlock()
	if c.state == stClosed {
		return
	}
	s.m.authSeconds.Observe(float64(s.micros()-c.lastPing) / 1e6) // lastPing: still the accept time
	c.state = stOpen
	c.lastPing = l.now
	l.schedule(c)
	if c.in != nil {
		c.input(nil) // frames the client sent while it was authenticated
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
	earlier(c.lastRead + l.idleTicks)
	if c.expAt != 0 && !c.refreshing {
		earlier(c.expAt)
	}
	c.mu.Lock()
	if c.out != nil {
		earlier(c.out.wprog + l.writeTicks)
	}
	c.mu.Unlock()
	l.wheel.schedule(c, next)
}

func (l *loop) onTick() {
	l.now = l.s.ticks(time.Duration(l.s.nanotime()))
	l.wheel.advance(l.now, l.fire)
	if !l.accepting && l.acceptHold != 0 && int32(l.now-l.acceptHold) >= 0 {
		l.acceptHold = 0
		if err := l.resumeAccept(); err != nil {
			l.s.log.Error("resume accepting failed", zap.Error(err))
		}
	}
	if l.draining {
		l.drainStep()
	}
}

// fire handles a connection whose wheel deadline passed.
func (l *loop) fire(c *conn) {
	switch c.state {
	case stHandshake:
		l.s.m.handshakeTimeouts.Inc()
		c.rejectHTTP(408, "handshake_timeout", "the upgrade request did not complete in time")
	case stAuthWait, stAuthing:
		l.s.m.authFailure("timeout")
		c.closeWith(protocol.CloseAuthTimeout, "authentication timed out")
	case stSubscribing:
		c.closeWith(protocol.CloseTryAgainLater, "NATS subscription not confirmed in time, retry later")
	case stOpen:
		if c.expAt != 0 && !c.refreshing && int32(l.now-c.expAt) >= 0 {
			l.s.m.authFailure("expired_while_connected")
			c.closeWith(protocol.CloseUnauthorized, "token expired")
			return
		}
		c.mu.Lock()
		stuck := c.out != nil && int32(l.now-(c.out.wprog+l.writeTicks)) >= 0
		c.mu.Unlock()
		if stuck {
			l.s.m.writeTimeouts.Inc()
			c.mu.Lock()
			c.overflowLocked("slow consumer: no write progress within the write timeout")
			c.mu.Unlock()
			return
		}
		if int32(l.now-(c.lastRead+l.idleTicks)) >= 0 {
			c.closeWith(protocol.CloseHeartbeatTimeout, "no data from the client within the idle timeout")
			return
		}
		if int32(l.now-(c.lastPing+l.hbTicks)) >= 0 {
			c.lastPing = l.now
			c.mu.Lock()
			if c.welcomed {
				c.writeLocked(l.s.pingFrame)
			}
			c.mu.Unlock()
		}
		l.schedule(c)
	case stClosing, stLinger:
		c.finalClose()
	}
}

// broadcast writes one shared frame to every welcomed connection of the loop.
func (l *loop) broadcast(sh *bufpool.Shared) {
	n := 0
	for _, c := range l.conns {
		if c.state != stOpen {
			continue
		}
		c.mu.Lock()
		if c.welcomed && c.writeSharedLocked(sh) {
			n++
		}
		c.mu.Unlock()
	}
	l.s.m.msgsOut.Add(float64(n))
}

// drainStep moves the loop's connections off the node, spread over the
// drain timeout so they do not all reconnect at once, and without losing
// messages for clients that follow the reconnect frame ("make before
// break"): during the first half of the drain, each open connection gets
// {"type":"reconnect"}, asking the client to open a new connection (the
// load balancer sends it elsewhere: this node is not ready) and to close
// this one once the new one is welcomed. The node keeps delivering to it
// meanwhile. A noticed connection the client has not closed is closed with
// 1012 graceTicks after its notice; connections not yet welcomed are
// closed at once (nothing was delivered to them); whatever is left goes at
// 80% of the drain timeout.
func (l *loop) drainStep() {
	now := l.now
	pending := 0
	for _, c := range l.conns {
		if _, ok := l.noticed[c]; !ok && c.state == stOpen {
			pending++
		}
	}
	quota := pending
	if left := int32(l.noticeEnd - now); left > 1 {
		quota = (pending + int(left) - 1) / int(left)
	}
	for _, c := range l.conns { // a notice removes nothing from the list
		if quota == 0 {
			break
		}
		if _, ok := l.noticed[c]; !ok && c.state == stOpen {
			c.writeFrame(ws.OpText, protocol.ReconnectJSON)
			l.noticed[c] = now
			quota--
		}
	}
	final := int32(now-l.drainEnd) >= 0
	// From the end: closing may remove a connection (swapping the last one
	// into its place), which never moves one not yet visited.
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		c := l.conns[i]
		if c.state >= stClosing {
			continue
		}
		at, noticed := l.noticed[c]
		if final || c.state != stOpen || (noticed && int32(now-(at+l.graceTicks)) >= 0) {
			delete(l.noticed, c)
			c.closeWith(protocol.CloseServiceRestart, "node draining, reconnect")
		}
	}
	l.checkDrained()
}

func (l *loop) checkDrained() {
	if l.draining && !l.drainDone && len(l.conns) == 0 {
		l.drainDone = true
		l.s.loopDrained.Done()
	}
}

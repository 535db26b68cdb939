package gateway

import (
	"sync"

	"github.com/gobwas/ws"
	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/poller"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// connState is where a connection is in its life. It is read and written by
// the connection's loop goroutine only.
type connState uint8

const (
	stHandshake   connState = iota // reading the HTTP upgrade request
	stAuthWait                     // upgraded; waiting for the auth frame
	stAuthing                      // a token is with an auth worker
	stSubscribing                  // authenticated and registered; the welcome waits for the subscription
	stOpen                         // welcomed: deliveries flow
	stClosing                      // close frame sent; waiting for the client's, or EOF
	stLinger                       // no WebSocket (rejected upgrade, torn write): discard input until EOF
	stClosed                       // fd closed; the struct only lingers in references
)

// conn is one client socket. It holds no goroutine, timer or buffer while
// idle: in, rd and out are nil between events.
//
// The loop goroutine owns every field not marked "mu". Other goroutines
// (dispatchers, the subscription manager, the publisher) only write frames,
// holding mu and checking wdone first, so no write can reach a closed fd
// number the kernel has handed out again. The fd is closed under mu.
type conn struct {
	l            *loop
	user         *user      // set once authenticated
	in           *[]byte    // unparsed input: part of a request or frame, or frames held during auth
	rd           *rdState   // a data message being received
	out          *outq      // mu: bytes the socket did not take yet
	tprev, tnext *conn      // timing wheel links
	id           uint64     // node-unique connection number
	mu           sync.Mutex //
	fd           int32
	idx          int32  // position in l.conns
	due          uint32 // wheel deadline, in loop ticks
	lastRead     uint32 // tick of the last input
	// lastPing is the tick of the last server ping once the connection is
	// open; until then it holds the accept time in µs on the server clock,
	// for the handshake and connect latency metrics.
	lastPing    uint32
	expAt       uint32  // tick at which the token expires; 0: never
	rlTick      uint32  // tick the rate limiter last refilled
	rlTokens    float32 // messages the client may still send now (negative: in debt)
	state       connState
	inWheel     bool
	welcomed    bool // mu: the welcome frame went out; deliveries may follow
	wdone       bool // mu: no more frames may be written
	closeQueued bool // mu: a close frame is queued; shut down the write side once it is out
	peerClosed  bool // the client sent its close frame first
	registered  bool // in the user registry
	refreshing  bool // a refreshed token is with an auth worker
}

// onEvent is the connection's epoll callback, on its loop goroutine.
func (c *conn) onEvent(ev netpoll.EpollEvent) {
	if ev == poller.EventClosed || c.state == stClosed {
		return
	}
	if ev&poller.EventWrite != 0 {
		c.flushEvent()
		if c.state == stClosed {
			return
		}
	}
	if ev&(poller.EventRead|poller.EventRdHup|poller.EventHup|poller.EventErr) != 0 {
		c.readEvent(ev&(poller.EventRdHup|poller.EventHup|poller.EventErr) != 0)
	}
}

// readBudget bounds the reads one event may make, so a client that keeps
// its socket full cannot hold the loop: past it, the rest of the socket is
// read after the loop's other ready connections (taskRead).
const readBudget = 16

// readEvent reads until the socket is drained. A short read ends the loop:
// with edge-triggered epoll, bytes arriving later raise a new event. After a
// hang-up it reads on to EOF.
func (c *conn) readEvent(toEOF bool) {
	l := c.l
	for i := 0; ; i++ {
		if i == readBudget {
			l.p.Post(task{kind: taskRead, c: c, torn: toEOF})
			return
		}
		n, err := unix.Read(int(c.fd), l.rbuf)
		if err != nil {
			switch err {
			case unix.EAGAIN:
				return
			case unix.EINTR:
				continue
			}
			c.finalClose()
			return
		}
		if n == 0 {
			c.finalClose()
			return
		}
		c.lastRead = l.now
		l.s.m.bytesIn.Add(float64(n))
		c.input(l.rbuf[:n])
		if c.state == stClosed || (n < len(l.rbuf) && !toEOF) {
			return
		}
	}
}

// input parses data after any bytes held from earlier events and holds what
// is left (an incomplete request or frame) in a pooled buffer. input(nil)
// resumes parsing held bytes, after authentication.
func (c *conn) input(data []byte) {
	if c.in == nil {
		if len(data) == 0 {
			return
		}
		n := c.process(data, 0)
		if c.state == stClosed || n == len(data) {
			return
		}
		rest := data[n:]
		c.in = bufpool.Get(len(rest))
		*c.in = append(*c.in, rest...)
		c.checkHeld()
		return
	}
	scanned := len(*c.in)
	c.in = bufpool.Grow(c.in, len(data))
	*c.in = append(*c.in, data...)
	buf := *c.in
	n := c.process(buf, scanned)
	if c.state == stClosed {
		return
	}
	if n == len(buf) {
		bufpool.Put(c.in)
		c.in = nil
		return
	}
	if n > 0 {
		*c.in = buf[:copy(buf, buf[n:])]
	}
	c.checkHeld()
}

// checkHeld bounds what a connection may hold unparsed: one request header
// before the upgrade, one frame after it (frames sent during
// authentication count together).
func (c *conn) checkHeld() {
	held := len(*c.in)
	o := &c.l.s.opts
	switch c.state {
	case stHandshake:
		if held > o.MaxHeaderBytes {
			c.rejectHTTP(431, "request_too_large", "the upgrade request headers are larger than the node accepts")
		}
	case stAuthing, stSubscribing:
		if held > o.MaxMessageBytes+wsframe.MaxHeaderSize {
			c.closeWith(protocol.ClosePolicyViolation, "too much data before authentication completed")
		}
	}
}

// message handles one complete text message, already checked to be UTF-8.
func (c *conn) message(p []byte) {
	c.l.s.m.msgsIn.Inc()
	if !c.allow() {
		return
	}
	switch c.state {
	case stAuthWait:
		c.authWaitMessage(p)
	case stOpen:
		c.openMessage(p)
	}
}

func (c *conn) authWaitMessage(p []byte) {
	f, err := protocol.DecodeClientFrame(p)
	if err != nil {
		c.closeWith(protocol.CloseBadRequest, err.Error())
		return
	}
	switch f.Type {
	case protocol.TypeAuth:
		c.submitAuth(f.Token)
	case protocol.TypePing:
		c.writeFrame(ws.OpText, protocol.PongJSON)
	case protocol.TypePong:
	default:
		c.closeWith(protocol.CloseUnauthorized, "authenticate first: the first frame must be {\"type\":\"auth\",\"token\":...}")
	}
}

func (c *conn) openMessage(p []byte) {
	switch string(p) { // the frames a healthy client sends most, without decoding
	case `{"type":"pong"}`:
		return
	case `{"type":"ping"}`:
		c.writeFrame(ws.OpText, protocol.PongJSON)
		return
	}
	f, err := protocol.DecodeClientFrame(p)
	if err != nil {
		c.writeError(protocol.ErrCodeBadRequest, err.Error())
		return
	}
	switch f.Type {
	case protocol.TypePing:
		c.writeFrame(ws.OpText, protocol.PongJSON)
	case protocol.TypePong:
	case protocol.TypePublish:
		c.l.s.pub.enqueue(c, f.Data)
	case protocol.TypeAuth:
		c.submitRefresh(f.Token)
	}
}

// allow charges one inbound message to the connection's token bucket
// (MaxClientMsgsPerSec, MaxClientMsgsBurst). Over the rate, the message is
// refused with an error frame; a client that goes on for another burst's
// worth is closed with 4429.
func (c *conn) allow() bool {
	o := &c.l.s.opts
	if o.MaxClientMsgsPerSec <= 0 || c.state < stAuthWait {
		return true
	}
	l := c.l
	if el := l.now - c.rlTick; el > 0 {
		c.rlTokens = min(c.rlTokens+float32(float64(el)*l.s.tick.Seconds()*o.MaxClientMsgsPerSec), float32(o.MaxClientMsgsBurst))
		c.rlTick = l.now
	}
	c.rlTokens--
	if c.rlTokens >= 0 {
		return true
	}
	l.s.m.rateLimited.Inc()
	if c.rlTokens < -float32(o.MaxClientMsgsBurst) {
		c.closeWith(protocol.CloseRateLimited, "message rate limit exceeded")
		return false
	}
	c.writeError(protocol.ErrCodeRateLimited, "message rate limit exceeded: message dropped")
	return false
}

// onCloseFrame answers a client close frame (RFC 6455 §5.5.1, §7.4).
func (c *conn) onCloseFrame(p []byte) {
	if c.state == stClosing {
		c.finalClose() // the answer to ours: the handshake is complete
		return
	}
	code, reason := protocol.CloseNormal, ""
	switch {
	case len(p) == 1:
		code, reason = protocol.CloseProtocolError, "close frame payload of 1 byte"
	case len(p) >= 2:
		sc, r := ws.ParseCloseFrameData(p)
		err := ws.CheckCloseFrameData(sc, r)
		switch {
		case err == ws.ErrProtocolStatusCodeUnknown && sc >= 1012 && sc <= 1014:
			err = nil // registered with IANA after RFC 6455 (restart, try again later, bad gateway)
		case err == nil && sc >= 5000:
			err = ws.ErrProtocolStatusCodeUnknown // RFC 6455 §7.4.2 defines nothing past 4999
		}
		if err != nil {
			code, reason = protocol.CloseProtocolError, err.Error()
			if err == ws.ErrProtocolInvalidUTF8 {
				code = protocol.CloseInvalidPayload
			}
		} else {
			code = protocol.CloseCode(sc) // echo the client's code
		}
	}
	c.peerClosed = true
	c.closeWith(code, reason)
	c.mu.Lock()
	drained := c.out == nil
	c.mu.Unlock()
	if drained {
		c.finalClose()
	}
}

// closeWith starts the closing handshake: the close frame goes out after
// whatever is queued, then the write side is shut down. The socket is closed
// when the client answers, hangs up, or CloseTimeout passes.
func (c *conn) closeWith(code protocol.CloseCode, reason string) {
	switch c.state {
	case stClosing, stLinger, stClosed:
		return
	case stHandshake:
		c.finalClose()
		return
	}
	c.state = stClosing
	var buf [2 + 2 + 125]byte
	frame := wsframe.AppendClose(buf[:0], ws.StatusCode(code), reason)
	c.mu.Lock()
	if !c.wdone {
		c.welcomed = false
		c.putLocked(frame)
		if !c.wdone {
			c.wdone, c.closeQueued = true, true
			if c.out == nil {
				shutdownWrite(c.fd)
			}
		}
	}
	c.mu.Unlock()
	c.l.s.m.closed(code)
	c.l.wheel.schedule(c, c.l.now+c.l.closeTicks)
}

// linger abandons the WebSocket without a close frame (a rejected upgrade, a
// torn write): the write side is shut down and input is discarded until the
// client hangs up or CloseTimeout passes.
func (c *conn) linger() {
	if c.state >= stLinger {
		return
	}
	c.state = stLinger
	c.mu.Lock()
	c.wdone, c.welcomed = true, false
	if c.out == nil {
		shutdownWrite(c.fd)
	} else {
		c.closeQueued = true
	}
	c.mu.Unlock()
	c.l.wheel.schedule(c, c.l.now+c.l.closeTicks)
}

// finalClose releases the socket and everything the connection holds.
func (c *conn) finalClose() {
	if c.state == stClosed {
		return
	}
	prev := c.state
	c.state = stClosed
	l := c.l
	_ = l.p.Del(int(c.fd))
	c.mu.Lock()
	c.wdone, c.welcomed = true, false
	c.releaseOutLocked()
	_ = unix.Close(int(c.fd))
	c.mu.Unlock()
	if c.in != nil {
		bufpool.Put(c.in)
		c.in = nil
	}
	c.releaseRd()
	l.wheel.unlink(c)
	l.remove(c)
	if c.registered {
		c.registered = false
		l.s.reg.remove(c)
	}
	if prev == stHandshake {
		l.s.m.handshakeFailures.Inc()
	}
	l.s.nconns.Add(-1)
}

// submitAuth hands a token to the auth workers; the result comes back as a
// task on this loop.
func (c *conn) submitAuth(token string) {
	c.state = stAuthing
	if !c.l.s.auth.submit(c, token, false) {
		c.l.s.m.authFailure("queue_full")
		c.closeWith(protocol.CloseTryAgainLater, "authentication queue full, retry later")
	}
}

// submitRefresh checks a fresh token sent on an open connection. Until the
// verdict comes back the connection stays open, even past the old token's
// expiry.
func (c *conn) submitRefresh(token string) {
	if c.refreshing {
		c.writeError(protocol.ErrCodeBadRequest, "a token refresh is already in progress")
		return
	}
	if !c.l.s.auth.submit(c, token, true) {
		c.l.s.m.authFailure("queue_full")
		c.writeError(protocol.ErrCodeOverloaded, "authentication queue full, refresh again later")
		return
	}
	c.refreshing = true
}

package gateway

import (
	"errors"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// connState is where a connection is in its life (engine.Conn.State). It
// is read and written by the connection's loop goroutine only.
type connState = uint8

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

// Bits of engine.Conn.Flags (loop goroutine only).
const (
	flPeerClosed uint8 = 1 << iota // the client sent its close frame first
	flRegistered                   // in the user registry
	flRefreshing                   // a refreshed token is with an auth worker
	flReadAgain                    // a read continuation is queued (taskRead)
	flPending                      // admitted, not yet welcomed: counted in admission.pending
	flSince                        // resume: the client sent "since" (held in uPos until the welcome)
	flSkipped                      // resume: a live message came before the welcome
	flCatchUp                      // resume: a replay runs; live messages are skipped (loop.skips)
)

// Bits of engine.Conn.LockedFlags (guarded by Mu).
const (
	lfWelcomed      uint8 = 1 << iota // the welcome frame went out; deliveries may follow
	lfKicked                          // a kick's close is posted to the loop (once per connection)
	lfCatchUpPosted                   // resume: a taskCatchUp is queued
)

// conn is one client socket. It holds no goroutine, timer or buffer while
// idle: in and rd are nil between events, and the engine's write queue is
// nil while the socket keeps up.
//
// The loop goroutine owns every field. Other goroutines (dispatchers, the
// subscription manager, the publisher) only write frames through the
// embedded engine.Conn, holding Mu; the engine refuses writes once the
// connection stops taking frames and closes the fd under Mu.
type conn struct {
	engine.Conn[*conn]         // fd, write queue, wheel links, state and flags
	l                  *loop   //
	user               *user   // set once authenticated
	in                 *[]byte // unparsed input: part of a request or frame, or frames held during auth
	rd                 *rdState
	id                 uint64 // node-unique connection number
	idx                int32  // position in l.conns
	lastRead           uint32 // tick of the last input
	// lastPing is the tick of the last server ping once the connection is
	// open; until then it holds the accept time in µs on the server clock,
	// for the handshake and connect latency metrics.
	lastPing uint32
	expUnix  uint32  // the token's exp in unix seconds; 0: never
	rlTick   uint32  // tick the rate limiter last refilled
	rlTokens float32 // messages the client may still send now (negative: in debt)
	// Resume: the stream sequence of the newest user message and of the
	// newest broadcast the connection is covered to (loop goroutine).
	uPos, bPos uint64
}

func (c *conn) has(f uint8) bool { return c.Flags&f != 0 }

func (c *conn) set(f uint8, on bool) {
	if on {
		c.Flags |= f
	} else {
		c.Flags &^= f
	}
}

// welcomedLocked reports whether deliveries may be written. Mu must be held.
func (c *conn) welcomedLocked() bool { return c.LockedFlags&lfWelcomed != 0 }

func (c *conn) setWelcomedLocked(on bool) {
	if on {
		c.LockedFlags |= lfWelcomed
	} else {
		c.LockedFlags &^= lfWelcomed
	}
}

// onEvent is the connection's epoll callback, on its loop goroutine.
func (c *conn) onEvent(ev engine.Event) {
	if ev == engine.EventClosed || c.State == stClosed {
		return
	}
	if ev&engine.EventWrite != 0 {
		c.flushEvent()
		if c.State == stClosed {
			return
		}
	}
	if ev&(engine.EventRead|engine.EventRdHup|engine.EventHup|engine.EventErr) != 0 {
		c.readEvent(ev&(engine.EventRdHup|engine.EventHup|engine.EventErr) != 0)
	}
}

// readBudget bounds the reads one event may make, so a client that keeps
// its socket full cannot hold the loop: past it, the rest of the socket is
// read after the loop's other ready connections (taskRead).
const readBudget = 16

// readEvent reads until the socket is drained (engine.Conn.Read). After a
// hang-up it reads on to EOF.
func (c *conn) readEvent(toEOF bool) {
	l := c.l
	switch r, _ := c.Read(l.p.ReadBuf(), readBudget, toEOF, c); r {
	case engine.ReadBudget:
		if !c.has(flReadAgain) {
			c.set(flReadAgain, true)
			l.p.Post(task{kind: taskRead, c: c, torn: toEOF})
		}
	case engine.ReadEOF, engine.ReadError:
		c.finalClose()
	}
}

// OnData takes bytes read from the socket (engine.Reader).
func (c *conn) OnData(p []byte) bool {
	c.lastRead = c.l.now
	c.l.stats.bytesIn.Add(uint64(len(p)))
	c.input(p)
	return c.State != stClosed
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
		if c.State == stClosed || n == len(data) {
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
	if c.State == stClosed {
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
	switch c.State {
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
	c.l.stats.msgsIn.Add(1)
	if !c.allow() {
		return
	}
	switch c.State {
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
		if f.Since != "" {
			c.uPos, _ = protocol.ParseSince(f.Since) // checked by DecodeClientFrame
			c.set(flSince, true)
		}
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
		if errors.Is(err, protocol.ErrBadTopic) {
			c.l.s.m.topicRefused("bad_topic")
			c.writeTopicError(protocol.ErrCodeBadTopic, f.Topic, err.Error())
			return
		}
		c.writeError(protocol.ErrCodeBadRequest, err.Error())
		return
	}
	switch f.Type {
	case protocol.TypeSubscribe:
		c.l.subscribeFrame(c, f)
	case protocol.TypeUnsubscribe:
		c.l.unsubscribeFrame(c, f.Topic)
	case protocol.TypePing:
		c.writeFrame(ws.OpText, protocol.PongJSON)
	case protocol.TypePong:
	case protocol.TypePublish:
		if f.Topic != "" {
			c.l.publishTopic(c, f.Topic, f.Data)
			return
		}
		c.l.s.pub.enqueue(c, f.Data, "")
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
	if o.MaxClientMsgsPerSec <= 0 || c.State < stAuthWait {
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
	if c.State == stClosing {
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
	c.set(flPeerClosed, true)
	c.closeWith(code, reason)
	c.Mu.Lock()
	drained := !c.BehindLocked()
	c.Mu.Unlock()
	if drained {
		c.finalClose()
	}
}

// closeWith starts the closing handshake: the close frame goes out after
// whatever is queued, then the write side is shut down. The socket is closed
// when the client answers, hangs up, or CloseTimeout passes.
func (c *conn) closeWith(code protocol.CloseCode, reason string) {
	switch c.State {
	case stClosing, stLinger, stClosed:
		return
	case stHandshake:
		c.finalClose()
		return
	}
	if c.Kind == connSSE {
		c.sseClose(code, reason)
		return
	}
	c.endPending()
	c.State = stClosing
	var buf [2 + 2 + 125]byte
	frame := wsframe.AppendClose(buf[:0], ws.StatusCode(code), reason)
	c.Mu.Lock()
	if !c.WritesDoneLocked() {
		c.setWelcomedLocked(false)
		c.putLocked(frame)
		c.CloseWriteLocked()
	}
	c.Mu.Unlock()
	c.l.s.m.closed(code)
	c.l.wheel.Schedule(c, c.l.now+c.l.closeTicks)
}

// linger abandons the WebSocket without a close frame (a rejected upgrade, a
// torn write): the write side is shut down and input is discarded until the
// client hangs up or CloseTimeout passes.
func (c *conn) linger() {
	if c.State >= stLinger {
		return
	}
	c.endPending()
	c.State = stLinger
	c.Mu.Lock()
	c.setWelcomedLocked(false)
	c.CloseWriteLocked()
	c.Mu.Unlock()
	c.l.wheel.Schedule(c, c.l.now+c.l.closeTicks)
}

// finalClose releases the socket and everything the connection holds.
func (c *conn) finalClose() {
	if c.State == stClosed {
		return
	}
	prev := c.State
	c.endPending()
	c.State = stClosed
	l := c.l
	c.Close(l.p) // deregisters, then closes under Mu: writes after it are refused
	if c.in != nil {
		bufpool.Put(c.in)
		c.in = nil
	}
	c.releaseRd()
	l.wheel.Unlink(c)
	l.dropTopics(c)
	l.remove(c)
	if l.skips != nil {
		delete(l.skips, c)
	}
	if l.sseReqs != nil {
		delete(l.sseReqs, c)
	}
	if l.mv.active {
		delete(l.mv.noticed, c)
	}
	if c.has(flRegistered) {
		c.set(flRegistered, false)
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
	c.State = stAuthing
	if !c.l.s.auth.submit(c, token, false) {
		c.l.s.m.authFailure("queue_full")
		c.closeWith(protocol.CloseTryAgainLater, "authentication queue full, retry later")
	}
}

// submitRefresh checks a fresh token sent on an open connection. Until the
// verdict comes back the connection stays open, even past the old token's
// expiry.
func (c *conn) submitRefresh(token string) {
	if c.has(flRefreshing) {
		c.writeError(protocol.ErrCodeBadRequest, "a token refresh is already in progress")
		return
	}
	if !c.l.s.auth.submit(c, token, true) {
		c.l.s.m.authFailure("queue_full")
		c.writeError(protocol.ErrCodeOverloaded, "authentication queue full, refresh again later")
		return
	}
	c.set(flRefreshing, true)
}

package gateway

import (
	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// The write side of a connection: the engine writes to the socket and
// queues what it does not take (engine.Conn); the gateway adds its
// policies. A queue past MaxPendingBytes, or one that made no write
// progress for WriteTimeout, makes the client a slow consumer (4500); a
// failed write tears the connection down.

// writeSharedLocked writes or queues a delivery frame (a reference to the
// shared buffer, no copy) and reports whether it was taken. Mu must be held.
func (c *conn) writeSharedLocked(sh *bufpool.Shared) bool {
	if c.Kind == connSSE {
		sh = sh.Alt(sseEncode) // the event, encoded once for every stream
	}
	r, n := c.WriteSharedLocked(sh, c.l.s.opts.MaxPendingBytes)
	return c.wrote(r, n)
}

// writeLocked writes or queues a frame held in b, copying what is queued.
// Mu must be held.
func (c *conn) writeLocked(b []byte) {
	r, n := c.WriteLocked(b, c.l.s.opts.MaxPendingBytes)
	c.wrote(r, n)
}

// putLocked is writeLocked without the bound (close frames are never
// refused). Mu must be held.
func (c *conn) putLocked(b []byte) {
	r, n := c.PutLocked(b)
	c.wrote(r, n)
}

// wrote applies the node's policies to a write's result and reports
// whether the bytes were taken. Mu must be held.
func (c *conn) wrote(r engine.Result, n int) bool {
	l := c.l
	if n > 0 {
		l.stats.bytesOut.Add(uint64(n))
	}
	switch r {
	case engine.Written, engine.Queued:
		return true
	case engine.QueueStarted:
		// The socket refused bytes: the loop watches the write timeout
		// from now (this may run on a dispatcher goroutine).
		c.SetProgressLocked(l.p.Now())
		l.p.Post(task{kind: taskBehind, c: c})
		return true
	case engine.Overflow:
		c.overflowLocked("slow consumer: outbound queue exceeded max-pending-bytes")
	case engine.Failed:
		// The peer reset the connection: the engine dropped the queue.
		c.setWelcomedLocked(false)
		l.p.Post(task{kind: taskClose, c: c, torn: true})
	}
	return false
}

// writeFrame writes one small frame (pong, ping, error) if the connection
// still takes frames. It takes Mu.
func (c *conn) writeFrame(op ws.OpCode, p []byte) {
	var buf [640]byte
	var frame []byte
	switch {
	case c.Kind != connSSE:
		frame = wsframe.AppendFrame(buf[:0], op, p)
	case op == ws.OpText:
		frame = appendSSEData(buf[:0], p)
	default:
		return // a stream has no control frames
	}
	c.Mu.Lock()
	c.writeLocked(frame)
	c.Mu.Unlock()
}

// writeError sends an error frame.
func (c *conn) writeError(code, reason string) {
	var buf [512]byte
	c.writeFrame(ws.OpText, protocol.AppendError(buf[:0], code, reason))
}

// flushEvent drains the queue when the socket is writable again (EPOLLOUT),
// on the loop goroutine.
func (c *conn) flushEvent() {
	l := c.l
	c.Mu.Lock()
	r, n := c.FlushLocked(l.p.Iov(), l.now)
	done := !c.BehindLocked() && c.has(flPeerClosed) && c.State == stClosing
	if r == engine.FlushFailed {
		c.setWelcomedLocked(false)
	}
	c.Mu.Unlock()
	if n > 0 {
		l.stats.bytesOut.Add(uint64(n))
	}
	if r == engine.FlushFailed || done {
		c.finalClose()
	}
}

// overflowLocked handles a slow consumer: a queue over MaxPendingBytes, or
// one that made no progress for WriteTimeout. The frames still queued are
// dropped (but one already partly on the wire, which must end whole), a
// 4500 close frame is queued behind, and the loop closes the connection
// once it is out or CloseTimeout passes. The queue is then at most one frame.
func (c *conn) overflowLocked(reason string) {
	if c.WritesDoneLocked() {
		return
	}
	c.setWelcomedLocked(false)
	c.TrimLocked()
	var buf [256]byte
	var frame []byte
	if c.Kind == connSSE {
		frame = appendCloseEvent(buf[:0], protocol.CloseSlowConsumer, reason)
	} else {
		frame = wsframe.AppendClose(buf[:0], ws.StatusCode(protocol.CloseSlowConsumer), reason)
	}
	c.putLocked(frame)
	if c.WritesDoneLocked() {
		return // the write failed: wrote took over
	}
	c.CloseWriteLocked()
	c.l.s.m.slowConsumers.Inc()
	c.l.p.Post(task{kind: taskClose, c: c, code: protocol.CloseSlowConsumer, reason: reason})
}

package gateway

import (
	"sync"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// outq holds the frames a socket did not take, oldest first. Frames are
// shared buffers: a broadcast queued on many connections is one buffer.
// It exists only while a connection is behind; an idle connection has none.
type outq struct {
	items []*bufpool.Shared
	wprog uint32 // tick of the last write progress (the write timeout)
	off   int    // bytes of items[0] already written
	bytes int    // bytes still to write
}

var outqPool = sync.Pool{New: func() any { return &outq{items: make([]*bufpool.Shared, 0, 8)} }}

// maxIovecs is how many queued frames one writev takes.
const maxIovecs = 64

// writeShared writes or queues a delivery frame. mu must be held.
// It reports whether the frame was taken.
func (c *conn) writeSharedLocked(sh *bufpool.Shared) bool {
	if c.wdone {
		return false
	}
	if c.out == nil {
		n, err := writeFull(int(c.fd), sh.B)
		if n == len(sh.B) {
			c.l.s.m.bytesOut.Add(float64(n))
			return true
		}
		if err != unix.EAGAIN {
			c.writeFailedLocked()
			return false
		}
		c.l.s.m.bytesOut.Add(float64(n))
		c.newQueueLocked()
		c.out.off = n
		c.out.bytes = len(sh.B) - n
		sh.Retain()
		c.out.items = append(c.out.items, sh)
		return true
	}
	if c.out.bytes+len(sh.B) > c.l.s.opts.MaxPendingBytes {
		c.overflowLocked("slow consumer: outbound queue exceeded max-pending-bytes")
		return false
	}
	sh.Retain()
	c.out.items = append(c.out.items, sh)
	c.out.bytes += len(sh.B)
	return true
}

// writeLocked writes or queues a frame held in b, copying what is queued;
// a queue that would pass MaxPendingBytes makes the client a slow consumer.
// mu must be held; wdone is the caller's to check.
func (c *conn) writeLocked(b []byte) {
	if c.out != nil && c.out.bytes+len(b) > c.l.s.opts.MaxPendingBytes {
		c.overflowLocked("slow consumer: outbound queue exceeded max-pending-bytes")
		return
	}
	c.putLocked(b)
}

// putLocked writes b, or queues a copy of what the socket does not take,
// whatever the queue holds (close frames are never refused). mu must be held.
func (c *conn) putLocked(b []byte) {
	n := 0
	if c.out == nil {
		var err error
		n, err = writeFull(int(c.fd), b)
		if n > 0 {
			c.l.s.m.bytesOut.Add(float64(n))
		}
		if n == len(b) {
			return
		}
		if err != unix.EAGAIN {
			c.writeFailedLocked()
			return
		}
		c.newQueueLocked()
		c.out.off = n // the queue starts inside this frame
	}
	sh := bufpool.GetShared(len(b))
	sh.B = append(sh.B, b...)
	c.out.items = append(c.out.items, sh)
	c.out.bytes += len(b) - n
}

// newQueueLocked starts the queue of a connection whose socket refused
// bytes, and has its loop watch the write timeout from now.
func (c *conn) newQueueLocked() {
	c.out = outqPool.Get().(*outq)
	c.out.wprog = c.l.s.nowTicks()
	c.l.p.Post(task{kind: taskBehind, c: c})
}

// writeFrame writes one small frame (pong, ping, error) if the connection
// still takes frames. It takes mu.
func (c *conn) writeFrame(op ws.OpCode, p []byte) {
	var buf [640]byte
	frame := wsframe.AppendFrame(buf[:0], op, p)
	c.mu.Lock()
	if !c.wdone {
		c.writeLocked(frame)
	}
	c.mu.Unlock()
}

// writeError sends an error frame.
func (c *conn) writeError(code, reason string) {
	var buf [512]byte
	c.writeFrame(ws.OpText, protocol.AppendError(buf[:0], code, reason))
}

// flushEvent drains the queue when the socket is writable again (EPOLLOUT),
// on the loop goroutine.
func (c *conn) flushEvent() {
	c.mu.Lock()
	if c.out != nil {
		c.flushLocked()
	}
	done := c.out == nil && c.peerClosed && c.state == stClosing
	c.mu.Unlock()
	if done {
		c.finalClose()
	}
}

// flushLocked writes queued frames, several per writev, until the queue is
// empty or the socket is full. Only the loop goroutine calls it (it uses the
// loop's iovec scratch). mu must be held.
func (c *conn) flushLocked() {
	q := c.out
	iov := c.l.iov[:0]
	for q.bytes > 0 {
		iov = iov[:0]
		for i, sh := range q.items {
			if i == maxIovecs {
				break
			}
			b := sh.B
			if i == 0 {
				b = b[q.off:]
			}
			if len(b) == 0 {
				continue
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		n, err := writev(int(c.fd), iov)
		if n > 0 {
			c.l.s.m.bytesOut.Add(float64(n))
			c.consumed(n)
			q.wprog = c.l.now
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			c.writeFailedLocked()
			return
		}
	}
	c.releaseOutLocked()
	if c.closeQueued {
		shutdownWrite(c.fd)
	}
}

// consumed drops n written bytes from the head of the queue.
func (c *conn) consumed(n int) {
	q := c.out
	q.bytes -= n
	n += q.off
	i := 0
	for ; i < len(q.items) && n >= len(q.items[i].B); i++ {
		n -= len(q.items[i].B)
		q.items[i].Release()
		q.items[i] = nil
	}
	q.off = n
	if i > 0 {
		rest := copy(q.items, q.items[i:])
		clear(q.items[rest:])
		q.items = q.items[:rest]
	}
}

// releaseOutLocked drops the queue and returns it to its pool.
func (c *conn) releaseOutLocked() {
	q := c.out
	if q == nil {
		return
	}
	for i, sh := range q.items {
		sh.Release()
		q.items[i] = nil
	}
	q.items, q.off, q.bytes = q.items[:0], 0, 0
	c.out = nil
	if cap(q.items) <= 1024 {
		outqPool.Put(q)
	}
}

// overflowLocked handles a slow consumer: a queue over MaxPendingBytes, or
// one that made no progress for WriteTimeout. The frames still queued are
// dropped (but one already partly on the wire, which must end whole), a
// 4500 close frame is queued behind, and the loop closes the connection
// once it is out or CloseTimeout passes. The queue is then at most one frame.
func (c *conn) overflowLocked(reason string) {
	if c.wdone {
		return
	}
	c.welcomed = false
	if q := c.out; q != nil {
		keep := 0
		if q.off > 0 {
			keep = 1
		}
		for i := keep; i < len(q.items); i++ {
			q.bytes -= len(q.items[i].B)
			q.items[i].Release()
			q.items[i] = nil
		}
		q.items = q.items[:keep]
		if keep == 0 {
			q.bytes = 0
		}
	}
	var buf [2 + 2 + 125]byte
	frame := wsframe.AppendClose(buf[:0], ws.StatusCode(protocol.CloseSlowConsumer), reason)
	if c.out != nil && len(c.out.items) == 0 {
		c.releaseOutLocked() // nothing left: try the socket first
	}
	c.putLocked(frame)
	if c.wdone {
		return // the write failed: writeFailedLocked took over
	}
	c.wdone, c.closeQueued = true, true
	if c.out == nil {
		shutdownWrite(c.fd)
	}
	c.l.s.m.slowConsumers.Inc()
	c.l.p.Post(task{kind: taskClose, c: c, code: protocol.CloseSlowConsumer, reason: reason})
}

// writeFailedLocked handles a write error (the peer reset the connection).
func (c *conn) writeFailedLocked() {
	c.wdone, c.welcomed = true, false
	c.releaseOutLocked()
	c.l.p.Post(task{kind: taskClose, c: c, torn: true})
}

// writeFull writes b until it is all written or the socket refuses more.
func writeFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(fd, b[n:])
		if m > 0 {
			n += m
		}
		switch err {
		case nil:
		case unix.EINTR:
		default:
			return n, err
		}
	}
	return n, nil
}

// writev is writev(2) without the allocation unix.Writev makes per call.
func writev(fd int, iov []unix.Iovec) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

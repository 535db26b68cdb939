package engine

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
)

// Conn is the engine's part of one socket: the fd, its bounded write
// queue and its timing-wheel links. A protocol's connection type P embeds
// Conn[P] (type conn struct{ engine.Conn[*conn]; ... }); [Conn.Init] sets
// the fd.
//
// The loop goroutine owns the fd's reads, the queue's flushes and the wheel
// links. Other goroutines may write frames holding Mu (the ...Locked
// methods); the fd is closed under Mu too ([Conn.Close]), so a write never
// reaches an fd number the kernel has handed out again.
//
// State, Flags and LockedFlags are the protocol's, never read here: they
// fill what would otherwise be padding, which keeps an idle connection
// small.
type Conn[P any] struct {
	Mu          sync.Mutex
	out         *outq // Mu: bytes the socket did not take yet; nil while caught up
	prev, next  P     // wheel links
	fd          int32
	due         uint32 // wheel deadline, in loop ticks
	inWheel     bool
	wdone       bool // Mu: no more frames may be written
	closeQueued bool // Mu: shut the write side down once the queue is out
	// State is the protocol's connection state (loop goroutine only).
	State uint8
	// Flags are the protocol's bits owned by the loop goroutine.
	Flags uint8
	// LockedFlags are the protocol's bits guarded by Mu.
	LockedFlags uint8
	// Kind is the protocol's transport (WebSocket, server-sent events). It
	// is set once, before any other goroutine can reach the connection, so
	// every goroutine reads it without Mu. It fills padding: no memory.
	Kind uint8
}

func (c *Conn[P]) timer() *Conn[P] { return c }

// Due is the tick the connection is scheduled for, if Scheduled.
func (c *Conn[P]) Due() uint32 { return c.due }

// Scheduled reports whether the connection is in a wheel.
func (c *Conn[P]) Scheduled() bool { return c.inWheel }

// outq holds what a socket did not take, oldest first, as shared buffers:
// a broadcast queued on many connections is one buffer. It exists only
// while a connection is behind; an idle connection has none.
type outq struct {
	items []*bufpool.Shared
	prog  uint32 // tick of the last write progress (the caller's write timeout)
	off   int    // bytes of items[0] already written
	bytes int    // bytes still to write
}

var outqPool = sync.Pool{New: func() any { return &outq{items: make([]*bufpool.Shared, 0, 8)} }}

// Init sets the socket, a non-blocking fd, and opens it to writes; -1
// means none yet. A struct that outlives its socket (a client that
// reconnects) calls it again for the next one, after Close.
func (c *Conn[P]) Init(fd int) {
	c.Mu.Lock()
	c.fd = int32(fd)
	c.wdone, c.closeQueued = fd < 0, false
	c.Mu.Unlock()
}

// FD is the socket.
func (c *Conn[P]) FD() int { return int(c.fd) }

// Result is what a write did.
type Result uint8

const (
	Written      Result = iota // all of it went to the socket
	Queued                     // part or all of it waits in the queue, which existed before
	QueueStarted               // the socket refused bytes: the queue starts with this write
	Overflow                   // the queue would pass its bound: nothing was written
	Failed                     // the socket failed: the queue is released and writes are done; close the connection
	Done                       // writes are done (closing or closed): nothing was written
)

// OK reports whether the bytes were taken (written or queued).
func (r Result) OK() bool { return r <= QueueStarted }

// WriteLocked writes b, or queues a copy of what the socket does not take,
// unless a queue exists and b would take it past limit bytes. It returns
// what happened and how many bytes went to the socket now. Mu must be held.
func (c *Conn[P]) WriteLocked(b []byte, limit int) (Result, int) {
	if c.wdone {
		return Done, 0
	}
	if c.out != nil && c.out.bytes+len(b) > limit {
		return Overflow, 0
	}
	return c.PutLocked(b)
}

// PutLocked is WriteLocked without the bound (a close frame is never
// refused). Mu must be held.
func (c *Conn[P]) PutLocked(b []byte) (Result, int) {
	if c.wdone {
		return Done, 0
	}
	n, r := 0, Queued
	if c.out == nil {
		var err error
		n, err = writeFull(int(c.fd), b)
		if n == len(b) {
			return Written, n
		}
		if err != unix.EAGAIN {
			c.failLocked()
			return Failed, n
		}
		c.startQueueLocked(n)
		r = QueueStarted
	}
	sh := bufpool.GetShared(len(b))
	sh.B = append(sh.B, b...)
	c.out.items = append(c.out.items, sh)
	c.out.bytes += len(b) - n
	return r, n
}

// WriteSharedLocked writes a shared frame, or queues a reference to it
// (no copy), unless a queue exists and the frame would take it past limit
// bytes. Mu must be held.
func (c *Conn[P]) WriteSharedLocked(sh *bufpool.Shared, limit int) (Result, int) {
	if c.wdone {
		return Done, 0
	}
	if c.out == nil {
		n, err := writeFull(int(c.fd), sh.B)
		if n == len(sh.B) {
			return Written, n
		}
		if err != unix.EAGAIN {
			c.failLocked()
			return Failed, n
		}
		c.startQueueLocked(n)
		sh.Retain()
		c.out.items = append(c.out.items, sh)
		c.out.bytes = len(sh.B) - n
		return QueueStarted, n
	}
	if c.out.bytes+len(sh.B) > limit {
		return Overflow, 0
	}
	sh.Retain()
	c.out.items = append(c.out.items, sh)
	c.out.bytes += len(sh.B)
	return Queued, 0
}

func (c *Conn[P]) startQueueLocked(written int) {
	c.out = outqPool.Get().(*outq)
	c.out.off = written // the queue starts inside this frame
}

// QueuedLocked is the number of bytes waiting. Mu must be held.
func (c *Conn[P]) QueuedLocked() int {
	if c.out == nil {
		return 0
	}
	return c.out.bytes
}

// BehindLocked reports whether a queue exists. Mu must be held.
func (c *Conn[P]) BehindLocked() bool { return c.out != nil }

// SetProgressLocked records tick as the queue's last write progress (the
// caller's clock); FlushLocked records it on every write that progresses.
// Mu must be held; it does nothing without a queue.
func (c *Conn[P]) SetProgressLocked(tick uint32) {
	if c.out != nil {
		c.out.prog = tick
	}
}

// ProgressLocked returns the tick of the queue's last write progress and
// whether a queue exists. Mu must be held.
func (c *Conn[P]) ProgressLocked() (uint32, bool) {
	if c.out == nil {
		return 0, false
	}
	return c.out.prog, true
}

// WritesDoneLocked reports whether no more frames may be written.
func (c *Conn[P]) WritesDoneLocked() bool { return c.wdone }

// FlushResult is what a flush did.
type FlushResult uint8

const (
	Drained     FlushResult = iota // the queue is empty (and released)
	Pending                        // the socket is full again: wait for EPOLLOUT
	FlushFailed                    // the socket failed: the queue is released; close the connection
)

// FlushLocked writes queued buffers, several per writev(2), until the
// queue is empty or the socket is full, recording now as write progress
// when bytes move. Once the queue is out after CloseWriteLocked, the write
// side is shut down. It returns the bytes written. Only the loop goroutine
// calls it, with the loop's iovec scratch. Mu must be held.
func (c *Conn[P]) FlushLocked(iov []unix.Iovec, now uint32) (FlushResult, int) {
	q := c.out
	if q == nil {
		return Drained, 0
	}
	total := 0
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
			total += n
			c.consumed(n)
			q.prog = now
		}
		if err == unix.EAGAIN {
			return Pending, total
		}
		if err != nil {
			c.failLocked()
			return FlushFailed, total
		}
	}
	c.releaseOutLocked()
	if c.closeQueued {
		c.shutdownWrite()
	}
	return Drained, total
}

// consumed drops n written bytes from the head of the queue.
func (c *Conn[P]) consumed(n int) {
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

// TrimLocked drops every queued buffer but one already partly on the wire,
// which must end whole, and releases the queue if nothing is left. It
// returns the bytes dropped. A slow consumer's queue is cut this way before
// its close frame is put behind. Mu must be held.
func (c *Conn[P]) TrimLocked() int {
	q := c.out
	if q == nil {
		return 0
	}
	keep := 0
	if q.off > 0 {
		keep = 1
	}
	dropped := 0
	for i := keep; i < len(q.items); i++ {
		dropped += len(q.items[i].B)
		q.bytes -= len(q.items[i].B)
		q.items[i].Release()
		q.items[i] = nil
	}
	q.items = q.items[:keep]
	if keep == 0 {
		c.releaseOutLocked()
	}
	return dropped
}

// CloseWriteLocked ends writing: no frame is taken after this, and the
// write side is shut down (the peer reads EOF) once the queue is out, or
// now when there is none. Mu must be held.
func (c *Conn[P]) CloseWriteLocked() {
	if c.wdone {
		return
	}
	c.wdone = true
	if c.out == nil {
		c.shutdownWrite()
	} else {
		c.closeQueued = true
	}
}

// failLocked handles a failed write: writes are done and the queue goes.
func (c *Conn[P]) failLocked() {
	c.wdone = true
	c.releaseOutLocked()
}

// releaseOutLocked drops the queue and returns it to its pool.
func (c *Conn[P]) releaseOutLocked() {
	q := c.out
	if q == nil {
		return
	}
	for i, sh := range q.items {
		sh.Release()
		q.items[i] = nil
	}
	q.items, q.off, q.bytes, q.prog = q.items[:0], 0, 0, 0
	c.out = nil
	if cap(q.items) <= 1024 {
		outqPool.Put(q)
	}
}

// Deregisterer is a loop a socket is registered with.
type Deregisterer interface{ Del(fd int) error }

// Close deregisters the socket from its loop, then closes it under Mu,
// dropping the queue: writes after it are Done. The caller's handler must
// ignore events that arrive after it (see the package doc).
func (c *Conn[P]) Close(l Deregisterer) {
	if c.fd < 0 {
		return
	}
	_ = l.Del(int(c.fd))
	c.Mu.Lock()
	c.wdone = true
	c.closeQueued = false
	c.releaseOutLocked()
	_ = unix.Close(int(c.fd))
	c.fd = -1
	c.Mu.Unlock()
}

// Closed reports whether Close ran. Loop goroutine only.
func (c *Conn[P]) Closed() bool { return c.fd < 0 }

func (c *Conn[P]) shutdownWrite() { _ = unix.Shutdown(int(c.fd), unix.SHUT_WR) }

// ReadResult says why Read stopped.
type ReadResult uint8

const (
	ReadDrained ReadResult = iota // EAGAIN: wait for the next event
	ReadStopped                   // the handler asked to stop (it closed the connection, say)
	ReadBudget                    // the budget ran out with data maybe left: continue later
	ReadEOF                       // the peer closed its side
	ReadError                     // the socket failed (Err says how)
)

// Reader takes the bytes Read reads. p is the loop's scratch buffer: what
// the handler keeps beyond the call it copies. It returns false to stop.
type Reader interface {
	OnData(p []byte) bool
}

// Read reads the socket into buf until EAGAIN, EOF or an error, handing
// each chunk to r, for at most budget reads: a client that keeps its
// socket full cannot hold the loop. With edge-triggered epoll a short read
// means the socket is drained (bytes arriving later raise a new event), so
// Read stops there unless toEOF (after a hang-up, read on to EOF).
func (c *Conn[P]) Read(buf []byte, budget int, toEOF bool, r Reader) (ReadResult, error) {
	for i := 0; i < budget; i++ {
		n, err := unix.Read(int(c.fd), buf)
		if err != nil {
			switch err {
			case unix.EAGAIN:
				return ReadDrained, nil
			case unix.EINTR:
				continue
			}
			return ReadError, err
		}
		if n == 0 {
			return ReadEOF, nil
		}
		if !r.OnData(buf[:n]) {
			return ReadStopped, nil
		}
		if n < len(buf) && !toEOF {
			return ReadDrained, nil
		}
	}
	return ReadBudget, nil
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

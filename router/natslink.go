package router

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// natsLink follows the state of the router's NATS connection through the
// connection's handlers (connect, disconnect, reconnect, closed), so that
// nothing asking "is NATS up?" takes the connection's lock: nats.go holds
// it while it writes to the socket, so IsConnected can block behind a
// write stuck on a starved or congested link.
type natsLink struct {
	up atomic.Bool

	mu     sync.Mutex
	since  time.Time     // when the link last came up
	closed bool          // closed for good (Close, Shutdown)
	back   chan struct{} // closed, then replaced, when the link comes up or closes for good
}

func newNATSLink() *natsLink { return &natsLink{back: make(chan struct{})} }

// connected reports whether the link is up, without any lock.
func (l *natsLink) connected() bool { return l.up.Load() }

// next returns a channel closed the next time the link comes up (or
// closes for good). Taken before a check of connected, it cannot miss a
// reconnect that happens after the check.
func (l *natsLink) next() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.back
}

// state returns whether the link is up and since when.
func (l *natsLink) state() (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up.Load(), l.since
}

func (l *natsLink) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// setUp records a connect or a reconnect at now and wakes the waiters.
func (l *natsLink) setUp(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.since = now
	l.up.Store(true)
	close(l.back)
	l.back = make(chan struct{})
}

// setDown records a disconnect.
func (l *natsLink) setDown() { l.up.Store(false) }

// setClosed records that the connection is closed for good and wakes the
// waiters, which give up.
func (l *natsLink) setClosed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.up.Store(false)
	close(l.back)
}

// Waiting for NATS. A publish that finds NATS down before anything of it
// was written (the link is down, or nats.go refused the first message
// because it is reconnecting) waits for the reconnect handler to wake it,
// up to PublishWait in all for the request and never past its context,
// then publishes. Once a message may have been written (a later message
// of a batch, or the flush) a failure is answered as it is: the message
// may have gone out, and publishing it again could deliver it twice.

// natsWait is one request's allowance to wait for NATS.
type natsWait struct {
	s      *Server
	ctx    context.Context
	timer  *time.Timer // started by the first wait
	start  time.Time
	waited bool // the request waited at least once
}

func (s *Server) newNATSWait(ctx context.Context) *natsWait { return &natsWait{s: s, ctx: ctx} }

// stop releases the timer.
func (w *natsWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// await waits until back is closed: true when the link came up, false when
// the allowance or the request's context ended first, or the connection
// closed for good.
func (w *natsWait) await(back <-chan struct{}) bool {
	wait := w.s.opts.PublishWait
	if wait <= 0 || w.s.link.isClosed() {
		return false
	}
	if w.timer == nil {
		w.start = time.Now()
		w.timer = time.NewTimer(wait)
	}
	w.waited = true
	w.s.m.publishWaiting.Inc()
	defer w.s.m.publishWaiting.Dec()
	select {
	case <-back:
		return !w.s.link.isClosed()
	case <-w.timer.C:
	case <-w.ctx.Done():
	}
	return false
}

// untilUp returns true once the link is up, waiting for it when it is
// down (false: it did not come back in time).
func (w *natsWait) untilUp() bool {
	for {
		back := w.s.link.next()
		if w.s.link.connected() {
			return true
		}
		if !w.await(back) {
			return false
		}
	}
}

// gaveUp counts and answers a request that found NATS down and could not
// wait it out.
func (w *natsWait) gaveUp() *apiError {
	w.s.m.publishErrors.WithLabelValues("disconnected").Inc()
	msg := "NATS is disconnected; nothing was published, retry later"
	if w.waited {
		w.s.m.publishWaits.WithLabelValues("timeout").Inc()
		msg = fmt.Sprintf("NATS is disconnected and did not come back within %s (--publish-wait or the request's deadline); nothing was published, retry later",
			time.Since(w.start).Round(time.Millisecond))
	}
	return &apiError{status: http.StatusServiceUnavailable, code: CodeNATSUnavailable, msg: msg, retryAfter: 1}
}

// unsentError is a publish failure before anything of the request was
// written.
type unsentError struct{ err error }

func (e *unsentError) Error() string { return e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// unsent marks err as a failure before anything was written.
func unsent(err error) error { return &unsentError{err: err} }

// natsDown reports whether a publish was refused because NATS is not
// connected (nothing of that message was written). The connection never
// buffers while it reconnects (ReconnectBufSize -1), so nats.go refuses
// with ErrReconnectBufExceeded then.
func natsDown(err error) bool {
	return errors.Is(err, errDisconnected) || errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrConnectionClosed)
}

// publishing runs publish on the NATS connection: when NATS is down
// before anything was written (publish failed with an unsent error that
// natsDown recognises, or the link is down), it waits for the connection
// to come back (see natsWait) and runs publish again.
func (s *Server) publishing(w *natsWait, publish func(nc *nats.Conn) error) *apiError {
	for {
		back := s.link.next()
		if s.link.connected() {
			err := publish(s.nc.Load())
			if err == nil {
				if w.waited {
					s.m.publishWaits.WithLabelValues("published").Inc()
				}
				return nil
			}
			var u *unsentError
			if !errors.As(err, &u) || !natsDown(u.err) {
				return publishError(err)
			}
		}
		if !w.await(back) {
			return w.gaveUp()
		}
	}
}

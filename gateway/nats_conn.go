package gateway

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/natsurl"
)

// startNATS connects the node to NATSURL, retrying for NATSConnectTimeout.
// The node never starts a NATS server itself: cmd/gateway passes an
// embedded one's URL and nats.InProcessServer in NATSOptions.
func (s *Server) startNATS() error {
	opts := []nats.Option{
		nats.Name("wsfleet-gateway " + s.opts.NodeID),
		nats.MaxReconnects(-1),
		// Back within a few hundred milliseconds of the server: deliveries
		// resume well inside 2 s (subscriptions are resent on reconnect).
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 500*time.Millisecond),
		// No buffering while disconnected: a client publish then fails
		// visibly (an error frame) instead of waiting in memory.
		nats.ReconnectBufSize(-1),
		// Liveness of the link: a ping every 20 s, and the connection is
		// stale only after 5 of them went unanswered (100-120 s without a
		// PONG). A NATS server starved of CPU answers late, sometimes by
		// tens of seconds, and a reconnect would cost every client of the
		// node its subscription for a while (and past NATSOutageGrace its
		// connection); a server that dies or closes the socket is noticed
		// at once, by EOF, whatever these say.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(5),
		nats.Timeout(2 * time.Second),
		nats.ErrorHandler(s.natsError),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.natsEpoch.Add(1)
			s.natsDown.CompareAndSwap(0, s.nanotime()+1)
			if s.rs != nil {
				// Every connection catches up from now: what the stream
				// stores meanwhile never reaches this node live, and a
				// message published after the reconnect must not be
				// written before those (ids ascend on a connection).
				for _, l := range s.loops {
					l.postCatchUpAll()
				}
			}
			if !s.draining.Load() {
				s.log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			s.natsEpoch.Add(1)
			s.natsDown.CompareAndSwap(0, s.nanotime()+1)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.natsDown.Store(0)
			s.log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
			if s.subs != nil {
				s.subs.kick() // confirm and welcome the clients that waited
			}
			if s.rs != nil {
				// What was published meanwhile reached no live feed: every
				// connection catches up (the SUBs were resent before this),
				// the replays waiting for NATS at once.
				s.rs.rp.retryNow()
				s.rs.catchUpAll()
			}
		}),
	}
	opts = append(opts, s.opts.NATSOptions...)
	deadline := time.Now().Add(s.opts.NATSConnectTimeout)
	for {
		nc, err := nats.Connect(s.opts.NATSURL, opts...)
		if err == nil {
			s.nc = nc
			s.log.Info("connected to NATS", zap.String("url", nc.ConnectedUrlRedacted()))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: --nats-url %s: %v", ErrNATSUnavailable, natsurl.Redact(s.opts.NATSURL), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// natsConnected reports whether the node's NATS connection is up, from the
// state the connection's handlers keep: nats.go's IsConnected takes the
// connection's lock, which a write blocked on a stalled server holds, and
// /readyz and /metrics must answer then too.
func (s *Server) natsConnected() bool { return s.nc != nil && s.natsDown.Load() == 0 }

// natsError counts slow-consumer drops (a full dispatch queue) and logs the
// rest, at most once a second.
func (s *Server) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if err == nats.ErrSlowConsumer {
		s.m.natsSlowConsumer.Inc()
		if s.subs != nil {
			s.subs.drops.slow(sub)
		}
		if s.rs != nil {
			s.rs.catchUpAll() // what NATS dropped is in the stream
		}
	}
	now := time.Now().UnixNano()
	last := s.lastNATSErrLog.Load()
	if now-last < int64(time.Second) || !s.lastNATSErrLog.CompareAndSwap(last, now) {
		return
	}
	subj := ""
	if sub != nil {
		subj = sub.Subject
	}
	s.log.Warn("NATS error", zap.String("subject", subj), zap.Error(err))
}

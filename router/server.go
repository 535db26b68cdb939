package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/admin"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsurl"
	"github.com/wsfleet/wsfleet/protocol"
)

// HTTP server limits of the API listener.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 32 << 10
	// flushTimeout bounds the wait for the NATS server to confirm a publish.
	flushTimeout = 5 * time.Second
	// drainTimeout bounds the NATS drain at shutdown.
	drainTimeout = 5 * time.Second
)

// headerOverhead is the most bytes the message id header adds to a NATS
// message ("NATS/1.0\r\nWsfleet-Msg-Id: <id>\r\n\r\n"); nats-server counts
// headers against max_payload.
const headerOverhead = len("NATS/1.0\r\n") + len(protocol.HeaderMsgID) + len(": ") + protocol.MaxMsgIDBytes + len("\r\n\r\n")

// Server is one router: the HTTP and NATS APIs in front of the fleet, and
// its presence view.
type Server struct {
	opts      Options
	log       *zap.Logger
	subjects  protocol.Subjects
	keys      []apiKey
	jwtSecret string
	m         *metrics
	limits    *limiters
	t         *tracker

	nc    atomic.Pointer[nats.Conn]
	link  *natsLink           // the connection's state, from its handlers
	jwt   *jwtverify.Verifier // nil without a JWT key source
	idem  idemStore
	acks  *acks // with Resume: the history stream's acknowledgements
	napi  *natsAPI
	ln    net.Listener
	http  *http.Server
	mux   *http.ServeMux // the API's routes (routes.go)
	admin *admin.Server
	serve sync.WaitGroup

	mu         sync.Mutex
	state      int // 0 new, 1 running, 2 shutting down, 3 done
	trackerOn  bool
	ready      atomic.Bool
	lastErrLog atomic.Int64
}

// New checks opts (after applying defaults) and returns a router ready to
// Start.
func New(opts Options) (*Server, error) {
	opts.SetDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		l, err := zap.NewProduction()
		if err != nil {
			return nil, err
		}
		opts.Logger = l
	}
	subjects, err := protocol.NewSubjects(opts.SubjectPrefix)
	if err != nil {
		return nil, badOption("subject-prefix", "%v", err)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		subjects: subjects,
		link:     newNATSLink(),
	}
	for _, k := range opts.APIKeys {
		s.keys = append(s.keys, newAPIKey(k))
	}
	s.opts.APIKeys = nil                                           // only the digests are kept
	s.jwtSecret, s.opts.JWT.HS256Secret = opts.JWT.HS256Secret, "" // not in the options a caller may print
	s.limits = newLimiters(opts.RateLimit, opts.RateLimitBurst)
	s.t = newTracker(s)
	s.m = newMetrics(s)
	s.mux = s.newMux()
	return s, nil
}

// Start loads the JWT keys, connects to NATS (retrying for
// NATSConnectTimeout), checks MaxBodyBytes against the server's
// max_payload, with Resume creates or checks the history stream, opens
// the idempotency store, starts the presence tracker
// (which asks every gateway node for a snapshot), the NATS request API and
// the HTTP API and admin listeners. On error everything started is stopped
// again.
func (s *Server) Start() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 0 {
		return ErrServerClosed
	}
	s.state = 1
	defer func() {
		if err != nil {
			s.closeAll()
			s.state = 3
		}
	}()
	o := s.opts
	o.JWT.HS256Secret = s.jwtSecret
	if s.jwt, err = newJWTVerifier(&o); err != nil {
		return err
	}
	if err = s.connectNATS(); err != nil {
		return err
	}
	nc := s.nc.Load()
	if max := nc.MaxPayload(); int64(s.opts.MaxBodyBytes+headerOverhead) > max {
		return badOption("max-body-bytes", "%d plus %d bytes of message id header exceeds the NATS server's max_payload of %d bytes; lower it to at most %d or raise max_payload",
			s.opts.MaxBodyBytes, headerOverhead, max, max-int64(headerOverhead))
	}
	if s.opts.Resume {
		if err = s.ensureHistory(nc); err != nil {
			return err
		}
	}
	if s.idem, err = s.openIdempotency(nc); err != nil {
		return err
	}
	if err = s.t.start(nc); err != nil {
		return fmt.Errorf("%w: subscribing to presence: %v", ErrNATSUnavailable, err)
	}
	s.trackerOn = true
	if s.napi, err = startNATSAPI(s, nc); err != nil {
		return fmt.Errorf("%w: subscribing the NATS request API: %v", ErrNATSUnavailable, err)
	}
	if s.ln, err = net.Listen("tcp", s.opts.Listen); err != nil {
		return badOption("listen", "%v", err)
	}
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serveAPI),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	if s.opts.AdminListen != "off" {
		if s.admin, err = startAdmin(s); err != nil {
			return err
		}
	}
	s.serve.Add(1)
	go func() {
		defer s.serve.Done()
		if err := s.http.Serve(s.ln); err != nil && err != http.ErrServerClosed {
			s.log.Error("API listener stopped", zap.Error(err))
		}
	}()
	s.ready.Store(true)
	adminAddr := "off"
	if s.admin != nil {
		adminAddr = s.admin.Addr().String()
	}
	s.log.Info("router started",
		zap.String("listen", s.ln.Addr().String()),
		zap.String("admin", adminAddr),
		zap.String("nats_url", s.nc.Load().ConnectedUrlRedacted()),
		zap.String("subject_prefix", s.opts.SubjectPrefix),
		zap.Int("api_keys", len(s.keys)),
		zap.Bool("jwt", s.jwt != nil),
		zap.String("idempotency_store", s.idem.kind()),
		zap.Bool("resume", s.opts.Resume),
		zap.Int("max_body_bytes", s.opts.MaxBodyBytes))
	return nil
}

// NATS keepalive. The router pings the server every natsPingInterval and
// takes the connection for stale (then reconnects) after natsMaxPingsOut
// pings without a PONG: 100-120 s of silence. On a host starved of CPU the
// router or the server can go many seconds without running; with fewer
// pings outstanding the connection was declared stale while both were
// merely late, and every publish in flight failed during the reconnect. A
// server that exits or closes the socket is still noticed at once (EOF),
// so the long bound only delays noticing a link that died silently.
const (
	natsPingInterval = 20 * time.Second
	natsMaxPingsOut  = 5
)

// connectNATS makes the first NATS connection, retrying until
// NATSConnectTimeout. The connection never buffers while it reconnects, so
// a publish while NATS is away fails (or waits for the reconnect,
// PublishWait) instead of waiting in memory. Its handlers keep s.link.
func (s *Server) connectNATS() error {
	opts := []nats.Option{
		nats.Name("wsfleet-router"),
		nats.Timeout(2 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.logRateLimited("NATS error", zap.Error(err))
		}),
		nats.ConnectHandler(func(*nats.Conn) { s.link.setUp(time.Now()) }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			s.link.setDown()
			if nc.IsClosed() {
				return // Shutdown or Close
			}
			s.log.Warn("NATS disconnected; publishes wait for it (--publish-wait), then fail with 503", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.link.setUp(time.Now())
			s.m.natsReconnects.Inc()
			s.log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
			s.t.natsReconnected()
		}),
		nats.ClosedHandler(func(*nats.Conn) { s.link.setClosed() }),
	}
	deadline := time.Now().Add(s.opts.NATSConnectTimeout)
	for {
		up := s.link.next()
		nc, err := nats.Connect(s.opts.NATSURL, opts...)
		if err == nil {
			s.nc.Store(nc)
			// The connect handler runs on nats.go's callback goroutine,
			// before any later disconnect's: wait for it, so the router
			// starts connected.
			t := time.NewTimer(5 * time.Second)
			select {
			case <-up:
			case <-t.C:
			}
			t.Stop()
			s.log.Info("connected to NATS", zap.String("url", nc.ConnectedUrlRedacted()))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: --nats-url %s: %v (retried for --nats-connect-timeout %s)",
				ErrNATSUnavailable, natsurl.Redact(s.opts.NATSURL), err, s.opts.NATSConnectTimeout)
		}
		s.log.Debug("NATS not reachable yet; retrying", zap.String("url", natsurl.Redact(s.opts.NATSURL)), zap.Error(err))
		time.Sleep(min(250*time.Millisecond, max(time.Until(deadline), time.Millisecond)))
	}
}

// Addr returns the API listening address (useful with port 0), or nil
// before Start.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// AdminAddr returns the admin endpoint's address, or nil when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// NATSConn returns the router's NATS connection, or nil before Start.
func (s *Server) NATSConn() *nats.Conn { return s.nc.Load() }

// natsConnected reports whether the NATS connection is up, from its
// handlers (s.link): it never waits for the connection's lock.
func (s *Server) natsConnected() bool { return s.link.connected() }

// readiness reports whether the router takes requests, and why not.
func (s *Server) readiness() (bool, []string) {
	var why []string
	if !s.ready.Load() {
		why = append(why, "not started or shutting down")
	}
	if !s.natsConnected() {
		why = append(why, "NATS disconnected")
	}
	return len(why) == 0, why
}

// Shutdown stops the router gracefully: readiness goes false, the API
// listener closes and requests in flight finish (each of them published and
// confirmed, or refused), then the NATS connection is drained. When ctx ends
// first, open connections are closed at once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 1 {
		return ErrServerClosed
	}
	s.state = 2
	s.ready.Store(false)
	s.log.Info("shutting down")
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.log.Warn("shutdown deadline passed; closing open requests", zap.Error(err))
		_ = s.http.Close()
	}
	s.serve.Wait()
	if s.admin != nil {
		s.admin.Close()
	}
	s.stopBackground()
	s.drainNATS(ctx)
	s.state = 3
	s.log.Info("router stopped")
	_ = s.log.Sync()
	return err
}

// Close stops the router at once, without waiting for requests in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 1 {
		return ErrServerClosed
	}
	s.state = 2
	s.closeAll()
	s.state = 3
	return nil
}

// closeAll stops whatever Start started, at once.
func (s *Server) closeAll() {
	s.ready.Store(false)
	if s.http != nil {
		_ = s.http.Close()
		s.serve.Wait()
	} else if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	s.stopBackground()
	if nc := s.nc.Load(); nc != nil {
		nc.Close()
	}
	_ = s.log.Sync()
}

// stopBackground stops the NATS request API (waiting for requests in
// flight), the presence tracker and the JWT key refreshes.
func (s *Server) stopBackground() {
	if s.napi != nil {
		s.napi.stop()
		s.napi = nil
	}
	if s.trackerOn {
		s.t.close()
		s.trackerOn = false
	}
	if s.jwt != nil {
		s.jwt.Close()
		s.jwt = nil
	}
}

// drainNATS drains the NATS connection (buffered publishes are sent) and
// waits for it to close, for at most drainTimeout or until ctx ends.
func (s *Server) drainNATS(ctx context.Context) {
	nc := s.nc.Load()
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) {
		s.link.setClosed()
		close(closed)
	})
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
	case <-ctx.Done():
	}
	nc.Close()
}

// logRateLimited logs a warning at most once a second.
func (s *Server) logRateLimited(msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := s.lastErrLog.Load()
	if now-last < int64(time.Second) || !s.lastErrLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, fields...)
}

// errDisconnected: a publish was refused because NATS is not connected.
var errDisconnected = errors.New("not connected to NATS")

package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/wsfleet/wsfleet/internal/admin"
	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/natsurl"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// Server is one gateway node.
type Server struct {
	opts     Options
	log      *zap.Logger
	subjects protocol.Subjects
	start    time.Time
	tick     time.Duration
	m        *metrics
	verifier *verifier
	reg      *registry
	topics   *topicHub
	auth     *authPool
	disp     *dispatcher
	rs       *resumer // nil unless Options.Resume
	subs     *subManager
	pres     *presence
	subsStop chan struct{}
	pub      *publisher
	loops    []*loop
	lfd      int
	addr     *net.TCPAddr
	clock    Clock
	nc       *nats.Conn
	natsDown atomic.Int64 // 1 + nanotime when the NATS connection went down; 0 while up
	bsub     *nats.Subscription
	admin    *admin.Server
	ctl      *controlServer

	origins     []originPattern
	connectRate *rate.Limiter // nil: no limit
	nconns      atomic.Int64  // open sockets, in any state
	adm         admission     // load signals for shedding new connections
	// natsEpoch counts the NATS connection's losses: a subscription
	// confirmed in one epoch is not known to be live in a later one.
	natsEpoch atomic.Uint32

	connSeq   atomic.Uint64
	runID     string
	pingFrame []byte

	mu             sync.Mutex
	state          int  // 0 new, 1 running, 2 shutting down, 3 done
	connsClosed    bool // every connection is closed (Shutdown or closeConns)
	ready          atomic.Bool
	loopFailed     atomic.Bool // an event loop's epoll_wait failed: the node is broken
	draining       atomic.Bool
	drained        chan struct{} // closed when the drain is over; nil until one starts (under mu)
	forceDrain     chan struct{} // closed to end the drain at once
	forceOnce      sync.Once
	acceptStopped  sync.WaitGroup
	loopDrained    sync.WaitGroup
	lastPauseLog   atomic.Int64
	lastNATSErrLog atomic.Int64
}

// New checks opts (after applying defaults) and returns a node ready to Start.
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
	var rid [4]byte
	_, _ = rand.Read(rid[:])
	s := &Server{
		opts:      opts,
		log:       opts.Logger.With(zap.String("node", opts.NodeID)),
		subjects:  subjects,
		clock:     opts.Clock,
		start:     opts.Clock.Now(),
		lfd:       -1,
		runID:     strconv.FormatUint(uint64(binary.BigEndian.Uint32(rid[:])), 36),
		pingFrame: wsframe.AppendFrame(nil, ws.OpText, protocol.PingJSON),
	}
	shortest := min(opts.Heartbeat, opts.IdleTimeout, opts.AuthTimeout, opts.HandshakeTimeout, opts.CloseTimeout)
	s.tick = min(max(shortest/20, time.Millisecond), 100*time.Millisecond)
	// Every timeout is a wheel deadline in ticks: it must fit the wheel's
	// horizon at this tick (12.4 days at the smallest, 1 ms).
	horizon := time.Duration(engine.MaxAhead) * s.tick
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"heartbeat", opts.Heartbeat}, {"idle-timeout", opts.IdleTimeout}, {"auth-timeout", opts.AuthTimeout},
		{"handshake-timeout", opts.HandshakeTimeout}, {"close-timeout", opts.CloseTimeout},
		{"write-timeout", opts.WriteTimeout}, {"drain-timeout", opts.DrainTimeout},
		{"nats-outage-grace", opts.NATSOutageGrace},
	} {
		if d.v > horizon {
			return nil, badOption(d.flag, "%s is longer than the %s the node's timing wheel spans at its %s tick (a twentieth of the shortest timeout)", d.v, horizon, s.tick)
		}
	}
	for _, p := range opts.AllowedOrigins {
		op, _ := parseOriginPattern(p) // checked by Validate
		s.origins = append(s.origins, op)
	}
	if opts.MaxConnectRate > 0 {
		s.connectRate = rate.NewLimiter(rate.Limit(opts.MaxConnectRate), max(int(opts.MaxConnectRate), 1))
	}
	s.m = newMetrics(s)
	return s, nil
}

// nanotime is time since the server was created on its clock (monotonic
// for the system clock).
func (s *Server) nanotime() int64 { return int64(s.clock.Now().Sub(s.start)) }

// micros is nanotime in µs, wrapping every 71 minutes (for latencies).
func (s *Server) micros() uint32 { return uint32(s.nanotime() / 1e3) }

// ticks converts a duration to loop ticks, rounding up.
func (s *Server) ticks(d time.Duration) uint32 { return uint32((d + s.tick - 1) / s.tick) }

// appendConnID appends the string form of connection number id: the node
// run's random prefix and the number, both base 36.
func (s *Server) appendConnID(dst []byte, id uint64) []byte {
	dst = append(dst, s.runID...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, id, 36)
}

// Start brings the node up: JWT keys, the NATS connection, the
// dispatchers and workers, the listening socket and its event loops, and
// the admin endpoint. On error everything started is stopped again.
func (s *Server) Start() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 0 {
		return ErrServerClosed
	}
	s.state = 1
	defer func() {
		if err != nil {
			s.stopAll()
			s.state = 3
		}
	}()
	if s.verifier, err = newVerifier(&s.opts, s.log); err != nil {
		return err
	}
	if err = s.startNATS(); err != nil {
		return err
	}
	var rs *resumer
	if s.opts.Resume {
		rs = newResumer(s)
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.NATSConnectTimeout)
		err = rs.ensure(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("--resume: %w", err)
		}
	}
	s.reg = newRegistry(s)
	s.pres = newPresence(s)
	s.topics = newTopicHub(s)
	s.disp = newDispatcher(s)
	s.disp.start()
	s.subs = newSubManager(s)
	s.subsStop = make(chan struct{})
	go s.subs.run(s.subsStop)
	s.pub = newPublisher(s)
	s.pub.start()
	s.auth = newAuthPool(s)
	// The loops exist before anything can feed them (broadcasts, metrics
	// scrapes); they accept once the listener is added below.
	for i := 0; i < s.opts.Pollers; i++ {
		l, err := newLoop(s, i)
		if err != nil {
			return err
		}
		s.loops = append(s.loops, l)
	}
	if s.opts.Resume {
		s.rs = rs
		if err = s.rs.start(); err != nil {
			return err
		}
	} else if s.bsub, err = s.nc.ChanSubscribe(s.subjects.Broadcast(), s.disp.bcast); err != nil {
		return fmt.Errorf("subscribing %s: %w", s.subjects.Broadcast(), err)
	}
	if err = s.pres.start(); err != nil {
		return fmt.Errorf("subscribing %s: %w", s.subjects.PresenceSnapshot(), err)
	}
	if err = s.nc.FlushTimeout(s.opts.NATSConnectTimeout); err != nil {
		return fmt.Errorf("%w: %v", ErrNATSUnavailable, err)
	}
	if s.lfd, s.addr, err = listenTCP(s.opts.Listen, s.opts.ReusePort); err != nil {
		return badOption("listen", "%v", err)
	}
	for _, l := range s.loops {
		if err := l.startAccept(); err != nil {
			return fmt.Errorf("registering the listener: %w", err)
		}
	}
	if s.opts.AdminListen != "off" {
		if s.admin, err = startAdmin(s); err != nil {
			return err
		}
	}
	if s.opts.ControlSocket != "" {
		if s.ctl, err = startControl(s); err != nil {
			return err
		}
	}
	s.ready.Store(true)
	adminAddr := "off"
	if s.admin != nil {
		adminAddr = s.admin.Addr().String()
	}
	natsURL := s.opts.NATSURL
	s.log.Info("gateway started",
		zap.String("listen", s.addr.String()),
		zap.String("admin", adminAddr),
		zap.String("nats", natsurl.Redact(natsURL)),
		zap.Bool("reuseport", s.opts.ReusePort),
		zap.Int("pollers", len(s.loops)),
		zap.String("subject_prefix", s.opts.SubjectPrefix),
		zap.Duration("heartbeat", s.opts.Heartbeat))
	return nil
}

// Addr returns the WebSocket listening address (useful with port 0).
func (s *Server) Addr() *net.TCPAddr { return s.addr }

// AdminAddr returns the admin endpoint's address, or nil when it is off.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.Addr()
}

// NATSConn returns the node's NATS connection.
func (s *Server) NATSConn() *nats.Conn { return s.nc }

// readiness reports whether the node takes new connections, and why not.
func (s *Server) readiness() (bool, []string) {
	var why []string
	switch {
	case s.draining.Load():
		why = append(why, "draining")
	case !s.ready.Load():
		why = append(why, "not started")
	}
	if !s.natsConnected() {
		why = append(why, "NATS disconnected")
	}
	return len(why) == 0, why
}

// Drain moves the node's clients to other nodes without stopping the
// process: readiness goes false, the listener closes, every connection gets
// a reconnect notice and then 1012, spread over DrainTimeout, and Drain
// returns once none is left (after DrainTimeout + CloseTimeout the rest are
// closed at once). The node keeps its NATS connection and admin endpoint
// until Shutdown, which then has nothing left to drain. A second call waits
// for the same drain; ctx ending returns early and lets the drain go on.
func (s *Server) Drain(ctx context.Context) error {
	drained, err := s.beginDrain()
	if err != nil {
		return err
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown drains the node (unless Drain already did) and stops it: after
// the drain the NATS connection is drained and everything stops. ctx bounds
// the whole; when it ends, connections still open are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.state != 1 {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.state = 2
	drained := s.startDrainLocked()
	s.mu.Unlock()
	select {
	case <-drained:
	case <-ctx.Done():
		s.log.Warn("shutdown deadline passed; closing the remaining connections")
		s.endDrain()
		<-drained
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopAll()
	s.state = 3
	s.log.Info("gateway stopped")
	return nil
}

// beginDrain starts the drain of a running node (once) and returns the
// channel closed when it is over.
func (s *Server) beginDrain() (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 1 {
		return nil, ErrServerClosed
	}
	return s.startDrainLocked(), nil
}

// startDrainLocked starts the drain once and returns the channel closed
// when it is over.
func (s *Server) startDrainLocked() <-chan struct{} {
	if s.drained == nil {
		s.drained = make(chan struct{})
		s.forceDrain = make(chan struct{})
		s.draining.Store(true)
		go s.drain()
	}
	return s.drained
}

// endDrain closes the connections a drain has left at once.
func (s *Server) endDrain() { s.forceOnce.Do(func() { close(s.forceDrain) }) }

func (s *Server) drain() {
	s.log.Info("draining", zap.Duration("drain_timeout", s.opts.DrainTimeout))
	s.stopAccepting()
	live := s.liveLoops()
	s.loopDrained.Add(len(live))
	for _, l := range live {
		l.p.Post(task{kind: taskDrain})
	}
	done := make(chan struct{})
	go func() { s.loopDrained.Wait(); close(done) }()
	timer := time.NewTimer(s.opts.DrainTimeout + s.opts.CloseTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.log.Warn("drain timeout passed; closing the remaining connections")
	case <-s.forceDrain:
	}
	for _, l := range live {
		l.p.Post(task{kind: taskCloseAll})
	}
	<-done
	s.connsClosed = true
	s.log.Info("drained: no connection left")
	close(s.drained)
}

// Close stops the node at once: connections are closed without a drain
// (one in progress ends at once).
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 1 {
		return ErrServerClosed
	}
	s.state = 2
	s.draining.Store(true)
	if s.drained != nil {
		s.endDrain()
		<-s.drained
	}
	s.stopAll()
	s.state = 3
	return nil
}

// liveLoops is the loops still running. A loop whose epoll_wait failed
// runs no task any more: waiting for one would hang the drain and the
// shutdown (its connections are lost with the process).
func (s *Server) liveLoops() []*loop {
	live := make([]*loop, 0, len(s.loops))
	for _, l := range s.loops {
		if !l.dead.Load() {
			live = append(live, l)
		}
	}
	return live
}

// closeConns closes every connection at once and waits until the loops
// hold none.
func (s *Server) closeConns() {
	live := s.liveLoops()
	s.loopDrained.Add(len(live))
	for _, l := range live {
		l.p.Post(task{kind: taskDrain})
		l.p.Post(task{kind: taskCloseAll})
	}
	s.loopDrained.Wait()
	s.connsClosed = true
}

func (s *Server) stopAccepting() {
	s.ready.Store(false)
	live := s.liveLoops()
	s.acceptStopped.Add(len(live))
	for _, l := range live {
		l.p.Post(task{kind: taskStopAccept})
	}
	s.acceptStopped.Wait()
	if s.lfd >= 0 {
		unix.Close(s.lfd)
		s.lfd = -1
	}
}

// stopAll stops whatever Start started, in reverse order: the listener
// and the connections first (when Shutdown has not), then the loops, so
// nothing feeds the NATS side any more, then NATS and its goroutines.
func (s *Server) stopAll() {
	s.ready.Store(false)
	if s.ctl != nil {
		s.ctl.close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.lfd >= 0 {
		s.stopAccepting()
	}
	if !s.connsClosed {
		s.closeConns()
	}
	for _, l := range s.loops {
		_ = l.p.Close()
	}
	if s.pres != nil && s.pres.sub != nil {
		s.pres.close() // the last batch: every user of the node offline
	}
	if s.rs != nil {
		s.rs.rp.stop() // its workers' inboxes go before the drain
	}
	if s.nc != nil {
		s.drainNATS()
	}
	if s.subsStop != nil {
		close(s.subsStop)
		<-s.subs.done
	}
	if s.pub != nil {
		s.pub.stop()
	}
	if s.auth != nil {
		s.auth.close()
	}
	if s.disp != nil {
		s.disp.stop()
	}
	if s.rs != nil {
		close(s.rs.ch)
		<-s.rs.done
	}
	if s.verifier != nil {
		s.verifier.close()
	}
	_ = s.log.Sync()
}

// drainNATS drains the NATS connection (pending publishes are sent,
// subscriptions end cleanly) and waits for it to close.
func (s *Server) drainNATS() {
	closed := make(chan struct{})
	s.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := s.nc.Drain(); err != nil {
		s.nc.Close()
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		s.nc.Close()
	}
	if !s.nc.IsClosed() {
		s.nc.Close()
	}
}

func (s *Server) logAcceptPause(err error) {
	now := time.Now().UnixNano()
	last := s.lastPauseLog.Load()
	if now-last < int64(10*time.Second) || !s.lastPauseLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("accept paused: out of file descriptors or memory; retrying every 100ms", zap.Error(err))
}

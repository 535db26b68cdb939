package gateway

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/natsurl"
)

// startNATS connects the node to NATS: to NATSURL, or to an embedded
// nats-server started in this process (listening on NATSEmbeddedListen for
// the router and services, while the node itself connects in-process).
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
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ErrorHandler(s.natsError),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if !s.draining.Load() {
				s.log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
	}
	if s.opts.NATSURL == "" {
		ns, tmp, err := startEmbeddedNATS(s.opts.NATSEmbeddedListen, s.opts.NATSEmbeddedStoreDir, s.opts.NodeID, s.log)
		if err != nil {
			return err
		}
		s.natsTmpDir = tmp
		s.ns = ns
		s.log.Info("started embedded NATS server", zap.String("client_url", ns.ClientURL()))
		opts = append(opts, nats.InProcessServer(ns))
		nc, err := nats.Connect(ns.ClientURL(), opts...)
		if err != nil {
			return fmt.Errorf("%w: connecting to the embedded server: %v", ErrNATSUnavailable, err)
		}
		s.nc = nc
		return nil
	}
	deadline := time.Now().Add(s.opts.NATSConnectTimeout)
	for {
		nc, err := nats.Connect(s.opts.NATSURL, append(opts, nats.Timeout(2*time.Second))...)
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

// natsError counts slow-consumer drops (a full dispatch queue) and logs the
// rest, at most once a second.
func (s *Server) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if err == nats.ErrSlowConsumer {
		s.m.natsSlowConsumer.Inc()
		if s.subs != nil {
			s.subs.drops.slow(sub)
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

// startEmbeddedNATS runs a nats-server in this process on listen
// (host:port; port 0 or -1 picks a free one), with JetStream in storeDir
// ("" a temporary directory, "off" none). It returns the temporary
// directory it made, for removal at shutdown.
func startEmbeddedNATS(listen, storeDir, node string, log *zap.Logger) (_ *server.Server, tmp string, err error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, "", badOption("nats-embedded-listen", "%v", err)
	}
	port, _ := strconv.Atoi(portStr)
	if port <= 0 {
		port = server.RANDOM_PORT
	} else {
		// Fail with the setting's name rather than after a timeout.
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, "", badOption("nats-embedded-listen", "%v (set --nats-url to use an existing NATS server)", err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName: node + "-nats",
		Host:       host,
		Port:       port,
		NoSigs:     true,
	}
	if storeDir != "off" {
		if storeDir == "" {
			if storeDir, err = os.MkdirTemp("", "wsfleet-nats-"); err != nil {
				return nil, "", fmt.Errorf("embedded NATS: %w", err)
			}
			tmp = storeDir
		}
		opts.JetStream = true
		opts.StoreDir = storeDir
		opts.JetStreamMaxMemory = 64 << 20
		opts.JetStreamMaxStore = 1 << 30
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, "", fmt.Errorf("embedded NATS: %w", err)
	}
	ns.SetLoggerV2(natsLogger{log.Named("nats").Sugar()}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		os.RemoveAll(tmp)
		return nil, "", badOption("nats-embedded-listen", "embedded NATS did not start on %s", listen)
	}
	return ns, tmp, nil
}

// natsLogger routes nats-server's logs to zap.
type natsLogger struct{ l *zap.SugaredLogger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Infof(f, v...) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warnf(f, v...) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Errorf(f, v...) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Errorf(f, v...) }
func (n natsLogger) Debugf(f string, v ...any)  { n.l.Debugf(f, v...) }
func (n natsLogger) Tracef(f string, v ...any)  { n.l.Debugf(f, v...) }

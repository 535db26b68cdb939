// Package natsembed runs a nats-server inside the process, for a
// development gateway without --nats-url (cmd/gateway, and the local fleet
// of cmd/devfleet through it) and for tests that need a real NATS server.
//
// It starts and stops the server; connecting to it is the caller's (an
// in-process connection: nats.InProcessServer(s.Server)). Production
// deployments run nats-server as its own process (the Helm chart does).
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
)

// Options configures an embedded server.
type Options struct {
	// Listen is where the server listens for other processes, host:port;
	// port 0 or -1 picks a free one. Default "127.0.0.1:-1".
	Listen string
	// StoreDir is the JetStream directory. Default "": a temporary
	// directory removed by Close; "off": no JetStream.
	StoreDir string
	// Name is the server's name. Default "wsfleet-nats".
	Name string
	// Logger receives the server's logs. Default: none.
	Logger *zap.Logger
}

// ErrListen is a Listen address the server cannot use; the error names it.
var ErrListen = errors.New("embedded NATS cannot listen")

// Server is a running embedded nats-server.
type Server struct {
	*server.Server
	tmp string
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:-1"
	}
	if o.Name == "" {
		o.Name = "wsfleet-nats"
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("%w on %q: %v", ErrListen, o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("%w on %q: bad port", ErrListen, o.Listen)
	}
	if port <= 0 {
		port = server.RANDOM_PORT
	} else {
		// Fail at once with the address rather than after a timeout.
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("%w on %s: %v", ErrListen, o.Listen, err)
		}
		ln.Close()
	}
	opts := &server.Options{ServerName: o.Name, Host: host, Port: port, NoSigs: true}
	s := &Server{}
	if o.StoreDir != "off" {
		dir := o.StoreDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "wsfleet-nats-"); err != nil {
				return nil, fmt.Errorf("embedded NATS: %w", err)
			}
			s.tmp = dir
		}
		opts.JetStream = true
		opts.StoreDir = dir
		opts.JetStreamMaxMemory = 64 << 20
		opts.JetStreamMaxStore = 1 << 30
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		s.removeTmp()
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if o.Logger != nil {
		ns.SetLoggerV2(logger{o.Logger.Sugar()}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		s.removeTmp()
		return nil, fmt.Errorf("%w on %s: not ready within 10s", ErrListen, o.Listen)
	}
	s.Server = ns
	return s, nil
}

// Close shuts the server down, waits for it, and removes its temporary
// JetStream directory.
func (s *Server) Close() {
	s.Shutdown()
	s.WaitForShutdown()
	s.removeTmp()
}

func (s *Server) removeTmp() {
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
}

// logger routes nats-server's logs to zap.
type logger struct{ l *zap.SugaredLogger }

func (n logger) Noticef(f string, v ...any) { n.l.Infof(f, v...) }
func (n logger) Warnf(f string, v ...any)   { n.l.Warnf(f, v...) }
func (n logger) Fatalf(f string, v ...any)  { n.l.Errorf(f, v...) }
func (n logger) Errorf(f string, v ...any)  { n.l.Errorf(f, v...) }
func (n logger) Debugf(f string, v ...any)  { n.l.Debugf(f, v...) }
func (n logger) Tracef(f string, v ...any)  { n.l.Debugf(f, v...) }

// This file is a naive WebSocket gateway, kept in the repository for
// comparison only: the straightforward design wsfleet's gateway is measured
// against (make bench-fleet prints the ratios). Do not deploy it.
//
// It speaks the same protocol (package protocol) with the same JWT checks
// (internal/jwtverify), and is built the way most gateways are: net/http
// and gorilla/websocket, a reader and a writer goroutine per connection, a
// ticker per connection for heartbeats, and an asynchronous NATS
// subscription (one goroutine each) per online user. Deliveries are
// re-encoded with encoding/json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/protocol"
)

// Options configures the baseline gateway.
type Options struct {
	Listen      string        // WebSocket address
	AdminListen string        // /metrics, /healthz
	NATSURL     string        // required
	Secret      string        // HS256 secret
	Prefix      string        // subject prefix; default "wsfleet"
	Heartbeat   time.Duration // default 30s
	IdleTimeout time.Duration // default 90s
	NodeID      string
	ReusePort   bool // SO_REUSEPORT on Listen: several processes share the port
}

// Server is the baseline gateway.
type Server struct {
	o        Options
	subjects protocol.Subjects
	nc       *nats.Conn
	verifier *jwtverify.Verifier
	upgrader websocket.Upgrader
	ln, adm  net.Listener
	mu       sync.Mutex
	users    map[string]*user
	conns    atomic.Int64
	seq      atomic.Uint64
	bsub     *nats.Subscription
}

type user struct {
	sub     *nats.Subscription
	devices map[*client]struct{}
}

type client struct {
	ws   *websocket.Conn
	send chan []byte
	once sync.Once
	done chan struct{}
}

// New connects to NATS and checks the options.
func New(o Options) (*Server, error) {
	if o.NATSURL == "" || o.Secret == "" {
		return nil, errors.New("baseline: NATSURL and Secret are required")
	}
	if o.Prefix == "" {
		o.Prefix = protocol.DefaultSubjectPrefix
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 30 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.NodeID == "" {
		o.NodeID = "baseline"
	}
	subjects, err := protocol.NewSubjects(o.Prefix)
	if err != nil {
		return nil, err
	}
	v, err := jwtverify.New(jwtverify.Config{HS256Secret: o.Secret, Leeway: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(o.NATSURL, nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	return &Server{o: o, subjects: subjects, nc: nc, verifier: v, users: map[string]*user{},
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}}, nil
}

// Start listens and serves in background goroutines.
func (s *Server) Start() error {
	var err error
	var lc net.ListenConfig
	if s.o.ReusePort {
		lc.Control = reusePort
	}
	if s.ln, err = lc.Listen(context.Background(), "tcp", s.o.Listen); err != nil {
		return err
	}
	if s.bsub, err = s.nc.Subscribe(s.subjects.Broadcast(), s.broadcast); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.serveWS)
	go http.Serve(s.ln, mux)
	if s.o.AdminListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wsfleet_gateway_connections", Help: "Open connections."},
				func() float64 { return float64(s.conns.Load()) }))
		am := http.NewServeMux()
		am.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		am.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
		am.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
		// Like the gateway's admin port, so bench-fleet forces a GC
		// (/debug/pprof/heap?gc=1) the same way before reading RSS.
		am.HandleFunc("/debug/pprof/", pprof.Index)
		am.HandleFunc("/debug/pprof/profile", pprof.Profile)
		am.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		am.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if s.adm, err = net.Listen("tcp", s.o.AdminListen); err != nil {
			return err
		}
		go http.Serve(s.adm, am)
	}
	return s.nc.Flush()
}

// reusePort sets SO_REUSEPORT on a listening socket before bind.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Addr is the WebSocket address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr is the admin address.
func (s *Server) AdminAddr() net.Addr { return s.adm.Addr() }

// Close stops listening and disconnects from NATS.
func (s *Server) Close() {
	s.ln.Close()
	if s.adm != nil {
		s.adm.Close()
	}
	s.nc.Close()
	s.verifier.Close()
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.conns.Add(1)
	defer s.conns.Add(-1)
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f protocol.ClientFrame
	if err := ws.ReadJSON(&f); err != nil || f.Type != protocol.TypeAuth {
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseUnauthorized), "authenticate first"))
		return
	}
	cl, err := s.verifier.Verify(f.Token)
	if err != nil {
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseUnauthorized), err.Error()))
		return
	}
	tok, err := protocol.EncodeUserToken(cl.Subject)
	if err != nil {
		return
	}
	c := &client{ws: ws, send: make(chan []byte, 256), done: make(chan struct{})}
	if err := s.join(tok, c); err != nil {
		return
	}
	defer s.leave(tok, c)
	id := strconv.FormatUint(s.seq.Add(1), 36)
	welcome, _ := json.Marshal(protocol.Welcome{Type: protocol.TypeWelcome, User: cl.Subject, ConnID: id, Node: s.o.NodeID, Heartbeat: int(s.o.Heartbeat / time.Second)})
	c.push(welcome)
	go s.writer(c)
	ws.SetReadDeadline(time.Now().Add(s.o.IdleTimeout))
	for {
		if err := ws.ReadJSON(&f); err != nil {
			c.close()
			return
		}
		ws.SetReadDeadline(time.Now().Add(s.o.IdleTimeout))
		switch f.Type {
		case protocol.TypePing:
			c.push(protocol.PongJSON)
		case protocol.TypePublish:
			s.nc.Publish(s.subjects.In(tok), f.Data)
		}
	}
}

// writer sends queued frames and a ping every heartbeat, on its own
// goroutine with its own ticker.
func (s *Server) writer(c *client) {
	t := time.NewTicker(s.o.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case b := <-c.send:
			c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				c.close()
				return
			}
		case <-t.C:
			if err := c.ws.WriteMessage(websocket.TextMessage, protocol.PingJSON); err != nil {
				c.close()
				return
			}
		}
	}
}

func (c *client) push(b []byte) {
	select {
	case c.send <- b:
	case <-c.done:
	default: // full: a slow consumer loses messages
	}
}

func (c *client) close() { c.once.Do(func() { close(c.done); c.ws.Close() }) }

func (s *Server) join(tok string, c *client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[tok]
	if u == nil {
		u = &user{devices: map[*client]struct{}{}}
		sub, err := s.nc.Subscribe(s.subjects.User(tok), func(m *nats.Msg) { s.deliver(tok, m) })
		if err != nil {
			return err
		}
		u.sub = sub
		s.users[tok] = u
	}
	u.devices[c] = struct{}{}
	return nil
}

func (s *Server) leave(tok string, c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[tok]
	if u == nil {
		return
	}
	delete(u.devices, c)
	if len(u.devices) == 0 {
		u.sub.Unsubscribe()
		delete(s.users, tok)
	}
}

// encode re-encodes a delivery with encoding/json.
func encode(m *nats.Msg) []byte {
	data := json.RawMessage(m.Data)
	if !json.Valid(m.Data) {
		data, _ = json.Marshal(string(m.Data))
	}
	out, _ := json.Marshal(protocol.Message{Type: protocol.TypeMessage, ID: m.Header.Get(protocol.HeaderMsgID), Data: data})
	return out
}

func (s *Server) deliver(tok string, m *nats.Msg) {
	b := encode(m)
	s.mu.Lock()
	u := s.users[tok]
	var cs []*client
	if u != nil {
		for c := range u.devices {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.push(b)
	}
}

func (s *Server) broadcast(m *nats.Msg) {
	b := encode(m)
	s.mu.Lock()
	var cs []*client
	for _, u := range s.users {
		for c := range u.devices {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.push(b)
	}
}

package gateway_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// restartableNATS is a nats-server on a fixed port that a test stops and
// starts again.
type restartableNATS struct {
	t    *testing.T
	port int
	url  string
	ns   interface{ Shutdown() }
}

func newRestartableNATS(t *testing.T) *restartableNATS {
	ns := runNATS(t, -1)
	_, portStr, _ := net.SplitHostPort(ns.Addr().String())
	port, _ := strconv.Atoi(portStr)
	return &restartableNATS{t: t, port: port, url: ns.ClientURL(), ns: ns}
}

func (r *restartableNATS) stop() {
	ns := r.ns.(interface {
		Shutdown()
		WaitForShutdown()
	})
	ns.Shutdown()
	ns.WaitForShutdown()
}

func (r *restartableNATS) start() { r.ns = runNATS(r.t, r.port) }

// readyz polls the node's readiness until it is want (200 or 503).
func waitReady(t *testing.T, srv *gateway.Server, want int) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if code := get(t, adminURL(srv)+"/readyz"); code != want {
			return errorf("/readyz %d, want %d", code, want)
		}
		return nil
	})
}

// While the node is cut off from NATS, a client that authenticates is not
// welcomed on a subscription that does not exist: it waits, and is closed
// with 1013 at its auth timeout; one whose NATS comes back in time is
// welcomed then, on a live subscription.
func TestNoWelcomeWithoutNATS(t *testing.T) {
	nsrv := newRestartableNATS(t)
	srv := startGateway(t, func(o *gateway.Options) {
		o.NATSURL = nsrv.url
		o.AuthTimeout = 3 * time.Second
		o.ShedLag = 500 * time.Millisecond
	})
	nsrv.stop()
	waitReady(t, srv, 503)

	t.Run("closed 1013 at the auth timeout", func(t *testing.T) {
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "waiter")})
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				if !wstest.IsCloseError(err, int(protocol.CloseTryAgainLater)) {
					t.Fatalf("got %v, want close 1013", err)
				}
				break
			}
			if string(b) != string(protocol.PingJSON) {
				t.Fatalf("got %s while NATS is down, want nothing before the close", b)
			}
		}
	})

	t.Run("welcomed once NATS is back", func(t *testing.T) {
		// The first client's wait is over (it was closed): nothing waits.
		checkFor(t, 5*time.Second, func() error {
			if v := metricValue(t, srv, "wsfleet_gateway_subscription_confirm_wait_seconds"); v != 0 {
				return errorf("the oldest confirmation wait is %vs, want none", v)
			}
			return nil
		})
		welcomes := metricValue(t, srv, "wsfleet_gateway_connect_seconds_count")
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "patient")})
		// Authenticated and registered, not welcomed while NATS is down.
		checkFor(t, 5*time.Second, func() error {
			if v := metricValue(t, srv, "wsfleet_gateway_users"); v != 1 {
				return errorf("%v users registered, want 1", v)
			}
			return nil
		})
		if v := metricValue(t, srv, "wsfleet_gateway_connect_seconds_count"); v != welcomes {
			t.Fatalf("a client was welcomed while NATS was down (%v welcomes, %v before)", v, welcomes)
		}
		// Once it has waited --shed-lag, the node is behind on NATS: a
		// newcomer is refused at once, before any work, instead of being
		// upgraded to wait and time out.
		checkFor(t, 5*time.Second, func() error {
			if v := metricValue(t, srv, "wsfleet_gateway_subscription_confirm_wait_seconds"); v < 0.5 {
				return errorf("the oldest confirmation wait is %vs, want --shed-lag (0.5s)", v)
			}
			return nil
		})
		status, h, body := handshakeStatus(t, srv, upgradeReq(""))
		if status != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, `"overloaded"`) || !strings.Contains(body, "nats_lag") {
			t.Fatalf("newcomer while NATS is behind: %d Retry-After=%q %s, want 503 overloaded (nats_lag) with Retry-After", status, h.Get("Retry-After"), body)
		}
		if v := metricValue(t, srv, `wsfleet_gateway_connections_shed_total{reason="nats_lag"}`); v != 1 {
			t.Fatalf("connections_shed_total{nats_lag} = %v, want 1", v)
		}
		nsrv.start()
		readType(t, ws, protocol.TypeWelcome)
		// The welcome means the subscription is live on the server: a
		// message published right after it is delivered.
		svc, err := nats.Connect(nsrv.url)
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close()
		svc.Publish(userSubject(t, "patient"), []byte(`"after the welcome"`))
		svc.Flush()
		if m := readType(t, ws, protocol.TypeMessage); m["data"] != "after the welcome" {
			t.Fatalf("got %v", m)
		}
	})
}

// A node without NATS past --nats-outage-grace sends its clients the
// reconnect notice, so they move to a node that can deliver, and closes
// those left with 1013 a grace later; an outage shorter than the grace
// moves nobody. The node's clock is a fake one moved by the test.
func TestNATSOutageMovesClients(t *testing.T) {
	const grace = 4 * time.Second
	nsrv := newRestartableNATS(t)
	clk := newFakeClock()
	srv := startGateway(t, func(o *gateway.Options) {
		o.NATSURL = nsrv.url
		o.Clock = clk
		o.NATSOutageGrace = grace
		o.Heartbeat = time.Second // a ping after each jump shows the node saw it
		o.IdleTimeout = time.Hour
	})
	ws, _ := connect(t, srv, "mover")

	// Short: NATS is back before the grace passes.
	nsrv.stop()
	waitReady(t, srv, 503)
	clk.Add(grace / 2)
	nsrv.start()
	waitReady(t, srv, 200)
	clk.Add(2 * grace)
	readPing(t, ws)
	send(t, ws, map[string]string{"type": "ping"})
	readType(t, ws, protocol.TypePong) // no reconnect notice came before it

	// Long: past the grace.
	nsrv.stop()
	waitReady(t, srv, 503)
	clk.Add(grace + time.Second)
	moved := time.Now()
	n := readType(t, ws, protocol.TypeReconnect)
	if el := time.Since(moved); el > 2*time.Second {
		t.Fatalf("the notice came %s after the node's clock passed the grace", el) // not the real clock's grace
	}
	if n["reason"] != "node lost NATS" {
		t.Fatalf("notice %v", n)
	}
	clk.Add(grace + time.Second)
	expectClose(t, ws, protocol.CloseTryAgainLater, "NATS")
}

// blockingProxy forwards TCP between a node and its NATS server and can
// stop reading what the node sends: the node's NATS writes then block once
// the socket buffers are full, as they would on a stalled server.
type blockingProxy struct {
	ln      net.Listener
	target  string
	blocked atomic.Bool
	gate    chan struct{} // closed to let blocked copies go on
	mu      sync.Mutex
	conns   []net.Conn
}

func newBlockingProxy(t *testing.T, target string) *blockingProxy {
	t.Helper()
	// Accepted sockets inherit a small receive buffer: little of what the
	// node sends fits in the pipe once the proxy stops reading.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blockingProxy{ln: ln, target: target, gate: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go io.Copy(c, u) // server → node: always flows
			go func() {      // node → server: stops while blocked
				buf := make([]byte, 32<<10)
				for {
					if p.blocked.Load() {
						<-p.gate
					}
					n, err := c.Read(buf)
					if n > 0 {
						u.Write(buf[:n])
					}
					if err != nil {
						u.Close()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		p.unblock()
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *blockingProxy) url() string { return "nats://" + p.ln.Addr().String() }
func (p *blockingProxy) block()      { p.blocked.Store(true) }
func (p *blockingProxy) unblock() {
	if p.blocked.CompareAndSwap(true, false) {
		close(p.gate)
	}
}

// No lock is held across NATS I/O. The node's NATS writes are blocked (a
// proxy stops reading them, and small socket buffers fill at once) in the
// middle of a presence snapshot that publishes one reply per user while it
// walks the registry. The event loop must go on meanwhile: a holder of a
// registry lock across that publish would stop the loop at the next close
// in the same registry shard. Pings are answered, hundreds of clients close,
// and a new client is upgraded and refused with 1013 when its subscription
// cannot be confirmed; unblocked, the node welcomes again.
func TestBlockedNATSWritesDoNotStallLoops(t *testing.T) {
	defer gateway.SetSnapshotChunkUsers(1)() // one publish per user, during the walk
	ns := runNATS(t, -1)
	proxy := newBlockingProxy(t, ns.Addr().String())
	small := func(opt int) func(network, address string, c syscall.RawConn) error {
		return func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 4096) })
		}
	}
	srv := startGateway(t, func(o *gateway.Options) {
		o.NATSURL = proxy.url()
		o.NATSOptions = []nats.Option{nats.SetCustomDialer(&net.Dialer{Control: small(unix.SO_SNDBUF)})}
		o.Pollers = 1 // one loop: a stall anywhere stalls every client
		o.AuthTimeout = 2 * time.Second
		o.MaxClientMsgsPerSec = -1
		o.AuthQueue = 10000
	})
	watcher, _ := connect(t, srv, "watcher")
	// Long user ids make every snapshot reply a few hundred bytes.
	const n = 400
	users := connectMany(t, srv, n, strings.Repeat("u", 200))
	base := metricValue(t, srv, "wsfleet_gateway_connections")

	proxy.block()
	svc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	replies, err := svc.SubscribeSync("inbox.snap")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.PublishRequest(protocol.DefaultSubjectPrefix+".presence.snapshot", "inbox.snap", nil); err != nil {
		t.Fatal(err)
	}
	svc.Flush()
	// The snapshot's replies (400 × ~250 bytes) cannot all pass the
	// blocked proxy and the 4 KiB socket buffers: the walk stops inside.
	for round := 0; round < 5; round++ {
		send(t, watcher, map[string]string{"type": "ping"})
		readType(t, watcher, protocol.TypePong)
	}
	for _, u := range users { // closes take the registry's shard locks
		u.c.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		if v := metricValue(t, srv, "wsfleet_gateway_connections"); v != base-n {
			return errorf("%v connections, want %v: closes stalled", v, base-n)
		}
		return nil
	})
	// The walk was stuck meanwhile: not every reply got through.
	if got, _, _ := replies.Pending(); got > n {
		t.Fatalf("%d of %d snapshot replies arrived: the node's NATS writes were not blocked", got, n+1)
	}
	newcomer := dial(t, wsURL(srv), nil) // upgraded by the loop
	send(t, newcomer, map[string]any{"type": "auth", "token": token(t, "newcomer")})
	expectClose(t, newcomer, protocol.CloseTryAgainLater, "NATS")
	send(t, watcher, map[string]string{"type": "ping"})
	readType(t, watcher, protocol.TypePong)

	// Unblocked, the node catches up and welcomes again.
	proxy.unblock()
	ws, _ := connect(t, srv, "after")
	send(t, ws, map[string]string{"type": "ping"})
	readType(t, ws, protocol.TypePong)
}

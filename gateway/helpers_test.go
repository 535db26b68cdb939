package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

const testSecret = "test-secret-0123456789abcdef-0123456789"

// checkFor polls f until it returns nil or timeout passes (no sleeps as
// synchronisation: the condition is what is waited for).
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testNATS holds the NATS servers tests started, by client URL.
var testNATS sync.Map // string -> *natsembed.Server

// startNATS starts a real nats-server in the test process on a random
// port, stopped at the end of the test.
func startNATS(t testing.TB) *natsembed.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: "off"})
	if err != nil {
		t.Fatal(err)
	}
	testNATS.Store(ns.ClientURL(), ns)
	t.Cleanup(func() { testNATS.Delete(ns.ClientURL()); ns.Close() })
	return ns
}

// natsServerOf is the test NATS server a node is connected to.
func natsServerOf(t testing.TB, srv *gateway.Server) *natsembed.Server {
	t.Helper()
	ns, ok := testNATS.Load(srv.NATSConn().ConnectedUrl())
	if !ok {
		t.Fatalf("node not connected to a test NATS server (%s)", srv.NATSConn().ConnectedUrl())
	}
	return ns.(*natsembed.Server)
}

// testOptions are fast, loopback-only options with a NATS server of their
// own on a random port.
func testOptions(t testing.TB) gateway.Options {
	return gateway.Options{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		NATSURL:     startNATS(t).ClientURL(),
		NodeID:      "test-node",
		JWT:         jwtverify.Config{HS256Secret: testSecret},
		Logger:      zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	}
}

// startGateway starts a node with testOptions changed by mod, stopped at
// the end of the test.
func startGateway(t testing.TB, mod func(*gateway.Options)) *gateway.Server {
	t.Helper()
	o := testOptions(t)
	if mod != nil {
		mod(&o)
	}
	srv, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func wsURL(srv *gateway.Server) string { return "ws://" + srv.Addr().String() + "/ws" }

func adminURL(srv *gateway.Server) string { return "http://" + srv.AdminAddr().String() }

func token(t testing.TB, sub string) string {
	t.Helper()
	return mintToken(t, jwtmint.Claims{Subject: sub, TTL: time.Hour})
}

func mintToken(t testing.TB, c jwtmint.Claims) string {
	t.Helper()
	tok, err := jwtmint.Mint("HS256", []byte(testSecret), c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dial opens a WebSocket to srv; h may carry headers.
func dial(t testing.TB, url string, h http.Header) *wstest.Conn {
	t.Helper()
	ws, resp, err := wstest.DefaultDialer.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// readFrame reads one JSON text frame with a deadline.
func readFrame(t testing.TB, ws *wstest.Conn) map[string]any {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != wstest.TextMessage {
		t.Fatalf("frame type %d, want text", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	return m
}

// readType reads frames until one of type typ, skipping server pings.
func readType(t testing.TB, ws *wstest.Conn, typ string) map[string]any {
	t.Helper()
	for {
		m := readFrame(t, ws)
		if m["type"] == typ {
			return m
		}
		if m["type"] != protocol.TypePing {
			t.Fatalf("got %v, want a %q frame", m, typ)
		}
	}
}

// connect dials and authenticates with the first-message auth frame, and
// returns the connection and its welcome frame.
func connect(t testing.TB, srv *gateway.Server, sub string) (*wstest.Conn, map[string]any) {
	t.Helper()
	ws := dial(t, wsURL(srv), nil)
	send(t, ws, map[string]any{"type": "auth", "token": token(t, sub)})
	return ws, readType(t, ws, protocol.TypeWelcome)
}

func send(t testing.TB, ws *wstest.Conn, v any) {
	t.Helper()
	if err := ws.WriteJSON(v); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the server closes the connection and checks the
// close code (and, when given, that the reason contains reason).
func expectClose(t testing.TB, ws *wstest.Conn, code protocol.CloseCode, reason string) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err == nil {
			if strings.Contains(string(b), `"type":"ping"`) {
				continue
			}
			continue
		}
		var ce *wstest.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v (want %d)", err, code)
		}
		if ce.Code != int(code) {
			t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		if reason != "" && !strings.Contains(ce.Text, reason) {
			t.Fatalf("close reason %q, want it to contain %q", ce.Text, reason)
		}
		return
	}
}

// natsConn connects a service-side client to the node's NATS server.
func natsConn(t testing.TB, srv *gateway.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.NATSConn().ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func userSubject(t testing.TB, sub string) string {
	t.Helper()
	s, err := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := s.UserID(sub)
	if err != nil {
		t.Fatal(err)
	}
	return subj
}

// publish sends data to a user's subject with an id header.
func publish(t testing.TB, nc *nats.Conn, sub, id string, data string) {
	t.Helper()
	m := nats.NewMsg(userSubject(t, sub))
	m.Data = []byte(data)
	if id != "" {
		m.Header.Set(protocol.HeaderMsgID, id)
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// rawDial opens a plain TCP connection to the node.
func rawDial(t testing.TB, srv *gateway.Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// metricValue reads one series from the node's /metrics: a name, with
// its labels where it has some (`name{label="value"}`).
func metricValue(t testing.TB, srv *gateway.Server, name string) float64 {
	t.Helper()
	resp, err := http.Get(adminURL(srv) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// get returns the status of a GET.
func get(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func wsReadHeader(r io.Reader) (ws.Header, error) { return ws.ReadHeader(r) }

// fakeClock is a gateway.Clock that moves only when told: the node's ticks
// run in real time, but what they read (timeouts, heartbeats, token
// expiry) is this clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock forward by d.
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// readPing reads frames until a server ping; any other frame fails.
func readPing(t testing.TB, ws *wstest.Conn) {
	t.Helper()
	if m := readFrame(t, ws); m["type"] != protocol.TypePing {
		t.Fatalf("got %v, want a server ping", m)
	}
}

package router_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

const (
	testKey  = "test-key-0123456789abcdef"
	testKey2 = "rotated-key-abcdefghijklmnop"
	// testMaxBody is the MaxBodyBytes of test routers.
	testMaxBody = 1024
)

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

// startNATS runs an embedded nats-server on loopback, on port (-1: any),
// with mod applied to its options; it is shut down at the end of the test.
func startNATS(t testing.TB, port int, mod func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true}
	if mod != nil {
		mod(o)
	}
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func natsPort(t testing.TB, ns *server.Server) int {
	t.Helper()
	return ns.Addr().(*net.TCPAddr).Port
}

// testOptions are fast, loopback-only options publishing to natsURL.
func testOptions(t testing.TB, natsURL string) router.Options {
	return router.Options{
		Listen:             "127.0.0.1:0",
		AdminListen:        "127.0.0.1:0",
		NATSURL:            natsURL,
		NATSConnectTimeout: 2 * time.Second,
		APIKeys:            []string{testKey},
		MaxBodyBytes:       testMaxBody,
		Logger:             zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
	}
}

// startRouter starts a router on ns with testOptions changed by mod,
// closed at the end of the test.
func startRouter(t testing.TB, ns *server.Server, mod func(*router.Options)) *router.Server {
	t.Helper()
	o := testOptions(t, ns.ClientURL())
	if mod != nil {
		mod(&o)
	}
	srv, err := router.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func apiURL(srv *router.Server) string   { return "http://" + srv.Addr().String() }
func adminURL(srv *router.Server) string { return "http://" + srv.AdminAddr().String() }

// response is a read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; key, when not "", is sent as a bearer token. body may
// be a string (sent with a Content-Length) or an io.Reader (sent chunked).
func do(t testing.TB, method, url, key string, body any) response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = b
	default:
		t.Fatalf("bad body type %T", body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return send(t, req)
}

func send(t testing.TB, req *http.Request) response {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// post publishes body to user (given escaped, as in the path) with testKey.
func post(t testing.TB, srv *router.Server, escapedUser, body string) response {
	t.Helper()
	return do(t, http.MethodPost, apiURL(srv)+"/v1/users/"+escapedUser+"/messages", testKey, body)
}

// jsonBody checks that the response is JSON and decodes it into a map.
func (r response) jsonBody(t testing.TB) map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (status %d, body %q)", ct, r.status, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// accepted checks a 202 answer and returns its message id.
func (r response) accepted(t testing.TB) string {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202 (body %q)", r.status, r.body)
	}
	id, _ := r.jsonBody(t)["id"].(string)
	if !protocol.ValidMsgID(id) {
		t.Fatalf("response id %q is not a valid message id", id)
	}
	return id
}

// refused checks an error answer: status, and a JSON body of exactly
// {"code","reason"} with the error code and a reason.
func (r response) refused(t testing.TB, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %q)", r.status, status, r.body)
	}
	m := r.jsonBody(t)
	if m["code"] != code {
		t.Fatalf("error code %v, want %q (body %q)", m["code"], code, r.body)
	}
	if msg, _ := m["reason"].(string); msg == "" {
		t.Fatalf("error body %q has no reason", r.body)
	}
	if len(m) != 2 {
		t.Fatalf("error body %q has members other than code and reason", r.body)
	}
}

// watch subscribes to every subject under the default prefix on ns.
func watch(t testing.TB, ns *server.Server) *nats.Subscription {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(protocol.DefaultSubjectPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// nextMsg returns the next delivery on sub: presence traffic (the
// router's snapshot requests) is skipped.
func nextMsg(t testing.TB, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	for {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no NATS message: %v", err)
		}
		if !strings.Contains(m.Subject, ".presence.") {
			return m
		}
	}
}

// expectDelivered checks that the next message on sub is body on subject
// with the id header id.
func expectDelivered(t testing.TB, sub *nats.Subscription, subject, body, id string) {
	t.Helper()
	m := nextMsg(t, sub)
	if m.Subject != subject {
		t.Fatalf("published on %q, want %q", m.Subject, subject)
	}
	if string(m.Data) != body {
		t.Fatalf("payload %q, want exactly %q", m.Data, body)
	}
	if got := m.Header.Get(protocol.HeaderMsgID); got != id {
		t.Fatalf("%s header %q, want the response id %q", protocol.HeaderMsgID, got, id)
	}
}

// expectNothingPublished checks that the router published nothing since
// the last message read from sub: it publishes a sentinel through the same
// router (so on the same NATS connection, which keeps order) and checks the
// sentinel is the next message.
func expectNothingPublished(t testing.TB, srv *router.Server, sub *nats.Subscription) {
	t.Helper()
	id := post(t, srv, "sentinel", `"sentinel"`).accepted(t)
	m := nextMsg(t, sub)
	if m.Subject != "wsfleet.user.sentinel" || m.Header.Get(protocol.HeaderMsgID) != id {
		t.Fatalf("a refused request published %q on %q", m.Data, m.Subject)
	}
}

// metricsText returns the admin /metrics page.
func metricsText(t testing.TB, srv *router.Server) string {
	t.Helper()
	r := do(t, http.MethodGet, adminURL(srv)+"/metrics", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: status %d", r.status)
	}
	return string(r.body)
}

// metricValue returns the value of one series on the admin /metrics page,
// given as it appears there (`name{label="value"}`); 0 when it is absent.
func metricValue(t testing.TB, srv *router.Server, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(metricsText(t, srv), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

// natsProxy forwards TCP to a NATS server, and can cut the link: cut
// closes every forwarded connection and refuses new ones (to its clients
// the server is gone) until restore. The server itself stays up, so other
// clients keep their subscriptions.
type natsProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newNATSProxy(t testing.TB, ns *server.Server) *natsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProxy{ln: ln, target: ns.Addr().String()}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
	})
	return p
}

func (p *natsProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *natsProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
	}
}

// cut closes the forwarded connections and refuses new ones.
func (p *natsProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// restore forwards new connections again.
func (p *natsProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

// sseTestServer is a stand-in for a gateway's GET /sse, on net/http (a
// real HTTP server, over real sockets): it verifies the JWT in
// Authorization, answers refusals with an HTTP status and a JSON body,
// and streams the contract's events close-delimited (no Content-Length,
// no chunked coding): a welcome, "subscribed" for each of ?topics=, the
// messages NATS delivers to the user, its topics and everyone (with "id:"
// lines), ": ping" heartbeats and a retry line, every write cut at random
// points and flushed piece by piece, and sometimes several events in one
// write. With resume, each message gets the next number of one sequence
// as its id, the welcome a position, and a Last-Event-ID gets the user's
// messages and the broadcasts after it replayed ("recovered":true).
type sseTestServer struct {
	t      *testing.T
	ver    *jwtverify.Verifier
	subj   protocol.Subjects
	resume bool
	// behave picks what the attempt-th request of a user gets: "" (a
	// stream), "503", "401", "408" (refusals), "close1013" (a close event
	// before the welcome), "close4403" (a close event after it), "eof"
	// (the stream ends after the welcome without a close event).
	behave func(user string, attempt int) string
	srv    *httptest.Server
	quit   chan struct{}

	mu       sync.Mutex
	streams  map[*sseTestStream]bool
	seq      uint64
	log      []sseTestMsg
	attempts map[string]int
	conns    int

	overflow  atomic.Int64 // events a stream's queue could not take
	requests  atomic.Int64
	lastIDs   atomic.Int64 // requests with a Last-Event-ID
	badHeader atomic.Int64 // requests without Accept: text/event-stream
}

type sseTestStream struct {
	user   string
	topics map[string]bool
	ch     chan []byte
}

type sseTestMsg struct {
	id          uint64
	user, topic string // user "" and topic "": a broadcast
	event       []byte
}

// startSSEServer starts the stand-in; natsURL "" relays nothing.
func startSSEServer(t *testing.T, natsURL string, resume bool, behave func(string, int) string) *sseTestServer {
	t.Helper()
	ver, err := jwtverify.New(jwtverify.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ver.Close)
	subj, _ := protocol.NewSubjects("wsfleet")
	s := &sseTestServer{t: t, ver: ver, subj: subj, resume: resume, behave: behave, quit: make(chan struct{}),
		streams: map[*sseTestStream]bool{}, attempts: map[string]int{}}
	if natsURL != "" {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		for _, sub := range []string{subj.User("*"), subj.Broadcast(), subj.Topic(">")} {
			if _, err := nc.Subscribe(sub, s.relay); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	s.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		close(s.quit)
		s.srv.CloseClientConnections()
		s.srv.Close()
		if n := s.overflow.Load(); n > 0 {
			t.Errorf("the test server dropped %d events (a stream's queue was full)", n)
		}
	})
	return s
}

// sseURL is the server's SSE endpoint; wsURL the WebSocket URL it stands
// for (the load tester requests /sse on its host:port).
func (s *sseTestServer) sseURL() string { return s.srv.URL + "/sse" }
func (s *sseTestServer) wsURL() string  { return "ws://" + s.srv.Listener.Addr().String() + "/ws" }

// relay hands a NATS message to the streams it is for.
func (s *sseTestServer) relay(m *nats.Msg) {
	user, topic := "", ""
	if tok, ok := s.subj.UserTokenOf(m.Subject); ok {
		u, err := protocol.DecodeUserToken(tok)
		if err != nil {
			return
		}
		user = u
	} else if tp, ok := s.subj.TopicOf(m.Subject); ok {
		topic = tp
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var id string
	var frame []byte
	switch {
	case s.resume && topic == "":
		s.seq++
		id = strconv.FormatUint(s.seq, 10)
		frame = protocol.AppendMessageSeq(nil, s.seq, m.Data)
	case topic != "":
		id = m.Header.Get(protocol.HeaderMsgID)
		frame = protocol.AppendTopicMessage(nil, topic, id, m.Data)
	default:
		id = m.Header.Get(protocol.HeaderMsgID)
		frame = protocol.AppendMessage(nil, id, m.Data)
	}
	ev := []byte("data: " + string(frame) + "\n\n")
	if id != "" {
		ev = append([]byte("id: "+id+"\n"), ev...)
	}
	if s.resume && topic == "" {
		s.log = append(s.log, sseTestMsg{id: s.seq, user: user, event: ev})
	}
	for st := range s.streams {
		if (topic == "" && (user == "" || user == st.user)) || (topic != "" && st.topics[topic]) {
			select {
			case st.ch <- ev:
			default:
				s.overflow.Add(1)
			}
		}
	}
}

func (s *sseTestServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	refuse := func(status int, code string, retryAfter int) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Connection", "close")
		if retryAfter > 0 {
			h.Set("Retry-After", strconv.Itoa(retryAfter))
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"code":%q,"reason":"the test server says no"}`+"\n", code)
	}
	switch {
	case r.URL.Path != "/sse":
		refuse(http.StatusNotFound, "not_found", 0)
		return
	case r.Method != http.MethodGet:
		refuse(http.StatusMethodNotAllowed, "method_not_allowed", 0)
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		s.badHeader.Add(1)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims, err := s.ver.Verify(tok)
	if !ok || err != nil {
		refuse(http.StatusUnauthorized, "unauthorized", 0)
		return
	}
	user := claims.Subject
	var since uint64
	hasSince := false
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			refuse(http.StatusBadRequest, "bad_since", 0)
			return
		}
		hasSince = true
		s.lastIDs.Add(1)
	}
	topics := map[string]bool{}
	for _, tp := range strings.Split(r.URL.Query().Get("topics"), ",") {
		if tp != "" {
			topics[tp] = true
		}
	}
	s.mu.Lock()
	s.attempts[user]++
	attempt := s.attempts[user]
	s.conns++
	seed := uint64(s.conns)
	s.mu.Unlock()
	act := ""
	if s.behave != nil {
		act = s.behave(user, attempt)
	}
	switch act {
	case "503":
		refuse(http.StatusServiceUnavailable, "node_full", 1)
		return
	case "401":
		refuse(http.StatusUnauthorized, "unauthorized", 0)
		return
	case "408":
		refuse(http.StatusRequestTimeout, "handshake_timeout", 0)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// net/http's close-delimited body: no chunked coding, Connection:
	// close, the end of the body the connection's close
	h.Set("Transfer-Encoding", "identity")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	rng := rand.New(rand.NewPCG(seed, 7))
	// write cuts b at random points and flushes every piece
	write := func(b []byte) bool {
		for len(b) > 0 {
			n := len(b)
			if rng.IntN(2) == 0 {
				n = 1 + rng.IntN(len(b))
			}
			if _, err := w.Write(b[:n]); err != nil {
				return false
			}
			fl.Flush()
			b = b[n:]
		}
		return true
	}
	closeEvent := func(code int) []byte {
		return []byte(fmt.Sprintf("data: {\"type\":\"close\",\"code\":%d,\"reason\":\"test\"}\n\n", code))
	}
	if act == "close1013" {
		write(closeEvent(1013))
		return
	}
	st := &sseTestStream{user: user, topics: topics, ch: make(chan []byte, 1<<14)}
	s.mu.Lock()
	var replay []byte
	welcome := fmt.Sprintf(`{"type":"welcome","user":%q,"conn_id":"c%d","node":"sse-test","heartbeat":1`, user, seed)
	if s.resume {
		pos := s.seq
		if hasSince {
			pos = since
			for _, m := range s.log {
				if m.id > since && (m.user == "" || m.user == user) {
					replay = append(replay, m.event...)
				}
			}
			welcome += `,"recovered":true`
		}
		welcome += `,"position":"` + strconv.FormatUint(pos, 10) + `"`
	}
	s.streams[st] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()
	head := []byte("retry: 1000\n: hello\n\ndata: " + welcome + "}\n\n")
	head = append(head, replay...)
	for tp := range topics {
		head = append(head, `data: {"type":"subscribed","topic":"`+tp+`"}`+"\n\n"...)
	}
	if !write(head) {
		return
	}
	switch act {
	case "close4403":
		write(closeEvent(4403))
		return
	case "eof":
		return
	}
	ping := time.NewTicker(50 * time.Millisecond)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case ev := <-st.ch:
			// sometimes what is queued behind it in the same write
			b := append([]byte(nil), ev...)
			for more := rng.IntN(4); more > 0; more-- {
				select {
				case ev := <-st.ch:
					b = append(b, ev...)
					continue
				default:
				}
				break
			}
			if !write(b) {
				return
			}
		}
	}
}

// sseFleet is NATS, optionally a router, and the stand-in SSE server.
type sseFleet struct {
	natsURL, routerURL string
	srv                *sseTestServer
}

func startSSEFleet(t *testing.T, resume, withRouter bool, behave func(string, int) string) *sseFleet {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	f := &sseFleet{natsURL: ns.ClientURL()}
	if withRouter {
		rt, err := router.New(router.Options{
			Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: f.natsURL, APIKeys: []string{testAPIKey},
			RateLimit: -1, IdempotencyStore: "memory",
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		f.routerURL = "http://" + rt.Addr().String()
	}
	f.srv = startSSEServer(t, f.natsURL, resume, behave)
	return f
}

func (f *sseFleet) config(scenario string) Config {
	var out, log bytes.Buffer
	return Config{
		Scenario: scenario, Transport: TransportSSE, URLs: []string{f.srv.sseURL()}, Auth: AuthConfig{HS256Secret: testSecret},
		Publish:  PublishConfig{Via: "nats", RouterURL: f.routerURL, APIKey: testAPIKey, NATSURL: f.natsURL},
		Progress: "lines", Stdout: &out, Stderr: &log,
		Drain: 10 * time.Second, DrainQuiet: 2 * time.Second,
	}
}

// checkSSEReport checks that a run's report and settings name the
// transport.
func checkSSEReport(t *testing.T, cfg Config, res *Result) {
	t.Helper()
	out := cfg.Stdout.(*bytes.Buffer).String()
	flat := strings.Join(strings.Fields(out), " ")
	for _, row := range []string{"transport sse (server-sent events: GET /sse)", "response (connect → 200)"} {
		if !strings.Contains(flat, row) {
			t.Errorf("the report has no %q:\n%s", row, out)
		}
	}
	if res.Settings.Transport != TransportSSE {
		t.Errorf("settings.transport %q", res.Settings.Transport)
	}
	// every welcome came after a 200 (and a 200 may close before it)
	if res.Connections.Upgrade.Count == 0 || res.Connections.Upgrade.Count < res.Connections.Handshake.Count {
		t.Errorf("response samples %d, welcome samples %d", res.Connections.Upgrade.Count, res.Connections.Handshake.Count)
	}
}

// Deliver (in two worker processes) and broadcast over event streams from
// a real HTTP server whose writes are cut anywhere: every message reaches
// every device once, in order, with its latency measured, as over
// WebSockets.
func TestSSEDeliverAndBroadcast(t *testing.T) {
	f := startSSEFleet(t, false, false, nil)
	t.Run("deliver", func(t *testing.T) {
		cfg := f.config(ScenarioDeliver)
		cfg.Conns, cfg.Devices, cfg.ConnectRate = 100, 2, 2000
		cfg.MsgRate, cfg.Duration = 200, 2*time.Second
		cfg.Workers = "2" // worker processes get the transport in their plan
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		m := res.Messages
		t.Logf("acked %d, delivered %d/%d, e2e p50 %.2f ms p99 %.2f ms, handshake p99 %.2f ms, errors %v",
			m.Acked, m.Counts.Delivered, m.Counts.Expected, m.Latency.P50, m.Latency.P99, res.Connections.Handshake.P99, res.Connections.Errors)
		checkClean(t, res, m.Counts)
		checkSSEReport(t, cfg, res)
		if res.Limits.Processes != 2 || res.Connections.Peak != 100 || res.Connections.Welcomes != 100 || len(res.Connections.Errors) != 0 {
			t.Errorf("connections %+v", res.Connections)
		}
		if m.Acked < 200 || m.Counts.Expected != 2*m.Acked || m.Counts.Delivered != m.Counts.Expected || m.Latency.Count != m.Counts.Delivered {
			t.Errorf("acked %d, counts %+v, latency samples %d", m.Acked, m.Counts, m.Latency.Count)
		}
		// the finish closes the streams itself: no close code is counted
		if len(res.Closes) != 0 || res.Connections.ClosedUnexpectedly != 0 {
			t.Errorf("closes %v, closed unexpectedly %d", res.Closes, res.Connections.ClosedUnexpectedly)
		}
	})
	t.Run("broadcast", func(t *testing.T) {
		cfg := f.config(ScenarioBroadcast)
		cfg.URLs = []string{f.srv.wsURL()} // the gateway's WebSocket URL: /sse on its host:port
		cfg.Conns, cfg.ConnectRate = 80, 2000
		cfg.Broadcasts, cfg.BroadcastInterval = 3, 100*time.Millisecond
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		b := res.Broadcasts
		checkClean(t, res, b.Counts)
		checkSSEReport(t, cfg, res)
		if b.Counts.Delivered != 240 || b.Latency.Count != 240 {
			t.Errorf("counts %+v, latency samples %d", b.Counts, b.Latency.Count)
		}
		for _, e := range b.Each {
			if !e.Acked || e.Receivers != 80 {
				t.Errorf("broadcast %+v", e)
			}
		}
	})
	if n := f.srv.badHeader.Load(); n != 0 {
		t.Errorf("%d requests without Accept: text/event-stream", n)
	}
}

// What a stream's server answers maps onto the outcomes the WebSocket
// transport counts: a 503 is a refusal (retried after Retry-After), a
// 401 a failed attempt, a 408 a pushback, a close event before the
// welcome a close by code (1013: a refusal), a close event after it a
// close by the gateway with its code, an end of stream without one an
// abnormal close (1006); every device comes back.
func TestSSEOutcomes(t *testing.T) {
	behave := func(user string, attempt int) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(user, "lt-"))
		if attempt > 1 {
			return ""
		}
		return [...]string{"503", "401", "408", "close1013", "close4403", "eof"}[n%6]
	}
	f := startSSEFleet(t, false, false, behave)
	cfg := f.config(ScenarioConnect)
	cfg.Conns, cfg.ConnectRate, cfg.Duration = 12, 1000, 1500*time.Millisecond
	cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Connections
	t.Logf("errors %v, refusals %v, closes %v, unexpected %d", c.Errors, c.Refusals, res.Closes, c.ClosedUnexpectedly)
	checkSSEReport(t, cfg, res)
	for k, want := range map[string]int64{"http_503_node_full": 2, "http_401_unauthorized": 2, "http_408_handshake_timeout": 2, "closed_1013_before_welcome": 2} {
		if c.Errors[k] != want {
			t.Errorf("errors[%s] = %d, want %d (errors %v)", k, c.Errors[k], want, c.Errors)
		}
	}
	if len(c.Errors) != 4 {
		t.Errorf("errors %v", c.Errors)
	}
	if len(c.Refusals) != 2 || c.Refusals["http_503_node_full"] != 2 || c.Refusals["closed_1013_before_welcome"] != 2 {
		t.Errorf("refusals %v", c.Refusals)
	}
	if len(res.Closes) != 3 || res.Closes["1013"] != 2 || res.Closes["4403"] != 2 || res.Closes["1006"] != 2 {
		t.Errorf("closes %v", res.Closes)
	}
	if c.Upgrade.Count != 18 { // 200s: the welcomes and the two closed before theirs
		t.Errorf("response samples %d, want 18", c.Upgrade.Count)
	}
	if c.ClosedUnexpectedly != 4 || c.ClosedNotBack != 0 || c.Peak != 12 || c.OpenAtEnd != 12 || !c.RampDone || c.Welcomes != 16 {
		t.Errorf("connections %+v", c)
	}
	if res.ExitStatus != ExitOK {
		t.Errorf("exit status %d: %v", res.ExitStatus, res.Failures)
	}
}

// --resume over event streams: a device that churns reconnects with
// Last-Event-ID = the last id it received, is welcomed recovered, gets
// what was published while it was away replayed, and nothing is lost or
// received twice.
func TestSSEResumeLastEventID(t *testing.T) {
	f := startSSEFleet(t, true, true, nil)
	cfg := f.config(ScenarioChurn)
	cfg.Conns, cfg.Devices, cfg.ConnectRate = 60, 2, 3000
	cfg.MsgRate, cfg.Duration = 200, 2*time.Second
	cfg.ChurnRate, cfg.ChurnDown = 25, 300*time.Millisecond
	cfg.Publish.Via = "router"
	cfg.Resume = true
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, rs := res.Messages, res.Resume
	t.Logf("churned %d; messages %+v; resume %+v; requests %d with Last-Event-ID %d", res.Churn.Closed, m.Counts, rs, f.srv.requests.Load(), f.srv.lastIDs.Load())
	checkClean(t, res, m.Counts)
	checkSSEReport(t, cfg, res)
	if res.Churn.Closed < 20 || rs == nil {
		t.Fatalf("churned %d, resume %+v", res.Churn.Closed, rs)
	}
	if rs.Reconnects < res.Churn.Closed-5 || rs.Recovered != rs.Reconnects || rs.NotRecovered+rs.NoPosition != 0 {
		t.Errorf("resume %+v after %d churned", rs, res.Churn.Closed)
	}
	if rs.Lost+rs.Duplicated+rs.OutOfOrder+rs.Unrecovered != 0 || rs.Replayed == 0 || m.Counts.Missed != 0 {
		t.Errorf("resume %+v, counts %+v", rs, m.Counts)
	}
	// (a reconnect still waiting for its welcome at the end sent one too)
	if got := f.srv.lastIDs.Load(); got < rs.Reconnects || got > rs.Reconnects+5 {
		t.Errorf("%d requests with Last-Event-ID, %d reconnects with since", got, rs.Reconnects)
	}
	if e := res.Connections.Errors; len(e) != 0 {
		t.Errorf("errors %v", e)
	}
}

// live over event streams: each connection asks for its topic with
// topics= at connect, is subscribed from the "subscribed" event on, and
// gets every message of the topic once and in order.
func TestSSELive(t *testing.T) {
	f := startSSEFleet(t, false, false, nil)
	cfg := f.config(ScenarioLive)
	cfg.Conns, cfg.Devices, cfg.ConnectRate = 60, 2, 3000
	cfg.MsgRate, cfg.Duration = 100, 1500*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkTopicRun(t, res, 60)
	checkSSEReport(t, cfg, res)
}

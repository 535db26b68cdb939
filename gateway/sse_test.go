package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/protocol"
)

// sseStream is a test client of the server-sent-events transport: the
// response is read by net/http's parser, the events by a line reader.
type sseStream struct {
	t    testing.TB
	conn net.Conn
	resp *http.Response
	r    *bufio.Reader
}

// sseEvent is one dispatched event, or one comment line (comment set).
type sseEvent struct {
	id, comment string
	data        map[string]any
	raw         string
}

// sseRequest sends a raw request head (lines without their CRLF) to srv.
func sseRequest(t testing.TB, srv *gateway.Server, lines ...string) *sseStream {
	t.Helper()
	c := rawDial(t, srv)
	if _, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return sseResponse(t, c, bufio.NewReader(c))
}

func sseResponse(t testing.TB, c net.Conn, br *bufio.Reader) *sseStream {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &sseStream{t: t, conn: c, resp: resp, r: bufio.NewReader(resp.Body)}
}

// sseGet opens a stream with a Bearer token (none when tok is "").
func sseGet(t testing.TB, srv *gateway.Server, target, tok string, extra ...string) *sseStream {
	t.Helper()
	lines := []string{"GET " + target + " HTTP/1.1", "Host: " + srv.Addr().String(), "Accept: text/event-stream"}
	if tok != "" {
		lines = append(lines, "Authorization: Bearer "+tok)
	}
	return sseRequest(t, srv, append(lines, extra...)...)
}

// sseOpen opens a stream that must start, and returns it with its welcome.
func sseOpen(t testing.TB, srv *gateway.Server, target, tok string, extra ...string) (*sseStream, map[string]any) {
	t.Helper()
	s := sseGet(t, srv, target, tok, extra...)
	if s.resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(s.resp.Body)
		t.Fatalf("GET %s: %d %s", target, s.resp.StatusCode, body)
	}
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	w := s.next()
	if w.data["type"] != protocol.TypeWelcome {
		t.Fatalf("first event %q, want the welcome", w.raw)
	}
	return s, w.data
}

// next reads the next event or comment.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	ev, err := s.read()
	if err != nil {
		s.t.Fatalf("reading the stream: %v", err)
	}
	return ev
}

func (s *sseStream) read() (sseEvent, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ev sseEvent
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if len(data) == 0 {
				continue
			}
			ev.raw = strings.Join(data, "\n")
			if err := json.Unmarshal([]byte(ev.raw), &ev.data); err != nil {
				return ev, fmt.Errorf("event data %q: %v", ev.raw, err)
			}
			return ev, nil
		case strings.HasPrefix(line, ":"):
			if len(data) == 0 && ev.id == "" {
				return sseEvent{comment: strings.TrimSpace(line[1:])}, nil
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		default:
			return ev, fmt.Errorf("unexpected line %q", line)
		}
	}
}

// nextData reads the next event, skipping heartbeat comments.
func (s *sseStream) nextData() sseEvent {
	s.t.Helper()
	for {
		if ev := s.next(); ev.comment == "" {
			return ev
		}
	}
}

// expectEnd reads on to the close event with code, then EOF.
func (s *sseStream) expectEnd(code protocol.CloseCode) map[string]any {
	s.t.Helper()
	for {
		ev, err := s.read()
		if err != nil {
			s.t.Fatalf("stream ended (%v) before its close event", err)
		}
		if ev.data["type"] != "close" {
			continue
		}
		if got := ev.data["code"]; got != float64(code) {
			s.t.Fatalf("close event %v, want code %d", ev.data, code)
		}
		if _, err := s.read(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			s.t.Fatalf("after the close event: %v, want the end of the response", err)
		}
		return ev.data
	}
}

func TestSSEDeliversUserBroadcastAndHeartbeats(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.Heartbeat = time.Second })
	s, w := sseOpen(t, srv, gateway.SSEPath, token(t, "ann"))
	if w["user"] != "ann" || w["heartbeat"] != float64(1) {
		t.Fatalf("welcome %v", w)
	}
	h := s.resp.Header
	if !s.resp.Close || h.Get("Cache-Control") != "no-cache" || s.resp.ContentLength != -1 || len(s.resp.TransferEncoding) != 0 {
		t.Fatalf("response head %v (length %d, codings %v): want a close-delimited stream", h, s.resp.ContentLength, s.resp.TransferEncoding)
	}
	nc := natsConn(t, srv)
	publish(t, nc, "ann", "m-1", "{\"n\":\n 1}") // a line break inside the JSON payload
	ev := s.nextData()
	if ev.id != "m-1" || ev.data["type"] != "message" || ev.data["id"] != "m-1" || fmt.Sprint(ev.data["data"]) != "map[n:1]" {
		t.Fatalf("user message event %+v", ev)
	}
	b := nats.NewMsg(protocol.DefaultSubjectPrefix + ".broadcast")
	b.Data = []byte(`"to all"`)
	b.Header.Set(protocol.HeaderMsgID, "b-1")
	if err := nc.PublishMsg(b); err != nil {
		t.Fatal(err)
	}
	if ev := s.nextData(); ev.id != "b-1" || ev.data["data"] != "to all" {
		t.Fatalf("broadcast event %+v", ev)
	}
	if ev := s.next(); ev.comment != "ping" {
		t.Fatalf("got %+v, want a heartbeat comment", ev)
	}
	checkFor(t, 5*time.Second, func() error {
		if v := metricValue(t, srv, `wsfleet_gateway_authenticated_connections_by_transport{transport="sse"}`); v != 1 {
			return fmt.Errorf("sse connections gauge %v", v)
		}
		return nil
	})
	// Bytes after the request are read and discarded; the stream goes on.
	if _, err := io.WriteString(s.conn, "GET / HTTP/1.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	publish(t, nc, "ann", "m-2", `2`)
	if ev := s.nextData(); ev.id != "m-2" {
		t.Fatalf("after client bytes: %+v", ev)
	}
}

func TestSSERefusals(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.MaxTopicsPerConnection = 2
		o.AllowedOrigins = []string{"https://app.example"}
	})
	good := token(t, "ann")
	expired := mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Now: time.Now().Add(-2 * time.Hour)})
	host := "Host: x"
	for _, tc := range []struct {
		name   string
		lines  []string
		status int
		code   string
	}{
		{"no token", []string{"GET /sse HTTP/1.1", host}, 401, "unauthorized"},
		{"not bearer", []string{"GET /sse HTTP/1.1", host, "Authorization: Basic YTpi"}, 401, "unauthorized"},
		{"bad signature", []string{"GET /sse HTTP/1.1", host, "Authorization: Bearer " + good + "x"}, 401, "unauthorized"},
		{"expired", []string{"GET /sse HTTP/1.1", host, "Authorization: Bearer " + expired}, 401, "unauthorized"},
		{"query token disabled", []string{"GET /sse?token=" + good + " HTTP/1.1", host}, 400, "query_token_disabled"},
		{"bad since", []string{"GET /sse?since=x HTTP/1.1", host, "Authorization: Bearer " + good}, 400, "bad_since"},
		{"bad since header", []string{"GET /sse HTTP/1.1", host, "Wsfleet-Since: -1", "Authorization: Bearer " + good}, 400, "bad_since"},
		{"bad topic", []string{"GET /sse?topics=room.*,a HTTP/1.1", host, "Authorization: Bearer " + good}, 400, "bad_topic"},
		{"bad topic position", []string{"GET /sse?topics=room.1@x HTTP/1.1", host, "Authorization: Bearer " + good}, 400, "bad_since"},
		{"too many topics", []string{"GET /sse?topics=a,b,c HTTP/1.1", host, "Authorization: Bearer " + good}, 400, "too_many_topics"},
		{"post", []string{"POST /sse HTTP/1.1", host, "Content-Length: 0"}, 405, "method_not_allowed"},
		{"body", []string{"GET /sse HTTP/1.1", host, "Content-Length: 3", "Authorization: Bearer " + good}, 400, "bad_request"},
		{"chunked body", []string{"GET /sse HTTP/1.1", host, "Transfer-Encoding: chunked", "Authorization: Bearer " + good}, 400, "bad_request"},
		{"http/2", []string{"GET /sse HTTP/2.0", host}, 505, "http_version_not_supported"},
		{"malformed header", []string{"GET /sse HTTP/1.1", "Host : x"}, 400, "bad_request"},
		{"no host", []string{"GET /sse HTTP/1.1", "Authorization: Bearer " + good}, 400, "bad_request"},
		{"bare LF in a field (header injection)", []string{"GET /sse HTTP/1.1", host, "Origin: https://app.example\nSet-Cookie: x=1", "Authorization: Bearer " + good}, 400, "bad_request"},
		{"preflight with a body (smuggling)", []string{"OPTIONS /sse HTTP/1.1", host, "Content-Length: 10"}, 400, "bad_request"},
		{"origin", []string{"GET /sse HTTP/1.1", host, "Origin: https://evil.example", "Authorization: Bearer " + good}, 403, "origin_not_allowed"},
		{"other path", []string{"GET /sse/x HTTP/1.1", host}, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sseRequest(t, srv, tc.lines...)
			defer s.resp.Body.Close()
			var body struct{ Code, Reason string }
			if err := json.NewDecoder(s.resp.Body).Decode(&body); err != nil {
				t.Fatalf("%d: body: %v", s.resp.StatusCode, err)
			}
			if s.resp.StatusCode != tc.status || body.Code != tc.code || body.Reason == "" {
				t.Fatalf("got %d %+v, want %d %q", s.resp.StatusCode, body, tc.status, tc.code)
			}
			if s.resp.Header.Get("Content-Type") != "application/json" || !s.resp.Close {
				t.Fatalf("head %v: want JSON and Connection: close", s.resp.Header)
			}
			if tc.status == 405 && s.resp.Header.Get("Allow") != "GET, OPTIONS" {
				t.Fatalf("Allow %q", s.resp.Header.Get("Allow"))
			}
		})
	}
}

func TestSSEQueryTokenAndCORS(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.AllowQueryToken = true
		o.AllowedOrigins = []string{"https://app.example"}
	})
	c := rawDial(t, srv)
	br := bufio.NewReader(c)
	// A preflight, kept alive, then the stream on the same connection.
	fmt.Fprintf(c, "OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n")
	pre := sseResponse(t, c, br)
	if pre.resp.StatusCode != http.StatusNoContent || pre.resp.Close ||
		pre.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(pre.resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", pre.resp.StatusCode, pre.resp.Header)
	}
	fmt.Fprintf(c, "GET /sse?token=%s HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n", token(t, "ann"))
	s := sseResponse(t, c, br)
	if s.resp.StatusCode != http.StatusOK || s.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("stream after the preflight: %d %v", s.resp.StatusCode, s.resp.Header)
	}
	if w := s.nextData(); w.data["user"] != "ann" {
		t.Fatalf("welcome %+v", w)
	}
	// Without resume a message's id is its publisher's: EventSource sends
	// it back, and the stream opens all the same.
	if w := sseOpen1(t, srv, "Last-Event-ID: order-1"); w["user"] != "ann" {
		t.Fatalf("welcome %v", w)
	}
	// A refusal a page can read: its origin is echoed.
	r := sseGet(t, srv, "/sse", "", "Origin: https://app.example")
	if r.resp.StatusCode != 401 || r.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("refusal: %d %v", r.resp.StatusCode, r.resp.Header)
	}
}

// sseOpen1 opens ann's stream with a header line and returns its welcome.
func sseOpen1(t *testing.T, srv *gateway.Server, extra string) map[string]any {
	t.Helper()
	_, w := sseOpen(t, srv, "/sse", token(t, "ann"), extra)
	return w
}

func TestSSEResumeWithLastEventID(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	s := sseGet(t, srv, "/sse", token(t, "ann"))
	first := s.next()
	w := first.data
	if first.id == "" || first.id != w["position"] {
		t.Fatalf("welcome event id %q, position %v: a stream cut before its first message resumes from its position", first.id, w["position"])
	}
	nc := natsConn(t, srv)
	var ids []string
	for i := range 3 {
		publish(t, nc, "ann", "", strconv.Itoa(i))
		ev := s.nextData()
		if ev.id == "" || ev.id != ev.data["id"] {
			t.Fatalf("event %+v: want id: the message id", ev)
		}
		ids = append(ids, ev.id)
	}
	if w["position"] == nil {
		t.Fatalf("welcome without a position: %v", w)
	}
	s.conn.Close()
	publish(t, nc, "ann", "", "3") // missed while away
	// EventSource's reconnect: the same URL (an older ?since=) and the
	// id of the last event it got.
	r, w2 := sseOpen(t, srv, "/sse?since="+ids[0], token(t, "ann"), "Last-Event-ID: "+ids[1])
	if w2["recovered"] != true {
		t.Fatalf("welcome %v: want recovered", w2)
	}
	for _, want := range []string{"2", "3"} {
		if ev := r.nextData(); ev.data["data"] != float64(must(strconv.Atoi(want))) {
			t.Fatalf("after the resume: %+v, want data %s", ev, want)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSSETopics(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	tok := topicToken(t, "ann", "room.*")
	publishTopic(t, nc, "room.1", "", `"old"`)
	s, _ := sseOpen(t, srv, "/sse?topics=room.1,room.2,secret.1", tok)
	got := map[string]map[string]any{}
	for range 3 {
		ev := s.nextData()
		got[fmt.Sprint(ev.data["topic"])] = ev.data
	}
	if got["room.1"]["type"] != protocol.TypeSubscribed || got["room.2"]["type"] != protocol.TypeSubscribed {
		t.Fatalf("answers %v", got)
	}
	if e := got["secret.1"]; e["type"] != protocol.TypeError || e["code"] != protocol.ErrCodeForbidden {
		t.Fatalf("a topic the claim does not allow: %v", e)
	}
	publishTopic(t, nc, "room.2", "", `"hi"`)
	ev := s.nextData()
	if ev.data["topic"] != "room.2" || ev.data["data"] != "hi" || ev.id == "" || ev.id != ev.data["id"] {
		t.Fatalf("topic event %+v", ev)
	}
	// A topic's own position: the stream replays what came after it.
	pos := fmt.Sprint(got["room.1"]["position"])
	s.conn.Close()
	publishTopic(t, nc, "room.1", "", `"missed"`)
	r, _ := sseOpen(t, srv, "/sse?topics=room.1@"+pos, tok)
	sub := r.nextData()
	if sub.data["type"] != protocol.TypeSubscribed || sub.data["recovered"] != true {
		t.Fatalf("resumed subscribe %v", sub.data)
	}
	for {
		ev := r.nextData()
		if ev.data["data"] == "old" {
			t.Fatalf("replayed a message before the topic's position: %+v", ev)
		}
		if ev.data["data"] == "missed" {
			break
		}
	}
}

func TestSSETokenExpiryEndsTheStream(t *testing.T) {
	srv := startGateway(t, nil)
	tok := mintToken(t, jwtmint.Claims{Subject: "ann", TTL: 2 * time.Second})
	s, _ := sseOpen(t, srv, "/sse", tok)
	end := s.expectEnd(protocol.CloseUnauthorized)
	if !strings.Contains(fmt.Sprint(end["reason"]), "expired") {
		t.Fatalf("close event %v", end)
	}
}

func TestSSEDrainSendsReconnect(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.DrainTimeout = 2 * time.Second })
	s, _ := sseOpen(t, srv, "/sse", token(t, "ann"))
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()
	if ev := s.nextData(); ev.data["type"] != protocol.TypeReconnect {
		t.Fatalf("got %+v, want the reconnect notice", ev)
	}
	s.expectEnd(protocol.CloseServiceRestart)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestSSESlowConsumerIsClosed(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxPendingBytes = 64 << 10 })
	s, _ := sseOpen(t, srv, "/sse", token(t, "ann"))
	nc := natsConn(t, srv)
	big := `"` + strings.Repeat("x", 16<<10) + `"`
	// The client reads nothing while the node writes far past its bound.
	for i := 0; i < 400; i++ {
		m := nats.NewMsg(userSubject(t, "ann"))
		m.Data = []byte(big)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		if v := metricValue(t, srv, "wsfleet_gateway_slow_consumer_closes_total"); v < 1 {
			return fmt.Errorf("slow consumers %v", v)
		}
		return nil
	})
	s.expectEnd(protocol.CloseSlowConsumer)
}

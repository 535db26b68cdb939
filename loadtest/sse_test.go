package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSSEHead(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name     string
		in       string
		complete bool // else incomplete, or refused (err)
		err      error
		status   int
		ct       string
		cl       int
		chunk    bool
		ra       int
	}{
		{name: "stream", in: ok + "data: {}\n\n", complete: true, status: 200, ct: "text/event-stream", cl: -1},
		{name: "media type in any case, with parameters", in: "HTTP/1.1 200 OK\r\ncontent-TYPE:Text/Event-Stream ; charset=utf-8\r\n\r\n", complete: true, status: 200, ct: "text/event-stream", cl: -1},
		{name: "no reason phrase", in: "HTTP/1.1 200\r\nContent-Type: text/event-stream\r\n\r\n", complete: true, status: 200, ct: "text/event-stream", cl: -1},
		{name: "HTTP/1.0", in: "HTTP/1.0 200 OK\r\n\r\n", complete: true, status: 200, cl: -1},
		{name: "refusal with Retry-After and a body", in: "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 48\r\nRetry-After: 2\r\n\r\n{\"code\":\"node_full\",\"reason\":\"…\"}",
			complete: true, status: 503, ct: "application/json", cl: 48, ra: 2},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", complete: true, status: 200, ct: "text/event-stream", cl: -1, chunk: true},
		{name: "a Content-Length it cannot read", in: "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", complete: true, status: 200, cl: maxResponse + 1},
		{name: "a Retry-After date is ignored", in: "HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n", complete: true, status: 503, cl: -1},
		{name: "a header line without a colon is skipped", in: "HTTP/1.1 404 Not Found\r\nnonsense\r\n\r\n", complete: true, status: 404, cl: -1},
		{name: "incomplete", in: "HTTP/1.1 200 OK\r\nContent-Type: text/ev"},
		{name: "incomplete blank line", in: "HTTP/1.1 200 OK\r\n\r"},
		{name: "too large", in: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxResponse), err: errSSEHeadTooLarge},
		{name: "too large, complete", in: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", maxResponse) + "\r\n\r\n", err: errSSEHeadTooLarge},
		{name: "status not digits", in: "HTTP/1.1 2x0 OK\r\n\r\n", err: errSSEBadStatus},
		{name: "status too long", in: "HTTP/1.1 2000 OK\r\n\r\n", err: errSSEBadStatus},
		{name: "not HTTP", in: "ICY 200 OK\r\n\r\n", err: errSSEBadStatus},
		{name: "HTTP/2 status line", in: "HTTP/2 200\r\n\r\n", err: errSSEBadStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := parseSSEHead([]byte(tc.in))
			want := 0
			if tc.complete {
				want = strings.Index(tc.in, "\r\n\r\n") + 4
			}
			if !errors.Is(err, tc.err) || n != want {
				t.Fatalf("n %d, err %v; want %d, %v", n, err, want, tc.err)
			}
			if n == 0 {
				return
			}
			if h.status != tc.status || h.contentType != tc.ct || h.contentLength != tc.cl || h.chunked != tc.chunk || h.retryAfter != tc.ra {
				t.Fatalf("head %+v", h)
			}
		})
	}
}

func TestSSEErrorBody(t *testing.T) {
	for _, tc := range []struct{ name, body, reason string }{
		{"the gateway's", `{"code":"node_full","reason":"this node holds its maximum connections"}` + "\n", "http_503_node_full"},
		{"no body", "", "http_503"},
		{"not JSON", "<html>busy</html>", "http_503"},
		{"an escaped code", `{"code":"a\"b"}`, "http_503"},
		{"a code with a space", `{"code":"a b"}`, "http_503"},
		{"a code too long", `{"code":"` + strings.Repeat("x", 65) + `"}`, "http_503"},
		{"an empty code", `{"code":""}`, "http_503"},
		{"unclosed", `{"code":"node_`, "http_503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sseHTTPReason(503, []byte(tc.body)); got != tc.reason {
				t.Fatalf("%q, want %q", got, tc.reason)
			}
		})
	}
}

type sseGot struct {
	data  string
	id    string
	hasID bool
	retry int
}

// feedSSE feeds chunks to a parser as a slot does: what it does not
// consume is kept, and the next chunk appended to it. It returns the
// events dispatched and the bytes left unconsumed.
func feedSSE(chunks [][]byte) (got []sseGot, rest int, err error) {
	var p sseParser
	var buf []byte
	for _, c := range chunks {
		buf = append(buf, c...)
		off := 0
		for off < len(buf) {
			ev, n, err := p.next(buf[off:])
			if err != nil {
				return got, len(buf) - off, err
			}
			if n == 0 {
				break
			}
			if n > len(buf)-off {
				panic("consumed past the input")
			}
			off += n
			if ev.dispatch {
				got = append(got, sseGot{string(ev.data), string(ev.id), ev.hasID, ev.retry})
			}
		}
		buf = append(buf[:0], buf[off:]...)
	}
	return got, len(buf), nil
}

// splits returns the ways the tests cut an input: whole, in two at every
// point (short inputs), and a byte at a time.
func splits(in []byte) map[string][][]byte {
	m := map[string][][]byte{"whole": {in}}
	if len(in) <= 512 {
		for i := 1; i < len(in); i++ {
			m["cut at "+strconv.Itoa(i)] = [][]byte{in[:i], in[i:]}
		}
	}
	if len(in) <= 1<<16 {
		var ones [][]byte
		for i := range in {
			ones = append(ones, in[i:i+1])
		}
		m["byte by byte"] = ones
	}
	return m
}

// The event parser, fed whole, cut in two anywhere and a byte at a time:
// the same events every way.
func TestSSEParser(t *testing.T) {
	welcome := `{"type":"welcome","user":"lt-0","conn_id":"c1","node":"n1","heartbeat":25,"position":"7","recovered":true}`
	msg := `{"type":"message","id":"8","data":{"lt":"r","u":0,"s":1,"t":5}}`
	d := func(data string) sseGot { return sseGot{data: data, retry: -1} }
	di := func(id, data string) sseGot { return sseGot{data: data, id: id, hasID: true, retry: -1} }
	for _, tc := range []struct {
		name string
		in   string
		want []sseGot
		rest int   // bytes left unconsumed at the end
		err  error // then the events before it
	}{
		{name: "the contract's stream", in: "retry: 2000\n\n: ping\n\ndata: " + welcome + "\n\nid: 8\ndata: " + msg + "\n\n: ping\n\n" +
			`data: {"type":"close","code":1001,"reason":"going away"}` + "\n\n",
			want: []sseGot{d(welcome), di("8", msg), d(`{"type":"close","code":1001,"reason":"going away"}`)}},
		{name: "CRLF line endings", in: "id: 5\r\ndata: x\r\n\r\n: c\r\n\r\n", want: []sseGot{di("5", "x")}},
		{name: "data without a space", in: "data:x\n\n", want: []sseGot{d("x")}},
		{name: "only one leading space is taken", in: "data:  x\n\n", want: []sseGot{d(" x")}},
		{name: "multi-line data is joined", in: "data: a\ndata: b\ndata:\ndata: c\n\n", want: []sseGot{d("a\nb\n\nc")}},
		{name: "a field without a colon", in: "data\n\n", want: []sseGot{d("")}},
		{name: "empty data dispatches", in: "data:\n\n", want: []sseGot{d("")}},
		{name: "an id alone dispatches nothing", in: "id: 7\n\n", want: nil},
		{name: "an empty id", in: "id\ndata: x\n\n", want: []sseGot{di("", "x")}},
		{name: "an id with NUL is ignored", in: "id: a\x00b\ndata: x\n\n", want: []sseGot{d("x")}},
		{name: "the last id counts", in: "id: 1\nid: 2\ndata: x\n\n", want: []sseGot{di("2", "x")}},
		{name: "retry in an event", in: "retry: 3000\ndata: x\n\n", want: []sseGot{{data: "x", retry: 3000}}},
		{name: "a bad retry is ignored", in: "retry: 3s\ndata: x\n\n", want: []sseGot{d("x")}},
		{name: "event names and unknown fields are ignored", in: "event: update\nfoo: bar\ndata: x\n\n", want: []sseGot{d("x")}},
		{name: "comments inside an event", in: "data: a\n: ping\ndata: b\n\n", want: []sseGot{d("a\nb")}},
		{name: "blank lines between events", in: "\n\n\r\n\ndata: x\n\n\n\ndata: y\n\n", want: []sseGot{d("x"), d("y")}},
		{name: "heartbeats without blank lines", in: ": ping\n: ping\ndata: x\n\n: ping\n", want: []sseGot{d("x")}},
		{name: "an incomplete event is kept", in: "data: x\n\ndata: y\n", want: []sseGot{d("x")}, rest: 8},
		{name: "an incomplete comment is kept", in: ": pi", rest: 4},
		{name: "an incomplete CRLF is kept", in: "data: x\r\n\r", rest: 10},
		{name: "a colon in the value", in: `data: {"a":"b:c"}` + "\n\n", want: []sseGot{d(`{"a":"b:c"}`)}},
		{name: "a bare CR in an event", in: "data: x\ry\n\n", err: errSSELineEnding},
		{name: "a bare CR for a line end", in: "data: x\n\rdata: y\n\n", err: errSSELineEnding},
		{name: "a bare CR between events", in: "data: x\n\n\rdata: y\n\n", want: []sseGot{d("x")}, err: errSSELineEnding},
		{name: "a CR in a comment is only a comment", in: ": a\rb\ndata: x\n\n", want: []sseGot{d("x")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for how, chunks := range splits([]byte(tc.in)) {
				got, rest, err := feedSSE(chunks)
				if !errors.Is(err, tc.err) {
					t.Fatalf("%s: error %v, want %v", how, err, tc.err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("%s: events %+v, want %+v", how, got, tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Fatalf("%s: event %d %+v, want %+v", how, i, got[i], tc.want[i])
					}
				}
				if tc.err == nil && rest != tc.rest {
					t.Fatalf("%s: %d bytes left, want %d", how, rest, tc.rest)
				}
			}
		})
	}
}

// The parser's memory is bounded: heartbeats on an idle stream leave
// nothing buffered, and an event (or a line) longer than maxFrame is
// refused whether or not its end ever comes.
func TestSSEParserBounded(t *testing.T) {
	var chunks [][]byte
	for range 10000 {
		chunks = append(chunks, []byte(": ping\n\n"))
	}
	if got, rest, err := feedSSE(chunks); err != nil || rest != 0 || len(got) != 0 {
		t.Fatalf("heartbeats: %d events, %d bytes left, %v", len(got), rest, err)
	}
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = 'x'
	}
	for _, start := range []string{"data: ", ": "} {
		chunks := [][]byte{[]byte(start)}
		for n := 0; n <= maxFrame; n += len(big) {
			chunks = append(chunks, big)
		}
		if _, _, err := feedSSE(chunks); !errors.Is(err, errSSEEventTooLarge) {
			t.Fatalf("%q and %d bytes: %v, want %v", start, maxFrame, err, errSSEEventTooLarge)
		}
	}
	// the same event, complete, within the bound
	ev := append(append([]byte("data: "), big...), "\n\n"...)
	if got, _, err := feedSSE([][]byte{ev[:100], ev[100:]}); err != nil || len(got) != 1 || len(got[0].data) != len(big) {
		t.Fatalf("a 64 KiB event: %d events, %v", len(got), err)
	}
}

// An event arriving in many reads is scanned once: the work is linear in
// its size, not quadratic.
func TestSSEParserScansOnce(t *testing.T) {
	var p sseParser
	line := []byte("data: " + strings.Repeat("x", 100) + "\n")
	var buf []byte
	scanned := 0
	for range 2000 {
		buf = append(buf, line...)
		before := p.scan
		_, n, err := p.next(buf)
		if err != nil || n != 0 {
			t.Fatalf("n %d, %v", n, err)
		}
		scanned += len(buf) - before
	}
	if scanned > 2*len(buf) {
		t.Fatalf("%d bytes scanned for %d", scanned, len(buf))
	}
	buf = append(buf, '\n')
	ev, n, err := p.next(buf)
	if err != nil || n != len(buf) || !ev.dispatch || p.scan != 0 {
		t.Fatalf("n %d of %d, %v, %+v", n, len(buf), err, p)
	}
}

func TestSSETargets(t *testing.T) {
	for _, tc := range []struct{ name, url, transport, want, err string }{
		{"the gateway's WebSocket URL", "ws://127.0.0.1:8080/ws", TransportSSE, "http://127.0.0.1:8080/sse", ""},
		{"behind a path prefix", "ws://gw.example:80/fleet/ws", TransportSSE, "http://gw.example:80/fleet/sse", ""},
		{"with a query", "ws://127.0.0.1:8080/ws?a=b", TransportSSE, "http://127.0.0.1:8080/sse?a=b", ""},
		{"the SSE endpoint", "http://127.0.0.1:8080/sse", TransportSSE, "http://127.0.0.1:8080/sse", ""},
		{"another path", "ws://127.0.0.1:8080/socket", TransportSSE, "", "--url"},
		{"https", "https://127.0.0.1:8080/sse", TransportSSE, "", "https is not supported"},
		{"wss", "wss://127.0.0.1:8080/ws", TransportSSE, "", "wss is not supported"},
		{"an http URL over WebSockets", "http://127.0.0.1:8080/sse", TransportWS, "", "--transport sse"},
		{"no host", "http:///sse", TransportSSE, "", "--url"},
		{"WebSocket unchanged", "ws://127.0.0.1:8080/ws", TransportWS, "ws://127.0.0.1:8080/ws", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := targetURL(tc.url, tc.transport)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--url") {
					t.Fatalf("%v, want an error naming --url and %q", err, tc.err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("%v %v, want %s", u, err, tc.want)
			}
		})
	}
	ts, err := resolve([]string{"ws://127.0.0.1:8080/ws", "http://127.0.0.1:8081/sse?x=1"}, TransportSSE)
	if err != nil {
		t.Fatal(err)
	}
	if ts[0].URL != "http://127.0.0.1:8080/sse" || ts[0].Path != "/sse" || ts[1].Path != "/sse?x=1" || ts[1].Host != "127.0.0.1:8081" {
		t.Fatalf("targets %+v", ts)
	}
	if r := newSSEReq(ts[1]); string(r.path) != "GET /sse?x=1" || r.sep != '&' || newSSEReq(ts[0]).sep != '?' {
		t.Fatalf("request %q %c", r.path, r.sep)
	}
}

// --transport's bad values and what an event stream cannot do are refused
// before anything starts, naming the flag.
func TestSSEBadInvocations(t *testing.T) {
	key := map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret, "LOADTEST_API_KEY": testAPIKey}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown transport", []string{"connect", "--transport", "pigeon"}, `--transport "pigeon": ws or sse`},
		{"empty transport", []string{"connect", "--transport", ""}, "--transport must not be empty"},
		{"rooms published by the members", []string{"rooms", "--transport", "sse"}, "--transport sse: rooms --room-publish client"},
		{"token refresh", []string{"deliver", "--transport", "sse", "--token-refresh"}, "--transport sse: --token-refresh"},
		{"an http URL over WebSockets", []string{"connect", "--url", "http://127.0.0.1:1/sse"}, "--url"},
		{"not the gateway's /ws", []string{"connect", "--transport", "sse", "--url", "ws://127.0.0.1:1/other"}, "--url"},
		{"https", []string{"connect", "--transport", "sse", "--url", "https://127.0.0.1:1/sse"}, "--url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := mainWith(tc.args, func(k string) (string, bool) { v, ok := key[k]; return v, ok }, &out, &errb, false)
			if code != ExitBadFlags || !strings.Contains(errb.String(), tc.want) || out.Len() > 0 || strings.Contains(errb.String(), "limits:") {
				t.Fatalf("exit %d, stderr %q; want %d naming %q before anything starts", code, errb.String(), ExitBadFlags, tc.want)
			}
		})
	}
	// what an event stream can do is accepted
	for _, args := range [][]string{
		{"rooms", "--transport", "sse", "--room-publish", "router"},
		{"rooms", "--transport", "sse", "--room-publish", "nats"},
		{"live", "--transport", "sse"},
		{"storm", "--transport", "sse", "--resume", "--url", "http://127.0.0.1:1/sse"},
		{"deliver", "--transport", "ws", "--token-refresh"},
	} {
		cfg, err := ParseArgs(args[0], args[1:], func(k string) (string, bool) { v, ok := key[k]; return v, ok })
		if err == nil {
			cfg.SetDefaults()
			err = cfg.Validate()
		}
		if err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	var out bytes.Buffer
	mainWith([]string{"--help"}, nil, &out, &out, false)
	if !strings.Contains(out.String(), "--transport sse") {
		t.Errorf("the usage does not tell of --transport sse:\n%s", out.String())
	}
}

// rawSSE runs scenario against a raw listener whose every connection gets
// answer(request head, conn); it returns the result and the requests.
func rawSSE(t *testing.T, scenario string, conns int, answer func(req string, c net.Conn)) (*Result, []string, *bytes.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reqs []string
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(l)
					if l == "\r\n" {
						break
					}
				}
				mu.Lock()
				reqs = append(reqs, head.String())
				mu.Unlock()
				answer(head.String(), c)
			}()
		}
	}()
	var out, log bytes.Buffer
	cfg := Config{
		Scenario: scenario, Transport: TransportSSE, URLs: []string{"http://" + ln.Addr().String() + "/sse"},
		Auth: AuthConfig{HS256Secret: testSecret}, Progress: "off", Stdout: &out, Stderr: &log,
		Conns: conns, ConnectRate: 1000, Duration: 300 * time.Millisecond, RampTimeout: 700 * time.Millisecond,
		BackoffMin: 5 * time.Second, BackoffMax: 5 * time.Second, ConnectTimeout: 2 * time.Second,
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return res, append([]string(nil), reqs...), &out
}

// Responses off the contract, and error bodies that come after their
// head, each in writes of their own: the attempt fails with the reason.
func TestSSERawResponses(t *testing.T) {
	const stream = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
	for _, tc := range []struct {
		name   string
		pieces []string
		reason string
	}{
		{"an error body after its head, delimited by the close", []string{"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n", `{"code":"kicked",`, `"reason":"x"}`}, "http_403_kicked"},
		{"an error body cut, with its length", []string{"HTTP/1.1 431 Too Large\r\nContent-Length: 36\r\n\r\n{\"code\":\"req", "uest_too_large\",\"reason\":\"\"}"}, "http_431_request_too_large"},
		{"chunked", []string{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\n: hi\n\r\n"}, "sse_chunked"},
		{"not an event stream", []string{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}"}, "sse_not_event_stream"},
		{"a Content-Length", []string{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\n"}, "sse_content_length"},
		{"the end before the welcome", []string{stream, ": ping\n\n"}, "eof_before_welcome"},
		{"a close event before the welcome", []string{stream, `data: {"type":"close","code":4401,"reason":"token expired"}` + "\n\n"}, "closed_4401_before_welcome"},
		{"a bad status line", []string{"HTTP/1.1 OK\r\n\r\n"}, "sse_bad_status_line"},
		{"a bare CR", []string{stream, "data: {}\rdata: {}\n\n"}, "protocol_sse_bare_cr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, reqs, _ := rawSSE(t, ScenarioConnect, 1, func(_ string, c net.Conn) {
				for _, p := range tc.pieces {
					c.Write([]byte(p))
					time.Sleep(20 * time.Millisecond)
				}
			})
			e := res.Connections.Errors
			if e[tc.reason] == 0 || len(reqs) == 0 {
				t.Fatalf("errors %v after %d requests, want %s", e, len(reqs), tc.reason)
			}
			if res.Connections.Welcomes != 0 || res.ExitStatus != ExitFailed {
				t.Fatalf("welcomes %d, exit %d", res.Connections.Welcomes, res.ExitStatus)
			}
		})
	}
}

// The request is an SSE request with the token in Authorization, and the
// stream is push only: nothing is sent after the request, not even for a
// ping event; the end of the run closes the socket without a word.
func TestSSERequestPushOnly(t *testing.T) {
	var after sync.Map // request → bytes the client sent after it
	res, reqs, out := rawSSE(t, ScenarioConnect, 2, func(req string, c net.Conn) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"))
		c.Write([]byte(`data: {"type":"welcome","user":"lt-0","conn_id":"c","node":"raw","heartbeat":1}` + "\n\n"))
		c.Write([]byte(`data: {"type":"ping"}` + "\n\n: ping\n\n"))
		b, _ := readAll(c)
		after.Store(req, len(b))
	})
	if res.Connections.Welcomes != 2 || res.ExitStatus != ExitOK || len(reqs) != 2 {
		t.Fatalf("welcomes %d, exit %d %v, %d requests\n%s", res.Connections.Welcomes, res.ExitStatus, res.Failures, len(reqs), out)
	}
	for _, r := range reqs {
		for _, want := range []string{"GET /sse HTTP/1.1\r\n", "\r\nAccept: text/event-stream\r\n", "\r\nAuthorization: Bearer ey"} {
			if !strings.Contains(r, want) {
				t.Errorf("the request has no %q:\n%s", want, r)
			}
		}
		if strings.Contains(r, "Last-Event-ID") || strings.Contains(r, "Upgrade") {
			t.Errorf("request:\n%s", r)
		}
		if n, _ := after.Load(r); n != 0 {
			t.Errorf("the client sent %v bytes after its request", n)
		}
	}
	if len(res.Closes) != 0 {
		t.Errorf("closes %v", res.Closes)
	}
}

func readAll(c net.Conn) ([]byte, error) {
	var b bytes.Buffer
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := b.ReadFrom(c)
	return b.Bytes(), err
}

// sseReference parses a complete input the plain way the standard reads
// it (lines ending in \n, the input without \r): the events its complete
// lines make.
func sseReference(in []byte) []sseGot {
	var out []sseGot
	lines := bytes.Split(in, []byte("\n"))
	lines = lines[:len(lines)-1] // after the last \n: incomplete
	var data []string
	cur := sseGot{retry: -1}
	for _, l := range lines {
		if len(l) == 0 {
			if data != nil {
				cur.data = strings.Join(data, "\n")
				out = append(out, cur)
			}
			data, cur = nil, sseGot{retry: -1}
			continue
		}
		if l[0] == ':' {
			continue
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if ok && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "data":
			data = append(data, string(value))
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				cur.id, cur.hasID = string(value), true
			}
		case "retry":
			if v, err := strconv.Atoi(string(value)); err == nil && v >= 0 && len(value) <= 10 && value[0] != '+' {
				cur.retry = v
			}
		}
	}
	return out
}

// FuzzSSEStream: whatever a stream holds and wherever it is cut, the
// parser neither panics nor consumes past its input, finds the same
// events (or the same error) whole, in three pieces and a byte at a time,
// and, for input without \r, the events the plain reading finds.
func FuzzSSEStream(f *testing.F) {
	f.Add([]byte("retry: 2000\n\n: ping\n\ndata: {\"type\":\"welcome\"}\n\nid: 8\ndata: {\"type\":\"message\",\"id\":\"8\"}\n\n"), uint16(3), uint16(40))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n: c\r\n"), uint16(9), uint16(10))
	f.Add([]byte("id: a\x00b\ndata\nevent: x\n\n\n\ndata:  y\n\ndata: z\n"), uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, a, b uint16) {
		whole, restW, errW := feedSSE([][]byte{in})
		i, j := min(int(a), len(in)), min(int(b), len(in))
		if i > j {
			i, j = j, i
		}
		same := func(how string, got []sseGot, rest int, err error) {
			if (err == nil) != (errW == nil) || (err != nil && err.Error() != errW.Error()) {
				t.Fatalf("%s: error %v, whole %v", how, err, errW)
			}
			if len(got) != len(whole) {
				t.Fatalf("%s: %d events, whole %d", how, len(got), len(whole))
			}
			for k := range got {
				if got[k] != whole[k] {
					t.Fatalf("%s: event %d %+v, whole %+v", how, k, got[k], whole[k])
				}
			}
			if err == nil && rest != restW {
				t.Fatalf("%s: %d bytes left, whole %d", how, rest, restW)
			}
		}
		got, rest, err := feedSSE([][]byte{in[:i], in[i:j], in[j:]})
		same("three pieces", got, rest, err)
		if len(in) <= 4096 {
			var ones [][]byte
			for k := range in {
				ones = append(ones, in[k:k+1])
			}
			got, rest, err := feedSSE(ones)
			same("byte by byte", got, rest, err)
		}
		if bytes.IndexByte(in, '\r') < 0 {
			if errW != nil {
				t.Fatalf("error %v without a CR", errW)
			}
			ref := sseReference(in)
			if len(ref) != len(whole) {
				t.Fatalf("%d events, the plain reading %d: %+v / %+v", len(whole), len(ref), whole, ref)
			}
			for k := range ref {
				if ref[k] != whole[k] {
					t.Fatalf("event %d %+v, the plain reading %+v", k, whole[k], ref[k])
				}
			}
			// what is left is the incomplete end: an unfinished line or event
			if restW > len(in) || (restW > 0 && bytes.HasSuffix(in, []byte("\n\n"))) {
				t.Fatalf("%d bytes left of %q", restW, in)
			}
		}
	})
}

// FuzzSSEHead: whatever a response head holds, reading it neither panics
// nor goes past it, a head is taken only whole, and an error's code is
// taken only when it needs no escaping.
func FuzzSSEHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: {}\n\n"))
	f.Add([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 30\r\nRetry-After: 1\r\n\r\n{\"code\":\"node_full\",\"reason\":\"\"}"))
	f.Add([]byte("HTTP/1.0 401\r\nContent-Length: -1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, err := parseSSEHead(in)
		if err != nil && n != 0 {
			t.Fatalf("n %d with %v", n, err)
		}
		if n > 0 {
			if n > len(in) || n > maxResponse || !bytes.HasSuffix(in[:n], []byte("\r\n\r\n")) || bytes.Contains(in[:n-4], []byte("\r\n\r\n")) {
				t.Fatalf("n %d of %q", n, in)
			}
			if h.status < 0 || h.status > 999 || h.retryAfter < 0 || h.retryAfter > 3600 || h.contentLength < -1 {
				t.Fatalf("head %+v", h)
			}
		}
		r := sseHTTPReason(503, in)
		if strings.ContainsAny(r, "\" \\\n") || len(r) > len("http_503_")+64 {
			t.Fatalf("reason %q", r)
		}
	})
}

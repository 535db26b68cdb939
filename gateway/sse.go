package gateway

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/protocol"
)

// The server-sent-events transport (HTML Living Standard §9.2): GET
// SSEPath on the WebSocket listener opens a push-only stream on the same
// event loops, limits, write queues and timers as a WebSocket. What lives
// here: the request's parsing and checks, the CORS preflight, the response
// head, and the encoding of frames as events. The connection is a conn
// like any other (Kind connSSE); the few places that write WebSocket
// bytes ask sseWrite* instead.
//
// The contract (README "Server-sent events", protocol/doc.go):
//   - Auth: "Authorization: Bearer <JWT>", or ?token= with
//     Options.AllowQueryToken. Before the stream starts, every refusal is
//     an HTTP status with a JSON body, as for upgrades.
//   - Resume: Last-Event-ID (what EventSource sends on its reconnects),
//     else the Wsfleet-Since header, else ?since=: the position of the
//     user's messages and broadcasts, as the auth frame's "since".
//   - ?topics=a,b subscribes topics after the welcome, under the same
//     authorisation as subscribe frames; "name@<id>" gives a topic its own
//     resume position, and a topic without one resumes from the request's
//     position.
//   - Every event's data is one line: the JSON object a WebSocket client
//     gets as a text frame (welcome first). Messages carry "id: <id>".
//     Heartbeats are comment lines. The stream's last event before the
//     node ends it is {"type":"close","code":<close code>,"reason":…}.
//   - The response is close-delimited (RFC 9112 §6.3): "Connection:
//     close", no Content-Length, no chunked coding. Bytes the client sends
//     after its request are read and discarded. An OPTIONS preflight is
//     answered on a kept-alive connection, which then takes the next
//     request.

// SSEPath is the request path of the server-sent-events transport.
const SSEPath = "/sse"

// Transports (engine.Conn.Kind).
const (
	connWebSocket uint8 = iota
	connSSE
)

// transportName is the metrics label of a transport.
func transportName(kind uint8) string {
	if kind == connSSE {
		return "sse"
	}
	return "websocket"
}

var (
	ssePing     = []byte(": ping\n\n")
	sseDataHead = []byte("data: ")
	crlf        = []byte("\r\n")
)

// sseReq is what a GET /sse asked for beyond its token, held by the loop
// from the request to the welcome (loop.sseReqs): an idle stream holds none.
type sseReq struct {
	origin string // a CORS request's Origin, allowed: echoed in the response
	since  string // the request's resume position, for topics without their own
	topics []sseTopic
}

type sseTopic struct{ name, since string }

// isSSE reports whether the complete request head req asks for SSEPath.
func isSSE(req []byte) bool {
	line, _, _ := bytes.Cut(req, crlf)
	_, target, _, ok := splitRequestLine(line)
	return ok && string(requestPath(target)) == SSEPath
}

// splitRequestLine splits "METHOD SP target SP version" (RFC 9112 §3).
func splitRequestLine(line []byte) (method, target, version []byte, ok bool) {
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	return method, target, version, ok1 && ok2 && len(method) > 0 && len(target) > 0
}

// requestPath is a request target's path: without the query, and the
// absolute form (RFC 9112 §3.2.2) reduced to its path.
func requestPath(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	for _, scheme := range [...]string{"http://", "https://", "ws://", "wss://"} {
		if len(target) > len(scheme) && strings.EqualFold(string(target[:len(scheme)]), scheme) {
			if j := bytes.IndexByte(target[len(scheme):], '/'); j >= 0 {
				return target[len(scheme)+j:]
			}
			return []byte("/")
		}
	}
	return target
}

// sseHead is what sseRequest takes from the request's header fields.
type sseHead struct {
	auth, lastEventID, since, origin string
	hasAuth, close, body, host       bool
}

// parseSSEHeaders reads the header fields of a complete request head (the
// bytes after the request line, ending in an empty line).
func parseSSEHeaders(fields []byte) (h sseHead, ok bool) {
	for len(fields) > 0 {
		line, rest, found := bytes.Cut(fields, crlf)
		if !found {
			return h, false
		}
		fields = rest
		if len(line) == 0 {
			break
		}
		if bytes.ContainsAny(line, "\r\n") {
			return h, false // RFC 9112 §2.2: a bare CR or LF is no line end here
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return h, false // RFC 9112 §5.1: no whitespace before the colon
		}
		v := string(bytes.TrimSpace(value))
		switch strings.ToLower(string(name)) {
		case "authorization":
			h.auth, h.hasAuth = v, true
		case "last-event-id":
			h.lastEventID = v
		case "wsfleet-since":
			h.since = v
		case "origin":
			h.origin = v
		case "host":
			h.host = true
		case "connection":
			for _, t := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(t), "close") {
					h.close = true
				}
			}
		case "transfer-encoding":
			h.body = true
		case "content-length":
			h.body = h.body || v != "0"
		}
	}
	return h, true
}

// sseRequest answers a complete request head for SSEPath: a CORS
// preflight, a refusal with an HTTP error, or a stream whose token goes to
// the auth workers (the response head goes out with the welcome).
func (c *conn) sseRequest(req []byte) {
	l := c.l
	s := l.s
	o := &s.opts
	line, fields, _ := bytes.Cut(req, crlf)
	method, target, version, ok := splitRequestLine(line)
	if !ok || bytes.ContainsAny(line, "\r\n") {
		c.rejectHTTP(http.StatusBadRequest, "bad_request", "malformed request line")
		return
	}
	if v := string(version); v != "HTTP/1.1" && v != "HTTP/1.0" {
		c.rejectHTTP(http.StatusHTTPVersionNotSupported, "http_version_not_supported", "server-sent events are served over HTTP/1.1")
		return
	}
	h, ok := parseSSEHeaders(fields)
	if !ok {
		c.rejectHTTP(http.StatusBadRequest, "bad_request", "malformed header field")
		return
	}
	if !h.host && string(version) == "HTTP/1.1" {
		c.rejectHTTP(http.StatusBadRequest, "bad_request", "an HTTP/1.1 request names its Host (RFC 9112 §3.2)")
		return
	}
	if h.origin != "" {
		if !originAllowed(s.origins, []byte(h.origin)) {
			c.rejectHTTP(http.StatusForbidden, "origin_not_allowed", "this Origin may not open streams to this node")
			return
		}
		l.uio.corsOrigin = h.origin // refusals from here on are readable by the page
	}
	if h.body {
		// Refused before a preflight too: the connection is kept for the
		// request after a preflight, and a body would be taken for it.
		c.rejectHTTP(http.StatusBadRequest, "bad_request", string(method)+" "+SSEPath+" carries no body")
		return
	}
	switch string(method) {
	case http.MethodGet:
	case http.MethodOptions:
		c.ssePreflight(h.close || string(version) == "HTTP/1.0")
		return
	default:
		c.Kind = connSSE // its Allow names OPTIONS too
		c.rejectHTTP(http.StatusMethodNotAllowed, "method_not_allowed", "GET "+SSEPath+" opens a stream (OPTIONS answers a CORS preflight)")
		return
	}
	var q url.Values
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		var err error
		if q, err = url.ParseQuery(string(target[i+1:])); err != nil {
			c.rejectHTTP(http.StatusBadRequest, "bad_request", "malformed query string")
			return
		}
	}
	since := h.lastEventID // EventSource's reconnects keep the URL: its header is newer
	if !o.Resume {
		// Ids are the publishers' then (EventSource sends the last one
		// back): nothing resumes, and refusing it would end EventSource.
		since = ""
	}
	if since == "" {
		since = h.since
	}
	if since == "" {
		since = q.Get("since")
	}
	var sinceN uint64
	if since != "" {
		var err error
		if sinceN, err = protocol.ParseSince(since); err != nil {
			c.rejectHTTP(http.StatusBadRequest, "bad_since", err.Error())
			return
		}
	}
	var token string
	switch {
	case h.hasAuth:
		const bearer = "bearer "
		if len(h.auth) <= len(bearer) || !strings.EqualFold(h.auth[:len(bearer)], bearer) {
			s.m.authFailure("bad_header")
			c.rejectHTTP(http.StatusUnauthorized, "unauthorized", "Authorization must be \"Bearer <JWT>\"")
			return
		}
		token = strings.TrimSpace(h.auth[len(bearer):])
	case q.Get("token") != "":
		if !o.AllowQueryToken {
			c.rejectHTTP(http.StatusBadRequest, "query_token_disabled", "tokens in the URL are disabled on this node: send an Authorization: Bearer header")
			return
		}
		token = q.Get("token")
	default:
		s.m.authFailure("bad_header")
		c.rejectHTTP(http.StatusUnauthorized, "unauthorized", "a stream needs a token: an Authorization: Bearer header"+queryTokenHint(o.AllowQueryToken))
		return
	}
	topics, code, reason := parseSSETopics(q["topics"], o.MaxTopicsPerConnection)
	if code != "" {
		if code == protocol.ErrCodeBadTopic {
			s.m.topicRefused("bad_topic")
		} else {
			s.m.topicRefused(code)
		}
		c.rejectHTTP(http.StatusBadRequest, code, reason)
		return
	}
	if err := c.admitLimits(); err != nil {
		c.rejectHTTP(http.StatusServiceUnavailable, l.uio.errCode, err.Error())
		return
	}
	c.Kind = connSSE // before the token reaches another goroutine
	// The client sends nothing: a vanished one shows as heartbeat bytes the
	// peer never acknowledges, which the kernel gives up on after the idle
	// timeout (RFC 5482) rather than after its retransmissions (minutes).
	_ = unix.SetsockoptInt(c.FD(), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(o.IdleTimeout/time.Millisecond))
	if h.origin != "" || len(topics) > 0 {
		if l.sseReqs == nil {
			l.sseReqs = map[*conn]*sseReq{}
		}
		l.sseReqs[c] = &sseReq{origin: h.origin, since: since, topics: topics}
	}
	s.m.handshakeSeconds.Observe(float64(s.micros()-c.lastPing) / 1e6) // lastPing: the accept time
	c.State = stAuthWait
	c.beginPending()
	l.wheel.Schedule(c, l.now+l.authTicks)
	if since != "" {
		c.uPos = sinceN
		c.set(flSince, true)
	}
	c.submitAuth(token)
}

func queryTokenHint(allowed bool) string {
	if allowed {
		return " or ?token=<JWT>"
	}
	return ""
}

// parseSSETopics reads ?topics= (one or more, each a comma-separated list
// of "name" or "name@<id>"): duplicates count once. On a bad entry it
// returns the error code and reason of a subscribe frame's refusal.
func parseSSETopics(vals []string, max int) (topics []sseTopic, code, reason string) {
	for _, v := range vals {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			name, since, _ := strings.Cut(e, "@")
			if err := protocol.ValidateTopic(name); err != nil {
				return nil, protocol.ErrCodeBadTopic, err.Error()
			}
			if since != "" {
				if _, err := protocol.ParseSince(since); err != nil {
					return nil, "bad_since", name + ": " + err.Error()
				}
			}
			dup := false
			for i := range topics {
				if topics[i].name == name {
					topics[i].since, dup = since, true
				}
			}
			if !dup {
				topics = append(topics, sseTopic{name: name, since: since})
			}
		}
	}
	if len(topics) > max {
		return nil, protocol.ErrCodeTooManyTopics, "?topics= names " + strconv.Itoa(len(topics)) + " topics; the node allows " + strconv.Itoa(max) + " per connection (max-topics-per-connection)"
	}
	return topics, "", ""
}

// ssePreflight answers a CORS preflight (Fetch §3.2.5) for a reader that
// sends Authorization or Last-Event-ID, and keeps the connection for the
// request that follows unless it is to close.
func (c *conn) ssePreflight(closing bool) {
	l := c.l
	var buf [512]byte
	b := append(buf[:0], "HTTP/1.1 204 No Content\r\n"...)
	b = appendCORS(b, l.uio.corsOrigin)
	b = append(b, "Access-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: Authorization, Last-Event-ID, "+SinceHeader+", Cache-Control\r\nAccess-Control-Max-Age: 600\r\n"...)
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	c.Mu.Lock()
	c.writeLocked(b)
	failed := c.WritesDoneLocked()
	c.Mu.Unlock()
	if closing || failed {
		c.linger()
	}
}

// appendCORS appends the response fields that let a page of origin read
// the response; nothing without an Origin.
func appendCORS(b []byte, origin string) []byte {
	if origin == "" {
		return b
	}
	b = append(b, "Access-Control-Allow-Origin: "...)
	b = append(b, origin...)
	return append(b, "\r\nVary: Origin\r\n"...)
}

// sseOpen builds the response head and the welcome event. With resume the
// welcome's event id is its position, so a stream cut before its first
// message resumes from there (EventSource sends it as Last-Event-ID).
func (l *loop) sseOpen(dst []byte, c *conn, welcome []byte, position uint64) []byte {
	dst = append(dst, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n"...)
	if r := l.sseReqs[c]; r != nil {
		dst = appendCORS(dst, r.origin)
	}
	dst = append(dst, "\r\n"...)
	if l.s.rs != nil {
		dst = append(dst, "id: "...)
		dst = strconv.AppendUint(dst, position, 10)
		dst = append(dst, '\n')
	}
	return appendSSEData(dst, welcome)
}

// sseOpened subscribes the topics a stream asked for, once it is open.
func (l *loop) sseOpened(c *conn) {
	r := l.sseReqs[c]
	if r == nil {
		return
	}
	delete(l.sseReqs, c)
	for _, t := range r.topics {
		since := t.since
		if since == "" {
			since = r.since
		}
		l.subscribeFrame(c, protocol.ClientFrame{Type: protocol.TypeSubscribe, Topic: t.name, Since: since})
		if c.State != stOpen {
			return
		}
	}
}

// sseTopicLost ends a stream whose topic the node dropped (its
// subscription failed, or it fell behind history): a stream cannot
// subscribe again, its reconnect does, with its positions.
func (c *conn) sseTopicLost(name string) {
	if c.Kind == connSSE && c.State == stOpen {
		c.closeWith(protocol.CloseTryAgainLater, "topic "+name+" was dropped: reconnect to subscribe again")
	}
}

// appendSSEData appends one event whose data is the JSON object p. JSON
// holds a line break only as whitespace between tokens (RFC 8259 §7: never
// raw inside a string), so each becomes a space and the data is one line.
func appendSSEData(dst, p []byte) []byte {
	dst = append(dst, sseDataHead...)
	start := len(dst)
	dst = append(dst, p...)
	for i := start; i < len(dst); i++ {
		if dst[i] == '\n' || dst[i] == '\r' {
			dst[i] = ' '
		}
	}
	return append(dst, '\n', '\n')
}

// sseEncode is bufpool.Shared.Alt's encoder for a stream: the event of a
// delivery's WebSocket text frame (an unmasked header, RFC 6455 §5.2, then
// the JSON), with "id:" when the message has one.
func sseEncode(frame []byte) *bufpool.Shared {
	p := framePayload(frame)
	sh := bufpool.GetShared(len(p) + 48)
	b := sh.B
	if id := messageID(p); id != nil {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	sh.B = appendSSEData(b, p)
	return sh
}

// framePayload skips a server frame's header (RFC 6455 §5.2: no mask; 7,
// 16 or 64-bit length).
func framePayload(frame []byte) []byte {
	if len(frame) < 2 {
		return nil
	}
	switch frame[1] & 0x7f {
	case 126:
		return frame[min(4, len(frame)):]
	case 127:
		return frame[min(10, len(frame)):]
	}
	return frame[2:]
}

// messageID is the id of a message frame's JSON as protocol.AppendMessage
// and its kin write it ({"type":"message"[,"topic":"…"],"id":"…",…}); nil
// when it has none.
func messageID(p []byte) []byte {
	const head, topic, id = `{"type":"message"`, `,"topic":"`, `,"id":"`
	if !bytes.HasPrefix(p, []byte(head)) {
		return nil
	}
	p = p[len(head):]
	if bytes.HasPrefix(p, []byte(topic)) {
		end := bytes.IndexByte(p[len(topic):], '"')
		if end < 0 {
			return nil
		}
		p = p[len(topic)+end+1:]
	}
	if !bytes.HasPrefix(p, []byte(id)) {
		return nil
	}
	p = p[len(id):]
	end := bytes.IndexByte(p, '"')
	if end < 0 {
		return nil
	}
	return p[:end]
}

// sseClose ends a stream: before its response head, with the HTTP error
// that matches the close code; after it, with a close event, then the
// write side's shutdown (the client sees the response end).
func (c *conn) sseClose(code protocol.CloseCode, reason string) {
	l := c.l
	if c.State < stOpen {
		status, ecode := sseRefusal(code)
		if r := l.sseReqs[c]; r != nil {
			l.uio.corsOrigin = r.origin
		}
		if status == http.StatusServiceUnavailable {
			l.uio.retryAfter = 1
		}
		c.rejectHTTP(status, ecode, reason)
		l.uio.corsOrigin = ""
		return
	}
	c.endPending()
	c.State = stClosing
	var buf [256]byte
	c.Mu.Lock()
	if !c.WritesDoneLocked() {
		c.setWelcomedLocked(false)
		c.putLocked(appendCloseEvent(buf[:0], code, reason))
		c.CloseWriteLocked()
	}
	c.Mu.Unlock()
	l.s.m.closed(code)
	l.wheel.Schedule(c, l.now+l.closeTicks)
}

// appendCloseEvent appends the event that ends a stream.
func appendCloseEvent(dst []byte, code protocol.CloseCode, reason string) []byte {
	var buf [200]byte
	b := append(buf[:0], `{"type":"close","code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"reason":`...)
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b = protocol.AppendJSONString(b, []byte(reason))
	return appendSSEData(dst, append(b, '}'))
}

// sseRefusal maps the close code of a connection refused before its stream
// opened onto an HTTP status and error code.
func sseRefusal(code protocol.CloseCode) (int, string) {
	switch code {
	case protocol.CloseUnauthorized:
		return http.StatusUnauthorized, "unauthorized"
	case protocol.CloseKicked:
		return http.StatusForbidden, "kicked"
	case protocol.CloseDeviceLimit:
		return http.StatusConflict, "device_limit"
	case protocol.CloseBadRequest:
		return http.StatusBadRequest, "bad_request"
	case protocol.CloseAuthTimeout:
		return http.StatusServiceUnavailable, "auth_timeout"
	case protocol.CloseServiceRestart, protocol.CloseGoingAway:
		return http.StatusServiceUnavailable, "restarting"
	}
	return http.StatusServiceUnavailable, "try_again_later"
}

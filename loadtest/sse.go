package loadtest

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/wsfleet/wsfleet/protocol"
)

// Server-sent events (--transport sse).
//
// A device connects with GET /sse on the gateway's host:port (HTTP/1.1,
// "Authorization: Bearer <JWT>", with --resume "Last-Event-ID: <id>" once
// it has a position, in live and rooms "?topics=<topic>"), and the gateway
// answers 200 with Content-Type text/event-stream, Connection: close and
// neither a Content-Length nor chunked encoding: the body is the event
// stream, delimited by the connection's close. Each event's data is one
// JSON text, exactly what the WebSocket transport's text frames carry (the
// welcome, messages, subscribed, error, reconnect), so a device accounts
// for it with the same code (slot.message); the stream's last event is
// {"type":"close","code":<WebSocket close code>,"reason":…}, counted as a
// close with that code, and an end of stream without it as an abnormal
// close (1006). Comment lines (": ping", the heartbeats) and retry lines
// are read and ignored; nothing is ever answered: an event stream is push
// only, so the scenarios that need client frames (rooms --room-publish
// client, --token-refresh) are refused, and the topic scenarios subscribe
// with topics= at connect instead of a subscribe frame.
//
// An HTTP error (400, 401, 403, 404, 405, 408, 431, 503 with Retry-After)
// has a JSON body {"code":…,"reason":…}: the attempt fails with the reason
// http_<status>_<code>, as a refused WebSocket upgrade does, so the
// refusals (503, 429) and pushbacks (408) count the same (classify), and a
// 503's Retry-After is waited out.
//
// Parsing is incremental, on the loop's goroutine, with no goroutine per
// connection: the response head once it is whole (at most maxResponse
// bytes, its error body included), then whole events as they complete
// (each at most maxFrame bytes), the bytes of an incomplete one kept in
// the slot's input buffer and scanned once (sseParser.scan).

// sseTypeClose is the type of the stream's last event: the close.
const sseTypeClose = "close"

// sseHead is an HTTP response head.
type sseHead struct {
	status        int
	contentType   string // the media type, lower case, without parameters
	chunked       bool   // Transfer-Encoding names chunked
	contentLength int    // -1: none
	retryAfter    int    // seconds (0: none or not a number)
}

// Reasons a response head is refused (the attempt's error, after sse_).
var (
	errSSEHeadTooLarge = errors.New("response_too_large")
	errSSEBadStatus    = errors.New("bad_status_line")
)

// parseSSEHead reads the response head at the start of b: n is its length
// with the blank line that ends it, 0 while it is incomplete.
func parseSSEHead(b []byte) (h sseHead, n int, err error) {
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		if len(b) > maxResponse {
			return h, 0, errSSEHeadTooLarge
		}
		return h, 0, nil
	}
	if i+4 > maxResponse {
		return h, 0, errSSEHeadTooLarge
	}
	head := b[:i]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return h, 0, errSSEBadStatus
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return h, 0, errSSEBadStatus
		}
		h.status = h.status*10 + int(c-'0')
	}
	h.contentLength = -1
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch string(bytes.ToLower(bytes.TrimSpace(k))) {
		case "content-type":
			mt, _, _ := bytes.Cut(v, []byte(";"))
			h.contentType = string(bytes.ToLower(bytes.TrimSpace(mt)))
		case "transfer-encoding":
			if bytes.Contains(bytes.ToLower(v), []byte("chunked")) {
				h.chunked = true
			}
		case "content-length":
			if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 {
				h.contentLength = n
			} else {
				h.contentLength = maxResponse + 1 // present, unusable
			}
		case "retry-after":
			if n, err := strconv.Atoi(string(v)); err == nil && n > 0 {
				h.retryAfter = min(n, 3600)
			}
		}
	}
	return h, i + 4, nil
}

// errorBodyCode returns the "code" of an error body {"code":"…",…}, if it
// is a short one that needs no escaping ("" otherwise).
func errorBodyCode(body []byte) string {
	i := bytes.Index(body, []byte(`"code":"`))
	if i < 0 {
		return ""
	}
	v := body[i+8:]
	j := bytes.IndexByte(v, '"')
	if j <= 0 || j > 64 {
		return ""
	}
	for _, c := range v[:j] {
		if c < 0x21 || c > 0x7e || c == '\\' {
			return ""
		}
	}
	return string(v[:j])
}

// sseHTTPReason is a failed attempt's reason for an HTTP error answer:
// http_<status>, with _<code> when its body gave one (as for a refused
// WebSocket upgrade).
func sseHTTPReason(status int, body []byte) string {
	r := "http_" + strconv.Itoa(status)
	if c := errorBodyCode(body); c != "" {
		r += "_" + c
	}
	return r
}

// sseEvent is one event of a stream, or nothing to dispatch (a comment, a
// retry, a blank line, a block without data).
type sseEvent struct {
	dispatch bool
	data     []byte // the data lines joined by \n; valid until the next call
	id       []byte // the last id field (hasID), valid as data is
	hasID    bool
	retry    int // a retry field's milliseconds (-1: none)
}

// Reasons a stream is refused (a protocol error, after sse_).
var (
	errSSEEventTooLarge = errors.New("event_too_large")
	errSSELineEnding    = errors.New("bare_cr") // a CR not followed by LF: lines end in \n (or \r\n)
)

// sseParser reads an event stream incrementally: next takes the bytes not
// consumed yet, the same again with more appended while they hold nothing
// complete, and returns what it consumed. It keeps where its scan stopped
// (so an event arriving in many reads is scanned once) and a scratch
// buffer to join multi-line data.
type sseParser struct {
	// scan is how many bytes at the start of the input were scanned
	// without finding the end of what next waits for: a line (at the
	// start of a block) or the blank line that ends an event. It is
	// relative to the input's start, which next's caller keeps while
	// next consumes nothing; it is reset when next consumes.
	scan int
	join []byte
}

// next returns the next item of b: n bytes consumed (0: nothing complete
// yet; call again with more appended, b's start unchanged), and an event
// to dispatch when ev.dispatch. Comment lines, blank lines and lines of
// an unknown field outside an event are consumed one at a time; an event
// block (lines up to a blank line) whole.
func (p *sseParser) next(b []byte) (ev sseEvent, n int, err error) {
	ev.retry = -1
	if len(b) == 0 {
		return ev, 0, nil
	}
	if b[0] == ':' || b[0] == '\n' || b[0] == '\r' {
		// a comment or a blank line between events: consumed alone, so
		// heartbeats on an idle stream leave nothing buffered
		from := p.scan
		j := bytes.IndexByte(b[from:], '\n')
		if j < 0 {
			if len(b) > maxFrame {
				return ev, 0, errSSEEventTooLarge
			}
			p.scan = len(b)
			return ev, 0, nil
		}
		end := from + j + 1
		p.scan = 0
		if b[0] == '\r' && end != 2 {
			return ev, 0, errSSELineEnding
		}
		return ev, end, nil
	}
	// An event block: find the blank line that ends it, from the first
	// line not scanned yet (scan is always at a line start here).
	ls := p.scan
	end := -1
	for {
		j := bytes.IndexByte(b[ls:], '\n')
		if j < 0 {
			break
		}
		l := b[ls : ls+j]
		if len(l) == 0 || (len(l) == 1 && l[0] == '\r') {
			end = ls + j + 1
			break
		}
		ls += j + 1
	}
	if end < 0 {
		if len(b) > maxFrame {
			return ev, 0, errSSEEventTooLarge
		}
		p.scan = ls
		return ev, 0, nil
	}
	p.scan = 0
	if end > maxFrame {
		return ev, 0, errSSEEventTooLarge
	}
	var first []byte
	datas := 0
	for off := 0; off < end; {
		j := bytes.IndexByte(b[off:end], '\n')
		l := b[off : off+j]
		off += j + 1
		if k := len(l); k > 0 && l[k-1] == '\r' {
			l = l[:k-1]
		}
		if bytes.IndexByte(l, '\r') >= 0 {
			return ev, 0, errSSELineEnding
		}
		if len(l) == 0 || l[0] == ':' {
			continue
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if ok && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "data":
			switch datas {
			case 0:
				first = value
			case 1:
				p.join = append(append(append(p.join[:0], first...), '\n'), value...)
			default:
				p.join = append(append(p.join, '\n'), value...)
			}
			datas++
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.id, ev.hasID = value, true
			}
		case "retry":
			if v, err := strconv.Atoi(string(value)); err == nil && v >= 0 && len(value) <= 10 && value[0] != '+' {
				ev.retry = v
			}
		}
	}
	switch datas {
	case 0:
	case 1:
		ev.dispatch, ev.data = true, first
	default:
		ev.dispatch, ev.data = true, p.join
	}
	return ev, end, nil
}

// sseReq is a target's request, around what each connection adds: the
// topics query, the token, Last-Event-ID.
type sseReq struct {
	path []byte // "GET <path>"
	sep  byte   // '?' or '&': what starts a query parameter after path
	head []byte // " HTTP/1.1\r\nHost: …\r\n…Authorization: Bearer "
}

func newSSEReq(t Target) sseReq {
	r := sseReq{path: []byte("GET " + t.Path), sep: '?'}
	if bytes.IndexByte(r.path, '?') >= 0 {
		r.sep = '&'
	}
	r.head = []byte(" HTTP/1.1\r\nHost: " + t.Host + "\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nAuthorization: Bearer ")
	return r
}

// sseTopicsQuery is the query parameter subscribing a stream to topic.
func sseTopicsQuery(topic string) []byte { return []byte("topics=" + url.QueryEscape(topic)) }

// sendSSERequest writes the connection's request: its user's token, its
// topic (live, rooms), and with --resume the device's resume point, as
// sendAuth puts them in the auth frame.
func (s *slot) sendSSERequest() {
	l := s.l
	e := l.e
	tok, exp, err := e.tokens.get(int(s.user), e.names[s.user], false)
	if err != nil {
		s.fail("token_mint")
		return
	}
	s.tokenExp = exp
	r := &l.sseReqs[s.tgt]
	b := append(l.fbuf[:0], r.path...)
	if e.tp != nil {
		b = append(b, r.sep)
		b = append(b, e.tp.rooms[s.room].query...)
	}
	b = append(b, r.head...)
	b = append(b, tok...)
	b = append(b, "\r\n"...)
	s.resumed = false
	if since, ok := s.rs.since(); ok && e.resume {
		s.resumed = true
		b = append(b, "Last-Event-ID: "...)
		b = strconv.AppendUint(b, since, 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	l.fbuf = b
	s.sseScan = 0
	s.write(b)
}

// parseSSE consumes what it can of b (parse, for an event stream).
func (s *slot) parseSSE(b []byte) int {
	off := 0
	if s.state == stUpgrading {
		n := s.sseResponse(b, false)
		if n == 0 || s.state == stDown {
			if s.state == stDown {
				return len(b)
			}
			return 0
		}
		off = n
	}
	l := s.l
	p := &l.ssep
	p.scan = int(s.sseScan)
	for off < len(b) {
		ev, n, err := p.next(b[off:])
		if err != nil {
			s.protocolError("sse_" + err.Error())
			return len(b)
		}
		if n == 0 {
			break
		}
		off += n
		if ev.dispatch {
			s.sseEvent(ev)
			if s.state == stDown {
				return len(b)
			}
		}
	}
	s.sseScan = int32(p.scan)
	return off
}

// sseResponse reads the response head at the start of b; atEOF says the
// stream ended after b. It returns the bytes of the head once it took a
// 200 (the connection then waits for its welcome), 0 while the head, or
// an error's body, is incomplete, or when the attempt failed (the slot
// is down then).
func (s *slot) sseResponse(b []byte, atEOF bool) int {
	h, n, err := parseSSEHead(b)
	switch {
	case err != nil:
		s.fail("sse_" + err.Error())
		return 0
	case n == 0:
		return 0
	case h.status != 200:
		body := b[n:]
		// wait for the whole error body (the gateway sends its length),
		// or the close, within maxResponse
		if !atEOF && len(b) <= maxResponse && (h.contentLength < 0 || len(body) < h.contentLength) {
			return 0
		}
		if h.contentLength >= 0 && len(body) > h.contentLength {
			body = body[:h.contentLength]
		}
		s.retryAfter = h.retryAfter
		s.fail(sseHTTPReason(h.status, body))
		return 0
	case h.contentType != "text/event-stream":
		s.fail("sse_not_event_stream")
		return 0
	case h.chunked:
		s.fail("sse_chunked") // the contract: the body is delimited by the close
		return 0
	case h.contentLength >= 0:
		s.fail("sse_content_length")
		return 0
	}
	now := mono()
	s.tUpgrade = now
	recordMicros(s.l.hUpgrade, now-s.t0)
	s.state = stAuthing
	s.sseScan = 0
	return n
}

// sseEOF handles the end of a stream still waiting for its response: an
// error answer whose body ends with the close. It reports whether it
// failed the attempt.
func (s *slot) sseEOF() bool {
	if s.state != stUpgrading || s.in == nil {
		return false
	}
	s.sseResponse(*s.in, true)
	return s.state == stDown
}

var msgTypeHead = []byte(`{"type":"message"`)

// sseEvent handles one event: its data as a text frame of the WebSocket
// transport; a message event's id field must be its JSON's id.
func (s *slot) sseEvent(ev sseEvent) {
	p := ev.data
	if ev.hasID && len(ev.id) > 0 && bytes.HasPrefix(p, msgTypeHead) {
		head := p
		if i := bytes.Index(p, dataKey); i >= 0 {
			head = p[:i]
		}
		if i := bytes.Index(head, idKey); i >= 0 {
			v := head[i+len(idKey):]
			if j := bytes.IndexByte(v, '"'); j >= 0 && !bytes.Equal(v[:j], ev.id) {
				s.l.errorf("sse_id_mismatch")
			}
		}
	}
	s.message(p)
}

// sseClosed handles the stream's close event.
func (s *slot) sseClosed(p []byte) {
	code := int(protocol.CloseNoStatus)
	if v, ok := jsonUint(p, `"code":`); ok && v <= 9999 {
		code = int(v)
	}
	s.serverClosed(code)
}

// validateTransport checks --transport and what it rules out.
func (c *Config) validateTransport() error {
	switch c.Transport {
	case TransportWS:
		return nil
	case TransportSSE:
	default:
		return fmt.Errorf("--transport %q: ws or sse", c.Transport)
	}
	switch {
	case c.Scenario == ScenarioRooms && c.RoomPublish == RoomPublishClient:
		return errors.New("--transport sse: rooms --room-publish client has the members publish with their own frames, and an SSE connection sends none (it is push only); use --room-publish router or nats, or --transport ws")
	case c.Auth.Refresh:
		return errors.New("--transport sse: --token-refresh sends a fresh auth frame on the connection, and an SSE connection sends none (it is push only); without --token-refresh a token expires (close 4401) and the device reconnects with a new one, or use --transport ws")
	}
	return nil
}

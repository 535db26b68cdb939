package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/protocol"
)

// Subprotocol is the WebSocket subprotocol (RFC 6455 §1.9) of wsfleet's JSON
// frames. A client may offer it; the gateway selects it when offered.
const Subprotocol = "wsfleet.v1"

// Path is the one request path the gateway upgrades (RFC 6455 §4.1's
// resource name, without the query): any other gets 404 with a JSON body.
const Path = "/ws"

var crlfcrlf = []byte("\r\n\r\n")

// upgradeIO is the io.ReadWriter gobwas/ws upgrades on: it reads the request
// bytes the loop has already buffered and collects the response, which the
// loop then writes without blocking. One per loop, reused by every upgrade.
type upgradeIO struct {
	req   []byte
	out   []byte
	token string // from Authorization: Bearer or ?token=
	// rejection chosen by a callback, with a JSON error code
	errCode    string
	retryAfter int // seconds, for a 503
	// resume: ?since= or the Wsfleet-Since header
	since    uint64
	hasSince bool
	// corsOrigin, for a stream request from a page (sse.go), lets the page
	// read an error response.
	corsOrigin string
}

// SinceHeader carries a resume position on the upgrade request, for
// clients that authenticate with the Authorization header (?since= works
// too; an auth frame's "since" wins over both).
const SinceHeader = "Wsfleet-Since"

// setSince takes a resume position from the request.
func (u *upgradeIO) setSince(v string) error {
	n, err := protocol.ParseSince(v)
	if err != nil {
		return u.reject(http.StatusBadRequest, "bad_since", err.Error())
	}
	u.since, u.hasSince = n, true
	return nil
}

func (u *upgradeIO) Read(p []byte) (int, error) {
	if len(u.req) == 0 {
		return 0, io.EOF
	}
	n := copy(p, u.req)
	u.req = u.req[n:]
	return n, nil
}

func (u *upgradeIO) Write(p []byte) (int, error) {
	u.out = append(u.out, p...)
	return len(p), nil
}

// reject returns a gobwas rejection carrying an HTTP status, remembering a
// JSON error code for the response body.
func (u *upgradeIO) reject(status int, code, reason string) error {
	u.errCode = code
	return ws.RejectConnectionError(ws.RejectionStatus(status), ws.RejectionReason(reason))
}

// newUpgrader returns the loop's gobwas/ws upgrader. Its callbacks write into
// the loop's upgradeIO, so upgrading allocates nothing per connection here.
func (l *loop) newUpgrader() ws.Upgrader {
	u := &l.uio
	o := &l.s.opts
	return ws.Upgrader{
		ReadBufferSize: o.MaxHeaderBytes + 64,
		Protocol:       func(p []byte) bool { return string(p) == Subprotocol },
		OnRequest: func(uri []byte) error {
			i := bytes.IndexByte(uri, '?')
			if string(requestPath(uri)) != Path { // the absolute form (RFC 9112 §3.2.2) names the same resource
				return u.reject(http.StatusNotFound, "not_found", "no such path: WebSocket clients connect to "+Path)
			}
			if i < 0 || !bytes.Contains(uri[i:], []byte("token=")) && !bytes.Contains(uri[i:], []byte("since=")) {
				return nil
			}
			q, err := url.ParseQuery(string(uri[i+1:]))
			if err != nil {
				return u.reject(http.StatusBadRequest, "bad_request", "malformed query string")
			}
			if since := q.Get("since"); since != "" {
				if err := u.setSince(since); err != nil {
					return err
				}
			}
			tok := q.Get("token")
			if tok == "" {
				return nil
			}
			if !o.AllowQueryToken {
				return u.reject(http.StatusBadRequest, "query_token_disabled",
					"tokens in the URL are disabled on this node: send {\"type\":\"auth\",\"token\":...} as the first frame or an Authorization: Bearer header")
			}
			u.token = tok
			return nil
		},
		OnHeader: func(k, v []byte) error {
			switch string(k) {
			case "Origin":
				if !originAllowed(l.s.origins, v) {
					return u.reject(http.StatusForbidden, "origin_not_allowed", "this Origin may not open WebSocket connections to this node")
				}
				return nil
			case "Authorization":
			case SinceHeader:
				return u.setSince(string(v))
			default:
				return nil
			}
			const bearer = "bearer "
			if len(v) <= len(bearer) || !bytes.EqualFold(v[:len(bearer)], []byte(bearer)) {
				return u.reject(http.StatusUnauthorized, "unauthorized", "Authorization must be \"Bearer <JWT>\"")
			}
			u.token = string(bytes.TrimSpace(v[len(bearer):]))
			return nil
		},
	}
}

// handshake completes the HTTP upgrade (RFC 6455 §4.2) once the whole
// request is buffered; until then it returns 0 and the bytes wait for the
// next event. It returns the number of request bytes consumed.
func (c *conn) handshake(data []byte, scanned int) int {
	from := max(scanned-3, 0)
	end := bytes.Index(data[from:], crlfcrlf)
	if end < 0 {
		return 0
	}
	n := from + end + 4
	l := c.l
	if n > l.s.opts.MaxHeaderBytes {
		c.rejectHTTP(http.StatusRequestHeaderFieldsTooLarge, "request_too_large", "the upgrade request headers are larger than the node accepts")
		return n
	}
	if reason := l.shedReason(); reason != "" {
		c.shed(reason)
		return n
	}
	u := &l.uio
	u.req, u.out, u.token, u.errCode, u.retryAfter, u.since, u.hasSince = data[:n], u.out[:0], "", "", 0, 0, false
	if isSSE(data[:n]) {
		u.req = nil
		c.sseRequest(data[:n])
		u.corsOrigin = ""
		return n
	}
	_, err := l.upgrader.Upgrade(u)
	if err == nil {
		err = c.admit(data[:n])
	}
	u.req = nil
	if err != nil {
		status, code := http.StatusBadRequest, "bad_handshake"
		var rej *ws.ConnectionRejectedError
		if errors.As(err, &rej) && rej.StatusCode() != 0 {
			status = rej.StatusCode()
		}
		if u.errCode != "" {
			code = u.errCode
		}
		if status == http.StatusUnauthorized {
			l.s.m.authFailure("bad_header")
		}
		c.rejectHTTP(status, code, err.Error())
		return n
	}
	c.Mu.Lock()
	c.writeLocked(u.out)
	failed := c.WritesDoneLocked() // the write failed: its close is posted
	c.Mu.Unlock()
	if failed {
		c.linger()
		return n
	}
	l.s.m.handshakeSeconds.Observe(float64(l.s.micros()-c.lastPing) / 1e6) // lastPing: the accept time
	c.State = stAuthWait
	c.beginPending()
	c.rlTick, c.rlTokens = l.now, float32(l.s.opts.MaxClientMsgsBurst)
	l.wheel.Schedule(c, l.now+l.authTicks)
	if u.hasSince {
		c.uPos = u.since
		c.set(flSince, true)
	}
	if u.token != "" {
		c.submitAuth(u.token)
		u.token = ""
	}
	return n
}

// admit makes the checks of an upgrade request that gobwas/ws does not:
// a Sec-WebSocket-Key that is 16 bytes in base64 (RFC 6455 §4.1), the
// node's connection limit and its connect rate.
func (c *conn) admit(req []byte) error {
	u := &c.l.uio
	if !validSecKey(req) {
		return u.reject(http.StatusBadRequest, "bad_handshake", `handshake error: bad "Sec-WebSocket-Key" header`)
	}
	return c.admitLimits()
}

// admitLimits checks the node's connection limit and its connect rate for
// a new connection of any transport.
func (c *conn) admitLimits() error {
	u := &c.l.uio
	s := c.l.s
	if s.nconns.Load() > int64(s.opts.MaxConnections) {
		s.m.connLimit.Inc()
		u.retryAfter = 5
		return u.reject(http.StatusServiceUnavailable, "node_full", "this node holds its maximum connections; retry later or elsewhere")
	}
	if s.connectRate != nil && !s.connectRate.Allow() {
		s.m.connectRate.Inc()
		u.retryAfter = 1
		return u.reject(http.StatusServiceUnavailable, "connect_rate_limited", "too many new connections on this node; retry shortly")
	}
	return nil
}

// validSecKey finds the Sec-WebSocket-Key header in a complete request and
// reports whether it is the base64 encoding of 16 bytes.
func validSecKey(req []byte) bool {
	const name = "sec-websocket-key:"
	for len(req) > 0 {
		i := bytes.Index(req, []byte("\r\n"))
		if i < 0 {
			return false
		}
		line := req[:i]
		req = req[i+2:]
		if len(line) < len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
			continue
		}
		v := bytes.TrimSpace(line[len(name):])
		var key [18]byte
		n, err := base64.StdEncoding.Decode(key[:], v)
		return err == nil && n == 16 && len(v) == 24
	}
	return false
}

// rejectHTTP answers a failed upgrade with an HTTP error whose body is JSON
// ({"code":code,"reason":...}, as in the protocol's error frame) and closes
// the connection.
func (c *conn) rejectHTTP(status int, code, reason string) {
	var buf [1024]byte
	body := append(buf[:0:0], `{"code":`...)
	body = protocol.AppendJSONString(body, []byte(code))
	body = append(body, `,"reason":`...)
	body = protocol.AppendJSONString(body, []byte(reason))
	body = append(body, "}\n"...)
	b := buf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: application/json\r\nConnection: close\r\n"...)
	b = appendCORS(b, c.l.uio.corsOrigin)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	switch status {
	case http.StatusUpgradeRequired:
		b = append(b, "Sec-WebSocket-Version: 13\r\n"...)
	case http.StatusMethodNotAllowed:
		if c.Kind == connSSE {
			b = append(b, "Allow: GET, OPTIONS\r\n"...)
		} else {
			b = append(b, "Allow: GET\r\n"...)
		}
	case http.StatusServiceUnavailable:
		b = append(b, "Retry-After: "...)
		b = strconv.AppendInt(b, int64(max(c.l.uio.retryAfter, 1)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.Mu.Lock()
	c.writeLocked(b)
	c.Mu.Unlock()
	c.l.s.m.rejected(status)
	if c.State != stClosed {
		c.linger()
	}
}

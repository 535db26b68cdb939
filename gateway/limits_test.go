package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// handshakeStatus sends a raw request and returns the status line, the
// headers and the body of the reply.
func handshakeStatus(t *testing.T, srv *gateway.Server, req string) (int, http.Header, string) {
	t.Helper()
	c := rawDial(t, srv)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func upgradeReq(extra string) string {
	return "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

func TestHandshakeErrors(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.MaxHeaderBytes = 2048
		o.AllowedOrigins = []string{"https://app.example.com"}
	})
	cases := []struct {
		name   string
		req    string
		status int
		header string // a header the reply must carry, "Name: value"
		code   string // the JSON error code
	}{
		{"post", strings.Replace(upgradeReq(""), "GET", "POST", 1), 405, "Allow: GET", "bad_handshake"},
		{"no upgrade header", strings.Replace(upgradeReq(""), "Upgrade: websocket\r\n", "", 1), 400, "", "bad_handshake"},
		{"no connection header", strings.Replace(upgradeReq(""), "Connection: Upgrade\r\n", "", 1), 400, "", "bad_handshake"},
		{"no key", strings.Replace(upgradeReq(""), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1), 400, "", "bad_handshake"},
		{"key not base64 of 16 bytes", strings.Replace(upgradeReq(""), "dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!", 1), 400, "", "bad_handshake"},
		{"version 8", strings.Replace(upgradeReq(""), "Version: 13", "Version: 8", 1), 426, "Sec-Websocket-Version: 13", "bad_handshake"},
		{"http/1.0", strings.Replace(upgradeReq(""), "HTTP/1.1", "HTTP/1.0", 1), 505, "", "bad_handshake"},
		{"headers too large", upgradeReq("X-Pad: " + strings.Repeat("a", 3000) + "\r\n"), 431, "", "request_too_large"},
		{"foreign origin", upgradeReq("Origin: https://evil.example.com\r\n"), 403, "", "origin_not_allowed"},
		{"plain GET", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", "bad_handshake"},
		{"plain GET elsewhere", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404, "", "not_found"},
		{"upgrade on another path", strings.Replace(upgradeReq(""), "GET /ws", "GET /socket", 1), 404, "", "not_found"},
		{"upgrade on a longer path", strings.Replace(upgradeReq(""), "GET /ws", "GET /ws/x", 1), 404, "", "not_found"},
		{"upgrade in absolute form elsewhere", strings.Replace(upgradeReq(""), "GET /ws", "GET http://x/socket", 1), 404, "", "not_found"},
		{"upgrade on the path with a query", strings.Replace(upgradeReq(""), "GET /ws", "GET /wsx?a=/ws", 1), 404, "", "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := handshakeStatus(t, srv, tc.req)
			if status != tc.status {
				t.Fatalf("status %d, want %d (body %s)", status, tc.status, body)
			}
			var e struct{ Code, Reason string }
			if h.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &e) != nil || e.Code != tc.code || e.Reason == "" {
				t.Fatalf("body %q (%s), want JSON with code %q and a reason", body, h.Get("Content-Type"), tc.code)
			}
			if tc.header != "" {
				k, v, _ := strings.Cut(tc.header, ": ")
				if h.Get(k) != v {
					t.Fatalf("header %s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}
	// The allowed origin, and no Origin at all (not a browser), connect.
	for _, h := range []http.Header{{"Origin": {"https://app.example.com"}}, nil} {
		ws := dial(t, wsURL(srv), h)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "o")})
		readType(t, ws, protocol.TypeWelcome)
	}
}

func TestMaxConnections(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxConnections = 3 })
	for i := 0; i < 3; i++ {
		connect(t, srv, fmt.Sprintf("m%d", i))
	}
	status, h, body := handshakeStatus(t, srv, upgradeReq(""))
	if status != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "node_full") {
		t.Fatalf("4th connection: %d Retry-After=%q %s, want 503 node_full with Retry-After", status, h.Get("Retry-After"), body)
	}
}

// Connections upgraded but not yet welcomed count against
// --max-pending-connects; over it an upgrade is refused at once with 503
// overloaded, and a welcome makes room again.
func TestShedPendingConnects(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.MaxPendingConnects = 2
		o.AuthTimeout = 30 * time.Second
	})
	waiting := []*wstest.Conn{dial(t, wsURL(srv), nil), dial(t, wsURL(srv), nil)} // upgraded, no auth frame yet
	checkFor(t, 5*time.Second, func() error {
		if v := metricValue(t, srv, "wsfleet_gateway_pending_connects"); v != 2 {
			return errorf("pending_connects %v, want 2", v)
		}
		return nil
	})
	status, h, body := handshakeStatus(t, srv, upgradeReq(""))
	var e struct{ Code, Reason string }
	if status != 503 || h.Get("Retry-After") == "" || json.Unmarshal([]byte(body), &e) != nil || e.Code != "overloaded" || !strings.Contains(e.Reason, "pending") {
		t.Fatalf("third upgrade: %d Retry-After=%q %s, want 503 overloaded (pending) with Retry-After", status, h.Get("Retry-After"), body)
	}
	if v := metricValue(t, srv, `wsfleet_gateway_connections_shed_total{reason="pending"}`); v != 1 {
		t.Fatalf(`connections_shed_total{reason="pending"} = %v, want 1`, v)
	}
	// One of the two is welcomed: there is room for one more.
	send(t, waiting[0], map[string]any{"type": "auth", "token": token(t, "first")})
	readType(t, waiting[0], protocol.TypeWelcome)
	connect(t, srv, "third")
	if v := metricValue(t, srv, "wsfleet_gateway_welcomes_unconfirmed_total"); v != 0 {
		t.Fatalf("welcomes_unconfirmed_total = %v, want 0", v)
	}
}

func TestMaxConnectRate(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxConnectRate = 5 })
	refused := 0
	for i := 0; i < 20; i++ {
		status, h, body := handshakeStatus(t, srv, upgradeReq(""))
		switch status {
		case 101:
		case 503:
			if h.Get("Retry-After") != "1" || !strings.Contains(body, "connect_rate_limited") {
				t.Fatalf("503 without Retry-After or code: %v %s", h, body)
			}
			refused++
		default:
			t.Fatalf("status %d", status)
		}
	}
	// A burst of 5 is allowed, and about 5 more per second.
	if refused < 10 {
		t.Fatalf("%d of 20 rapid upgrades refused, want most of those past the burst of 5", refused)
	}
}

func TestDeviceLimit(t *testing.T) {
	t.Run("close oldest", func(t *testing.T) {
		srv := startGateway(t, func(o *gateway.Options) { o.MaxDevicesPerUser = 2 })
		a, _ := connect(t, srv, "phone")
		b, _ := connect(t, srv, "phone")
		c, _ := connect(t, srv, "phone")
		expectClose(t, a, protocol.CloseDeviceLimit, "replaced")
		nc := natsConn(t, srv)
		publish(t, nc, "phone", "x1", `1`)
		for _, ws := range []*wstest.Conn{b, c} {
			if m := readType(t, ws, protocol.TypeMessage); m["id"] != "x1" {
				t.Fatalf("remaining device got %v", m)
			}
		}
	})
	t.Run("reject newest", func(t *testing.T) {
		srv := startGateway(t, func(o *gateway.Options) { o.MaxDevicesPerUser = 1; o.DevicePolicy = "reject-newest" })
		a, _ := connect(t, srv, "tablet")
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "tablet")})
		expectClose(t, ws, protocol.CloseDeviceLimit, "limit reached")
		send(t, a, map[string]string{"type": "ping"})
		readType(t, a, protocol.TypePong)
	})
}

func TestClientRateLimit(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxClientMsgsPerSec = 5; o.MaxClientMsgsBurst = 5 })
	ws, _ := connect(t, srv, "chatty")
	// The auth frame used one token: 4 pings pass, the 5th is refused.
	for i := 0; i < 4; i++ {
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
	}
	send(t, ws, map[string]string{"type": "ping"})
	if e := readType(t, ws, protocol.TypeError); e["code"] != protocol.ErrCodeRateLimited {
		t.Fatalf("got %v, want a rate_limited error", e)
	}
	// Going on past another burst closes the connection.
	for i := 0; i < 10; i++ {
		ws.WriteJSON(map[string]string{"type": "ping"})
	}
	expectClose(t, ws, protocol.CloseRateLimited, "rate")
}

// Token expiry follows the node's clock (a fake one here, moved forward
// instead of slept through): a connection is closed 4401 at its token's
// exp unless the client sent a fresh token first.
func TestTokenExpiryAndRefresh(t *testing.T) {
	// A node on a clock of its own: tokens are verified against the real
	// time, their expiry on an open connection against the node's clock.
	node := func(t *testing.T) (*gateway.Server, *fakeClock) {
		clk := newFakeClock()
		srv := startGateway(t, func(o *gateway.Options) {
			o.Clock = clk
			o.JWT.Leeway = 0
			o.Heartbeat = time.Hour // a ping after each jump shows the node saw it
			o.IdleTimeout = 1000 * time.Hour
		})
		return srv, clk
	}
	mint := func(sub string, ttl time.Duration) string {
		return mintToken(t, jwtmint.Claims{Subject: sub, TTL: ttl})
	}
	t.Run("closed at exp", func(t *testing.T) {
		srv, clk := node(t)
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": mint("exp1", 2*time.Hour)})
		readType(t, ws, protocol.TypeWelcome)
		clk.Add(time.Hour + time.Minute)
		readPing(t, ws) // before exp: pinged, not closed
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
		clk.Add(time.Hour)
		expectClose(t, ws, protocol.CloseUnauthorized, "token expired")
	})
	t.Run("refresh moves exp", func(t *testing.T) {
		srv, clk := node(t)
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": mint("exp2", time.Hour)})
		readType(t, ws, protocol.TypeWelcome)
		send(t, ws, map[string]any{"type": "auth", "token": mint("exp2", 3*time.Hour)})
		r := readType(t, ws, protocol.TypeRefreshed)
		if exp, _ := r["exp"].(float64); int64(exp) < time.Now().Add(170*time.Minute).Unix() {
			t.Fatalf("refreshed %v", r)
		}
		// Past the first token's exp: still served.
		clk.Add(2 * time.Hour)
		readPing(t, ws)
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
		// Past the fresh token's: closed.
		clk.Add(time.Hour + time.Minute)
		expectClose(t, ws, protocol.CloseUnauthorized, "token expired")
	})
	srv, _ := node(t)
	t.Run("refresh for another user", func(t *testing.T) {
		ws, _ := connect(t, srv, "exp3")
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "someone-else")})
		expectClose(t, ws, protocol.CloseUnauthorized, "another user")
	})
	t.Run("invalid refresh", func(t *testing.T) {
		ws, _ := connect(t, srv, "exp4")
		send(t, ws, map[string]any{"type": "auth", "token": "garbage"})
		expectClose(t, ws, protocol.CloseUnauthorized, "malformed")
	})
}

// A 60-day token on a node that ticks every millisecond. The timing wheel
// holds deadlines at most 2^30 ticks (12.4 days here) ahead; the expiry
// beyond that is re-armed against the clock when that deadline comes, so
// the connection lives exactly as long as its token.
func TestTokenExpiryExactForLongLifetimes(t *testing.T) {
	clk := newFakeClock()
	srv := startGateway(t, func(o *gateway.Options) {
		o.Clock = clk
		o.JWT.Leeway = 0
		o.HandshakeTimeout = 20 * time.Millisecond // the tick is the shortest timeout / 20: 1 ms
		o.Heartbeat = 24 * time.Hour
		o.IdleTimeout = 12 * 24 * time.Hour // under the wheel's 12.4 days at 1 ms
	})
	const day = 24 * time.Hour
	ws := dial(t, wsURL(srv), nil)
	send(t, ws, map[string]any{"type": "auth", "token": mintToken(t, jwtmint.Claims{Subject: "long", TTL: 60 * day})})
	readType(t, ws, protocol.TypeWelcome)
	at := time.Duration(0)
	for _, next := range []time.Duration{11 * day, 22 * day, 33 * day, 44 * day, 55 * day, 59*day + 23*time.Hour} {
		clk.Add(next - at)
		at = next
		readPing(t, ws) // the node saw the jump, and the token is still good
		// Answered, and the answer read by the node (a ping's pong comes
		// after it) before the clock moves again.
		send(t, ws, map[string]string{"type": "pong"})
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
	}
	clk.Add(day + time.Minute - 23*time.Hour) // a minute past exp
	expectClose(t, ws, protocol.CloseUnauthorized, "token expired")
}

func TestShutdownWithHalfOpenHandshake(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.DrainTimeout = 500 * time.Millisecond })
	var clients []*wstest.Conn
	for i := 0; i < 5; i++ {
		ws, _ := connect(t, srv, fmt.Sprintf("d%d", i))
		clients = append(clients, ws)
	}
	raw := rawDial(t, srv) // connected, never sends a byte: the last in its loop's list
	checkFor(t, 5*time.Second, func() error {
		if n := metricValue(t, srv, "wsfleet_gateway_connections"); n != 6 {
			return errorf("%v connections", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ws := range clients {
		expectClose(t, ws, protocol.CloseServiceRestart, "draining")
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the half-open socket is still open (read %d bytes)", n)
	}
}

// Before authentication a client cannot make the node hold a large
// message: a frame declaring more than an auth frame needs is refused from
// its header.
func TestPreAuthMessageBound(t *testing.T) {
	srv := startGateway(t, nil)
	c := rawDial(t, srv)
	io.WriteString(c, upgradeReq(""))
	br := bufioReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	// Header of a 60 KiB masked text frame; no payload follows.
	c.Write([]byte{0x81, 0xfe, 0xf0, 0x00, 1, 2, 3, 4})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := wsReadHeader(br)
	if err != nil {
		t.Fatalf("no close frame: %v", err)
	}
	p := make([]byte, h.Length)
	io.ReadFull(br, p)
	if h.OpCode != 0x8 || len(p) < 2 || int(p[0])<<8|int(p[1]) != int(protocol.CloseMessageTooBig) {
		t.Fatalf("got opcode %v payload %q, want close 1009", h.OpCode, p)
	}
}

func TestSubprotocol(t *testing.T) {
	srv := startGateway(t, nil)
	cases := []struct {
		name    string
		offered []string
		want    string
	}{
		{"offered", []string{"other", gateway.Subprotocol}, gateway.Subprotocol},
		{"not offered", []string{"chat"}, ""},
		{"none", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := wstest.Dialer{Subprotocols: tc.offered}
			ws, resp, err := d.Dial(wsURL(srv), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tc.want {
				t.Fatalf("selected %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUpgradePaths: the gateway upgrades /ws, in origin form or in
// absolute form, with or without a query.
func TestUpgradePaths(t *testing.T) {
	srv := startGateway(t, nil)
	for _, target := range []string{"/ws", "/ws?x=1", "http://x/ws", "HTTP://x:8080/ws?y=2"} {
		t.Run(target, func(t *testing.T) {
			status, _, body := handshakeStatus(t, srv, strings.Replace(upgradeReq(""), "GET /ws", "GET "+target, 1))
			if status != 101 {
				t.Fatalf("status %d, want 101 (body %s)", status, body)
			}
		})
	}
}

package wstest_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/wstest"
)

// peer is the server end of a connection, written and read frame by frame.
type peer struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// frame sends one unmasked frame.
func (p *peer) frame(op ws.OpCode, fin bool, payload []byte) {
	if err := ws.WriteFrame(p.nc, ws.NewFrame(op, fin, payload)); err != nil {
		p.t.Errorf("server write: %v", err)
	}
}

func (p *peer) text(s string) { p.frame(ws.OpText, true, []byte(s)) }

// header sends a frame header as given, then payload.
func (p *peer) header(h ws.Header, payload []byte) {
	h.Length = int64(len(payload))
	if err := ws.WriteHeader(p.nc, h); err != nil {
		p.t.Errorf("server write: %v", err)
	}
	p.nc.Write(payload)
}

// read reads one frame of the client, which must be masked, and unmasks
// it.
func (p *peer) read() (ws.OpCode, []byte, error) {
	p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(p.br)
	if err != nil {
		return 0, nil, err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return 0, nil, err
	}
	if !h.Masked {
		p.t.Errorf("client frame %v is not masked", h.OpCode)
	}
	ws.Cipher(payload, h.Mask, 0)
	if !h.Fin {
		p.t.Errorf("client frame %v is not final", h.OpCode)
	}
	return h.OpCode, payload, nil
}

// expect reads one client frame and checks it.
func (p *peer) expect(op ws.OpCode, payload []byte) {
	gotOp, got, err := p.read()
	if err != nil {
		p.t.Errorf("server read: %v, want a %v frame", err, op)
		return
	}
	if gotOp != op || !bytes.Equal(got, payload) {
		p.t.Errorf("client sent %v %q, want %v %q", gotOp, got, op, payload)
	}
}

// serve starts an HTTP server that upgrades every request with up and
// runs script on the connection, then waits for the client to go away. It
// returns the ws:// URL and a function that waits for the scripts to end
// (call it after closing the clients).
func serve(t *testing.T, up ws.HTTPUpgrader, script func(p *peer, r *http.Request)) (url string, wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1) // before the 101 reaches the client
		defer wg.Done()
		nc, rw, _, err := up.Upgrade(r, w)
		if err != nil {
			return // the upgrader has answered
		}
		defer nc.Close()
		p := &peer{t: t, nc: nc, br: rw.Reader}
		script(p, r)
		// Closing before the client has read everything could reset the
		// connection.
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, p.br)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", func() {
		t.Helper()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the server script did not end")
		}
	}
}

func dial(t *testing.T, url string, h http.Header) *wstest.Conn {
	t.Helper()
	c, resp, err := wstest.Dial(url, h)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type msg struct {
	typ  int
	data string
}

// frame is a frame the client must send.
type frame struct {
	op      ws.OpCode
	payload []byte
}

func closeBody(code int, text string) []byte { return wstest.FormatCloseMessage(code, text) }

func TestReadMessage(t *testing.T) {
	big := strings.Repeat("0123456789", 7000) // 70,000 bytes: a 64-bit length
	masked := ws.MaskFrame(ws.NewTextFrame([]byte("masked")))
	cases := []struct {
		name string
		send func(p *peer)
		msgs []msg // what ReadMessage returns, in order
		// How reading ends (nothing set: the client stops reading).
		close    *wstest.CloseError
		protocol bool
		eof      bool
		reply    []frame // what the client sends meanwhile, in order
	}{
		{name: "text", send: func(p *peer) { p.text("hello") }, msgs: []msg{{wstest.TextMessage, "hello"}}},
		{name: "binary", send: func(p *peer) { p.frame(ws.OpBinary, true, []byte{0, 1, 2}) }, msgs: []msg{{wstest.BinaryMessage, "\x00\x01\x02"}}},
		{name: "empty", send: func(p *peer) { p.text("") }, msgs: []msg{{wstest.TextMessage, ""}}},
		{name: "in order", send: func(p *peer) { p.text("1"); p.frame(ws.OpBinary, true, []byte("2")); p.text("3") },
			msgs: []msg{{wstest.TextMessage, "1"}, {wstest.BinaryMessage, "2"}, {wstest.TextMessage, "3"}}},
		{name: "64-bit length", send: func(p *peer) { p.text(big) }, msgs: []msg{{wstest.TextMessage, big}}},
		{name: "fragments joined", send: func(p *peer) {
			p.frame(ws.OpText, false, []byte("hel"))
			p.frame(ws.OpContinuation, false, []byte("lo, "))
			p.frame(ws.OpContinuation, false, nil)
			p.frame(ws.OpContinuation, true, []byte("world"))
			p.frame(ws.OpBinary, false, []byte{1})
			p.frame(ws.OpContinuation, true, []byte{2})
		}, msgs: []msg{{wstest.TextMessage, "hello, world"}, {wstest.BinaryMessage, "\x01\x02"}}},
		{name: "ping answered", send: func(p *peer) {
			p.frame(ws.OpPing, true, []byte("p1"))
			p.text("after")
		}, msgs: []msg{{wstest.TextMessage, "after"}}, reply: []frame{{ws.OpPong, []byte("p1")}}},
		{name: "ping between fragments", send: func(p *peer) {
			p.frame(ws.OpText, false, []byte("a"))
			p.frame(ws.OpPing, true, []byte("p2"))
			p.frame(ws.OpPong, true, []byte("ignored"))
			p.frame(ws.OpContinuation, true, []byte("b"))
		}, msgs: []msg{{wstest.TextMessage, "ab"}}, reply: []frame{{ws.OpPong, []byte("p2")}}},
		{name: "close with code and text", send: func(p *peer) {
			p.text("last")
			p.frame(ws.OpClose, true, closeBody(4001, "bye"))
		}, msgs: []msg{{wstest.TextMessage, "last"}}, close: &wstest.CloseError{Code: 4001, Text: "bye"},
			reply: []frame{{ws.OpClose, closeBody(4001, "")}}},
		{name: "close without payload", send: func(p *peer) { p.frame(ws.OpClose, true, nil) },
			close: &wstest.CloseError{Code: wstest.CloseNoStatusReceived}, reply: []frame{{ws.OpClose, []byte{}}}},
		{name: "close code reported as sent", send: func(p *peer) { p.frame(ws.OpClose, true, closeBody(1014, "x")) },
			close: &wstest.CloseError{Code: 1014, Text: "x"}, reply: []frame{{ws.OpClose, closeBody(1014, "")}}},
		{name: "close between fragments", send: func(p *peer) {
			p.frame(ws.OpText, false, []byte("a"))
			p.frame(ws.OpClose, true, closeBody(1001, ""))
		}, close: &wstest.CloseError{Code: 1001}, reply: []frame{{ws.OpClose, closeBody(1001, "")}}},
		{name: "end without close", send: func(p *peer) { p.text("x"); p.nc.Close() },
			msgs: []msg{{wstest.TextMessage, "x"}}, eof: true},
		{name: "end inside a frame", send: func(p *peer) { p.nc.Write([]byte{0x81, 5, 'a', 'b'}); p.nc.Close() }, eof: true},
		{name: "masked frame", send: func(p *peer) { ws.WriteFrame(p.nc, masked) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "reserved bit", send: func(p *peer) {
			p.header(ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText}, []byte("x"))
		}, protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "reserved opcode", send: func(p *peer) { p.header(ws.Header{Fin: true, OpCode: 3}, nil) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "continuation first", send: func(p *peer) { p.frame(ws.OpContinuation, true, []byte("x")) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "new message inside a fragmented one", send: func(p *peer) {
			p.frame(ws.OpText, false, []byte("a"))
			p.frame(ws.OpText, true, []byte("b"))
		}, protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "fragmented ping", send: func(p *peer) { p.frame(ws.OpPing, false, []byte("x")) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "ping over 125 bytes", send: func(p *peer) { p.frame(ws.OpPing, true, bytes.Repeat([]byte("x"), 126)) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
		{name: "close payload of 1 byte", send: func(p *peer) { p.frame(ws.OpClose, true, []byte{3}) },
			protocol: true, reply: []frame{{ws.OpClose, closeBody(1002, "")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) {
				tc.send(p)
				for _, f := range tc.reply {
					p.expect(f.op, f.payload)
				}
			})
			c := dial(t, url, nil)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for _, m := range tc.msgs {
				typ, data, err := c.ReadMessage()
				if err != nil || typ != m.typ || string(data) != m.data {
					t.Fatalf("ReadMessage: %d %.40q %v, want %d %.40q", typ, data, err, m.typ, m.data)
				}
			}
			if tc.close != nil || tc.protocol || tc.eof {
				typ, data, err := c.ReadMessage()
				var ce *wstest.CloseError
				switch {
				case tc.close != nil:
					if !errors.As(err, &ce) || *ce != *tc.close {
						t.Fatalf("ReadMessage: %d %q %v, want %v", typ, data, err, tc.close)
					}
				case tc.protocol:
					if !errors.Is(err, wstest.ErrProtocol) {
						t.Fatalf("ReadMessage: %d %q %v, want a protocol error", typ, data, err)
					}
				case tc.eof:
					if !errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ce) {
						t.Fatalf("ReadMessage: %d %q %v, want io.ErrUnexpectedEOF", typ, data, err)
					}
				}
				if typ != -1 || data != nil {
					t.Errorf("ReadMessage returned %d %q with its error", typ, data)
				}
				if _, _, again := c.ReadMessage(); again != err {
					t.Errorf("read after the error: %v, want %v again", again, err)
				}
			}
			c.Close()
			wait()
		})
	}
}

func TestPongHandler(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) {
		p.frame(ws.OpPong, true, []byte("p1"))
		p.text("t")
		p.frame(ws.OpPong, true, []byte("stop"))
	})
	c := dial(t, url, nil)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []string
	stop := errors.New("stop")
	c.SetPongHandler(func(p string) error {
		got = append(got, p)
		if p == "stop" {
			return stop
		}
		return nil
	})
	if _, data, err := c.ReadMessage(); err != nil || string(data) != "t" {
		t.Fatalf("ReadMessage: %q %v", data, err)
	}
	if _, _, err := c.ReadMessage(); err != stop {
		t.Fatalf("ReadMessage: %v, want the pong handler's error", err)
	}
	if strings.Join(got, ",") != "p1,stop" {
		t.Fatalf("pong handler got %q", got)
	}
	c.Close()
	wait()
}

func TestDialRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"token expired"}`)
	}))
	defer srv.Close()
	c, resp, err := wstest.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err == nil {
		c.Close()
		t.Fatal("upgrade succeeded")
	}
	if !errors.Is(err, wstest.ErrBadHandshake) || c != nil {
		t.Fatalf("Dial: %v %v, want ErrBadHandshake", c, err)
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("response %v", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != `{"error":"token expired"}` {
		t.Fatalf("body %q", body)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cases := []struct {
		name string
		url  string
		h    http.Header
	}{
		{name: "connection refused", url: "ws://" + addr + "/ws"},
		{name: "not a WebSocket URL", url: "http://" + addr + "/ws"},
		{name: "relative URL", url: "/ws"},
		{name: "handshake header given", url: "ws://" + addr + "/ws", h: http.Header{"Sec-WebSocket-Key": {"x"}}},
		{name: "upgrade header given", url: "ws://" + addr + "/ws", h: http.Header{"Upgrade": {"websocket"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := wstest.Dial(tc.url, tc.h)
			if err == nil || c != nil || resp != nil || errors.Is(err, wstest.ErrBadHandshake) {
				t.Fatalf("Dial: %v %v %v, want an error alone", c, resp, err)
			}
		})
	}
}

func TestDialSendsRequest(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{
		Header: http.Header{"X-Served-By": {"test"}},
	}, func(p *peer, r *http.Request) {
		p.text(r.Host + " " + r.URL.RequestURI() + " " + r.Header.Get("Authorization") + " " + r.Header.Get("Origin"))
	})
	c := dial(t, url+"?token=abc", http.Header{
		"Authorization": {"Bearer xyz"},
		"Origin":        {"https://example.com"},
		"Host":          {"gateway.example:8080"},
	})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if want := "gateway.example:8080 /ws?token=abc Bearer xyz https://example.com"; string(data) != want {
		t.Fatalf("the server saw %q, want %q", data, want)
	}
	c.Close()
	wait()
}

func TestDialResponseHeaders(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{Header: http.Header{"X-Served-By": {"test"}}}, func(*peer, *http.Request) {})
	c, resp, err := wstest.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Served-By") != "test" ||
		resp.Header.Get("Upgrade") != "websocket" || resp.Body == nil {
		t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
	}
	c.Close()
	wait()
}

func TestSubprotocol(t *testing.T) {
	cases := []struct {
		name    string
		offered []string
		header  http.Header
		want    string
	}{
		{name: "offered", offered: []string{"other", "wsfleet.v1"}, want: "wsfleet.v1"},
		{name: "offered in the header", header: http.Header{"Sec-WebSocket-Protocol": {"other, wsfleet.v1"}}, want: "wsfleet.v1"},
		{name: "not offered", offered: []string{"chat"}},
		{name: "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, wait := serve(t, ws.HTTPUpgrader{Protocol: func(p string) bool { return p == "wsfleet.v1" }},
				func(*peer, *http.Request) {})
			d := &wstest.Dialer{Subprotocols: tc.offered, HandshakeTimeout: 5 * time.Second}
			c, resp, err := d.Dial(url, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subprotocol() != tc.want || resp.Header.Get("Sec-WebSocket-Protocol") != tc.want {
				t.Fatalf("selected %q (header %q), want %q", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Protocol"), tc.want)
			}
			c.Close()
			wait()
		})
	}
}

func TestNetDial(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) { p.text("x") })
	var dials atomic.Int32
	d := &wstest.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		dials.Add(1)
		return net.Dial(network, addr)
	}}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, data, err := c.ReadMessage(); err != nil || string(data) != "x" || dials.Load() != 1 {
		t.Fatalf("ReadMessage: %q %v after %d dials", data, err, dials.Load())
	}
	c.Close()
	wait()
}

// Frames that arrive with the 101 response, in the same read, are not lost.
func TestFramesWithTheResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		req, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			t.Error(err)
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
		ws.WriteFrame(&b, ws.NewTextFrame([]byte("first")))
		ws.WriteFrame(&b, ws.NewTextFrame([]byte("second")))
		nc.Write(b.Bytes())
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, nc)
	}()
	c := dial(t, "ws://"+ln.Addr().String()+"/", nil)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []string{"first", "second"} {
		if _, data, err := c.ReadMessage(); err != nil || string(data) != want {
			t.Fatalf("ReadMessage: %q %v, want %q", data, err, want)
		}
	}
}

func TestWrite(t *testing.T) {
	cases := []struct {
		name  string
		write func(c *wstest.Conn) error
		want  []frame // what the server receives
	}{
		{name: "text", write: func(c *wstest.Conn) error { return c.WriteMessage(wstest.TextMessage, []byte("hi")) },
			want: []frame{{ws.OpText, []byte("hi")}}},
		{name: "binary", write: func(c *wstest.Conn) error { return c.WriteMessage(wstest.BinaryMessage, []byte{0, 255}) },
			want: []frame{{ws.OpBinary, []byte{0, 255}}}},
		{name: "large", write: func(c *wstest.Conn) error {
			return c.WriteMessage(wstest.BinaryMessage, bytes.Repeat([]byte{7}, 70000))
		}, want: []frame{{ws.OpBinary, bytes.Repeat([]byte{7}, 70000)}}},
		{name: "JSON", write: func(c *wstest.Conn) error { return c.WriteJSON(map[string]string{"type": "ping"}) },
			want: []frame{{ws.OpText, []byte(`{"type":"ping"}`)}}},
		{name: "ping", write: func(c *wstest.Conn) error {
			return c.WriteControl(wstest.PingMessage, []byte("p"), time.Now().Add(time.Second))
		}, want: []frame{{ws.OpPing, []byte("p")}}},
		{name: "pong as a message", write: func(c *wstest.Conn) error { return c.WriteMessage(wstest.PongMessage, nil) },
			want: []frame{{ws.OpPong, []byte{}}}},
		{name: "close", write: func(c *wstest.Conn) error {
			return c.WriteMessage(wstest.CloseMessage, wstest.FormatCloseMessage(1000, "bye"))
		}, want: []frame{{ws.OpClose, closeBody(1000, "bye")}}},
		{name: "nothing after a close", write: func(c *wstest.Conn) error {
			if err := c.WriteControl(wstest.CloseMessage, wstest.FormatCloseMessage(4000, ""), time.Time{}); err != nil {
				return err
			}
			if err := c.WriteMessage(wstest.TextMessage, []byte("late")); err != wstest.ErrCloseSent {
				return errors.New("text after the close: " + errorString(err))
			}
			if err := c.WriteControl(wstest.PingMessage, nil, time.Time{}); err != wstest.ErrCloseSent {
				return errors.New("ping after the close: " + errorString(err))
			}
			return nil
		}, want: []frame{{ws.OpClose, closeBody(4000, "")}}},
		{name: "refused", write: func(c *wstest.Conn) error {
			if c.WriteMessage(0, []byte("x")) == nil || c.WriteMessage(3, nil) == nil {
				return errors.New("message type 0 or 3 sent")
			}
			if c.WriteControl(wstest.TextMessage, nil, time.Time{}) == nil {
				return errors.New("a text frame sent as a control frame")
			}
			if c.WriteControl(wstest.PingMessage, make([]byte, 126), time.Time{}) == nil {
				return errors.New("a ping of 126 bytes sent")
			}
			if c.WriteJSON(func() {}) == nil {
				return errors.New("a func sent as JSON")
			}
			return c.WriteMessage(wstest.TextMessage, []byte("still usable"))
		}, want: []frame{{ws.OpText, []byte("still usable")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) {
				for _, f := range tc.want {
					p.expect(f.op, f.payload)
				}
			})
			c := dial(t, url, nil)
			if err := tc.write(c); err != nil {
				t.Fatal(err)
			}
			c.Close()
			wait()
		})
	}
}

func errorString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func TestReadDeadline(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{}, func(*peer, *http.Request) {})
	c := dial(t, url, nil)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, _, err := c.ReadMessage()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadMessage: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	if _, _, again := c.ReadMessage(); again != err {
		t.Fatalf("read after the timeout: %v, want %v again", again, err)
	}
	c.Close()
	wait()
}

func TestWriteDeadline(t *testing.T) {
	url, wait := serve(t, ws.HTTPUpgrader{}, func(*peer, *http.Request) {})
	c := dial(t, url, nil)
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	err := c.WriteMessage(wstest.TextMessage, []byte("x"))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("WriteMessage: %v, want a timeout", err)
	}
	c.SetWriteDeadline(time.Time{})
	if again := c.WriteMessage(wstest.TextMessage, []byte("x")); again != err {
		t.Fatalf("write after the timeout: %v, want %v again", again, err)
	}
	c.Close()
	wait()
}

// Close drops the connection without a close frame.
func TestCloseSendsNoFrame(t *testing.T) {
	got := make(chan error, 1)
	url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) {
		_, _, err := p.read()
		got <- err
	})
	c := dial(t, url, nil)
	c.Close()
	if err := <-got; err != io.EOF {
		t.Fatalf("the server read %v, want EOF", err)
	}
	wait()
}

// One goroutine reads while others write: the server echoes every message
// and pings in between.
func TestConcurrentReadAndWrite(t *testing.T) {
	const writers, each = 4, 50
	url, wait := serve(t, ws.HTTPUpgrader{}, func(p *peer, _ *http.Request) {
		pongs := 0
		for n := 0; n < writers*each; {
			op, payload, err := p.read()
			if err != nil {
				p.t.Errorf("server read after %d messages: %v", n, err)
				return
			}
			if op == ws.OpPong {
				pongs++
				continue
			}
			n++
			p.frame(ws.OpText, false, payload[:1])
			p.frame(ws.OpPing, true, []byte("p"))
			p.frame(ws.OpContinuation, true, payload[1:])
		}
		for pongs < writers*each {
			op, _, err := p.read()
			if err != nil || op != ws.OpPong {
				p.t.Errorf("server read %v %v, want the pongs (%d of %d)", op, err, pongs, writers*each)
				return
			}
			pongs++
		}
		p.frame(ws.OpClose, true, closeBody(1000, "done"))
		p.expect(ws.OpClose, closeBody(1000, ""))
	})
	c := dial(t, url, nil)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := c.WriteMessage(wstest.TextMessage, []byte{'a' + byte(w), byte(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := map[string]bool{}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			if !wstest.IsCloseError(err, 1000) {
				t.Fatalf("ReadMessage after %d messages: %v", len(seen), err)
			}
			break
		}
		seen[string(data)] = true
	}
	wg.Wait()
	if len(seen) != writers*each {
		t.Fatalf("%d distinct messages echoed, want %d", len(seen), writers*each)
	}
	c.Close()
	wait()
}

func TestCloseErrors(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		codes   []int
		isClose bool
		text    string
	}{
		{name: "normal", err: &wstest.CloseError{Code: 1000, Text: "bye"}, codes: []int{1000}, isClose: true, text: "wstest: close 1000 (normal): bye"},
		{name: "any code", err: &wstest.CloseError{Code: 4408}, isClose: true, text: "wstest: close 4408"},
		{name: "one of", err: &wstest.CloseError{Code: 1012}, codes: []int{1001, 1012}, isClose: true, text: "wstest: close 1012 (service restart)"},
		{name: "other code", err: &wstest.CloseError{Code: 1011, Text: "x"}, codes: []int{1000}, text: "wstest: close 1011 (internal server error): x"},
		{name: "wrapped", err: wrap{&wstest.CloseError{Code: 1000}}, codes: []int{1000}, isClose: true, text: "wrapped: wstest: close 1000 (normal)"},
		{name: "not a close", err: io.ErrUnexpectedEOF, text: io.ErrUnexpectedEOF.Error()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := wstest.IsCloseError(tc.err, tc.codes...); got != tc.isClose {
				t.Errorf("IsCloseError(%v, %v) = %v", tc.err, tc.codes, got)
			}
			if tc.err.Error() != tc.text {
				t.Errorf("Error() = %q, want %q", tc.err.Error(), tc.text)
			}
		})
	}
}

type wrap struct{ err error }

func (w wrap) Error() string { return "wrapped: " + w.err.Error() }
func (w wrap) Unwrap() error { return w.err }

func TestFormatCloseMessage(t *testing.T) {
	cases := []struct {
		code int
		text string
		want []byte
	}{
		{code: 1000, want: []byte{0x03, 0xe8}},
		{code: 4001, text: "bye", want: []byte{0x0f, 0xa1, 'b', 'y', 'e'}},
		{code: wstest.CloseNoStatusReceived, text: "ignored", want: []byte{}},
	}
	for _, tc := range cases {
		got := wstest.FormatCloseMessage(tc.code, tc.text)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("FormatCloseMessage(%d, %q) = %x, want %x", tc.code, tc.text, got, tc.want)
		}
		if len(got) >= 2 && int(binary.BigEndian.Uint16(got)) != tc.code {
			t.Errorf("code %d encoded as %x", tc.code, got[:2])
		}
	}
}

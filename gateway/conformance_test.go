package gateway_test

// RFC 6455 conformance, organised like the Autobahn TestSuite's categories
// 1–7 and 9. Every case dials, upgrades and authenticates, then writes raw
// frame bytes (masked by hand, split across writes where the case says so)
// and checks, byte for byte, what the node sends back:
//
//   - a success case gets its replies in order, and the connection is still
//     open afterwards (a ping is answered, a close is echoed, the socket is
//     closed);
//   - a failure case gets its replies, then a close frame with the exact
//     status code, and nothing after it: the node's side reads EOF (or a
//     reset), and the node closes its socket within CloseTimeout plus 2s,
//     or at once when the client started the closing handshake.
//
// Case names start with the number of the Autobahn case they follow.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

const (
	// cfCloseTimeout is the nodes' CloseTimeout: how long a failed
	// connection may linger before the node closes its socket.
	cfCloseTimeout = 500 * time.Millisecond
	// cfGoneTimeout bounds the wait for the socket to be gone after the
	// close frame.
	cfGoneTimeout = cfCloseTimeout + 2*time.Second
	// cfPromptClose bounds the wait for the socket to be closed after the
	// node echoed a client's close: that needs no timer (RFC 6455 §7.1.1,
	// the server closes the TCP connection first once the closing handshake
	// is done), so well under cfCloseTimeout.
	cfPromptClose = cfCloseTimeout / 2
	// cfReplyTimeout bounds the wait for any one frame from the node.
	cfReplyTimeout = 10 * time.Second
	// cfPause separates writes that must reach the node as separate segments.
	cfPause = time.Millisecond
	// cfConcurrency bounds the cases of one test that run at once.
	cfConcurrency = 32
)

var (
	cfPingJSON = []byte(`{"type":"ping"}`)
	cfPongJSON = `{"type":"pong"}`
	cfGreek    = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // κόσμε
)

// cfCase is one conformance case: what the client writes once authenticated,
// the frames the node must answer with, in order, and how it must end.
type cfCase struct {
	name   string
	writes [][]byte      // each is one Write on the socket
	pause  time.Duration // between writes, so they arrive as separate segments
	want   []cfWant      // the node's frames, in order
	close  ws.StatusCode // the close code that must follow want; 0: the connection stays open
	// peerClose: the client sent a close frame (with close != 0), so the
	// closing handshake completes without a timer: the node must close
	// its socket at once.
	peerClose bool
	// published, when set, is the data a publish message of the case must
	// put on NATS, byte for byte: proof that the message was reassembled
	// and unmasked exactly, not only that it parsed.
	published []byte
}

// cfWant is a frame the node must send.
type cfWant struct {
	op     ws.OpCode
	p      string
	prefix bool // p need only start the payload
}

var (
	cfPong     = cfWant{op: ws.OpText, p: cfPongJSON}
	cfBadFrame = cfWant{op: ws.OpText, p: `{"type":"error","code":"bad_request"`, prefix: true}
)

func cfControlPong(p string) cfWant { return cfWant{op: ws.OpPong, p: p} }

// cfPongs is n text pongs.
func cfPongs(n int) []cfWant {
	out := make([]cfWant, n)
	for i := range out {
		out[i] = cfPong
	}
	return out
}

// cfPingMsg is a {"type":"ping"} message of exactly n bytes (n >= 15),
// padded with JSON whitespace; the node answers it with a pong.
func cfPingMsg(n int) []byte {
	if n < len(cfPingJSON) {
		panic("cfPingMsg: too short")
	}
	b := make([]byte, 0, n)
	b = append(b, cfPingJSON[:len(cfPingJSON)-1]...)
	const pad = " \t\r\n"
	for i := 0; len(b) < n-1; i++ {
		b = append(b, pad[i%len(pad)])
	}
	return append(b, '}')
}

// cfPublishMsg is a {"type":"publish","data":"…"} message of exactly n
// bytes and the data the node must publish for it: a JSON string of
// pseudo-random letters, so a lost, repeated or mis-unmasked byte shows.
func cfPublishMsg(n int) (msg, data []byte) {
	const head, tail = `{"type":"publish","data":"`, `"}`
	msg = make([]byte, 0, n)
	msg = append(msg, head...)
	x := uint32(n)
	for len(msg) < n-len(tail) {
		x = x*1664525 + 1013904223
		msg = append(msg, 'a'+byte(x>>24)%26)
	}
	msg = append(msg, tail...)
	return msg, msg[len(head)-1 : n-1]
}

// cfPingWith is a ping message carrying s in an extra field, which the node
// ignores: it answers with a pong when the message is valid UTF-8.
func cfPingWith(s string) []byte { return []byte(`{"type":"ping","t":"` + s + `"}`) }

var cfMaskSeq atomic.Uint32

// cfFrame builds a masked client frame; every frame gets its own mask.
func cfFrame(fin bool, rsv byte, op ws.OpCode, p []byte) []byte {
	m := cfMaskSeq.Add(1)*0x9e3779b9 | 0x01010101
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Length: int64(len(p)), Masked: true,
		Mask: [4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}}
	out := wsframe.Append(make([]byte, 0, wsframe.MaxHeaderSize+len(p)), h)
	n := len(out)
	out = append(out, p...)
	ws.Cipher(out[n:], h.Mask, 0)
	return out
}

func cfText(p []byte) []byte { return cfFrame(true, 0, ws.OpText, p) }

func cfPing(p string) []byte { return cfFrame(true, 0, ws.OpPing, []byte(p)) }

// cfClose is a close frame with a status code and a reason.
func cfClose(code uint16, reason string) []byte {
	return cfFrame(true, 0, ws.OpClose, append([]byte{byte(code >> 8), byte(code)}, reason...))
}

// cfHeaderOf is the header of a frame built by cfFrame: a case that must be
// decided from the header writes it without the payload.
func cfHeaderOf(frame []byte) []byte { return frame[:wsframe.Need(frame)] }

// cfFragments cuts p into a message of frames of at most size bytes: the
// first with opcode op, the others continuations, the last final.
func cfFragments(op ws.OpCode, p []byte, size int) [][]byte {
	var out [][]byte
	for first := true; first || len(p) > 0; first = false {
		n := min(size, len(p))
		o := ws.OpContinuation
		if first {
			o = op
		}
		out = append(out, cfFrame(n == len(p), 0, o, p[:n]))
		p = p[n:]
	}
	return out
}

// cfJoin concatenates frames into one write.
func cfJoin(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// cfOne is a single write of frames.
func cfOne(frames ...[]byte) [][]byte { return [][]byte{cfJoin(frames...)} }

// cfSplit cuts b into writes whose sizes cycle through sizes.
func cfSplit(b []byte, sizes ...int) [][]byte {
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// cfChop cuts a frame into writes: its header byte by byte, then its
// payload in chunks whose sizes cycle through sizes.
func cfChop(frame []byte, sizes ...int) [][]byte {
	hn := wsframe.Need(frame)
	out := cfSplit(frame[:hn], 1)
	return append(out, cfSplit(frame[hn:], sizes...)...)
}

// cfConn is an authenticated raw connection.
type cfConn struct {
	c  net.Conn
	br *bufio.Reader
}

var cfUsers atomic.Int64

// cfOptions are the options every conformance node runs with.
func cfOptions(maxMessage int) func(*gateway.Options) {
	return func(o *gateway.Options) {
		o.CloseTimeout = cfCloseTimeout
		o.MaxMessageBytes = maxMessage
	}
}

// cfDial connects and authenticates as a new user, whom it returns.
func cfDial(t *testing.T, srv *gateway.Server) (*cfConn, string) {
	t.Helper()
	user := fmt.Sprintf("conformance-%d", cfUsers.Add(1))
	rc := dialRaw(t, srv.Addr().String(), token(t, user))
	t.Cleanup(func() { rc.c.Close() })
	rc.waitWelcome(t)
	return &cfConn{c: rc.c, br: rc.br}, user
}

// cfSubscribeIn subscribes to what user's connections publish.
func cfSubscribeIn(t *testing.T, srv *gateway.Server, user string) *nats.Subscription {
	t.Helper()
	subjects, err := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := protocol.EncodeUserToken(user)
	if err != nil {
		t.Fatal(err)
	}
	nc := natsConn(t, srv)
	sub, err := nc.SubscribeSync(subjects.In(tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func (c *cfConn) send(t *testing.T, writes [][]byte, pause time.Duration) {
	t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for i, w := range writes {
		if i > 0 && pause > 0 {
			time.Sleep(pause) // separate TCP segments, not synchronisation
		}
		if _, err := c.c.Write(w); err != nil {
			t.Fatalf("write %d of %d: %v", i+1, len(writes), err)
		}
	}
}

// next reads one frame from the node. A server's frames are unmasked and
// carry no RSV bits (RFC 6455 §5.1, §5.2); this node never fragments.
func (c *cfConn) next(t *testing.T) (ws.Header, []byte) {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(cfReplyTimeout))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		t.Fatalf("reading the node's next frame: %v", err)
	}
	if h.Masked || h.Rsv != 0 || !h.Fin {
		t.Fatalf("node frame header %+v: must be unmasked, final, without RSV bits", h)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		t.Fatalf("reading a %d-byte payload: %v", h.Length, err)
	}
	return h, p
}

func cfDescribe(h ws.Header, p []byte) string {
	switch h.OpCode {
	case ws.OpClose:
		if len(p) < 2 {
			return fmt.Sprintf("close frame with payload %x", p)
		}
		code, reason := ws.ParseCloseFrameData(p)
		return fmt.Sprintf("close frame %d %q", code, reason)
	case ws.OpText:
		return fmt.Sprintf("text frame %q", cfShort(p))
	case ws.OpPong:
		return fmt.Sprintf("pong frame %q", cfShort(p))
	case ws.OpPing:
		return fmt.Sprintf("ping frame %q", cfShort(p))
	}
	return fmt.Sprintf("opcode %d frame %q", h.OpCode, cfShort(p))
}

func cfShort(p []byte) string {
	if len(p) > 200 {
		return string(p[:200]) + fmt.Sprintf("…(%d bytes)", len(p))
	}
	return string(p)
}

func (c *cfConn) expect(t *testing.T, i int, w cfWant) {
	t.Helper()
	h, p := c.next(t)
	ok := h.OpCode == w.op && (string(p) == w.p || w.prefix && strings.HasPrefix(string(p), w.p))
	if !ok {
		t.Fatalf("reply %d: got %s, want %s", i+1, cfDescribe(h, p), cfDescribe(ws.Header{OpCode: w.op}, []byte(w.p)))
	}
}

// expectClose reads the next frame, which must be a close frame with code.
func (c *cfConn) expectClose(t *testing.T, code ws.StatusCode) {
	t.Helper()
	h, p := c.next(t)
	if h.OpCode != ws.OpClose || len(p) < 2 {
		t.Fatalf("got %s, want a close frame with code %d", cfDescribe(h, p), code)
	}
	got, reason := ws.ParseCloseFrameData(p)
	if got != code {
		t.Fatalf("close code %d (%q), want %d", got, reason, code)
	}
	if !utf8.ValidString(reason) {
		t.Fatalf("close reason %q is not UTF-8", reason)
	}
}

// expectGone checks that nothing follows the node's close frame, that the
// node's side is shut (EOF, or a reset), and that the node closes its
// socket within within: writes then fail with a reset.
func (c *cfConn) expectGone(t *testing.T, within time.Duration) {
	t.Helper()
	start := time.Now()
	c.c.SetReadDeadline(start.Add(cfGoneTimeout))
	var b [256]byte
	n, err := c.br.Read(b[:])
	switch {
	case n > 0:
		t.Fatalf("the node sent %q after its close frame", b[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("after the close frame, read: %v; want EOF or a reset", err)
	}
	probe := cfPing("gone?")
	c.c.SetWriteDeadline(time.Now().Add(cfGoneTimeout))
	checkFor(t, within, func() error {
		if _, err := c.c.Write(probe); err != nil {
			return nil
		}
		return errorf("the node still holds the socket %s after its close frame", time.Since(start).Round(time.Millisecond))
	})
}

// expectAlive checks that the connection is open and well: a ping message
// is answered, and a close is echoed and ends it at once.
func (c *cfConn) expectAlive(t *testing.T) {
	t.Helper()
	c.send(t, cfOne(cfText(cfPingJSON)), 0)
	c.expect(t, 0, cfPong)
	c.send(t, cfOne(cfClose(1000, "done")), 0)
	c.expectClose(t, 1000)
	c.expectGone(t, cfPromptClose)
}

func cfRunCase(t *testing.T, srv *gateway.Server, tc cfCase) {
	c, user := cfDial(t, srv)
	var sub *nats.Subscription
	if tc.published != nil {
		sub = cfSubscribeIn(t, srv, user)
	}
	c.send(t, tc.writes, tc.pause)
	for i, w := range tc.want {
		c.expect(t, i, w)
	}
	if sub != nil {
		m, err := sub.NextMsg(cfReplyTimeout)
		if err != nil {
			t.Fatalf("nothing published: %v", err)
		}
		if !bytes.Equal(m.Data, tc.published) {
			t.Fatalf("published %d bytes that differ from the message's %d bytes of data", len(m.Data), len(tc.published))
		}
	}
	if tc.close == 0 {
		c.expectAlive(t)
		return
	}
	c.expectClose(t, tc.close)
	if tc.peerClose {
		c.expectGone(t, cfPromptClose)
	} else {
		c.expectGone(t, cfGoneTimeout)
	}
}

// cfRun runs each case as a named subtest on its own connection to srv.
// Cases run concurrently (t.Run from several goroutines, which the testing
// package allows), since a failure case waits for the node's close timeout.
func cfRun(t *testing.T, srv *gateway.Server, cases []cfCase) {
	t.Helper()
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
	}
	sem := make(chan struct{}, cfConcurrency)
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t.Run(tc.name, func(t *testing.T) { cfRunCase(t, srv, tc) })
		}()
	}
	wg.Wait()
}

// Category 1: framing. Text messages of every length class, in one write and
// split across many writes (the header byte by byte, the payload in odd
// chunks), so the node's incremental parser meets every boundary.
func TestConformanceFraming(t *testing.T) {
	const limit = 65536
	srv := startGateway(t, cfOptions(limit))
	var cases []cfCase
	var pipelined [][]byte
	var pipelinedWant []cfWant
	for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		msg, want := []byte{}, cfBadFrame // an empty message is not JSON: an error frame, the connection stays
		if n > 0 {
			msg, want = cfPingMsg(n), cfPong
		}
		frame := cfText(msg)
		pipelined, pipelinedWant = append(pipelined, frame), append(pipelinedWant, want)
		id := fmt.Sprintf("1.1.%d-text-%d-bytes", i+1, n)
		cases = append(cases,
			cfCase{name: id + "-one-write", writes: cfOne(frame), want: []cfWant{want}},
			cfCase{name: id + "-chopped-1-7-1023", writes: cfChop(frame, 1, 7, 1023), pause: cfPause, want: []cfWant{want}},
			cfCase{name: id + "-chopped-bytewise-head", writes: cfChop(frame, 1, 1, 1, 65536), pause: cfPause, want: []cfWant{want}},
		)
	}
	all := cfJoin(pipelined...)
	pub, pubData := cfPublishMsg(limit)
	over := cfText(cfPingMsg(limit + 1))
	unmasked := wsframe.AppendFrame(nil, ws.OpText, cfPingJSON)
	// A 64-bit length with its most significant bit set (RFC 6455 §5.2).
	msb := []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0x10, 1, 2, 3, 4}
	cases = append(cases,
		cfCase{name: "1.1.8-all-lengths-pipelined-one-write", writes: [][]byte{all}, want: pipelinedWant},
		cfCase{name: "1.1.9-all-lengths-pipelined-chunks-1-7-1023", writes: cfSplit(all, 1, 7, 1023), pause: cfPause, want: pipelinedWant},
		cfCase{name: "1.1.10-publish-65536-bytes-chopped-1-7-1023-data-intact", writes: cfChop(cfText(pub), 1, 7, 1023), pause: cfPause, published: pubData},
		cfCase{name: "1.1.10.1-publish-65536-bytes-one-write-data-intact", writes: cfOne(cfText(pub)), published: pubData},
		cfCase{name: "1.1.11-text-over-max-message-bytes-header-only", writes: cfOne(cfHeaderOf(over)), close: 1009},
		cfCase{name: "1.1.12-text-over-max-message-bytes-whole", writes: cfOne(over), close: 1009},
		cfCase{name: "1.2.1-binary-refused", writes: cfOne(cfFrame(true, 0, ws.OpBinary, []byte{0, 1, 2, 0xff})), close: 1003},
		cfCase{name: "1.2.2-binary-empty-refused", writes: cfOne(cfFrame(true, 0, ws.OpBinary, nil)), close: 1003},
		cfCase{name: "1.2.3-binary-65535-refused-header-only", writes: cfOne(cfHeaderOf(cfFrame(true, 0, ws.OpBinary, make([]byte, 65535)))), close: 1003},
		cfCase{name: "1.2.4-binary-after-valid-text", writes: cfOne(cfText(cfPingJSON), cfFrame(true, 0, ws.OpBinary, []byte("x")), cfText(cfPingJSON)), want: []cfWant{cfPong}, close: 1003},
		cfCase{name: "1.3.1-unmasked-text", writes: cfOne(unmasked), close: 1002},
		cfCase{name: "1.3.2-unmasked-text-after-valid", writes: cfOne(cfText(cfPingJSON), unmasked), want: []cfWant{cfPong}, close: 1002},
		cfCase{name: "1.3.3-unmasked-ping", writes: cfOne(wsframe.AppendFrame(nil, ws.OpPing, []byte("hi"))), close: 1002},
		cfCase{name: "1.3.4-64-bit-length-msb-set", writes: cfOne(msb), close: 1002},
		cfCase{name: "1.3.5-64-bit-length-msb-set-chopped", writes: cfSplit(msb, 1), pause: cfPause, close: 1002},
	)
	cfRun(t, srv, cases)
}

// Category 2: pings and pongs (RFC 6455 §5.5.2, §5.5.3).
func TestConformancePingPong(t *testing.T) {
	srv := startGateway(t, cfOptions(65536))
	binary := string([]byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff})
	p125 := make([]byte, 125)
	for i := range p125 {
		p125[i] = byte(0xff - 2*i) // not UTF-8: a control payload is not text
	}
	var ten, tenWrites [][]byte
	var tenWant []cfWant
	for i := range 10 {
		p := fmt.Sprintf("payload-%d", i)
		ten = append(ten, cfPing(p))
		tenWrites = append(tenWrites, cfChop(cfPing(p), 1)...)
		tenWant = append(tenWant, cfControlPong(p))
	}
	interleaved := [][]byte{
		cfFrame(false, 0, ws.OpText, []byte(`{"type":`)),
		cfPing("between"),
		cfFrame(true, 0, ws.OpContinuation, []byte(`"ping"}`)),
	}
	cases := []cfCase{
		{name: "2.1-ping-empty", writes: cfOne(cfPing("")), want: []cfWant{cfControlPong("")}},
		{name: "2.2-ping-text-payload", writes: cfOne(cfPing("Hello, world!")), want: []cfWant{cfControlPong("Hello, world!")}},
		{name: "2.3-ping-binary-payload", writes: cfOne(cfPing(binary)), want: []cfWant{cfControlPong(binary)}},
		{name: "2.4-ping-125-bytes", writes: cfOne(cfPing(string(p125))), want: []cfWant{cfControlPong(string(p125))}},
		{name: "2.5-ping-126-bytes", writes: cfOne(cfFrame(true, 0, ws.OpPing, make([]byte, 126))), close: 1002},
		{name: "2.5.1-ping-126-bytes-header-only", writes: cfOne(cfHeaderOf(cfFrame(true, 0, ws.OpPing, make([]byte, 126)))), close: 1002},
		{name: "2.6-ping-125-bytes-chopped-bytewise", writes: cfChop(cfPing(string(p125)), 1), pause: cfPause, want: []cfWant{cfControlPong(string(p125))}},
		{name: "2.7-unsolicited-pong-empty", writes: cfOne(cfFrame(true, 0, ws.OpPong, nil))},
		{name: "2.8-unsolicited-pong-payload", writes: cfOne(cfFrame(true, 0, ws.OpPong, []byte("unsolicited pong payload")))},
		{name: "2.8.1-pong-126-bytes", writes: cfOne(cfFrame(true, 0, ws.OpPong, make([]byte, 126))), close: 1002},
		{name: "2.9-unsolicited-pong-then-ping", writes: cfOne(cfFrame(true, 0, ws.OpPong, []byte("unsolicited")), cfPing("solicited")), want: []cfWant{cfControlPong("solicited")}},
		{name: "2.10-ten-pings-one-write", writes: cfOne(ten...), want: tenWant},
		{name: "2.11-ten-pings-chopped-bytewise", writes: tenWrites, pause: cfPause, want: tenWant},
		{name: "2.12-ping-fragmented", writes: cfOne(cfFrame(false, 0, ws.OpPing, []byte("frag")), cfFrame(true, 0, ws.OpContinuation, []byte("ment"))), close: 1002},
		{name: "2.13-ping-between-text-fragments-one-write", writes: cfOne(interleaved...), want: []cfWant{cfControlPong("between"), cfPong}},
		{name: "2.14-ping-between-text-fragments-separate-writes", writes: interleaved, pause: cfPause, want: []cfWant{cfControlPong("between"), cfPong}},
		{name: "2.15-ping-between-text-fragments-chopped", writes: cfSplit(cfJoin(interleaved...), 1), pause: cfPause, want: []cfWant{cfControlPong("between"), cfPong}},
		{name: "2.16-ping-after-text-message", writes: cfOne(cfText(cfPingJSON), cfPing("after")), want: []cfWant{cfPong, cfControlPong("after")}},
	}
	cfRun(t, srv, cases)
}

// Category 3: reserved bits (RFC 6455 §5.2: no extension is negotiated, so
// a non-zero RSV bit fails the connection).
func TestConformanceReservedBits(t *testing.T) {
	srv := startGateway(t, cfOptions(65536))
	valid := cfText(cfPingJSON)
	cases := []cfCase{
		{name: "3.1-text-rsv1", writes: cfOne(cfFrame(true, 4, ws.OpText, cfPingJSON)), close: 1002},
		{name: "3.2-text-rsv2-after-valid-then-ping", writes: cfOne(valid, cfFrame(true, 2, ws.OpText, cfPingJSON), cfPing("x")), want: []cfWant{cfPong}, close: 1002},
		{name: "3.3-text-rsv3-after-valid-separate-writes", writes: [][]byte{valid, cfFrame(true, 1, ws.OpText, cfPingJSON), cfPing("x")}, pause: cfPause, want: []cfWant{cfPong}, close: 1002},
		{name: "3.4-text-rsv-1-3-after-valid-chopped", writes: cfSplit(cfJoin(valid, cfFrame(true, 5, ws.OpText, cfPingJSON), cfPing("x")), 1), pause: cfPause, want: []cfWant{cfPong}, close: 1002},
		{name: "3.5-binary-rsv-1-3", writes: cfOne(cfFrame(true, 5, ws.OpBinary, []byte{1, 2, 3})), close: 1002},
		{name: "3.6-ping-rsv-1-2", writes: cfOne(cfFrame(true, 6, ws.OpPing, []byte("rsv"))), close: 1002},
		{name: "3.6.1-ping-rsv1-after-valid", writes: cfOne(valid, cfFrame(true, 4, ws.OpPing, []byte("rsv"))), want: []cfWant{cfPong}, close: 1002},
		{name: "3.6.2-ping-rsv3-after-valid-ping", writes: cfOne(cfPing("ok"), cfFrame(true, 1, ws.OpPing, []byte("rsv"))), want: []cfWant{cfControlPong("ok")}, close: 1002},
		{name: "3.7-close-rsv-all", writes: cfOne(cfFrame(true, 7, ws.OpClose, []byte{0x03, 0xe8})), close: 1002},
		{name: "3.8-continuation-rsv2", writes: cfOne(cfFrame(false, 0, ws.OpText, []byte(`{"type":`)), cfFrame(true, 2, ws.OpContinuation, []byte(`"ping"}`))), close: 1002},
		{name: "3.9-pong-rsv1", writes: cfOne(cfFrame(true, 4, ws.OpPong, nil)), close: 1002},
		{name: "3.10-text-rsv1-header-only", writes: cfOne(cfHeaderOf(cfFrame(true, 4, ws.OpText, make([]byte, 4000)))), close: 1002},
	}
	cfRun(t, srv, cases)
}

// Category 4: reserved opcodes (RFC 6455 §5.2).
func TestConformanceOpcodes(t *testing.T) {
	srv := startGateway(t, cfOptions(65536))
	valid := cfText(cfPingJSON)
	var cases []cfCase
	for i, op := range []ws.OpCode{3, 4, 5, 6, 7} {
		cases = append(cases, cfReservedOpcodeCases(fmt.Sprintf("4.1.%d-opcode-%d", i+1, op), op, valid)...)
	}
	for i, op := range []ws.OpCode{0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, cfReservedOpcodeCases(fmt.Sprintf("4.2.%d-opcode-%#x", i+1, op), op, valid)...)
	}
	cases = append(cases,
		cfCase{name: "4.3.1-opcode-3-long-header-only", writes: cfOne(cfHeaderOf(cfFrame(true, 0, 3, make([]byte, 65535)))), close: 1002},
		cfCase{name: "4.3.2-opcode-0xb-in-fragmented-message", writes: cfOne(cfFrame(false, 0, ws.OpText, []byte(`{"type":`)), cfFrame(true, 0, 0xb, nil)), close: 1002},
	)
	cfRun(t, srv, cases)
}

func cfReservedOpcodeCases(id string, op ws.OpCode, valid []byte) []cfCase {
	return []cfCase{
		{name: id + "-empty", writes: cfOne(cfFrame(true, 0, op, nil)), close: 1002},
		{name: id + "-payload", writes: cfOne(cfFrame(true, 0, op, []byte("reserved opcode"))), close: 1002},
		{name: id + "-after-valid-then-ping", writes: cfOne(valid, cfFrame(true, 0, op, []byte("reserved")), cfPing("x")), want: []cfWant{cfPong}, close: 1002},
		{name: id + "-after-valid-chopped", writes: cfSplit(cfJoin(valid, cfFrame(true, 0, op, []byte("reserved")), cfPing("x")), 1), pause: cfPause, want: []cfWant{cfPong}, close: 1002},
	}
}

// Category 5: fragmentation (RFC 6455 §5.4).
func TestConformanceFragmentation(t *testing.T) {
	const limit = 65536
	srv := startGateway(t, cfOptions(limit))
	two := cfFragments(ws.OpText, cfPingJSON, 8)
	bytewise := cfFragments(ws.OpText, cfPingJSON, 1)
	withPing := [][]byte{two[0], cfPing("in between"), two[1]}
	// Many fragments, empty ones among them, with pings and pongs between.
	var many [][]byte
	var manyWant []cfWant
	for i, f := range cfFragments(ws.OpText, cfPingMsg(200), 9) {
		if i%3 == 1 {
			many = append(many, cfPing(fmt.Sprint(i)))
			manyWant = append(manyWant, cfControlPong(fmt.Sprint(i)))
		}
		if i%4 == 1 {
			many = append(many, cfFrame(true, 0, ws.OpPong, []byte("unsolicited")))
		}
		if i%5 == 2 {
			many = append(many, cfFrame(false, 0, ws.OpContinuation, nil))
		}
		many = append(many, f)
	}
	manyWant = append(manyWant, cfPong)
	emptyEnds := [][]byte{
		cfFrame(false, 0, ws.OpText, nil),
		cfFrame(false, 0, ws.OpContinuation, cfPingJSON),
		cfFrame(false, 0, ws.OpContinuation, nil),
		cfFrame(true, 0, ws.OpContinuation, nil),
	}
	// Four 16 KiB fragments fill the limit exactly; a fifth crosses it.
	atLimit := cfFragments(ws.OpText, cfPingMsg(limit), limit/4)
	fifth := cfFrame(true, 0, ws.OpContinuation, []byte(" "))
	open := make([][]byte, 4)
	for i := range open {
		open[i] = cfFrame(false, 0, cfOpOf(i), make([]byte, limit/4))
	}
	big := cfFrame(false, 0, ws.OpText, cfPingMsg(40000))
	crossing := cfFrame(true, 0, ws.OpContinuation, bytes.Repeat([]byte(" "), 30000))
	pub, pubData := cfPublishMsg(3000)
	var pubFrags [][]byte
	var pubWant []cfWant
	for i, f := range cfFragments(ws.OpText, pub, 97) {
		if i%7 == 3 {
			pubFrags = append(pubFrags, cfPing(fmt.Sprint(i)))
			pubWant = append(pubWant, cfControlPong(fmt.Sprint(i)))
		}
		pubFrags = append(pubFrags, f)
	}
	cases := []cfCase{
		{name: "5.1-ping-in-2-fragments", writes: cfOne(cfFrame(false, 0, ws.OpPing, []byte("frag")), cfFrame(true, 0, ws.OpContinuation, []byte("ment"))), close: 1002},
		{name: "5.2-pong-in-2-fragments", writes: cfOne(cfFrame(false, 0, ws.OpPong, []byte("frag")), cfFrame(true, 0, ws.OpContinuation, []byte("ment"))), close: 1002},
		{name: "5.3-text-in-2-fragments-one-write", writes: cfOne(two...), want: []cfWant{cfPong}},
		{name: "5.4-text-in-2-fragments-separate-writes", writes: two, pause: cfPause, want: []cfWant{cfPong}},
		{name: "5.5-text-in-1-byte-fragments-separate-writes", writes: bytewise, pause: cfPause, want: []cfWant{cfPong}},
		{name: "5.5.1-text-in-1-byte-fragments-one-write", writes: cfOne(bytewise...), want: []cfWant{cfPong}},
		{name: "5.6-text-fragments-ping-between-one-write", writes: cfOne(withPing...), want: []cfWant{cfControlPong("in between"), cfPong}},
		{name: "5.7-text-fragments-ping-between-separate-writes", writes: withPing, pause: cfPause, want: []cfWant{cfControlPong("in between"), cfPong}},
		{name: "5.8-text-fragments-ping-between-chopped", writes: cfSplit(cfJoin(withPing...), 1), pause: cfPause, want: []cfWant{cfControlPong("in between"), cfPong}},
		{name: "5.9-continuation-final-without-start", writes: cfOne(cfFrame(true, 0, ws.OpContinuation, cfPingJSON), cfText(cfPingJSON)), close: 1002},
		{name: "5.10-continuation-final-without-start-separate-writes", writes: [][]byte{cfFrame(true, 0, ws.OpContinuation, cfPingJSON), cfText(cfPingJSON)}, pause: cfPause, close: 1002},
		{name: "5.11-continuation-final-without-start-chopped", writes: cfChop(cfFrame(true, 0, ws.OpContinuation, cfPingJSON), 1), pause: cfPause, close: 1002},
		{name: "5.12-continuation-nonfinal-without-start", writes: cfOne(cfFrame(false, 0, ws.OpContinuation, cfPingJSON), cfText(cfPingJSON)), close: 1002},
		{name: "5.13-continuation-nonfinal-without-start-chopped", writes: cfSplit(cfJoin(cfFrame(false, 0, ws.OpContinuation, cfPingJSON), cfText(cfPingJSON)), 1), pause: cfPause, close: 1002},
		{name: "5.14-continuation-after-finished-message", writes: cfOne(two[0], two[1], cfFrame(false, 0, ws.OpContinuation, []byte("x")), cfFrame(true, 0, ws.OpContinuation, []byte("y"))), want: []cfWant{cfPong}, close: 1002},
		{name: "5.15-continuation-after-finished-message-chopped", writes: cfSplit(cfJoin(two[0], two[1], cfFrame(true, 0, ws.OpContinuation, []byte("y"))), 1), pause: cfPause, want: []cfWant{cfPong}, close: 1002},
		{name: "5.16-text-nonfinal-then-text-nonfinal", writes: cfOne(two[0], cfFrame(false, 0, ws.OpText, []byte("x"))), close: 1002},
		{name: "5.17-text-nonfinal-then-text-final", writes: cfOne(two[0], cfText(cfPingJSON)), close: 1002},
		{name: "5.17.1-text-nonfinal-then-text-final-separate-writes", writes: [][]byte{two[0], cfText(cfPingJSON)}, pause: cfPause, close: 1002},
		{name: "5.18-text-nonfinal-then-binary", writes: cfOne(two[0], cfFrame(true, 0, ws.OpBinary, []byte{1})), close: 1002},
		{name: "5.19-many-fragments-pings-pongs-between-one-write", writes: cfOne(many...), want: manyWant},
		{name: "5.20-many-fragments-pings-pongs-between-separate-writes", writes: many, pause: cfPause, want: manyWant},
		{name: "5.21-empty-first-middle-and-last-fragments", writes: cfOne(emptyEnds...), want: []cfWant{cfPong}},
		{name: "5.21.1-empty-fragments-separate-writes", writes: emptyEnds, pause: cfPause, want: []cfWant{cfPong}},
		{name: "5.21.2-publish-in-fragments-with-pings-chopped-data-intact", writes: cfSplit(cfJoin(pubFrags...), 1, 7, 1023), pause: cfPause, want: pubWant, published: pubData},
		{name: "5.22-fragments-total-exactly-max-message-bytes", writes: cfOne(atLimit...), want: []cfWant{cfPong}},
		{name: "5.23-fragments-over-max-message-bytes-header-only", writes: cfOne(cfJoin(open...), cfHeaderOf(fifth)), close: 1009},
		{name: "5.24-second-fragment-crosses-max-message-bytes-header-only", writes: [][]byte{big, cfHeaderOf(crossing)}, pause: cfPause, close: 1009},
		{name: "5.25-second-fragment-crosses-max-message-bytes-header-chopped", writes: append([][]byte{big}, cfSplit(cfHeaderOf(crossing), 1)...), pause: cfPause, close: 1009},
	}
	cfRun(t, srv, cases)
}

// cfOpOf is the opcode of fragment i of a text message.
func cfOpOf(i int) ws.OpCode {
	if i == 0 {
		return ws.OpText
	}
	return ws.OpContinuation
}

// Category 6: UTF-8 in text messages (RFC 6455 §5.6, §8.1), checked as the
// bytes arrive: an invalid byte fails the connection at once.
func TestConformanceUTF8(t *testing.T) {
	srv := startGateway(t, cfOptions(65536))
	var cases []cfCase

	valid := []struct{ name, s string }{
		{"greek-kosme", cfGreek},
		{"emoji", "\U0001F600 \U0001F680"},
		{"u+007f", "\u007f"},
		{"u+0080", "\u0080"},
		{"u+07ff", "\u07ff"},
		{"u+0800", "\u0800"},
		{"u+d7ff", "\ud7ff"},
		{"u+e000", "\ue000"},
		{"u+feff-bom", "\ufeff"},
		{"u+fffd", "\ufffd"},
		{"u+fffe-noncharacter", "\ufffe"},
		{"u+ffff-noncharacter", "\uffff"},
		{"u+10000", "\U00010000"},
		{"u+10ffff", "\U0010ffff"},
		{"mixed", "Hello-µ@ßöäüàá-UTF-8!! " + cfGreek + " \U0001F600"},
	}
	for i, v := range valid {
		msg := cfPingWith(v.s)
		id := fmt.Sprintf("6.1.%d-valid-%s", i+1, v.name)
		cases = append(cases,
			cfCase{name: id + "-one-frame", writes: cfOne(cfText(msg)), want: []cfWant{cfPong}},
			cfCase{name: id + "-1-byte-fragments", writes: cfFragments(ws.OpText, msg, 1), pause: cfPause, want: []cfWant{cfPong}},
			cfCase{name: id + "-chopped-bytewise", writes: cfChop(cfText(msg), 1), pause: cfPause, want: []cfWant{cfPong}},
		)
	}

	// κόσμε split at every byte: in two fragments (all in one write), and
	// in one frame written in two parts.
	msg := cfPingWith(cfGreek)
	var splitFrames, splitWrites [][]byte
	for i := 1; i < len(msg); i++ {
		splitFrames = append(splitFrames, cfFrame(false, 0, ws.OpText, msg[:i]), cfFrame(true, 0, ws.OpContinuation, msg[i:]))
		f := cfText(msg)
		hn := wsframe.Need(f)
		splitWrites = append(splitWrites, f[:hn+i], f[hn+i:])
	}
	cases = append(cases,
		cfCase{name: "6.2.1-greek-in-2-fragments-split-at-every-byte", writes: cfOne(splitFrames...), want: cfPongs(len(msg) - 1)},
		cfCase{name: "6.2.2-greek-in-1-frame-written-in-2-parts-split-at-every-byte", writes: splitWrites, pause: cfPause, want: cfPongs(len(msg) - 1)},
	)

	invalid := []struct {
		name, s string
		end     bool // the message ends with s (a sequence cut at the end)
	}{
		{name: "overlong-2-byte-slash", s: "\xc0\xaf"},
		{name: "overlong-2-byte-max", s: "\xc1\xbf"},
		{name: "overlong-nul", s: "\xc0\x80"},
		{name: "overlong-3-byte-slash", s: "\xe0\x80\xaf"},
		{name: "overlong-3-byte-max", s: "\xe0\x9f\xbf"},
		{name: "overlong-4-byte-slash", s: "\xf0\x80\x80\xaf"},
		{name: "overlong-4-byte-max", s: "\xf0\x8f\xbf\xbf"},
		{name: "surrogate-high", s: "\xed\xa0\x80"},
		{name: "surrogate-low", s: "\xed\xbf\xbf"},
		{name: "surrogate-pair", s: "\xed\xa0\x80\xed\xb0\x80"},
		{name: "0xfe", s: "\xfe"},
		{name: "0xff", s: "\xff"},
		{name: "0xfe-0xff-run", s: "\xfe\xfe\xff\xff"},
		{name: "above-u+10ffff", s: "\xf4\x90\x80\x80"},
		{name: "lead-byte-0xf5", s: "\xf5\x80\x80\x80"},
		{name: "5-byte-sequence", s: "\xf8\x88\x80\x80\x80"},
		{name: "6-byte-sequence", s: "\xfc\x84\x80\x80\x80\x80"},
		{name: "lone-continuation", s: "\x80"},
		{name: "lead-byte-then-ascii", s: "\xc2 "},
		{name: "3-byte-lead-then-ascii", s: "\xe2\x82 "},
		{name: "truncated-2-byte-at-end", s: "\xce", end: true},
		{name: "truncated-3-byte-at-end", s: "\xe2\x82", end: true},
		{name: "truncated-4-byte-at-end", s: "\xf0\x9f\x98", end: true},
	}
	for i, v := range invalid {
		msg := []byte(`{"type":"ping","t":"` + cfGreek + v.s)
		if !v.end {
			msg = append(msg, `"}`...)
		}
		id := fmt.Sprintf("6.3.%d-invalid-%s", i+1, v.name)
		cases = append(cases,
			cfCase{name: id + "-one-frame", writes: cfOne(cfText(msg), cfText(cfPingJSON)), close: 1007},
			cfCase{name: id + "-1-byte-fragments", writes: cfFragments(ws.OpText, msg, 1), pause: cfPause, close: 1007},
			cfCase{name: id + "-chopped-bytewise", writes: cfChop(cfText(msg), 1), pause: cfPause, close: 1007},
			cfCase{name: id + "-after-valid-message", writes: cfOne(cfText(cfPingWith(cfGreek)), cfText(msg)), want: []cfWant{cfPong}, close: 1007},
		)
	}

	// Fail fast: the close must come although the message never ends.
	kosme := []byte(`{"type":"ping","t":"` + cfGreek)
	long := append(append(append([]byte{}, kosme...), "\xf4\x90\x80\x80edited"...), bytes.Repeat([]byte("x"), 4000)...)
	longFrame := cfText(long)
	lh := wsframe.Need(longFrame)
	badFirst := append(append([]byte(`{"type":"ping","t":"`), "ab\xffcd"...), bytes.Repeat([]byte("y"), 4000)...)
	badFirstFrame := cfText(badFirst)
	bh := wsframe.Need(badFirstFrame)
	surrogate := append(append([]byte{}, kosme...), "\xed\xa0\x80rest of the message"...)
	surrogateFrame := cfText(surrogate)
	sh := wsframe.Need(surrogateFrame)
	cases = append(cases,
		cfCase{name: "6.4.1-fail-fast-invalid-second-fragment-third-never-sent", writes: [][]byte{
			cfFrame(false, 0, ws.OpText, kosme),
			cfFrame(false, 0, ws.OpContinuation, []byte("\xf4\x90\x80\x80")),
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.2-fail-fast-sequence-split-across-fragments-third-never-sent", writes: [][]byte{
			cfFrame(false, 0, ws.OpText, append(append([]byte{}, kosme...), 0xf4)),
			cfFrame(false, 0, ws.OpContinuation, []byte{0x90}),
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.2.1-fail-fast-invalid-byte-in-second-fragment-header-of-third-sent", writes: [][]byte{
			cfFrame(false, 0, ws.OpText, kosme),
			cfFrame(false, 0, ws.OpContinuation, []byte("ok \xff")),
			cfHeaderOf(cfFrame(true, 0, ws.OpContinuation, make([]byte, 1000))),
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.3-fail-fast-one-frame-chunked-invalid-in-second-chunk", writes: [][]byte{
			longFrame[:lh+len(kosme)],
			longFrame[lh+len(kosme) : lh+len(kosme)+4],
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.4-fail-fast-one-frame-chunked-impossible-prefix", writes: [][]byte{
			longFrame[:lh+len(kosme)],
			longFrame[lh+len(kosme) : lh+len(kosme)+2], // \xf4\x90: nothing can follow
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.5-fail-fast-one-frame-invalid-in-first-chunk", writes: [][]byte{
			badFirstFrame[:bh+40],
		}, close: 1007},
		cfCase{name: "6.4.6-fail-fast-one-frame-invalid-in-first-chunk-with-header", writes: [][]byte{
			badFirstFrame[:bh],
			badFirstFrame[bh : bh+30],
		}, pause: cfPause, close: 1007},
		cfCase{name: "6.4.7-fail-fast-surrogate-prefix-ends-chunk", writes: [][]byte{
			surrogateFrame[:sh+len(kosme)+2], // \xed\xa0: a surrogate's first two bytes
		}, close: 1007},
		cfCase{name: "6.4.8-rune-cut-by-empty-final-fragment", writes: cfOne(
			cfFrame(false, 0, ws.OpText, append(append([]byte{}, kosme...), 0xce)),
			cfFrame(true, 0, ws.OpContinuation, nil),
		), close: 1007},
		cfCase{name: "6.2.3-rune-split-across-fragments-ping-between", writes: [][]byte{
			cfFrame(false, 0, ws.OpText, append(append([]byte{}, kosme...), 0xf0, 0x9f)),
			cfPing("mid-rune"),
			cfFrame(true, 0, ws.OpContinuation, []byte("\x98\x80\"}")),
		}, pause: cfPause, want: []cfWant{cfControlPong("mid-rune"), cfPong}},
		cfCase{name: "6.5.1-state-resets-between-messages", writes: cfOne(
			cfText(cfPingWith(cfGreek)),
			cfText([]byte("\xba\xe1\xbd\xb9"+`{"type":"ping"}`)),
		), want: []cfWant{cfPong}, close: 1007},
		cfCase{name: "6.5.2-invalid-utf8-in-ping-payload-is-not-checked", writes: cfOne(cfPing("\xff\xfe\xed\xa0\x80")), want: []cfWant{cfControlPong("\xff\xfe\xed\xa0\x80")}},
	)
	cfRun(t, srv, cases)
}

// Category 7: the closing handshake (RFC 6455 §5.5.1, §7).
func TestConformanceClose(t *testing.T) {
	srv := startGateway(t, cfOptions(65536))
	reason123 := strings.Repeat("r", 123)
	utf8Reason := strings.Repeat("é", 61) + "x" // 123 bytes of UTF-8
	c1000 := cfClose(1000, "")
	cases := []cfCase{
		{name: "7.1.1-close-no-payload", writes: cfOne(cfFrame(true, 0, ws.OpClose, nil)), close: 1000},
		{name: "7.1.1.1-close-no-payload-chopped", writes: cfChop(cfFrame(true, 0, ws.OpClose, nil), 1), pause: cfPause, close: 1000},
		{name: "7.1.2-close-then-close", writes: cfOne(c1000, cfClose(1001, "again")), close: 1000},
		{name: "7.1.3-close-then-ping", writes: cfOne(c1000, cfPing("after close")), close: 1000},
		{name: "7.1.4-close-then-text", writes: cfOne(c1000, cfText(cfPingJSON)), close: 1000},
		{name: "7.1.5-close-between-fragments", writes: cfOne(cfFrame(false, 0, ws.OpText, []byte(`{"type":`)), c1000, cfFrame(true, 0, ws.OpContinuation, []byte(`"ping"}`))), close: 1000},
		{name: "7.1.5.1-close-after-first-fragment-chopped", writes: cfSplit(cfJoin(cfFrame(false, 0, ws.OpText, []byte(`{"type":`)), c1000), 1), pause: cfPause, close: 1000},
		{name: "7.1.6-large-message-then-close", writes: cfOne(cfText(cfPingMsg(60000)), c1000), want: []cfWant{cfPong}, close: 1000},
		{name: "7.3.1-close-1-byte-payload", writes: cfOne(cfFrame(true, 0, ws.OpClose, []byte{0x03})), close: 1002},
		{name: "7.3.2-close-code-only", writes: cfOne(c1000), close: 1000},
		{name: "7.3.3-close-code-and-reason", writes: cfOne(cfClose(1000, "Hello World!")), close: 1000},
		{name: "7.3.4-close-123-byte-reason", writes: cfOne(cfClose(1000, reason123)), close: 1000},
		{name: "7.3.4.1-close-123-byte-utf8-reason-chopped", writes: cfChop(cfClose(4000, utf8Reason), 1), pause: cfPause, close: 4000},
		{name: "7.3.5-close-124-byte-reason", writes: cfOne(cfClose(1000, reason123+"r")), close: 1002},
		{name: "7.5.1-close-invalid-utf8-reason", writes: cfOne(cfClose(1000, cfGreek+"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")), close: 1007},
		{name: "7.5.2-close-reason-cut-mid-rune", writes: cfOne(cfClose(1000, cfGreek+"\xce")), close: 1007},
		{name: "7.5.3-close-reason-0xff", writes: cfOne(cfClose(3000, "\xff")), close: 1007},
	}
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cases = append(cases, cfCase{name: fmt.Sprintf("7.7.%d-valid-code-%d-echoed", i+1, code), writes: cfOne(cfClose(code, "")), close: ws.StatusCode(code)})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999} {
		cases = append(cases, cfCase{name: fmt.Sprintf("7.9.%d-invalid-code-%d", i+1, code), writes: cfOne(cfClose(code, "")), close: 1002})
	}
	for i, code := range []uint16{5000, 65535} {
		cases = append(cases, cfCase{name: fmt.Sprintf("7.13.%d-code-%d-outside-every-range", i+1, code), writes: cfOne(cfClose(code, "")), close: 1002})
	}
	for i := range cases {
		// A close frame with a 126-byte payload is no close frame but a
		// framing violation: the node fails the connection and lingers.
		cases[i].peerClose = !strings.HasPrefix(cases[i].name, "7.3.5-")
	}
	cfRun(t, srv, cases)
}

// Category 9: large messages, whole and in 64-byte fragments, in one write
// and in writes of 1, 1003 and 65537 bytes.
func TestConformanceLargeMessages(t *testing.T) {
	const limit = 1 << 20
	srv := startGateway(t, cfOptions(limit))
	var cases []cfCase
	for _, n := range []int{64 << 10, limit} {
		name := fmt.Sprintf("%dKiB", n>>10)
		msg := cfPingMsg(n)
		whole := cfText(msg)
		frags := cfJoin(cfFragments(ws.OpText, msg, 64)...)
		for _, v := range []struct {
			id, shape string
			b         []byte
		}{{"9.1", "one-frame", whole}, {"9.2", "64-byte-fragments", frags}} {
			cases = append(cases, cfCase{name: fmt.Sprintf("%s-%s-%s-one-write", v.id, name, v.shape), writes: [][]byte{v.b}, want: []cfWant{cfPong}})
			for _, chunk := range []int{1, 1003, 65537} {
				cases = append(cases, cfCase{
					name:   fmt.Sprintf("%s-%s-%s-%d-byte-writes", v.id, name, v.shape, chunk),
					writes: cfSplit(v.b, chunk),
					want:   []cfWant{cfPong},
				})
			}
		}
	}
	// NATS takes at most 1 MiB with headers: the large one stays below.
	pub64, data64 := cfPublishMsg(64 << 10)
	pubBig, dataBig := cfPublishMsg(limit - 4<<10)
	over := cfText(cfPingMsg(limit + 1))
	cases = append(cases,
		cfCase{name: "9.4.1-publish-64KiB-one-frame-1003-byte-writes-data-intact", writes: cfSplit(cfText(pub64), 1003), published: data64},
		cfCase{name: "9.4.2-publish-64KiB-64-byte-fragments-1-byte-writes-data-intact", writes: cfSplit(cfJoin(cfFragments(ws.OpText, pub64, 64)...), 1), published: data64},
		cfCase{name: "9.4.3-publish-1020KiB-one-frame-65537-byte-writes-data-intact", writes: cfSplit(cfText(pubBig), 65537), published: dataBig},
		cfCase{name: "9.4.4-publish-1020KiB-64-byte-fragments-1003-byte-writes-data-intact", writes: cfSplit(cfJoin(cfFragments(ws.OpText, pubBig, 64)...), 1003), published: dataBig},
		cfCase{name: "9.3.1-over-max-message-bytes-header-only", writes: cfOne(cfHeaderOf(over)), close: 1009},
		cfCase{name: "9.3.2-fragments-over-max-message-bytes-header-only", writes: cfOne(
			cfFrame(false, 0, ws.OpText, cfPingMsg(limit-10)), cfHeaderOf(cfFrame(true, 0, ws.OpContinuation, make([]byte, 11)))), close: 1009},
	)
	cfRun(t, srv, cases)
}

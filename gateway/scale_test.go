package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wsframe"
)

// rawClient is a WebSocket client without goroutines: it writes the upgrade
// request and the auth frame in one packet and reads the replies inline.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func maskedText(p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{1, 2, 3, 4}}
	out := wsframe.Append(nil, h)
	body := append([]byte(nil), p...)
	ws.Cipher(body, h.Mask, 0)
	return append(out, body...)
}

func dialRaw(t testing.TB, addr, tok string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	req := "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	pkt := append([]byte(req), maskedText([]byte(`{"type":"auth","token":"`+tok+`"}`))...)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	return &rawClient{c: c, br: bufio.NewReaderSize(c, 512)}
}

// skipResponse reads the 101 response up to its blank line.
func (r *rawClient) skipResponse(t testing.TB) {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			t.Fatalf("reading the upgrade response: %v", err)
		}
		if len(line) == 2 {
			return
		}
	}
}

// readFrame reads one server frame and returns its payload.
func (r *rawClient) readFrame(t testing.TB) []byte {
	t.Helper()
	h, err := ws.ReadHeader(r.br)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitWelcome reads the 101 response and frames until the welcome.
func (r *rawClient) waitWelcome(t testing.TB) {
	t.Helper()
	r.skipResponse(t)
	for !bytes.Contains(r.readFrame(t), []byte(`"welcome"`)) {
	}
	r.c.SetReadDeadline(time.Time{})
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// connectMany opens n authenticated connections to srv.
func connectMany(t testing.TB, srv *gateway.Server, n int, prefix string) []*rawClient {
	t.Helper()
	addr := srv.Addr().String()
	out := make([]*rawClient, 0, n)
	const batch = 500
	for i := 0; i < n; i += batch {
		var cs []*rawClient
		for j := i; j < min(n, i+batch); j++ {
			cs = append(cs, dialRaw(t, addr, token(t, fmt.Sprintf("%s%d", prefix, j))))
		}
		for _, c := range cs {
			c.waitWelcome(t)
		}
		out = append(out, cs...)
	}
	t.Cleanup(func() {
		for _, c := range out {
			c.c.Close()
		}
	})
	return out
}

// TestManyConnectionsNoGoroutineOrFDGrowth holds 5,000 authenticated
// connections and checks the engine's first two rules: the goroutine count
// does not grow with connections, and each connection costs the process one
// file descriptor (the client's socket is the other one of each pair here).
func TestManyConnectionsNoGoroutineOrFDGrowth(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 5,000 connections")
	}
	srv := startGateway(t, func(o *gateway.Options) { o.AuthQueue = 10000 })
	// Warm up: one connection of each kind starts whatever starts lazily.
	connectMany(t, srv, 10, "warm")
	runtime.GC()
	baseG := runtime.NumGoroutine()
	baseFD := countFDs(t)

	const small, large = 1000, 5000
	connectMany(t, srv, small, "s")
	gSmall := runtime.NumGoroutine()
	connectMany(t, srv, large-small, "l")
	gLarge := runtime.NumGoroutine()
	fds := countFDs(t)

	if d := gLarge - gSmall; d > 2 || d < -2 {
		t.Errorf("goroutines grew by %d between %d and %d connections", d, small, large)
	}
	if d := gLarge - baseG; d > 5 {
		t.Errorf("goroutines grew by %d for %d connections", d, large)
	}
	// ±10: sockets of earlier tests (idle HTTP keep-alives, say) may close
	// meanwhile, as a few of the process's own may open.
	if d := fds - baseFD; d < 2*large-10 || d > 2*large+10 {
		t.Errorf("%d fds for %d connection pairs, want %d (one per side)", d, large, 2*large)
	}
	var perConn float64 = float64(fds-baseFD) / float64(large)
	t.Logf("%d connections: %d goroutines (base %d), %.3f fds per client+server pair", large, gLarge, baseG, perConn)
}

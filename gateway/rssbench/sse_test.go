//go:build benchrss

package rssbench

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/internal/jwtmint"
)

// TestSSEIdleRSS compares, in one run, the gateway's RSS growth per idle,
// authenticated connection over WebSocket and over server-sent events
// (GET /sse): RSS_CONNS (default 15,000) connections of each, one user
// each, each transport in a fresh gateway process with NATS embedded.
func TestSSEIdleRSS(t *testing.T) {
	n := conns()
	per := map[string]float64{}
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) {
			cmd, addr, admin := startGateway(t, "")
			pid := cmd.Process.Pid
			req := upgradeAndAuth
			if transport == "sse" {
				req = sseRequest
			}
			warm := connectWith(t, addr, 1, nil, req)
			base := settle(t, pid, admin)
			cs := connectWith(t, addr, n, nil, req)
			time.Sleep(2 * time.Second)
			after := settle(t, pid, admin)
			per[transport] = float64(after-base) * 1024 / float64(n)
			fmt.Printf("RESULT transport=%s conns=%d rss_base_kib=%d rss_after_kib=%d bytes_per_conn=%.0f go=%s\n",
				transport, n, base, after, per[transport], runtime.Version())
			for _, c := range append(cs, warm...) {
				c.Close()
			}
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	if ws, sse := per["websocket"], per["sse"]; ws > 0 {
		fmt.Printf("RESULT sse_vs_websocket=%.3f\n", sse/ws)
	}
}

// sseRequest is a stream request with the token in its Authorization header.
func sseRequest(tok string) []byte {
	return []byte("GET /sse HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nAuthorization: Bearer " + tok + "\r\n\r\n")
}

// connectWith opens n connections with req's bytes (one user each, the
// token with the extra claims) and waits for every welcome.
func connectWith(t *testing.T, addr string, n int, extra map[string]any, req func(tok string) []byte) []net.Conn {
	t.Helper()
	out := make([]net.Conn, 0, n)
	buf := make([]byte, 4096)
	const batch = 1000
	for i := 0; i < n; i += batch {
		var cs []net.Conn
		for j := i; j < min(n, i+batch); j++ {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatalf("connection %d: %v", j, err)
			}
			tok, _ := jwtmint.Mint("HS256", []byte(secret), jwtmint.Claims{Subject: fmt.Sprintf("user-%d", j), TTL: 24 * time.Hour, Extra: extra})
			if _, err := c.Write(req(tok)); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		for j, c := range cs {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var got []byte
			for !bytes.Contains(got, []byte(`"welcome"`)) {
				m, err := c.Read(buf)
				if err != nil {
					t.Fatalf("connection %d: no welcome: %v (%q)", i+j, err, got)
				}
				got = append(got, buf[:m]...)
			}
			c.SetReadDeadline(time.Time{})
		}
		out = append(out, cs...)
	}
	return out
}

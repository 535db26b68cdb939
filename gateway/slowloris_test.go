package gateway_test

import (
	"io"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// rtt measures n application ping/pong round trips, gap apart, and returns
// the median.
func rtt(t *testing.T, ws *wstest.Conn, n int, gap time.Duration) time.Duration {
	t.Helper()
	var ds []time.Duration
	for i := 0; i < n; i++ {
		time.Sleep(gap)
		start := time.Now()
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[n/2]
}

// TestSlowlorisClientsAreClosedAndHarmless opens 1,000 sockets that send
// their upgrade request one byte every 100 ms. Each is closed at the
// handshake timeout, none holds a worker or the loop, and a normal client's
// round trips meanwhile stay what they were.
func TestSlowlorisClientsAreClosedAndHarmless(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sockets")
	}
	srv := startGateway(t, func(o *gateway.Options) {
		o.HandshakeTimeout = time.Second
		o.MaxClientMsgsPerSec = -1
	})
	ws, _ := connect(t, srv, "normal")
	baseline := rtt(t, ws, 40, 10*time.Millisecond)

	const n = 1000
	req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: ")
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = rawDial(t, srv)
	}
	opened := time.Now()
	stop := make(chan struct{})
	go func() { // one byte per socket every 100 ms, never the end of the request
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, c := range conns {
				c.Write(req[i%len(req) : i%len(req)+1])
			}
		}
	}()
	defer close(stop)

	during := rtt(t, ws, 40, 20*time.Millisecond) // spans the dribbling (100 ms rounds)
	t.Logf("median round trip: %s alone, %s with %d slowloris sockets", baseline, during, n)
	if during > 5*baseline+2*time.Millisecond {
		t.Errorf("round trips went from %s to %s with slowloris sockets open", baseline, during)
	}
	// Every slowloris socket is closed by the gateway (a 408, then EOF).
	for i, c := range conns {
		c.SetReadDeadline(opened.Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("socket %d not closed by the gateway within 5s of opening: %v", i, err)
		}
	}
	if el := time.Since(opened); el > 4*time.Second {
		t.Errorf("closing the slowloris sockets took %s with a 1s handshake timeout", el)
	}
	if v := metricValue(t, srv, "wsfleet_gateway_handshake_timeouts_total"); v != n {
		t.Errorf("%v handshake timeouts counted, want %d", v, n)
	}
	send(t, ws, map[string]string{"type": "ping"})
	readType(t, ws, protocol.TypePong)
}

package gateway_test

import (
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

func TestHeartbeatPingsAndIdleClose(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.Heartbeat = 100 * time.Millisecond
		o.IdleTimeout = 350 * time.Millisecond
	})
	// A client that answers pings stays.
	live, w := connect(t, srv, "live")
	if w["heartbeat"] != float64(1) {
		t.Fatalf("heartbeat %v, want 1 (seconds, rounded up)", w["heartbeat"])
	}
	silent, _ := connect(t, srv, "silent")
	deadline := time.Now().Add(time.Second)
	pings := 0
	for time.Now().Before(deadline) {
		m := readFrame(t, live)
		if m["type"] == protocol.TypePing {
			pings++
			send(t, live, map[string]string{"type": "pong"})
		}
	}
	if pings < 5 {
		t.Fatalf("%d pings in 1s with a 100ms heartbeat", pings)
	}
	// The silent one was closed for not answering.
	expectClose(t, silent, protocol.CloseHeartbeatTimeout, "idle")
	// The live one is still served.
	send(t, live, map[string]string{"type": "ping"})
	readType(t, live, protocol.TypePong)
}

func TestControlPongCountsAsLiveness(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.Heartbeat = 100 * time.Millisecond
		o.IdleTimeout = 300 * time.Millisecond
	})
	ws, _ := connect(t, srv, "ctl")
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	// Only WebSocket pong control frames for three idle timeouts: the
	// connection stays.
	for stop := time.Now().Add(time.Second); time.Now().Before(stop); {
		ws.WriteControl(wstest.PongMessage, nil, time.Now().Add(time.Second))
		select {
		case err := <-closed:
			t.Fatalf("closed while sending pongs: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Silence: closed for idleness.
	select {
	case err := <-closed:
		ce, ok := err.(*wstest.CloseError)
		if !ok || ce.Code != int(protocol.CloseHeartbeatTimeout) {
			t.Fatalf("ended with %v, want close %d", err, protocol.CloseHeartbeatTimeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after going silent")
	}
}

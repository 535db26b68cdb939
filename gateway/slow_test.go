package gateway_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// stalledClient authenticates, then stops reading, with a small receive
// buffer so the gateway's socket fills quickly.
func stalledClient(t *testing.T, srv *gateway.Server, user string) *wstest.Conn {
	t.Helper()
	// The receive buffer is set before connect, so the window scale the
	// handshake agrees matches it (shrinking it later stalls TCP).
	nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	d := wstest.Dialer{NetDial: nd.Dial}
	ws, _, err := d.Dial(wsURL(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	send(t, ws, map[string]any{"type": "auth", "token": token(t, user)})
	readType(t, ws, protocol.TypeWelcome)
	return ws
}

// drainUntilClose reads everything queued for ws and returns the close
// error it ends with.
func drainUntilClose(t *testing.T, ws *wstest.Conn) *wstest.CloseError {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *wstest.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("ended without a close frame: %v", err)
		}
		return ce
	}
}

func publishN(t *testing.T, nc *nats.Conn, subj string, n, size int) {
	t.Helper()
	payload := []byte(`"` + strings.Repeat("x", size) + `"`)
	for i := 0; i < n; i++ {
		if err := nc.Publish(subj, payload); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
}

func TestSlowConsumerQueueLimit(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxPendingBytes = 64 << 10 })
	ws := stalledClient(t, srv, "slow")
	fast, _ := connect(t, srv, "fast")
	nc := natsConn(t, srv)
	publishN(t, nc, userSubject(t, "slow"), 400, 16<<10)
	checkFor(t, 10*time.Second, func() error {
		if n := metricValue(t, srv, "wsfleet_gateway_slow_consumer_closes_total"); n != 1 {
			return errorf("%v slow-consumer closes", n)
		}
		return nil
	})
	// Another client is not affected.
	publish(t, nc, "fast", "f1", `1`)
	if m := readType(t, fast, protocol.TypeMessage); m["id"] != "f1" {
		t.Fatalf("fast client got %v", m)
	}
	// When the slow client reads again, its frames end with a 4500 close.
	if ce := drainUntilClose(t, ws); ce.Code != int(protocol.CloseSlowConsumer) || !strings.Contains(ce.Text, "max-pending-bytes") {
		t.Fatalf("closed %d %q, want 4500", ce.Code, ce.Text)
	}
}

func TestWriteTimeout(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.MaxPendingBytes = 32 << 20
		o.WriteTimeout = 300 * time.Millisecond
		o.CloseTimeout = 5 * time.Second
	})
	ws := stalledClient(t, srv, "stuck")
	nc := natsConn(t, srv)
	publishN(t, nc, userSubject(t, "stuck"), 300, 16<<10)
	checkFor(t, 10*time.Second, func() error {
		if n := metricValue(t, srv, "wsfleet_gateway_write_timeouts_total"); n != 1 {
			return errorf("%v write timeouts", n)
		}
		return nil
	})
	if ce := drainUntilClose(t, ws); ce.Code != int(protocol.CloseSlowConsumer) || !strings.Contains(ce.Text, "write timeout") {
		t.Fatalf("closed %d %q, want 4500 for the write timeout", ce.Code, ce.Text)
	}
}

// A broadcast queued on many stalled connections is held once: the queues
// share one buffer instead of each holding a copy.
func TestBroadcastQueuedOnceInMemory(t *testing.T) {
	srv := startGateway(t, nil)
	const conns, size, msgs = 200, 256 << 10, 3
	var stalled []*wstest.Conn
	for i := 0; i < conns; i++ {
		stalled = append(stalled, stalledClient(t, srv, fmt.Sprintf("b%d", i)))
	}
	nc := natsConn(t, srv)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	publishN(t, nc, "wsfleet.broadcast", msgs, size)
	checkFor(t, 10*time.Second, func() error {
		if n := metricValue(t, srv, "wsfleet_gateway_messages_out_total"); n != conns*msgs {
			return errorf("%v of %d deliveries written or queued", n, conns*msgs)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	copies := int64(conns * msgs * size)
	t.Logf("%d deliveries of %d KiB: heap grew %d KiB (one copy per connection would be %d MiB)", conns*msgs, size>>10, grew>>10, copies>>20)
	if grew > copies/20 {
		t.Fatalf("heap grew %d bytes for %d queued deliveries of %d bytes: frames are not shared", grew, conns*msgs, size)
	}
	_ = stalled
}

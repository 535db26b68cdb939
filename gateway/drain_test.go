package gateway_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// A client that follows the reconnect notice (connect to another node,
// close the old connection once welcomed there) loses no message while its
// node drains: the old node delivers until the client leaves it.
func TestDrainMakeBeforeBreakLosesNothing(t *testing.T) {
	ns := runNATS(t, -1)
	a := startGateway(t, func(o *gateway.Options) { o.NATSURL = ns.ClientURL(); o.NodeID = "a"; o.DrainTimeout = 3 * time.Second })
	b := startGateway(t, func(o *gateway.Options) { o.NATSURL = ns.ClientURL(); o.NodeID = "b" })

	var mu sync.Mutex
	got := map[string]int{}
	total := 0
	received := func() int { mu.Lock(); defer mu.Unlock(); return total }
	reader := func(ws *wstest.Conn, notice chan<- struct{}) {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]any
			json.Unmarshal(data, &f)
			switch f["type"] {
			case protocol.TypeMessage:
				mu.Lock()
				got[f["id"].(string)]++
				total++
				mu.Unlock()
			case protocol.TypeReconnect:
				if notice != nil {
					notice <- struct{}{}
					notice = nil
				}
			}
		}
	}
	old, _ := connect(t, a, "mover")
	notice := make(chan struct{}, 1)
	go reader(old, notice)

	svc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stop := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			n++
			m := nats.NewMsg(userSubject(t, "mover"))
			m.Header.Set(protocol.HeaderMsgID, "m"+strconv.Itoa(n))
			m.Data = []byte(strconv.Itoa(n))
			svc.PublishMsg(m)
			svc.Flush()
		}
	}()
	waitReceived := func(n int) { // some messages delivered (by now)
		checkFor(t, 5*time.Second, func() error {
			if r := received(); r < n {
				return errorf("%d messages received, waiting for %d", r, n)
			}
			return nil
		})
	}
	waitReceived(10) // before the drain
	go a.Shutdown(context.Background())
	select {
	case <-notice:
	case <-time.After(5 * time.Second):
		t.Fatal("no reconnect notice")
	}
	// Make before break: the new connection first, then close the old one.
	fresh, _ := connect(t, b, "mover")
	go reader(fresh, nil)
	old.WriteControl(wstest.CloseMessage, wstest.FormatCloseMessage(1000, "moved"), time.Now().Add(time.Second))
	waitReceived(received() + 20) // and some after the move
	close(stop)
	n := <-published
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i <= n; i++ {
			if got["m"+strconv.Itoa(i)] == 0 {
				return errorf("message %d of %d never arrived", i, n)
			}
		}
		return nil
	})
	t.Logf("%d messages published across the drain, all delivered", n)
}

// Drain empties the node but leaves it running: unready, connected to
// NATS, its admin endpoint up; Shutdown then has nothing left to drain.
func TestDrainThenShutdown(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.DrainTimeout = 2 * time.Second })
	ws, _ := connect(t, srv, "d1")
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()
	expectClose(t, ws, protocol.CloseServiceRestart, "")
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if code := get(t, adminURL(srv)+"/readyz"); code != 503 {
		t.Fatalf("/readyz %d after Drain, want 503", code)
	}
	if code := get(t, adminURL(srv)+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d after Drain, want 200", code)
	}
	if !srv.NATSConn().IsConnected() {
		t.Fatal("Drain closed the NATS connection")
	}
	if err := srv.Drain(context.Background()); err != nil {
		t.Fatalf("a second Drain: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if el := time.Since(start); el >= 2*time.Second {
		t.Errorf("Shutdown after Drain took %s, as if it drained again", el)
	}
	if err := srv.Drain(context.Background()); err != gateway.ErrServerClosed {
		t.Fatalf("Drain after Shutdown: %v, want ErrServerClosed", err)
	}
}

// Close ends a drain in progress at once.
func TestCloseEndsDrain(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.DrainTimeout = time.Minute })
	ws, _ := connect(t, srv, "d2")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Drain(ctx); err != context.Canceled {
		t.Fatalf("Drain with a done context: %v, want context.Canceled (the drain goes on)", err)
	}
	readType(t, ws, protocol.TypeReconnect)
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the minute-long drain")
	}
	// Closed at once: the socket ends (without a close frame, as Close does).
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection outlived Close")
			}
			break
		}
	}
}

// With --reuseport several nodes share one port and the kernel spreads the
// connections over them; without it a second node cannot bind the port and
// says why.
func TestReusePort(t *testing.T) {
	ns := runNATS(t, -1)
	a := startGateway(t, func(o *gateway.Options) { o.NATSURL = ns.ClientURL(); o.NodeID = "a"; o.ReusePort = true })
	shared := a.Addr().String()
	b := startGateway(t, func(o *gateway.Options) {
		o.NATSURL = ns.ClientURL()
		o.NodeID = "b"
		o.ReusePort = true
		o.Listen = shared
	})
	if b.Addr().String() != shared {
		t.Fatalf("b listens on %s, want %s", b.Addr(), shared)
	}
	nodes := map[string]int{}
	for i := 0; i < 40; i++ {
		ws := dial(t, "ws://"+shared+"/ws", nil)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "spread"+strconv.Itoa(i))})
		w := readType(t, ws, protocol.TypeWelcome)
		nodes[w["node"].(string)]++
		ws.Close()
	}
	if nodes["a"] == 0 || nodes["b"] == 0 {
		t.Fatalf("connections per node %v: the kernel should spread 40 connections over both", nodes)
	}

	o := testOptions(t)
	o.NATSURL = ns.ClientURL()
	o.Listen = shared
	c, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start()
	if err == nil {
		c.Close()
		t.Fatal("a node without --reuseport bound a port two nodes share")
	}
	if !strings.Contains(err.Error(), "reuseport") {
		t.Fatalf("bind error %q does not point at --reuseport", err)
	}
}

// The control socket: a stale file from a crashed process is replaced; a
// socket another node serves, or a file that is not a socket, stops Start
// with an error naming the setting.
func TestControlSocketPath(t *testing.T) {
	dir := t.TempDir()
	serving := filepath.Join(dir, "serving.sock")
	startGateway(t, func(o *gateway.Options) { o.ControlSocket = serving })

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nothing serves it

	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, err string
	}{
		{"stale socket", stale, ""},
		{"served by another node", serving, "served by another process"},
		{"not a socket", plain, "not a socket"},
		{"too long", filepath.Join(dir, strings.Repeat("x", 120)), "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			o.ControlSocket = tc.path
			srv, err := gateway.New(o)
			if err == nil {
				err = srv.Start()
			}
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				srv.Close()
				return
			}
			if err == nil {
				srv.Close()
				t.Fatalf("started with control socket %s", tc.path)
			}
			if !strings.Contains(err.Error(), "control-socket") || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q, want it to name control-socket and say %q", err, tc.err)
			}
		})
	}
}

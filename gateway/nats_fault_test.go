package gateway_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// runNATS starts a nats-server on port (-1: any) and returns it.
func runNATS(t *testing.T, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func TestNATSRestart(t *testing.T) {
	ns := runNATS(t, -1)
	url := ns.ClientURL()
	_, portStr, _ := net.SplitHostPort(ns.Addr().String())
	port, _ := strconv.Atoi(portStr)
	srv := startGateway(t, func(o *gateway.Options) { o.NATSURL = url })
	alice, _ := connect(t, srv, "alice")
	bob, _ := connect(t, srv, "bob")

	ns.Shutdown()
	ns.WaitForShutdown()
	checkFor(t, 5*time.Second, func() error {
		if code := get(t, adminURL(srv)+"/readyz"); code != 503 {
			return errorf("/readyz %d while NATS is down", code)
		}
		return nil
	})
	// A publish while NATS is down is refused visibly, never lost quietly.
	send(t, bob, map[string]any{"type": "publish", "data": 1})
	if e := readType(t, bob, protocol.TypeError); e["code"] != protocol.ErrCodePublishFailed {
		t.Fatalf("got %v, want publish_failed", e)
	}

	ns2 := runNATS(t, port)
	back := time.Now()
	svc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// Publish until a delivery arrives: the gateway's subscriptions were
	// restored on reconnect.
	got := make(chan time.Duration, 1)
	go func() {
		alice.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, b, err := alice.ReadMessage()
			if err != nil {
				return
			}
			if string(b) != string(protocol.PingJSON) {
				got <- time.Since(back)
				return
			}
		}
	}()
	var resumed time.Duration
	for i := 0; resumed == 0; i++ {
		svc.Publish(userSubject(t, "alice"), []byte(strconv.Itoa(i)))
		svc.Flush()
		select {
		case resumed = <-got:
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(back) > 10*time.Second {
			t.Fatal("deliveries did not resume")
		}
	}
	t.Logf("deliveries resumed %s after NATS came back", resumed)
	if resumed > 2*time.Second {
		t.Errorf("deliveries resumed after %s, want within 2s of NATS being back", resumed)
	}
	if n := ns2.GlobalAccount().Interest(userSubject(t, "bob")); n != 1 {
		t.Errorf("bob's subscription on the new server: %d", n)
	}
	if code := get(t, adminURL(srv)+"/readyz"); code != 200 {
		t.Errorf("/readyz %d after NATS is back", code)
	}
	// No WebSocket was dropped: bob is still served.
	send(t, bob, map[string]string{"type": "ping"})
	readType(t, bob, protocol.TypePong)
}

// A dispatch queue that overflows shows up in the NATS slow-consumer
// metrics: every message is either received or counted as dropped.
func TestNATSSlowConsumerCounted(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.Dispatchers = 1; o.DispatchQueue = 16 })
	var devices []*wstest.Conn
	for i := 0; i < 20; i++ {
		ws, _ := connect(t, srv, "busy") // 20 devices: each message costs 20 writes
		devices = append(devices, ws)
	}
	nc := natsConn(t, srv)
	for i := 0; i < 20000; i++ {
		nc.Publish(userSubject(t, "busy"), []byte(fmt.Sprint(i)))
	}
	nc.Flush()
	checkFor(t, 10*time.Second, func() error {
		if n := metricValue(t, srv, "wsfleet_gateway_nats_slow_consumer_total"); n < 1 {
			return errorf("no slow-consumer episode counted")
		}
		dropped := metricValue(t, srv, "wsfleet_gateway_nats_dropped_messages_total")
		received := metricValue(t, srv, "wsfleet_gateway_nats_messages_received_total")
		if dropped < 1 || dropped+received != 20000 {
			return errorf("dropped %v + received %v, want 20000 with drops", dropped, received)
		}
		return nil
	})
	// The count outlives the subscription: the user leaves, it stays.
	dropped := metricValue(t, srv, "wsfleet_gateway_nats_dropped_messages_total")
	for _, ws := range devices {
		ws.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		if n := numSubs(t, srv, userSubject(t, "busy")); n != 0 {
			return errorf("%d subscriptions left", n)
		}
		return nil
	})
	if n := metricValue(t, srv, "wsfleet_gateway_nats_dropped_messages_total"); n != dropped {
		t.Fatalf("dropped messages %v after the user left, %v before", n, dropped)
	}
}

package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// runNATS runs an embedded nats-server on port (-1: any), shut down at the
// end of the test.
func runNATS(t *testing.T, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func gaugeValue(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// TestNoRespondersOnInbox: a request nobody is subscribed to is answered
// by the NATS server on a plain (channel) subscription to the reply
// subject, as the tracker's inbox is, with an empty message whose Status
// header is noRespondersStatus: what tells a node whose connection is gone.
func TestNoRespondersOnInbox(t *testing.T) {
	ns := runNATS(t, -1)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 4)
	if _, err := nc.ChanSubscribe(inbox+".*", ch); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("wsfleet.presence.node.nobody", inbox+".p1", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		if m.Subject != inbox+".p1" || len(m.Data) != 0 || m.Header.Get("Status") != noRespondersStatus {
			t.Fatalf("got %q on %q with header %v, want an empty message with Status: %s", m.Data, m.Subject, m.Header, noRespondersStatus)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer from the server")
	}
}

// TestPublishingRetries: publishing runs a publish again only when nothing
// of it was written and NATS was down, once the reconnect handler wakes it
// (no polling: a failed attempt waits for the next reconnect, even while
// the link still reads up); anything else is answered at once.
func TestPublishingRetries(t *testing.T) {
	cases := []struct {
		name     string
		first    error // the first attempt's error; later attempts succeed
		event    func(l *natsLink)
		status   int // 0: published
		attempts int32
		waits    string // the publish_waits_total result counted, "" for none
	}{
		{name: "reconnecting, then back", first: unsent(nats.ErrReconnectBufExceeded),
			event: func(l *natsLink) { l.setDown(); l.setUp(time.Now()) }, attempts: 2, waits: "published"},
		{name: "closed for good while waiting", first: unsent(nats.ErrReconnectBufExceeded),
			event: func(l *natsLink) { l.setClosed() }, status: http.StatusServiceUnavailable, attempts: 1, waits: "timeout"},
		{name: "flush failed after the write", first: fmt.Errorf("NATS did not confirm the publish: %w", nats.ErrConnectionClosed),
			status: http.StatusServiceUnavailable, attempts: 1},
		{name: "too large", first: unsent(nats.ErrMaxPayload), status: http.StatusRequestEntityTooLarge, attempts: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Options{APIKeys: []string{"0123456789abcdef0123"}, PublishWait: 10 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			s.link.setUp(time.Now())
			var attempts atomic.Int32
			done := make(chan *apiError, 1)
			w := s.newNATSWait(context.Background())
			defer w.stop()
			go func() {
				done <- s.publishing(w, func(*nats.Conn) error {
					if attempts.Add(1) == 1 {
						return tc.first
					}
					return nil
				})
			}()
			if tc.event != nil {
				checkFor(t, 5*time.Second, func() error {
					if v := gaugeValue(t, s.m.publishWaiting); v != 1 {
						return fmt.Errorf("%g publishes waiting", v)
					}
					return nil
				})
				tc.event(s.link)
			}
			var aerr *apiError
			select {
			case aerr = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("publishing did not return")
			}
			switch {
			case tc.status == 0 && aerr != nil:
				t.Fatalf("refused: %v", aerr)
			case tc.status != 0 && (aerr == nil || aerr.status != tc.status):
				t.Fatalf("answer %v, want status %d", aerr, tc.status)
			}
			if got := attempts.Load(); got != tc.attempts {
				t.Fatalf("%d attempts, want %d", got, tc.attempts)
			}
			for _, r := range []string{"published", "timeout"} {
				want := 0.0
				if r == tc.waits {
					want = 1
				}
				if v := gaugeValue(t, s.m.publishWaits.WithLabelValues(r)); v != want {
					t.Errorf("publish_waits_total{result=%q} %g, want %g", r, v, want)
				}
			}
		})
	}
}

// TestNATSAPIPublishWaits: the NATS request API's publishes share the
// wait: an operation handled while the router's connection is down is
// published once NATS is back.
func TestNATSAPIPublishWaits(t *testing.T) {
	t.Parallel()
	ops := map[string]*natsOp{}
	for i := range natsOps {
		ops[natsOps[i].name] = &natsOps[i]
	}
	cases := []struct{ op, req string }{
		{"publish", `{"user":"bob","data":{"n":1}}`},
		{"batch", `{"users":["bob","carol"],"data":{"n":2}}`},
		{"broadcast", `{"data":{"n":3}}`},
	}
	for _, tc := range cases {
		t.Run(tc.op, func(t *testing.T) {
			t.Parallel()
			ns := runNATS(t, -1)
			port := ns.Addr().(*net.TCPAddr).Port
			s, err := New(Options{Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: ns.ClientURL(),
				APIKeys: []string{"0123456789abcdef0123"}, IdempotencyStore: "memory", PublishWait: 20 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			ns.Shutdown()
			ns.WaitForShutdown()
			checkFor(t, 5*time.Second, func() error {
				if s.natsConnected() {
					return errors.New("the router still reads connected")
				}
				return nil
			})
			type answer struct {
				res  opResult
				aerr *apiError
			}
			done := make(chan answer, 1)
			go func() {
				res, aerr := ops[tc.op].handle(s, context.Background(), []byte(tc.req))
				done <- answer{res, aerr}
			}()
			checkFor(t, 5*time.Second, func() error {
				if v := gaugeValue(t, s.m.publishWaiting); v != 1 {
					return fmt.Errorf("%g publishes waiting", v)
				}
				return nil
			})
			runNATS(t, port)
			var a answer
			select {
			case a = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("no answer after NATS came back")
			}
			if a.aerr != nil || a.res.status != http.StatusAccepted || !json.Valid(a.res.body) {
				t.Fatalf("answer %+v %v, want 202", a.res, a.aerr)
			}
			if v := gaugeValue(t, s.m.publishWaits.WithLabelValues("published")); v != 1 {
				t.Fatalf("publish_waits_total{result=\"published\"} %g, want 1", v)
			}
		})
	}
}

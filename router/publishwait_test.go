package router_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/router"
)

// cutRouter starts a router whose NATS connection goes through a proxy,
// with --publish-wait wait, and a watcher subscribed directly to the NATS
// server (so its subscription outlives the router's link). With jetstream
// the server runs JetStream and the router keeps its idempotency keys
// there.
func cutRouter(t *testing.T, wait time.Duration, jetstream bool) (*router.Server, *natsProxy, *nats.Subscription) {
	t.Helper()
	ns := startNATS(t, -1, func(o *server.Options) {
		if jetstream {
			o.JetStream, o.StoreDir = true, t.TempDir()
		}
	})
	proxy := newNATSProxy(t, ns)
	sub := watch(t, ns)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.NATSURL = proxy.url()
		o.PublishWait = wait
		if jetstream {
			o.IdempotencyStore = "jetstream"
		}
	})
	return srv, proxy, sub
}

// waitDisconnected cuts the router's link and waits until it knows.
func waitDisconnected(t *testing.T, srv *router.Server, proxy *natsProxy) {
	t.Helper()
	proxy.cut()
	checkFor(t, 10*time.Second, func() error {
		if r := do(t, http.MethodGet, adminURL(srv)+"/readyz", "", nil); r.status != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after the cut, want 503", r.status)
		}
		return nil
	})
}

// sendAsync posts body with testKey from a goroutine other than the
// test's; a failure is a response with status 0 and the error as body.
func sendAsync(url, body, idemKey string) response {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// publishCases are the publishes that wait for NATS: the request, and
// the subject and body its message is delivered with.
var publishCases = []struct {
	name, path, body string
	subject, data    string
	idemKey          string // an Idempotency-Key, kept in JetStream (which needs NATS too)
}{
	{name: "user", path: "/v1/users/bob/messages", body: `{"n":1}`, subject: "wsfleet.user.bob", data: `{"n":1}`},
	{name: "batch", path: "/v1/messages", body: `{"users":["bob"],"data":{"n":2}}`, subject: "wsfleet.user.bob", data: `{"n":2}`},
	{name: "broadcast", path: "/v1/broadcast", body: `{"n":3}`, subject: "wsfleet.broadcast", data: `{"n":3}`},
	{name: "user with an idempotency key", path: "/v1/users/bob/messages", body: `{"n":4}`, subject: "wsfleet.user.bob", data: `{"n":4}`,
		idemKey: "order-4"},
}

// TestPublishWaitsForNATS: a publish made while the router's NATS
// connection is down waits for it (--publish-wait) and is published once
// it is back: 202, delivered once.
func TestPublishWaitsForNATS(t *testing.T) {
	t.Parallel()
	for _, tc := range publishCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, proxy, sub := cutRouter(t, 20*time.Second, tc.idemKey != "")
			waitDisconnected(t, srv, proxy)
			answer := make(chan response, 1)
			go func() { answer <- sendAsync(apiURL(srv)+tc.path, tc.body, tc.idemKey) }()
			checkFor(t, 10*time.Second, func() error {
				if v := metricValue(t, srv, "wsfleet_router_publish_waiting"); v != 1 {
					return fmt.Errorf("%g publishes waiting, want 1", v)
				}
				return nil
			})
			proxy.restore()
			var r response
			select {
			case r = <-answer:
			case <-time.After(15 * time.Second):
				t.Fatal("no answer after NATS came back")
			}
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d, want 202 (body %q)", r.status, r.body)
			}
			m := nextMsg(t, sub)
			if m.Subject != tc.subject || string(m.Data) != tc.data {
				t.Fatalf("delivered %q on %q, want %q on %q", m.Data, m.Subject, tc.data, tc.subject)
			}
			expectMetric(t, srv, `wsfleet_router_publish_waits_total{result="published"}`, 1)
			expectMetric(t, srv, `wsfleet_router_publish_waits_total{result="timeout"}`, 0)
			expectMetric(t, srv, "wsfleet_router_publish_waiting", 0)
			if v := metricValue(t, srv, "wsfleet_router_nats_reconnects_total"); v < 1 {
				t.Fatalf("wsfleet_router_nats_reconnects_total %g after a reconnect", v)
			}
			expectNothingPublished(t, srv, sub)
		})
	}
}

// TestPublishWaitTimesOut: when NATS is not back within --publish-wait the
// answer is 503 nats_unavailable with Retry-After, and nothing goes out
// once it is back.
func TestPublishWaitTimesOut(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	srv, proxy, sub := cutRouter(t, wait, false)
	waitDisconnected(t, srv, proxy)
	for _, tc := range publishCases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := sendAsync(apiURL(srv)+tc.path, tc.body, tc.idemKey)
			r.refused(t, http.StatusServiceUnavailable, "nats_unavailable")
			if got := r.header.Get("Retry-After"); got != "1" {
				t.Fatalf("Retry-After %q, want 1", got)
			}
			if d := time.Since(start); d < wait {
				t.Fatalf("answered after %s, before --publish-wait (%s)", d, wait)
			}
		})
	}
	expectMetric(t, srv, `wsfleet_router_publish_waits_total{result="timeout"}`, float64(len(publishCases)))
	expectMetric(t, srv, `wsfleet_router_publish_waits_total{result="published"}`, 0)
	proxy.restore()
	checkFor(t, 10*time.Second, func() error {
		if r := do(t, http.MethodGet, adminURL(srv)+"/readyz", "", nil); r.status != http.StatusOK {
			return fmt.Errorf("/readyz %d after the restore, want 200", r.status)
		}
		return nil
	})
	expectNothingPublished(t, srv, sub)
}

package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
	"github.com/wsfleet/wsfleet/router/client"
)

const (
	apiKey        = "client-test-key-0123456789"
	gatewaySecret = "client-test-secret-0123456789abcdef"
)

func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fleet is a nats-server with JetStream, one gateway node and a router.
type fleet struct {
	ns *server.Server
	gw *gateway.Server
	r  *router.Server
	nc *nats.Conn
}

func startFleet(t *testing.T, mod func(*router.Options)) *fleet {
	t.Helper()
	return startFleetWith(t, nil, mod)
}

// startFleetWith is startFleet with the gateway's options changed by gwMod.
func startFleetWith(t *testing.T, gwMod func(*gateway.Options), mod func(*router.Options)) *fleet {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	gwo := gateway.Options{NATSURL: ns.ClientURL(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		JWT: jwtverify.Config{HS256Secret: gatewaySecret}, NodeID: "gw-1", PresenceInterval: 100 * time.Millisecond,
		PresenceBatchInterval: 10 * time.Millisecond, Pollers: 1, Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))}
	if gwMod != nil {
		gwMod(&gwo)
	}
	gw, err := gateway.New(gwo)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	o := router.Options{Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: ns.ClientURL(), APIKeys: []string{apiKey},
		IdempotencyStore: "jetstream", Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))}
	if mod != nil {
		mod(&o)
	}
	r, err := router.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &fleet{ns: ns, gw: gw, r: r, nc: nc}
}

func (f *fleet) clients(t *testing.T) map[string]client.Client {
	return map[string]client.Client{
		"http": newHTTP(t, "http://"+f.r.Addr().String(), apiKey),
		"nats": newNATS(t, f.nc, ""),
	}
}

// newHTTP is client.NewHTTP with arguments that must be valid.
func newHTTP(t *testing.T, baseURL, token string, opts ...client.HTTPOption) *client.HTTPClient {
	t.Helper()
	c, err := client.NewHTTP(baseURL, token, opts...)
	if err != nil {
		t.Fatalf("NewHTTP(%q): %v", baseURL, err)
	}
	return c
}

// newNATS is client.NewNATS with arguments that must be valid.
func newNATS(t *testing.T, nc *nats.Conn, prefix string) *client.NATSClient {
	t.Helper()
	c, err := client.NewNATS(nc, prefix)
	if err != nil {
		t.Fatalf("NewNATS(%q): %v", prefix, err)
	}
	return c
}

// device is a WebSocket connection of user to the fleet's gateway; its
// frames arrive on a channel read by one goroutine.
type device struct {
	ws     *wstest.Conn
	frames chan map[string]any
	closed chan int
}

func (f *fleet) connect(t *testing.T, user string) *device {
	t.Helper()
	ws, _, err := wstest.Dial("ws://"+f.gw.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	tok, _ := jwtmint.Mint("HS256", []byte(gatewaySecret), jwtmint.Claims{Subject: user, TTL: time.Hour,
		Extra: map[string]any{"topics": []string{"news.>"}}})
	if err := ws.WriteJSON(map[string]string{"type": "auth", "token": tok}); err != nil {
		t.Fatal(err)
	}
	d := &device{ws: ws, frames: make(chan map[string]any, 16), closed: make(chan int, 1)}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *wstest.CloseError
				code := 1006
				if errors.As(err, &ce) {
					code = ce.Code
				}
				d.closed <- code
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil && m["type"] != protocol.TypePing {
				d.frames <- m
			}
		}
	}()
	if m := d.next(t); m["type"] != protocol.TypeWelcome {
		t.Fatalf("got %v, want welcome", m)
	}
	return d
}

func (d *device) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-d.frames:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no frame")
		return nil
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestClient runs every operation over both transports against a real
// gateway node and router.
func TestClient(t *testing.T) {
	f := startFleet(t, nil)
	for name, c := range f.clients(t) {
		t.Run(name, func(t *testing.T) {
			user := "alice-" + name
			dev := f.connect(t, user)
			checkFor(t, 5*time.Second, func() error {
				p, err := c.Presence(ctx(t), user)
				if err != nil || !p.Online || p.Devices != 1 || len(p.Nodes) != 1 || p.Nodes[0].Node != "gw-1" {
					return fmt.Errorf("presence %+v, %v", p, err)
				}
				return nil
			})

			res, err := c.Publish(ctx(t), user, map[string]string{"text": "shipped"}, client.RequireOnline())
			if err != nil || !res.Online || res.Devices != 1 || res.Replayed {
				t.Fatalf("Publish: %+v, %v", res, err)
			}
			if m := dev.next(t); m["id"] != res.ID || fmt.Sprint(m["data"]) != "map[text:shipped]" {
				t.Fatalf("delivered %v, want id %s", m, res.ID)
			}
			// Raw JSON is sent as is.
			res, err = c.Publish(ctx(t), user, json.RawMessage(`{"raw": [1, 2]}`))
			if err != nil {
				t.Fatal(err)
			}
			if m := dev.next(t); m["id"] != res.ID || fmt.Sprint(m["data"]) != "map[raw:[1 2]]" {
				t.Fatalf("delivered %v", m)
			}

			// Idempotency: the retry is not delivered and has the same id.
			key := client.WithIdempotencyKey("order-7-" + name)
			first, err := c.Publish(ctx(t), user, "once", key)
			if err != nil {
				t.Fatal(err)
			}
			if m := dev.next(t); m["id"] != first.ID {
				t.Fatalf("delivered %v", m)
			}
			again, err := c.Publish(ctx(t), user, "once", key)
			if err != nil || again.ID != first.ID || !again.Replayed {
				t.Fatalf("retry: %+v, %v (first %+v)", again, err, first)
			}
			if _, err := c.Publish(ctx(t), user, "twice", key); !errors.Is(err, client.ErrIdempotencyKeyReused) {
				t.Fatalf("key reused for another message: %v", err)
			}

			_, err = c.Publish(ctx(t), "nobody", 1, client.RequireOnline())
			var ce *client.Error
			if !errors.Is(err, client.ErrUserOffline) || !errors.As(err, &ce) || ce.Status != http.StatusNotFound || ce.Message == "" {
				t.Fatalf("offline user: %v (%+v), want user_offline (404) with the router's reason", err, ce)
			}

			rs, err := c.PublishBatch(ctx(t), []string{user, "nobody", user, ""}, 7)
			if err != nil || len(rs) != 3 || rs[0].User != user || !rs[0].Online || rs[0].ID == "" ||
				rs[1].Online || rs[1].ID == "" || rs[2].Error != "bad_user" {
				t.Fatalf("PublishBatch: %+v, %v", rs, err)
			}
			// The next frame is the batch's: the retries were not delivered.
			if m := dev.next(t); m["id"] != rs[0].ID || m["data"] != float64(7) {
				t.Fatalf("batch delivered %v", m)
			}
			// An idempotent batch: the retry gets the first results, each
			// marked Replayed, and is not delivered again.
			bkey := client.WithIdempotencyKey("batch-7-" + name)
			first7, err := c.PublishBatch(ctx(t), []string{user, "nobody"}, 8, bkey)
			if err != nil || len(first7) != 2 || first7[0].Replayed || first7[1].Replayed {
				t.Fatalf("idempotent PublishBatch: %+v, %v", first7, err)
			}
			if m := dev.next(t); m["id"] != first7[0].ID || m["data"] != float64(8) {
				t.Fatalf("batch delivered %v", m)
			}
			again7, err := c.PublishBatch(ctx(t), []string{user, "nobody"}, 8, bkey)
			if err != nil || len(again7) != 2 || again7[0].ID != first7[0].ID || again7[1].ID != first7[1].ID ||
				!again7[0].Replayed || !again7[1].Replayed {
				t.Fatalf("PublishBatch retry: %+v, %v; want the first results (%+v) replayed", again7, err, first7)
			}
			rs, err = c.PublishBatch(ctx(t), []string{"nobody"}, 7, client.RequireOnline())
			if err != nil || len(rs) != 1 || rs[0].Error != "user_offline" {
				t.Fatalf("PublishBatch require online: %+v, %v", rs, err)
			}

			b, err := c.Broadcast(ctx(t), "hello all")
			if err != nil || b.ID == "" {
				t.Fatalf("Broadcast: %+v, %v", b, err)
			}
			if m := dev.next(t); m["id"] != b.ID || m["data"] != "hello all" {
				t.Fatalf("broadcast delivered %v", m)
			}

			topic := "news." + name
			if err := dev.ws.WriteJSON(map[string]string{"type": "subscribe", "topic": topic}); err != nil {
				t.Fatal(err)
			}
			if m := dev.next(t); m["type"] != protocol.TypeSubscribed {
				t.Fatalf("subscribe answered %v", m)
			}
			tr, err := c.PublishTopic(ctx(t), topic, "to the topic")
			if err != nil || tr.Topic != topic || tr.ID == "" || tr.Replayed {
				t.Fatalf("PublishTopic: %+v, %v", tr, err)
			}
			if m := dev.next(t); m["topic"] != topic || m["id"] != tr.ID || m["data"] != "to the topic" {
				t.Fatalf("topic message delivered %v", m)
			}
			if _, err := c.PublishTopic(ctx(t), "news..x", 1); !errors.Is(err, client.ErrBadTopic) {
				t.Fatalf("PublishTopic to a bad topic: %v, want bad_topic", err)
			}

			// A service subscribes the user's devices to a topic its token
			// does not allow, then unsubscribes them.
			room := "room." + name
			sr, err := c.Subscribe(ctx(t), user, room)
			if err != nil || sr.User != user || sr.Topic != room || sr.Devices != 1 || sr.Nodes != 1 {
				t.Fatalf("Subscribe: %+v, %v", sr, err)
			}
			if m := dev.next(t); m["type"] != protocol.TypeSubscribed || m["topic"] != room {
				t.Fatalf("Subscribe: the device got %v", m)
			}
			if tr, err := c.PublishTopic(ctx(t), room, 5); err != nil {
				t.Fatal(err)
			} else if m := dev.next(t); m["topic"] != room || m["id"] != tr.ID {
				t.Fatalf("room message delivered %v", m)
			}
			if ur, err := c.Unsubscribe(ctx(t), user, room); err != nil || ur.Devices != 1 {
				t.Fatalf("Unsubscribe: %+v, %v", ur, err)
			}
			if m := dev.next(t); m["type"] != protocol.TypeUnsubscribed || m["topic"] != room {
				t.Fatalf("Unsubscribe: the device got %v", m)
			}
			if tp, err := c.TopicPresence(ctx(t), room); err != nil || tp.Topic != room || tp.Users != 0 || tp.Members == nil {
				t.Fatalf("TopicPresence (not a --topic-presence topic): %+v, %v", tp, err)
			}
			if _, err := c.TopicPresence(ctx(t), "room..x"); !errors.Is(err, client.ErrBadTopic) {
				t.Fatalf("TopicPresence of a bad topic: %v, want bad_topic", err)
			}
			if _, err := c.Subscribe(ctx(t), user, "room.>"); !errors.Is(err, client.ErrBadTopic) {
				t.Fatalf("Subscribe to a wildcard: %v, want bad_topic", err)
			}

			q, err := c.QueryPresence(ctx(t), []string{user, "nobody"})
			if err != nil || len(q) != 2 || !q[0].Online || q[0].Devices != 1 || q[1].Online {
				t.Fatalf("QueryPresence: %+v, %v", q, err)
			}
			if _, err := c.QueryPresence(ctx(t), nil); !errors.Is(err, client.ErrBadRequest) {
				t.Fatalf("QueryPresence without users: %v", err)
			}
			st, err := c.Stats(ctx(t))
			if err != nil || st.Nodes != 1 || st.Users < 1 || st.NodeList[0].Node != "gw-1" {
				t.Fatalf("Stats: %+v, %v", st, err)
			}
			if _, err := c.Presence(ctx(t), "a\nb"); !errors.Is(err, client.ErrBadUser) {
				t.Fatalf("bad user: %v", err)
			}

			k, err := c.Kick(ctx(t), user)
			if err != nil || k.Closed != 1 || k.Nodes != 1 {
				t.Fatalf("Kick: %+v, %v", k, err)
			}
			select {
			case code := <-dev.closed:
				if code != int(protocol.CloseKicked) {
					t.Fatalf("closed with %d, want 4403", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the device was not closed")
			}

			// The context's deadline is honoured.
			expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			if _, err := c.Stats(expired); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("expired context: %v", err)
			}
		})
	}
}

// TestClientResume: against a fleet with --resume every publish's id is
// the message's stream sequence (Sequence), the id the devices get, and a
// retry with the same idempotency key gets the same one.
func TestClientResume(t *testing.T) {
	f := startFleetWith(t, func(o *gateway.Options) { o.Resume = true }, func(o *router.Options) { o.Resume = true })
	for name, c := range f.clients(t) {
		t.Run(name, func(t *testing.T) {
			user := "resume-" + name
			dev := f.connect(t, user)
			checkFor(t, 5*time.Second, func() error {
				if p, err := c.Presence(ctx(t), user); err != nil || !p.Online {
					return fmt.Errorf("presence %+v, %v", p, err)
				}
				return nil
			})
			var last uint64
			// next checks that the device gets id next, a sequence above
			// the last one.
			next := func(what, id string, seq uint64, ok bool) {
				t.Helper()
				if !ok || seq <= last {
					t.Fatalf("%s: id %q, Sequence %d %v; want a sequence above %d", what, id, seq, ok, last)
				}
				last = seq
				if m := dev.next(t); m["id"] != id {
					t.Fatalf("%s: delivered %v, want id %s", what, m, id)
				}
			}
			key := client.WithIdempotencyKey("resume-" + name)
			res, err := c.Publish(ctx(t), user, "one", key)
			if err != nil {
				t.Fatal(err)
			}
			seq, ok := res.Sequence()
			next("Publish", res.ID, seq, ok)
			again, err := c.Publish(ctx(t), user, "one", key)
			if err != nil || again.ID != res.ID {
				t.Fatalf("retry: %+v, %v; want id %s", again, err, res.ID)
			}
			rs, err := c.PublishBatch(ctx(t), []string{user, "a\nb"}, "two")
			if err != nil || len(rs) != 2 {
				t.Fatalf("PublishBatch: %+v, %v", rs, err)
			}
			seq, ok = rs[0].Sequence()
			next("PublishBatch", rs[0].ID, seq, ok)
			if _, ok := rs[1].Sequence(); ok {
				t.Fatalf("a user that got nothing has a sequence: %+v", rs[1])
			}
			b, err := c.Broadcast(ctx(t), "three")
			if err != nil {
				t.Fatal(err)
			}
			seq, ok = b.Sequence()
			next("Broadcast", b.ID, seq, ok)
		})
	}
}

func TestClientErrors(t *testing.T) {
	f := startFleet(t, func(o *router.Options) { o.RateLimit = 0.5; o.RateLimitBurst = 1; o.MaxBatchUsers = 2 })
	h := newHTTP(t, "http://"+f.r.Addr().String()+"/", apiKey)
	if _, err := h.Stats(ctx(t)); err != nil {
		t.Fatal(err)
	}
	_, err := h.Stats(ctx(t))
	var ce *client.Error
	if !errors.Is(err, client.ErrRateLimited) || !errors.As(err, &ce) || ce.Status != 429 || ce.RetryAfter < time.Second {
		t.Fatalf("over the rate limit: %v (%+v)", err, ce)
	}
	bad := newHTTP(t, "http://"+f.r.Addr().String(), "wrong-key-0123456789")
	if _, err := bad.Stats(ctx(t)); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("bad key: %v", err)
	}
	n := newNATS(t, f.nc, "wsfleet")
	if _, err := n.PublishBatch(ctx(t), []string{"a", "b", "c"}, 1); !errors.Is(err, client.ErrTooManyUsers) {
		t.Fatalf("too many users: %v", err)
	}
	if _, err := n.Publish(ctx(t), "a", func() {}); err == nil || !strings.Contains(err.Error(), "encoding") {
		t.Fatalf("unencodable data: %v", err)
	}
	// Nobody answers on another prefix (more in TestClientNoAnswer).
	if _, err := newNATS(t, f.nc, "elsewhere").Stats(ctx(t)); !errors.Is(err, client.ErrRouterUnavailable) {
		t.Fatalf("no router on NATS: %v", err)
	}
	if errors.Is(client.ErrUserOffline, client.ErrRateLimited) {
		t.Fatal("different codes match")
	}
}

// TestClientNoAnswer: a call that gets no answer (nothing listening, a
// deadline, a closed NATS connection, nobody subscribed) is
// ErrRouterUnavailable over both transports, and errors.Is and errors.As
// still reach the cause. A call the caller cancelled is not.
func TestClientNoAnswer(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	natsConn := func(t *testing.T) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	// A port nothing listens on: a listener's, closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String()
	ln.Close()

	// A router that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		silent.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	silentURL := "http://" + silent.Addr().String()

	// A deadline that passes while waiting.
	shortCtx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	cancelled := func(*testing.T) context.Context {
		c, cancel := context.WithCancel(context.Background())
		cancel()
		return c
	}
	var opErr *net.OpError
	cases := []struct {
		name        string
		client      func(t *testing.T) client.Client
		ctx         func(t *testing.T) context.Context
		unavailable bool             // errors.Is(err, ErrRouterUnavailable)
		status      int              // of the *client.Error
		cause       func(error) bool // the failure is still reachable
	}{
		{name: "HTTP connection refused", client: func(t *testing.T) client.Client { return newHTTP(t, closedURL, apiKey) }, ctx: ctx,
			unavailable: true, cause: func(err error) bool { return errors.As(err, &opErr) && errors.Is(err, syscall.ECONNREFUSED) }},
		{name: "HTTP unknown host", client: func(t *testing.T) client.Client { return newHTTP(t, "http://router.invalid", apiKey) }, ctx: ctx,
			unavailable: true, cause: func(err error) bool { var de *net.DNSError; return errors.As(err, &de) }},
		{name: "HTTP deadline", client: func(t *testing.T) client.Client { return newHTTP(t, silentURL, apiKey) }, ctx: shortCtx,
			unavailable: true, cause: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
		{name: "HTTP client timeout", client: func(t *testing.T) client.Client {
			return newHTTP(t, silentURL, apiKey, client.WithHTTPClient(&http.Client{Timeout: 200 * time.Millisecond}))
		}, ctx: ctx, unavailable: true, cause: func(err error) bool { var ne net.Error; return errors.As(err, &ne) && ne.Timeout() }},
		{name: "HTTP cancelled", client: func(t *testing.T) client.Client { return newHTTP(t, silentURL, apiKey) }, ctx: cancelled,
			cause: func(err error) bool { return errors.Is(err, context.Canceled) }},
		{name: "NATS no responders", client: func(t *testing.T) client.Client { return newNATS(t, natsConn(t), "nobody") }, ctx: ctx,
			unavailable: true, status: 503, cause: func(err error) bool { return errors.Is(err, nats.ErrNoResponders) }},
		{name: "NATS deadline", client: func(t *testing.T) client.Client {
			nc := natsConn(t)
			if _, err := nc.SubscribeSync("stuck.router.stats"); err != nil { // a router that never answers
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			return newNATS(t, nc, "stuck")
		}, ctx: shortCtx, unavailable: true, cause: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
		{name: "NATS connection closed", client: func(t *testing.T) client.Client {
			nc := natsConn(t)
			nc.Close()
			return newNATS(t, nc, "")
		}, ctx: ctx, unavailable: true, cause: func(err error) bool { return errors.Is(err, nats.ErrConnectionClosed) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client(t).Stats(tc.ctx(t))
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, client.ErrRouterUnavailable); got != tc.unavailable {
				t.Fatalf("errors.Is(%v, ErrRouterUnavailable) = %v, want %v", err, got, tc.unavailable)
			}
			var ce *client.Error
			if tc.unavailable && (!errors.As(err, &ce) || ce.Status != tc.status || ce.Err == nil) {
				t.Fatalf("%v: *client.Error %+v, want status %d and the cause in Err", err, ce, tc.status)
			}
			if !tc.cause(err) {
				t.Fatalf("%v (%T): the cause is not reachable with errors.Is/As", err, err)
			}
		})
	}
}

// TestClientAnswersNotTheRouters: an error answer without a router error
// body ({"code","reason"}, or "message" for the text) is
// ErrRouterUnavailable with the status.
func TestClientAnswersNotTheRouters(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        error
	}{
		{"proxy error", http.StatusBadGateway, "text/plain", "bad gateway", client.ErrRouterUnavailable},
		{"net/http plain text", http.StatusRequestHeaderFieldsTooLarge, "text/plain; charset=utf-8", "431 Request Header Fields Too Large", client.ErrRouterUnavailable},
		{"JSON without a code", http.StatusInternalServerError, "application/json", `{"message":"x"}`, client.ErrRouterUnavailable},
		{"router error body", http.StatusNotFound, "application/json", `{"code":"user_offline","message":"offline"}`, client.ErrUserOffline},
		{"an error body without a code", http.StatusNotFound, "application/json", `{"error":"user_offline","message":"offline"}`, client.ErrRouterUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			_, err := newHTTP(t, srv.URL, apiKey).Publish(ctx(t), "alice", 1)
			var ce *client.Error
			if !errors.Is(err, tc.want) || !errors.As(err, &ce) || ce.Status != tc.status {
				t.Fatalf("%v (%+v), want %v with status %d", err, ce, tc.want, tc.status)
			}
			if tc.want == client.ErrRouterUnavailable && !strings.Contains(ce.Message, fmt.Sprintf("%q", tc.body)) {
				t.Fatalf("message %q lacks the answer %q", ce.Message, tc.body)
			}
		})
	}
}

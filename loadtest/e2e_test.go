package loadtest

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/router"
)

const (
	testSecret = "loadtest-secret-0123456789abcdef-0123456789"
	testAPIKey = "loadtest-api-key-0123456789"
)

// TestMain lets the test binary serve as a worker process (worker mode
// re-executes it with WorkerEnv set).
func TestMain(m *testing.M) {
	if IsWorker() {
		os.Exit(RunWorker())
	}
	os.Exit(m.Run())
}

type fleet struct {
	gw        *gateway.Server
	rt        *router.Server
	wsURL     string
	routerURL string
	natsURL   string
	metrics   string
}

// startFleet starts a NATS server, a gateway (its options changed by
// mods) and a router, all in this process on loopback.
func startFleet(t *testing.T, mods ...func(*gateway.Options)) *fleet {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	o := gateway.Options{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: ns.ClientURL(),
		NodeID: "lt-test", JWT: jwtverify.Config{HS256Secret: testSecret},
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	}
	for _, m := range mods {
		m(&o)
	}
	gw, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	f := &fleet{gw: gw, wsURL: "ws://" + gw.Addr().String() + "/ws", natsURL: ns.ClientURL(),
		metrics: "http://" + gw.AdminAddr().String() + "/metrics"}
	rt, err := router.New(router.Options{
		Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: f.natsURL, APIKeys: []string{testAPIKey},
		RateLimit: -1, IdempotencyStore: "memory",
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	f.rt = rt
	f.routerURL = "http://" + rt.Addr().String()
	return f
}

func (f *fleet) config(scenario string) Config {
	var out, log bytes.Buffer
	return Config{
		Scenario: scenario, URLs: []string{f.wsURL}, Auth: AuthConfig{HS256Secret: testSecret},
		Publish:     PublishConfig{Via: "router", RouterURL: f.routerURL, APIKey: testAPIKey, NATSURL: f.natsURL},
		MetricsURLs: []string{f.metrics}, Progress: "lines", Stdout: &out, Stderr: &log,
		Drain: 10 * time.Second, DrainQuiet: 3 * time.Second,
	}
}

// checkClean asserts a delivery run lost, duplicated and reordered nothing
// and that its counts add up.
func checkClean(t *testing.T, res *Result, c SeqCounts) {
	t.Helper()
	if !res.Accounting.OK {
		t.Errorf("accounting: %v", res.Accounting.Checks)
	}
	if c.Lost != 0 || c.Duplicated != 0 || c.OutOfOrder != 0 {
		t.Errorf("lost %d, duplicated %d, out of order %d", c.Lost, c.Duplicated, c.OutOfOrder)
	}
	if c.Expected != c.Delivered+c.Lost+c.Missed {
		t.Errorf("expected %d != delivered %d + lost %d + missed %d", c.Expected, c.Delivered, c.Lost, c.Missed)
	}
	if len(res.Problems) > 0 {
		t.Errorf("problems: %v", res.Problems)
	}
	if len(res.Failures) > 0 || res.ExitStatus != 0 {
		t.Errorf("verdict: exit status %d, failures %q", res.ExitStatus, res.Failures)
	}
}

func TestDeliverEndToEnd(t *testing.T) {
	f := startFleet(t)
	for _, via := range []string{"router", "nats"} {
		t.Run(via, func(t *testing.T) {
			cfg := f.config(ScenarioDeliver)
			cfg.Conns, cfg.Devices, cfg.ConnectRate = 200, 2, 2000
			cfg.MsgRate, cfg.Duration = 400, 2*time.Second
			cfg.Publish.Via = via
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			m := res.Messages
			t.Logf("skipped %d, max %.1f ms, acked %d, delivered %d/%d, e2e p50 %.2f ms p99 %.2f ms, handshake p99 %.2f ms, drain %s",
				m.Skipped, m.Latency.Max, m.Acked, m.Counts.Delivered, m.Counts.Expected, m.Latency.P50, m.Latency.P99, res.Connections.Handshake.P99, m.DrainEnd)
			checkClean(t, res, m.Counts)
			if res.Connections.Welcomes < 200 || !res.Connections.RampDone || res.Connections.Peak != 200 {
				t.Errorf("connections: %+v", res.Connections)
			}
			if m.Acked < 400 || m.Failed != 0 {
				t.Errorf("published %d, acked %d, failed %d", m.Published, m.Acked, m.Failed)
			}
			// every acknowledged message reaches both devices of its user
			if m.Counts.Expected != 2*m.Acked || m.Counts.Delivered != m.Counts.Expected {
				t.Errorf("expected %d, delivered %d, acked %d", m.Counts.Expected, m.Counts.Delivered, m.Acked)
			}
			if m.Latency.Count != m.Counts.Delivered {
				t.Errorf("latency samples %d != delivered %d", m.Latency.Count, m.Counts.Delivered)
			}
			if m.DrainEnd != "complete" {
				t.Errorf("drain ended %q", m.DrainEnd)
			}
			if len(res.Gateways) != 1 || res.Gateways[0].Peak == nil || res.Gateways[0].Peak.Connections < 200 {
				t.Errorf("gateway figures: %+v", res.Gateways)
			}
			out := cfg.Stdout.(*bytes.Buffer).String()
			if !strings.Contains(out, "end-to-end latency") || !strings.Contains(out, "counts add up") {
				t.Errorf("report:\n%s", out)
			}
		})
	}
}

// A refused publish is reported with the router's error code.
func TestSinkReportsRouterCodes(t *testing.T) {
	f := startFleet(t)
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"accepted", "/v1/users/alice/messages", `{"n":1}`, ""},
		{"not JSON", "/v1/users/alice/messages", `{`, "http_400_bad_json"},
		{"no such route", "/v1/nope", `{}`, "http_404_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSink(PublishConfig{Via: "router", RouterURL: f.routerURL, APIKey: testAPIKey, SubjectPrefix: "wsfleet", Timeout: 5 * time.Second, Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			if got, _ := s.post(tc.path, []byte(tc.body)); got != tc.want {
				t.Fatalf("post %s %s: %q, want %q", tc.path, tc.body, got, tc.want)
			}
		})
	}
}

// startGateway starts another gateway on the fleet's NATS, with mod
// applied to its options, and returns its WebSocket URL.
func (f *fleet) startGateway(t *testing.T, nodeID string, mod func(*gateway.Options)) string {
	t.Helper()
	o := gateway.Options{
		Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: f.natsURL, NodeID: nodeID,
		JWT:    jwtverify.Config{HS256Secret: testSecret},
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	}
	mod(&o)
	gw, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return "ws://" + gw.Addr().String() + "/ws"
}

// A refused upgrade is reported with the gateway's error code.
func TestRefusedUpgradeCode(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioConnect)
	cfg.URLs = []string{f.startGateway(t, "full", func(o *gateway.Options) { o.MaxConnections = 2 })}
	cfg.MetricsURLs = nil
	cfg.Conns, cfg.ConnectRate, cfg.Duration = 3, 100, 100*time.Millisecond
	cfg.ConnectTimeout = time.Second // the ramp gives up ConnectTimeout + 5s after its last connect
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections.Errors["http_503_node_full"] == 0 {
		t.Fatalf("connect errors %v, want http_503_node_full", res.Connections.Errors)
	}
	if res.Connections.Refusals["http_503_node_full"] != res.Connections.Errors["http_503_node_full"] {
		t.Fatalf("refusals %v, errors %v: want the 503s in both", res.Connections.Refusals, res.Connections.Errors)
	}
	if ExitStatus(res) != ExitFailed {
		t.Fatalf("exit status %d with a connection never welcomed, want %d", ExitStatus(res), ExitFailed)
	}
}

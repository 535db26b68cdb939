package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Two worker processes (this test binary re-executed) share the
// connections; the parent merges their counts and histograms.
func TestWorkerProcesses(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioDeliver)
	cfg.Workers = "2"
	cfg.Conns, cfg.ConnectRate = 300, 3000
	cfg.MsgRate, cfg.Duration = 300, 2*time.Second
	cfg.Publish.Via = "nats"
	dir := t.TempDir()
	cfg.JSONFile = filepath.Join(dir, "r.json")
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Messages
	t.Logf("processes %d, acked %d, delivered %d, p99 %.2f ms, cpu %.2f s", res.Limits.Processes, m.Acked, m.Counts.Delivered, m.Latency.P99, res.CPU.UserSeconds+res.CPU.SysSeconds)
	if res.Limits.Processes != 2 || res.CPU.Processes != 3 {
		t.Fatalf("processes %d (cpu %d), want 2 workers", res.Limits.Processes, res.CPU.Processes)
	}
	checkClean(t, res, m.Counts)
	if res.Connections.Peak != 300 || res.Connections.Welcomes < 300 {
		t.Errorf("connections %+v", res.Connections)
	}
	if m.Counts.Delivered != m.Acked || m.Latency.Count != m.Counts.Delivered {
		t.Errorf("acked %d, delivered %d, latency samples %d", m.Acked, m.Counts.Delivered, m.Latency.Count)
	}
	// the merged welcome histogram holds every welcome of both processes
	if res.Connections.Handshake.Count != res.Connections.Welcomes {
		t.Errorf("handshake samples %d, welcomes %d", res.Connections.Handshake.Count, res.Connections.Welcomes)
	}
	back, err := ReadResult(cfg.JSONFile)
	if err != nil || back.Messages.Counts != m.Counts {
		t.Fatalf("json: %v %+v", err, back)
	}
}

func TestBroadcastScenario(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioBroadcast)
	cfg.Conns, cfg.ConnectRate = 150, 3000
	cfg.Broadcasts, cfg.BroadcastInterval = 3, 200*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := res.Broadcasts
	checkClean(t, res, b.Counts)
	if len(b.Each) != 3 {
		t.Fatalf("broadcasts %+v", b.Each)
	}
	for _, e := range b.Each {
		if !e.Acked || e.Receivers != 150 || e.LastMs < e.FirstMs || e.LastMs <= 0 {
			t.Errorf("broadcast %+v", e)
		}
	}
	if b.Counts.Delivered != 450 || b.Latency.Count != 450 {
		t.Errorf("counts %+v, latency samples %d", b.Counts, b.Latency.Count)
	}
}

func TestStormScenario(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioStorm)
	cfg.Conns, cfg.ConnectRate = 200, 3000
	cfg.MsgRate, cfg.Duration, cfg.DropAfter, cfg.DropShare = 200, 3*time.Second, time.Second, 0.5
	cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, time.Second
	cfg.Publish.Via = "nats"
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, m := res.Storm, res.Messages
	t.Logf("storm %+v; messages %+v", s, m.Counts)
	checkClean(t, res, m.Counts)
	if s.Dropped != 100 || s.Recovered != 100 || s.RecoverySeconds <= 0 || s.RecoverySeconds > 5 {
		t.Errorf("storm %+v", s)
	}
	if s.Reconnect.Count != 100 {
		t.Errorf("reconnect samples %d", s.Reconnect.Count)
	}
	if s.Missed != m.Counts.Missed || m.Counts.Missed == 0 {
		t.Errorf("missed %d / %d: nothing published while 100 devices were away?", s.Missed, m.Counts.Missed)
	}
}

func TestChurnScenario(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioChurn)
	cfg.Conns, cfg.ConnectRate = 100, 3000
	cfg.MsgRate, cfg.Duration = 200, 2*time.Second
	cfg.ChurnRate, cfg.ChurnDown = 20, 200*time.Millisecond
	cfg.Publish.Via = "nats"
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch, m := res.Churn, res.Messages
	t.Logf("churn %+v; messages %+v", ch, m.Counts)
	checkClean(t, res, m.Counts)
	if ch.Closed < 20 || ch.Closed > 60 {
		t.Errorf("churned %d in 2 s at 20/s", ch.Closed)
	}
	if res.Connections.Welcomes < 100+ch.Closed-10 {
		t.Errorf("welcomes %d after %d churned", res.Connections.Welcomes, ch.Closed)
	}
}

// A short token lifetime: the gateway closes expired connections with 4401
// and they reconnect with a fresh token; with --token-refresh they stay.
func TestTokenExpiry(t *testing.T) {
	f := startFleet(t)
	for _, refresh := range []bool{false, true} {
		cfg := f.config(ScenarioConnect)
		cfg.Conns, cfg.ConnectRate, cfg.Duration = 20, 1000, 4*time.Second
		cfg.Auth.TTL, cfg.Auth.Refresh = 3*time.Second, refresh
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := res.Connections
		t.Logf("refresh %v: closes %v, welcomes %d, refreshed %d", refresh, res.Closes, c.Welcomes, c.Refreshed)
		if refresh {
			if res.Closes["4401"] != 0 || c.Refreshed < 20 {
				t.Errorf("refresh: closes %v, refreshed %d", res.Closes, c.Refreshed)
			}
		} else if res.Closes["4401"] < 20 || c.Welcomes < 40 {
			t.Errorf("expiry: closes %v, welcomes %d", res.Closes, c.Welcomes)
		}
		// the expiry the run asked for is no failure
		if len(res.Failures) > 0 || res.ExitStatus != 0 || c.ClosedUnexpectedly != 0 {
			t.Errorf("verdict: exit status %d, failures %q, closed unexpectedly %d", res.ExitStatus, res.Failures, c.ClosedUnexpectedly)
		}
	}
}

func sampleResult() *Result {
	h := newHist()
	for i := int64(1); i <= 1000; i++ {
		recordMicros(h, i*i*1000)
	}
	return &Result{
		Tool: "wsfleet-loadtest", Scenario: ScenarioDeliver, RunID: "abcd1234", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Elapsed:     12.5,
		Connections: ConnResult{Target: 100, Peak: 100, Welcomes: 100, RampDone: true, RampSeconds: 0.5, Rate: 200, Handshake: statsOf(h), Errors: map[string]int64{"http_503_node_full": 2}},
		Messages:    &MsgResult{Via: "router", Published: 10, Acked: 10, Counts: SeqCounts{Expected: 10, Delivered: 10, Receipts: 10}, Latency: statsOf(h), Histogram: logBuckets(h), DrainEnd: "complete"},
		Closes:      map[string]int64{"4401": 3},
		Series:      []Point{{T: 0, Live: 0}, {T: 1, Live: 50, Connects: 50, LatCount: 3, LatP50: 1, LatP99: 2, LatMax: 3}, {T: 2, Live: 100, Connects: 50}},
		Hists:       map[string]HistWire{"e2e": exportHist(h)},
		Gateways:    []GatewayFigures{{URL: "http://x/metrics", Start: &Scrape{RSSBytes: 1 << 20}, Peak: &Scrape{RSSBytes: 2 << 20, Connections: 100}, BytesPerConn: 10485.76}},
		Accounting:  Accounting{OK: true, Checks: []string{"fine"}},
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	res := sampleResult()
	path := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(path, res); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(res)
	b, _ := json.Marshal(back)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip differs:\n%s\n%s", a, b)
	}
	if !reflect.DeepEqual(back.Hists, res.Hists) || !back.Started.Equal(res.Started) {
		t.Fatal("histograms or time differ after the round trip")
	}
	h, err := importHist(back.Hists["e2e"])
	if err != nil || statsOf(h) != res.Messages.Latency {
		t.Fatalf("histogram from JSON: %v %+v", err, statsOf(h))
	}
}

func TestReportRendering(t *testing.T) {
	res := sampleResult()
	var txt bytes.Buffer
	WriteReport(&txt, res)
	for _, want := range []string{"connect rate", "200/s achieved", "handshake (connect → welcome)", "p99.9", "lost 0", "duplicated 0", "out of order 0",
		"end-to-end latency", "4401×3", "error http_503_node_full", "memory per connection", "counts add up", "client CPU"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, txt.String())
		}
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, res); err != nil {
		t.Fatal(err)
	}
	p := page.String()
	for _, want := range []string{`<svg xmlns="http://www.w3.org/2000/svg" id="connections"`, `id="latency"`, `id="histogram"`, "<polyline", "<rect", "Connections over time", "End-to-end latency histogram"} {
		if !strings.Contains(p, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, banned := range []string{"<script", "http://cdn", "https://", "src=", "@import"} {
		if strings.Contains(p, banned) {
			t.Errorf("page is not self-contained: has %q", banned)
		}
	}
	if os.Getenv("LOADTEST_WRITE_SAMPLE") != "" {
		_ = os.WriteFile(os.Getenv("LOADTEST_WRITE_SAMPLE"), page.Bytes(), 0o644)
	}
}

func TestParseArgs(t *testing.T) {
	env := map[string]string{"LOADTEST_JWT_HS256_SECRET": "s3cret", "LOADTEST_API_KEY": "k"}
	c, err := ParseArgs("storm", []string{"--conns", "5000", "--drop-share", "0.3", "--source-ips", "127.0.0.2-127.0.0.9", "--url", "ws://a:1/ws,ws://b:2/ws"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 5000 || c.DropShare != 0.3 || c.Auth.HS256Secret != "s3cret" || c.Publish.APIKey != "k" || len(c.URLs) != 2 || c.MsgRate != 100 {
		t.Fatalf("%+v", c)
	}
	if _, err := ParseArgs("connect", []string{"--msg-rate", "5"}, nil); err == nil {
		t.Fatal("connect accepted --msg-rate")
	}
	if _, err := ParseArgs("nope", nil, nil); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	c.SetDefaults()
	c.Conns = 200000
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--max-conns") {
		t.Fatalf("over the cap: %v", err)
	}
}

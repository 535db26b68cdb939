package loadtest

import (
	"context"
	"testing"
	"time"
)

// --transport sse against a real gateway's GET /sse (its WebSocket URL
// given: the stream is requested on the same host:port), as the WebSocket
// end-to-end tests run: deliveries through the router and NATS, a
// broadcast, a live topic subscribed with topics=, rooms published on the
// members' behalf, kicks (close events 4403) and token expiries (close
// events 4401, the run's own doing).
func TestSSEGatewayEndToEnd(t *testing.T) {
	f := startFleet(t)
	sse := func(scenario string) Config {
		cfg := f.config(scenario)
		cfg.Transport = TransportSSE
		return cfg
	}
	run := func(t *testing.T, cfg Config) *Result {
		t.Helper()
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkSSEReport(t, cfg, res)
		if e := res.Connections.Errors; len(e) != 0 {
			t.Errorf("errors %v", e)
		}
		return res
	}
	for _, via := range []string{"router", "nats"} {
		t.Run("deliver via "+via, func(t *testing.T) {
			cfg := sse(ScenarioDeliver)
			cfg.Conns, cfg.Devices, cfg.ConnectRate = 200, 2, 2000
			cfg.MsgRate, cfg.Duration = 300, 2*time.Second
			cfg.Publish.Via = via
			res := run(t, cfg)
			m := res.Messages
			t.Logf("acked %d, delivered %d/%d, e2e p50 %.2f ms p99 %.2f ms, handshake p99 %.2f ms",
				m.Acked, m.Counts.Delivered, m.Counts.Expected, m.Latency.P50, m.Latency.P99, res.Connections.Handshake.P99)
			checkClean(t, res, m.Counts)
			if res.Connections.Peak != 200 || m.Acked < 300 || m.Counts.Expected != 2*m.Acked || m.Latency.Count != m.Counts.Delivered {
				t.Errorf("peak %d, acked %d, counts %+v, latency samples %d", res.Connections.Peak, m.Acked, m.Counts, m.Latency.Count)
			}
			if len(res.Gateways) != 1 || res.Gateways[0].Peak == nil || res.Gateways[0].Peak.Connections < 200 {
				t.Errorf("gateway figures: %+v", res.Gateways)
			}
		})
	}
	t.Run("broadcast", func(t *testing.T) {
		cfg := sse(ScenarioBroadcast)
		cfg.Conns, cfg.ConnectRate = 150, 3000
		cfg.Broadcasts, cfg.BroadcastInterval = 3, 200*time.Millisecond
		res := run(t, cfg)
		b := res.Broadcasts
		checkClean(t, res, b.Counts)
		if b.Counts.Delivered != 450 || b.Latency.Count != 450 {
			t.Errorf("counts %+v, latency samples %d", b.Counts, b.Latency.Count)
		}
	})
	t.Run("live", func(t *testing.T) {
		cfg := sse(ScenarioLive)
		cfg.Conns, cfg.Devices, cfg.ConnectRate = 200, 2, 3000
		cfg.MsgRate, cfg.Duration = 200, 2*time.Second
		cfg.Publish.Via = "nats"
		res := run(t, cfg)
		checkTopicRun(t, res, 200)
	})
	t.Run("rooms via router", func(t *testing.T) {
		cfg := sse(ScenarioRooms)
		cfg.Conns, cfg.RoomSize, cfg.ConnectRate = 100, 10, 3000
		cfg.MsgRate, cfg.Duration = 200, 2*time.Second
		cfg.RoomPublish = RoomPublishRouter
		res := run(t, cfg)
		checkTopicRun(t, res, 10)
	})
	t.Run("kicks", func(t *testing.T) {
		cfg := sse(ScenarioDeliver)
		cfg.Conns, cfg.ConnectRate = 100, 2000
		cfg.MsgRate, cfg.Duration = 200, 2*time.Second
		cfg.KickUsers, cfg.KickAfter = 10, 500*time.Millisecond
		cfg.BackoffMin, cfg.BackoffMax = 200*time.Millisecond, 400*time.Millisecond
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := res.Connections
		t.Logf("kicks %+v; closes %v", res.Kicks, res.Closes)
		if k := res.Kicks; k == nil || k.Closed != 10 || k.Failed != 0 {
			t.Fatalf("kicks %+v", k)
		}
		if res.Closes["4403"] != 10 || c.ClosedUnexpectedly != 10 || c.ClosedNotBack != 0 || res.Messages.Counts.Lost != 0 {
			t.Errorf("closes %v, closed by the gateway %d, not back %d, counts %+v", res.Closes, c.ClosedUnexpectedly, c.ClosedNotBack, res.Messages.Counts)
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		cfg := sse(ScenarioConnect)
		cfg.Conns, cfg.ConnectRate, cfg.Duration = 20, 2000, 3*time.Second
		cfg.Auth.TTL = 2 * time.Second
		cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 200*time.Millisecond
		res := run(t, cfg)
		c := res.Connections
		t.Logf("closes %v, welcomes %d, mints %d", res.Closes, c.Welcomes, c.TokenMints)
		// each stream ends at its token's exp with a close event 4401, the
		// run's doing (no --token-refresh): back with a new token
		if res.Closes["4401"] < 20 || c.ClosedUnexpectedly != 0 || c.Welcomes < 40 || res.ExitStatus != ExitOK {
			t.Errorf("closes %v, closed unexpectedly %d, welcomes %d, exit %d %v", res.Closes, c.ClosedUnexpectedly, c.Welcomes, res.ExitStatus, res.Failures)
		}
	})
}

// --resume over event streams against a real gateway with resumable
// delivery: churned devices reconnect with Last-Event-ID and get what was
// published meanwhile, nothing lost or repeated.
func TestSSEGatewayResume(t *testing.T) {
	f, resumeRouter := resumeFleet(t)
	cfg := f.config(ScenarioChurn)
	cfg.Transport = TransportSSE
	cfg.MetricsURLs = nil
	cfg.Conns, cfg.Devices, cfg.ConnectRate = 100, 2, 3000
	cfg.MsgRate, cfg.Duration = 200, 2*time.Second
	cfg.ChurnRate, cfg.ChurnDown = 25, 300*time.Millisecond
	cfg.Publish.Via, cfg.Publish.RouterURL = "router", resumeRouter
	cfg.Resume = true
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, rs := res.Messages, res.Resume
	t.Logf("churned %d; messages %+v; resume %+v", res.Churn.Closed, m.Counts, rs)
	checkClean(t, res, m.Counts)
	checkSSEReport(t, cfg, res)
	if rs == nil || res.Churn.Closed < 20 {
		t.Fatalf("churned %d, resume %+v", res.Churn.Closed, rs)
	}
	if rs.Lost+rs.Duplicated+rs.OutOfOrder+rs.NotRecovered+rs.NoPosition+rs.IDMismatch != 0 || rs.Reconnects == 0 || rs.Recovered != rs.Reconnects {
		t.Errorf("resume %+v", rs)
	}
	if rs.Replayed == 0 || m.Counts.Missed != 0 || m.Counts.ByID != m.Counts.Expected {
		t.Errorf("replayed %d, counts %+v", rs.Replayed, m.Counts)
	}
}

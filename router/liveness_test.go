package router_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/router"
)

// Liveness timings of these tests: a node silent for livenessTTL is
// probed, every livenessTTL/2 while it stays silent.
const livenessTTL = 300 * time.Millisecond

// livenessRouter starts a router with short liveness timings and
// --node-max-silence maxSilence, and a simulated node, "gw", that sends
// nothing but what the test makes it send.
func livenessRouter(t *testing.T, maxSilence time.Duration) (*router.Server, *simNode) {
	t.Helper()
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.NodeTTL = livenessTTL
		o.NodeMaxSilence = maxSilence
		o.SnapshotTimeout = 150 * time.Millisecond
	})
	return srv, newSimNode(t, ns, "gw")
}

// series of the liveness metrics.
const (
	probesAlive   = `wsfleet_router_presence_probes_total{result="alive"}`
	probesLate    = `wsfleet_router_presence_probes_total{result="late"}`
	probesGone    = `wsfleet_router_presence_probes_total{result="gone"}`
	droppedGone   = `wsfleet_router_presence_nodes_expired_total{reason="gone"}`
	droppedSilent = `wsfleet_router_presence_nodes_expired_total{reason="silent"}`
)

// waitMetric waits until series is at least min.
func waitMetric(t *testing.T, srv *router.Server, series string, min float64) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if v := metricValue(t, srv, series); v < min {
			return fmt.Errorf("%s is %g, want at least %g", series, v, min)
		}
		return nil
	})
}

// expectMetric checks that series is exactly want.
func expectMetric(t *testing.T, srv *router.Server, series string, want float64) {
	t.Helper()
	if v := metricValue(t, srv, series); v != want {
		t.Fatalf("%s is %g, want %g", series, v, want)
	}
}

// TestNodeLiveness: a silent node is probed on its own subject, and the
// NATS server's answer tells a node starved of CPU (kept) from one whose
// connection is gone (dropped at once); --node-max-silence bounds how
// long a node that never answers is kept.
func TestNodeLiveness(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		maxSilence time.Duration
		run        func(t *testing.T, srv *router.Server, n *simNode)
	}{
		{
			// Subscribed but never answering: its connection is up, so
			// it is only late, and is kept past --node-ttl. Once its
			// connection closes, the next probe finds no responders and
			// it goes at once, long before --node-max-silence.
			name: "late node kept, gone once its connection closes", maxSilence: time.Minute,
			run: func(t *testing.T, srv *router.Server, n *simNode) {
				n.listenProbes(false)
				n.set("alice", 1)
				n.heartbeat()
				waitWhere(t, srv, "alice", "gw=1")
				silent := time.Now()
				waitMetric(t, srv, probesLate, 3)
				if d := time.Since(silent); d < 2*livenessTTL {
					t.Fatalf("3 late probes within %s of silence", d)
				}
				if p := presenceOf(t, srv, "alice"); p.where() != "gw=1" {
					t.Fatalf("a late node's user is gone: %+v", p)
				}
				if s := statsOf(t, srv); s.Nodes != 1 {
					t.Fatalf("a late node was dropped: %+v", s)
				}
				expectMetric(t, srv, droppedGone, 0)
				expectMetric(t, srv, droppedSilent, 0)

				killed := time.Now()
				n.kill()
				waitWhere(t, srv, "alice", "")
				if d := time.Since(killed); d > 5*time.Second {
					t.Fatalf("dropped %s after its connection closed", d)
				}
				expectMetric(t, srv, probesGone, 1)
				expectMetric(t, srv, droppedGone, 1)
				expectMetric(t, srv, droppedSilent, 0)
				if s := statsOf(t, srv); s.Nodes != 0 || s.Users != 0 {
					t.Fatalf("stats after the drop: %+v", s)
				}
			},
		},
		{
			// Answering probes with its heartbeat keeps a node that sends
			// nothing else, well past --node-max-silence.
			name: "node answering probes stays", maxSilence: 4 * livenessTTL,
			run: func(t *testing.T, srv *router.Server, n *simNode) {
				n.listenProbes(true)
				n.set("alice", 2)
				n.heartbeat()
				waitWhere(t, srv, "alice", "gw=2")
				start := time.Now()
				waitMetric(t, srv, probesAlive, 4)
				checkFor(t, 10*time.Second, func() error {
					if d := time.Since(start); d < 6*livenessTTL {
						return fmt.Errorf("only %s since the last heartbeat", d)
					}
					return nil
				})
				if p := presenceOf(t, srv, "alice"); p.where() != "gw=2" {
					t.Fatalf("a node answering its probes lost its user: %+v", p)
				}
				if got := n.probesSeen.Load(); got < 4 {
					t.Fatalf("the node saw %d probes, want at least 4", got)
				}
				expectMetric(t, srv, droppedGone, 0)
				expectMetric(t, srv, droppedSilent, 0)
			},
		},
		{
			// Never answering, with its connection up (a hung process):
			// late at every probe, then dropped at --node-max-silence.
			name: "node silent past max silence dropped", maxSilence: 4 * livenessTTL,
			run: func(t *testing.T, srv *router.Server, n *simNode) {
				n.listenProbes(false)
				n.set("alice", 1)
				n.heartbeat()
				last := time.Now() // the router heard the heartbeat after this
				waitWhere(t, srv, "alice", "gw=1")
				waitWhere(t, srv, "alice", "")
				if d := time.Since(last); d < 4*livenessTTL {
					t.Fatalf("dropped %s after its last message, before --node-max-silence (%s)", d, 4*livenessTTL)
				}
				expectMetric(t, srv, droppedSilent, 1)
				expectMetric(t, srv, droppedGone, 0)
				expectMetric(t, srv, probesGone, 0)
				if v := metricValue(t, srv, probesLate); v < 1 {
					t.Fatalf("%s is %g: the probes before the drop are not counted", probesLate, v)
				}
				if n.probesSeen.Load() < 1 {
					t.Fatal("the node was never probed")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, n := livenessRouter(t, tc.maxSilence)
			tc.run(t, srv, n)
		})
	}
}

// TestNoExpiryWhileDisconnected: while the router's own NATS connection is
// down, silence is no evidence: a silent node outlives --node-max-silence
// meanwhile, and gets a fresh one from the reconnect.
func TestNoExpiryWhileDisconnected(t *testing.T) {
	t.Parallel()
	const maxSilence = 4 * livenessTTL
	ns := startNATS(t, -1, nil)
	proxy := newNATSProxy(t, ns)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.NATSURL = proxy.url()
		o.NodeTTL = livenessTTL
		o.NodeMaxSilence = maxSilence
		o.SnapshotTimeout = 150 * time.Millisecond
	})
	n := newSimNode(t, ns, "gw")
	n.listenProbes(false)
	n.set("alice", 1)
	n.heartbeat()
	waitWhere(t, srv, "alice", "gw=1")
	waitDisconnected(t, srv, proxy)
	cut := time.Now()
	checkFor(t, 10*time.Second, func() error {
		if d := time.Since(cut); d < maxSilence+2*livenessTTL {
			return fmt.Errorf("disconnected for %s", d)
		}
		return nil
	})
	restored := time.Now() // the reconnect comes after this
	proxy.restore()
	checkFor(t, 10*time.Second, func() error {
		if r := do(t, http.MethodGet, adminURL(srv)+"/readyz", "", nil); r.status != http.StatusOK {
			return fmt.Errorf("/readyz %d after the restore", r.status)
		}
		return nil
	})
	if p := presenceOf(t, srv, "alice"); p.where() != "gw=1" {
		t.Fatalf("the node was dropped while the router was disconnected: %+v", p)
	}
	waitWhere(t, srv, "alice", "")
	if d := time.Since(restored); d < maxSilence {
		t.Fatalf("dropped %s after the reconnect, before --node-max-silence (%s) from it", d, maxSilence)
	}
	expectMetric(t, srv, droppedSilent, 1)
	expectMetric(t, srv, droppedGone, 0)
}

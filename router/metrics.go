package router

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Target labels of the publish series.
const (
	targetUser      = "user"
	targetBatch     = "batch"
	targetBroadcast = "broadcast"
	targetTopic     = "topic"
)

// metrics are the router's Prometheus series, on a registry of its own (so
// several routers can run in one test process). Every name starts with
// wsfleet_router_.
type metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec
	publish       *prometheus.HistogramVec
	publishErrors *prometheus.CounterVec
	bodyBytes     prometheus.Histogram

	publishAck        *prometheus.HistogramVec // Resume
	publishDuplicates prometheus.Counter       // Resume

	natsRequests     *prometheus.CounterVec
	authFailures     *prometheus.CounterVec
	idempotency      *prometheus.CounterVec
	kicks            prometheus.Counter
	presenceMsgs     *prometheus.CounterVec
	presenceGaps     prometheus.Counter
	snapshotRequests *prometheus.CounterVec
	probes           *prometheus.CounterVec
	nodesExpired     *prometheus.CounterVec

	natsReconnects prometheus.Counter
	publishWaits   *prometheus.CounterVec
	publishWaiting prometheus.Gauge
}

func newMetrics(s *Server) *metrics {
	const ns = "wsfleet_router"
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
		Help: "API requests answered, by route and HTTP status code."}, []string{"route", "code"})
	m.publish = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "publish_seconds",
		Help:    "Time to publish a message (a batch: all its messages) to NATS and have the server confirm it (a flush; with --resume the history stream's acknowledgements), by target (user, batch, broadcast).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"target"})
	m.publishErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "publish_errors_total",
		Help: "Publishes that failed, by reason (disconnected, publish, flush, too_large; with --resume no_stream: no history stream took the message, refused: the stream answered an error, no_ack: it did not answer in time)."}, []string{"reason"})
	m.bodyBytes = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "message_bytes",
		Help: "Sizes of the messages published.", Buckets: prometheus.ExponentialBuckets(16, 4, 10)})
	m.publishAck = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "publish_ack_seconds",
		Help:    "With --resume: time from writing a message to the history stream's acknowledgement that it stored it, per message (a batch's are pipelined), by target (user, batch, broadcast).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"target"})
	m.publishDuplicates = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "publish_duplicates_total",
		Help: "With --resume: messages the history stream had stored already (the same Nats-Msg-Id, from an Idempotency-Key, within its duplicate window) and did not store again; their answer carries the first one's id."})
	m.natsRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "nats_requests_total",
		Help: "NATS request API requests answered, by operation and HTTP-equivalent status code."}, []string{"op", "code"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jwt_failures_total",
		Help: "Bearer JWTs refused, by reason."}, []string{"reason"})
	m.idempotency = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "idempotency_total",
		Help: "Requests with an idempotency key, by outcome (claimed, replayed, in_progress, reused, error)."}, []string{"outcome"})
	m.kicks = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "kicks_total",
		Help: "Kick requests (every connection of a user closed)."})
	m.presenceMsgs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "presence_messages_total",
		Help: "Presence messages received from gateway nodes, by kind (batch, heartbeat, snapshot_chunk, probe_reply, invalid)."}, []string{"kind"})
	m.presenceGaps = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "presence_gaps_total",
		Help: "Missed presence batches noticed (a Seq skipped in a batch or a heartbeat), each answered with a snapshot request."})
	m.snapshotRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "presence_snapshots_total",
		Help: "Presence snapshot requests sent, failed to send (error), timed out, node snapshots applied (node_complete), and node snapshots missing a chunk, not applied and asked again (node_incomplete)."}, []string{"result"})
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "presence_probes_total",
		Help: "Probes of gateway nodes silent for --node-ttl, by result: alive (answered), late (timed out: the node's NATS connection is up, it is kept), gone (no responders: its connection is gone, it is dropped)."}, []string{"result"})
	m.nodesExpired = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "presence_nodes_expired_total",
		Help: "Gateway nodes dropped with their users, by reason: gone (silent for --node-ttl and its NATS connection gone), silent (silent for --node-max-silence)."}, []string{"reason"})
	m.natsReconnects = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "nats_reconnects_total",
		Help: "Reconnects of the router's NATS connection."})
	m.publishWaits = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "publish_waits_total",
		Help: "Publishes that found NATS disconnected and waited for it (--publish-wait), by result: published (it came back), timeout (answered 503)."}, []string{"result"})
	m.publishWaiting = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "publish_waiting",
		Help: "Publishes waiting for NATS to come back now."})
	reg.MustRegister(m.requests, m.publish, m.publishErrors, m.bodyBytes, m.natsRequests, m.authFailures, m.idempotency,
		m.kicks, m.presenceMsgs, m.presenceGaps, m.snapshotRequests, m.probes, m.nodesExpired, m.natsReconnects, m.publishWaits,
		m.publishWaiting)
	if s.opts.Resume {
		reg.MustRegister(m.publishAck, m.publishDuplicates)
	}
	viewGauge := func(name, help string, f func(v *view) int) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, func() float64 {
			if s.t == nil {
				return 0
			}
			s.t.v.mu.RLock()
			defer s.t.v.mu.RUnlock()
			return float64(f(s.t.v))
		}))
	}
	viewGauge("presence_users", "Users online fleet-wide in the presence view.", func(v *view) int { return len(v.users) })
	viewGauge("presence_nodes", "Gateway nodes in the presence view.", func(v *view) int { return len(v.byID) })
	viewGauge("presence_nodes_unsynced", "Gateway nodes whose state awaits a snapshot.", func(v *view) int {
		n := 0
		for _, x := range v.nodes {
			if x != nil && !x.synced {
				n++
			}
		}
		return n
	})
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "nats_connected",
		Help: "1 while the router is connected to NATS."}, func() float64 {
		if s.natsConnected() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(collectors.NewGoCollector())
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series known in advance start at zero rather than appearing on first use.
	for _, t := range []string{targetUser, targetBatch, targetBroadcast} {
		m.publish.WithLabelValues(t)
	}
	for _, r := range []string{"disconnected", "publish", "flush", "too_large"} {
		m.publishErrors.WithLabelValues(r)
	}
	if s.opts.Resume {
		for _, t := range []string{targetUser, targetBatch, targetBroadcast} {
			m.publishAck.WithLabelValues(t)
		}
		for _, r := range []string{reasonNoStream, reasonRefused, reasonNoAck} {
			m.publishErrors.WithLabelValues(r)
		}
	}
	for _, r := range []string{probeAlive, probeLate, probeGone} {
		m.probes.WithLabelValues(r)
	}
	for _, r := range []string{dropGone, dropSilent} {
		m.nodesExpired.WithLabelValues(r)
	}
	for _, r := range []string{"published", "timeout"} {
		m.publishWaits.WithLabelValues(r)
	}
	return m
}

// request counts an answered API request.
func (m *metrics) request(route string, status int) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

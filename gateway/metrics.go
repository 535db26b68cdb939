package gateway

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wsfleet/wsfleet/protocol"
)

// metrics are the node's Prometheus series, on a registry of its own (so
// several nodes can run in one test process). Every name starts with
// wsfleet_gateway_.
type metrics struct {
	reg *prometheus.Registry

	authed            prometheus.Gauge
	authedBy          [2]prometheus.Gauge // by transport (connWebSocket, connSSE)
	users             prometheus.Gauge
	accepted          prometheus.Counter
	acceptPauses      prometheus.Counter
	closes            *prometheus.CounterVec
	closeCounters     sync.Map // protocol.CloseCode -> prometheus.Counter
	rejects           *prometheus.CounterVec
	handshakeFailures prometheus.Counter
	handshakeTimeouts prometheus.Counter
	handshakeSeconds  prometheus.Histogram
	authSeconds       prometheus.Histogram
	authFailures      *prometheus.CounterVec
	published         prometheus.Counter
	publishErrors     *prometheus.CounterVec
	slowConsumers     prometheus.Counter
	subscribeErrors   prometheus.Counter
	natsSlowConsumer  prometheus.Counter
	writeTimeouts     prometheus.Counter
	confirmFailures   prometheus.Counter
	rateLimited       prometheus.Counter
	deviceLimit       prometheus.Counter
	connLimit         prometheus.Counter
	connectRate       prometheus.Counter
	kicked            prometheus.Counter
	shed              *prometheus.CounterVec
	unconfirmed       prometheus.Counter
	resumeGaps        prometheus.Counter
	topicRefusals     *prometheus.CounterVec
	topicTokenFails   *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	const ns = "wsfleet_gateway"
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help})
		f(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help})
		f(g)
		return g
	}
	m := &metrics{reg: reg}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "connections", Help: "Open client sockets, in any state."},
		func() float64 { return float64(s.nconns.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "max_connections", Help: "The node's --max-connections."},
		func() float64 { return float64(s.opts.MaxConnections) }))
	m.authed = gauge("authenticated_connections", "Authenticated connections.")
	byTransport := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "authenticated_connections_by_transport",
		Help: `Authenticated connections by transport: "websocket" (/ws) or "sse" (server-sent events, /sse).`}, []string{"transport"})
	f(byTransport)
	for k := range m.authedBy {
		m.authedBy[k] = byTransport.WithLabelValues(transportName(uint8(k)))
	}
	m.users = gauge("users", "Distinct users with at least one connection on this node.")
	m.accepted = counter("connections_accepted_total", "Sockets accepted.")
	m.acceptPauses = counter("accept_pauses_total", "Times accepting paused because the process ran out of file descriptors or memory.")
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "closes_total", Help: "Close frames sent by the node, by close code."}, []string{"code"})
	f(m.closes)
	m.rejects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshake_rejections_total", Help: "Upgrade requests answered with an HTTP error, by status."}, []string{"status"})
	f(m.rejects)
	m.handshakeFailures = counter("handshake_aborts_total", "Sockets closed before completing the upgrade.")
	m.handshakeTimeouts = counter("handshake_timeouts_total", "Sockets closed for not completing the upgrade request in time.")
	m.handshakeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "handshake_seconds",
		Help: "Time from accept to the upgrade response.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	f(m.handshakeSeconds)
	m.authSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "connect_seconds",
		Help: "Time from accept to the welcome frame (upgrade, authentication, subscription).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	f(m.authSeconds)
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total", Help: "Failed authentications, by reason."}, []string{"reason"})
	f(m.authFailures)
	m.topicRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "topic_subscribe_refusals_total",
		Help: "Topic subscribes refused, by code: forbidden, bad_topic, too_many_topics, subscribe_failed, overloaded (error frames to the client), control_dropped (a service's subscribe or unsubscribe of a connection dropped by its loop's full queue)."}, []string{"code"})
	f(m.topicRefusals)
	m.topicTokenFails = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "topic_token_failures_total",
		Help: "Subscription tokens refused, by reason (the auth failure reasons, other_user, other_topic)."}, []string{"reason"})
	f(m.topicTokenFails)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "topics", Help: "Topics with at least one subscriber on this node (one NATS subscription each)."},
		func() float64 {
			if s.topics == nil {
				return 0
			}
			return float64(s.topics.count.Load())
		}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "topic_subscriptions", Help: "Subscriptions of connections to topics on this node."},
		func() float64 {
			if s.topics == nil {
				return 0
			}
			return float64(s.topics.pairs.Load())
		}))
	// Hot-path counters live per loop and per dispatcher goroutine and are
	// summed here, at scrape time.
	loopSum := func(name, help string, f func(*loopStats) *atomic.Uint64, disp func(*dispStats) *atomic.Uint64) {
		f2 := func() float64 {
			var n uint64
			for _, l := range s.loops {
				if f != nil {
					n += f(&l.stats).Load()
				}
			}
			if d := s.disp; d != nil && disp != nil {
				n += d.sum(disp)
			}
			return float64(n)
		}
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, f2))
	}
	loopSum("messages_in_total", "Text messages received from clients.",
		func(st *loopStats) *atomic.Uint64 { return &st.msgsIn }, nil)
	loopSum("messages_out_total", "Deliveries written or queued to clients.",
		func(st *loopStats) *atomic.Uint64 { return &st.msgsOut }, func(st *dispStats) *atomic.Uint64 { return &st.msgsOut })
	loopSum("bytes_in_total", "Bytes read from client sockets.",
		func(st *loopStats) *atomic.Uint64 { return &st.bytesIn }, nil)
	loopSum("bytes_out_total", "Bytes written to client sockets.",
		func(st *loopStats) *atomic.Uint64 { return &st.bytesOut }, nil)
	loopSum("nats_messages_received_total", "Messages received from NATS for delivery.",
		nil, func(st *dispStats) *atomic.Uint64 { return &st.natsIn })
	loopSum("nats_messages_undeliverable_total", "Messages received for a user with no connection left on this node.",
		nil, func(st *dispStats) *atomic.Uint64 { return &st.undeliverable })
	f(&droppedCollector{s: s, desc: prometheus.NewDesc(ns+"_dropped_total",
		"Deliveries dropped on the way from NATS to the sockets, by the bounded queue that was full: "+
			`"dispatch_queue_full" (a NATS message, dropped by NATS for a full dispatch queue: size --dispatch-queue), `+
			`"loop_queue_full" (a broadcast, for one event loop's connections: --loop-queue-bytes).`,
		[]string{"reason"}, nil)})
	m.shed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_shed_total",
		Help: "Upgrade requests refused with 503 overloaded because the node was behind, by reason: " +
			`"pending" (--max-pending-connects admitted and not yet welcomed), "loop_lag" (the event loops ran --shed-lag late), ` +
			`"auth_lag" (tokens waited --shed-lag for an auth worker), "nats_lag" (a subscription waited --shed-lag for NATS to confirm it).`},
		[]string{"reason"})
	f(m.shed)
	for _, r := range shedReasons {
		m.shed.WithLabelValues(r)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "pending_connects", Help: "Connections admitted and not yet welcomed (authenticating, or waiting for their subscription's confirmation)."},
		func() float64 { return float64(s.adm.pending.Load()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "subscription_confirm_wait_seconds", Help: "How long the oldest client waiting for NATS to confirm its subscription has waited (0: none waits); at --shed-lag the node sheds new connections."},
		func() float64 {
			if since := s.adm.natsSince.Load(); since != 0 {
				return float64(mono()-(since-1)) / 1e9
			}
			return 0
		}))
	m.unconfirmed = counter("welcomes_unconfirmed_total", "Welcome frames written while the user's subscription was not confirmed by NATS on the current connection; a welcome promises that what is published after it arrives, so this must stay 0.")
	m.confirmFailures = counter("subscription_confirm_failures_total", "NATS round trips that failed to confirm new subscriptions (NATS was lost, or no answer came within --auth-timeout); the clients waiting on them were not welcomed then and wait for the next one.")
	m.published = counter("client_publishes_total", "Client publish frames forwarded to NATS.")
	m.publishErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "client_publish_errors_total", Help: "Client publish frames refused, by reason."}, []string{"reason"})
	f(m.publishErrors)
	m.slowConsumers = counter("slow_consumer_closes_total", "Connections closed because their outbound queue overflowed.")
	m.subscribeErrors = counter("nats_subscribe_errors_total", "Failed NATS subscriptions.")
	m.natsSlowConsumer = counter("nats_slow_consumer_total", "NATS slow-consumer episodes: a subscription found its dispatch queue full (reported once per episode; nats_dropped_messages_total counts the messages).")
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "nats_dropped_messages_total",
		Help: "NATS messages dropped because a dispatch queue was full (size it with --dispatch-queue and --dispatchers)."}, func() float64 {
		if s.subs == nil {
			return 0
		}
		return s.subs.drops.total()
	}))
	m.writeTimeouts = counter("write_timeouts_total", "Connections closed because queued frames made no progress within the write timeout.")
	m.rateLimited = counter("client_rate_limited_total", "Client messages refused by the per-connection rate limit.")
	m.deviceLimit = counter("device_limit_closes_total", "Connections closed by the per-user device limit.")
	m.connLimit = counter("connection_limit_rejections_total", "Upgrades refused with 503 because the node holds max-connections.")
	m.kicked = counter("kicked_connections_total", "Connections closed by a kick (logout or ban) from a service.")
	m.connectRate = counter("connect_rate_rejections_total", "Upgrades refused with 503 by the connect rate limit.")
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "nats_connected", Help: "1 while the node is connected to NATS."}, func() float64 {
		if s.natsConnected() {
			return 1
		}
		return 0
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "ready", Help: "1 while /readyz reports ready."}, func() float64 {
		if ok, _ := s.readiness(); ok {
			return 1
		}
		return 0
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "dispatch_queue_messages", Help: "NATS messages waiting in the dispatch queues (each holds --dispatch-queue before NATS drops)."}, func() float64 {
		n := 0
		if d := s.disp; d != nil {
			for _, ch := range d.chans {
				n += len(ch)
			}
			n += len(d.bcast)
		}
		if s.rs != nil {
			n += len(s.rs.ch)
		}
		return float64(n)
	}))
	m.resumeGaps = counter("resume_gaps_total", "Resume: live messages whose previous message on the same subject had not reached the connection (a NATS outage, a full queue, interest not yet spread); the connection caught up from the stream first.")
	resumeCounter := func(name, help string, v func(r *resumer) uint64) {
		f(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, func() float64 {
			if s.rs == nil {
				return 0
			}
			return float64(v(s.rs))
		}))
	}
	resumeCounter("replays_total", "Resume: replays started (a \"since\", a gap, a catch-up after a NATS outage).", func(r *resumer) uint64 { return r.rp.started.Load() })
	resumeCounter("replays_completed_total", "Resume: replay rounds that wrote everything up to their stream position.", func(r *resumer) uint64 { return r.rp.completed.Load() })
	resumeCounter("replayed_messages_total", "Resume: messages written by replays.", func(r *resumer) uint64 { return r.rp.msgs.Load() })
	resumeCounter("replay_failures_total", "Resume: replay fetches that failed (NATS or the stream unavailable) and were retried.", func(r *resumer) uint64 { return r.rp.failures.Load() })
	resumeCounter("replay_fell_behind_total", "Resume: open connections closed with 1013 because history no longer held everything they missed (a subject at its per-subject limit with all of it after their position); their reconnect with since gets recovered:false.", func(r *resumer) uint64 { return r.rp.fellBehind.Load() })
	resumeCounter("replay_replica_behind_total", "Resume: replay rounds made again because the replica that answered a direct get had not stored the subject's newest message yet (also counted in replay_failures_total).", func(r *resumer) uint64 { return r.rp.behind.Load() })
	resumeCounter("resume_recovered_total", "Resume: welcomes with \"recovered\":true.", func(r *resumer) uint64 { return r.recovered.Load() })
	resumeCounter("resume_unrecovered_total", "Resume: welcomes with \"recovered\":false (history no longer held everything after \"since\").", func(r *resumer) uint64 { return r.unrecovered.Load() })
	resumeCounter("resume_catch_up_all_total", "Resume: times every connection caught up (after a NATS reconnect or a full live queue).", func(r *resumer) uint64 { return r.catchAlls.Load() })
	resumeCounter("resume_live_dropped_total", "Resume: live messages a loop queue refused; their connections caught up from the stream.", func(r *resumer) uint64 { return r.liveDropped.Load() })
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "replays_running", Help: "Resume: replays a worker runs now (at most --max-concurrent-replays)."}, func() float64 {
		if s.rs == nil {
			return 0
		}
		return float64(s.rs.rp.running.Load())
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "replays_queued", Help: "Resume: replays waiting for a worker or paced by their connection's write queue."}, func() float64 {
		if s.rs == nil {
			return 0
		}
		return float64(s.rs.rp.queuedN.Load())
	}))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// droppedCollector reports wsfleet_gateway_dropped_total from the counters
// the dispatch and loop queues keep.
type droppedCollector struct {
	s    *Server
	desc *prometheus.Desc
}

func (c *droppedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *droppedCollector) Collect(ch chan<- prometheus.Metric) {
	var nats float64
	if c.s.subs != nil {
		nats = c.s.subs.drops.total()
	}
	var loop uint64
	for _, l := range c.s.loops {
		loop += l.stats.bcastDropped.Load()
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, nats, "dispatch_queue_full")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(loop), "loop_queue_full")
}

// closed counts a close frame sent with code. Codes the gateway does not
// define itself (a client's code echoed back) share the label "other", so
// clients cannot grow the series.
func (m *metrics) closed(code protocol.CloseCode) {
	if c, ok := m.closeCounters.Load(code); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	label := "other"
	if code.String() != strconv.Itoa(int(code)) {
		label = strconv.Itoa(int(code))
	}
	c := m.closes.WithLabelValues(label)
	if label != "other" {
		m.closeCounters.Store(code, c)
	}
	c.Inc()
}

func (m *metrics) authFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

func (m *metrics) topicRefused(code string) { m.topicRefusals.WithLabelValues(code).Inc() }

func (m *metrics) topicTokenFailure(reason string) { m.topicTokenFails.WithLabelValues(reason).Inc() }

func (m *metrics) rejected(status int) { m.rejects.WithLabelValues(strconv.Itoa(status)).Inc() }

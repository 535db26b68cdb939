package router

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Route labels of wsfleet_router_http_requests_total.
const (
	routeUser      = "/v1/users/{user}/messages"
	routeBroadcast = "/v1/broadcast"
	routeOther     = "other" // no route matched (404)
)

// Target labels of the publish series.
const (
	targetUser      = "user"
	targetBroadcast = "broadcast"
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
}

func newMetrics(s *Server) *metrics {
	const ns = "wsfleet_router"
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
		Help: "API requests answered, by route and HTTP status code."}, []string{"route", "code"})
	m.publish = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "publish_seconds",
		Help:    "Time to publish a message to NATS and have the server confirm it (flush), by target (user or broadcast).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"target"})
	m.publishErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "publish_errors_total",
		Help: "Messages that could not be published, by reason (disconnected, publish, flush, too_large)."}, []string{"reason"})
	m.bodyBytes = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "message_bytes",
		Help: "Sizes of the messages published.", Buckets: prometheus.ExponentialBuckets(16, 4, 10)})
	reg.MustRegister(m.requests, m.publish, m.publishErrors, m.bodyBytes)
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
	for _, t := range []string{targetUser, targetBroadcast} {
		m.publish.WithLabelValues(t)
	}
	for _, r := range []string{"disconnected", "publish", "flush", "too_large"} {
		m.publishErrors.WithLabelValues(r)
	}
	return m
}

// request counts an answered API request.
func (m *metrics) request(route string, status int) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// Package admin serves a process's operational HTTP endpoints on their own
// listener: /healthz (the process serves), /readyz (it takes work),
// /metrics (Prometheus) and, when asked for, /debug/pprof/ (profiles, not
// the command line).
// The gateway and the router each start one on their --admin-listen
// address.
//
// What "healthy" and "ready" mean is the caller's: the package answers with
// the caller's verdicts as JSON and knows nothing of connections or NATS.
package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Check reports whether a condition holds and, when it does not, why.
type Check func() (ok bool, reasons []string)

// Config configures a Server.
type Config struct {
	// Addr is the host:port to listen on ("127.0.0.1:0" picks a port).
	Addr string
	// Metrics is served at /metrics.
	Metrics prometheus.Gatherer
	// Log receives the HTTP server's errors. Default: discard.
	Log *zap.Logger
	// Healthy answers /healthz: 200 {"status":"ok"} or 503
	// {"status":"failed","reasons":[…]}. Default: always healthy.
	Healthy Check
	// Ready answers /readyz: 200 {"status":"ready"} or 503
	// {"status":"unavailable","reasons":[…]}. Default: always ready.
	Ready Check
	// Fields are added to every /healthz and /readyz body, e.g. the node id.
	Fields map[string]any
	// Pprof serves Go's profiler at /debug/pprof/ (unauthenticated: only
	// on a private address). Default false.
	Pprof bool
}

// Server is a running admin endpoint.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Start listens on cfg.Addr and serves until Close. A listen error is
// returned as is, for the caller to name its setting.
func Start(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", verdict(cfg.Healthy, cfg.Fields, "ok", "failed"))
	mux.HandleFunc("GET /readyz", verdict(cfg.Ready, cfg.Fields, "ready", "unavailable"))
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	}
	if cfg.Pprof {
		// No /debug/pprof/cmdline: a secret given as a flag would be served.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s := &Server{ln: ln, done: make(chan struct{}), srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("admin endpoint stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, letting requests in flight finish for up to a
// second, and returns once it has stopped.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// WriteJSON writes v as a JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func verdict(check Check, fields map[string]any, okStatus, failStatus string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		body := make(map[string]any, len(fields)+2)
		for k, v := range fields {
			body[k] = v
		}
		code := http.StatusOK
		body["status"] = okStatus
		if check != nil {
			if ok, why := check(); !ok {
				code = http.StatusServiceUnavailable
				body["status"] = failStatus
				body["reasons"] = why
			}
		}
		WriteJSON(w, code, body)
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// adminServer serves the node's operational endpoints on AdminListen:
// /healthz (the process is serving), /readyz (it takes new connections:
// started, not draining, connected to NATS), /metrics and /debug/pprof/.
type adminServer struct {
	srv *http.Server
	ln  net.Listener
}

func startAdmin(s *Server) (*adminServer, error) {
	ln, err := net.Listen("tcp", s.opts.AdminListen)
	if err != nil {
		return nil, badOption("admin-listen", "%v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.loopFailed.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "failed", "node": s.opts.NodeID, "reasons": []string{"an event loop stopped"}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node": s.opts.NodeID})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := s.readiness()
		if !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "node": s.opts.NodeID, "reasons": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "node": s.opts.NodeID})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a := &adminServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := a.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			s.log.Error("admin endpoint stopped", zap.Error(err))
		}
	}()
	return a, nil
}

func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

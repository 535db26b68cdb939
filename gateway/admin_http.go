package gateway

import (
	"net/http"

	"github.com/wsfleet/wsfleet/internal/admin"
)

// startAdmin serves the node's operational endpoints on AdminListen:
// /healthz (the process is serving: no event loop stopped), /readyz (it
// takes new connections: started, not draining, connected to NATS),
// /metrics, /debug/pprof/, and POST /drain (from loopback only). The
// health and readiness bodies name the node.
func startAdmin(s *Server) (*admin.Server, error) {
	a, err := admin.Start(admin.Config{
		Addr:    s.opts.AdminListen,
		Metrics: s.m.reg,
		Log:     s.log.Named("admin"),
		Healthy: func() (bool, []string) {
			if s.loopFailed.Load() {
				return false, []string{"an event loop stopped"}
			}
			return true, nil
		},
		Ready:    s.readiness,
		Fields:   map[string]any{"node": s.opts.NodeID},
		Handlers: map[string]http.Handler{"POST /drain": http.HandlerFunc(s.serveDrain)},
	})
	if err != nil {
		return nil, badOption("admin-listen", "%v", err)
	}
	return a, nil
}

// serveDrain starts the node's drain (Drain) and answers 202
// {"status":"draining"}; with ?wait it answers 200 {"status":"drained"}
// once no connection is left. `gateway drain` calls it, as the chart's
// preStop hook does. Only a client on this host's loopback address may:
// anyone else gets 403.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	if !admin.FromLoopback(r) {
		admin.WriteJSON(w, http.StatusForbidden, map[string]any{"code": "forbidden",
			"reason": "POST /drain is taken from the loopback address only: run `gateway drain` on the node"})
		return
	}
	drained, err := s.beginDrain()
	if err != nil {
		admin.WriteJSON(w, http.StatusConflict, map[string]any{"code": "not_running", "reason": "the node is stopping or stopped", "node": s.opts.NodeID})
		return
	}
	if r.URL.Query().Has("wait") {
		select {
		case <-drained:
			admin.WriteJSON(w, http.StatusOK, map[string]any{"status": "drained", "node": s.opts.NodeID})
		case <-r.Context().Done():
		}
		return
	}
	admin.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "draining", "node": s.opts.NodeID})
}

package gateway

import "github.com/wsfleet/wsfleet/internal/admin"

// startAdmin serves the node's operational endpoints on AdminListen:
// /healthz (the process is serving: no event loop stopped), /readyz (it
// takes new connections: started, not draining, connected to NATS),
// /metrics and, with AdminPprof, /debug/pprof/. The health and readiness bodies name the
// node. Actions on the node are on the control socket (control.go).
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
		Ready:  s.readiness,
		Fields: map[string]any{"node": s.opts.NodeID},
		Pprof:  s.opts.AdminPprof,
	})
	if err != nil {
		return nil, badOption("admin-listen", "%v", err)
	}
	return a, nil
}

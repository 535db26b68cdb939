package router

import "github.com/wsfleet/wsfleet/internal/admin"

// startAdmin serves the router's operational endpoints on AdminListen:
// /healthz (the process is serving), /readyz (it publishes: started, not
// shutting down, connected to NATS), /metrics and, with AdminPprof,
// /debug/pprof/.
func startAdmin(s *Server) (*admin.Server, error) {
	a, err := admin.Start(admin.Config{
		Addr:    s.opts.AdminListen,
		Metrics: s.m.reg,
		Log:     s.log.Named("admin"),
		Ready:   s.readiness,
		Pprof:   s.opts.AdminPprof,
	})
	if err != nil {
		return nil, badOption("admin-listen", "%v", err)
	}
	return a, nil
}

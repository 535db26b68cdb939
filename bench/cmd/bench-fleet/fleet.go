package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Systems measured.
const (
	sysWsfleet  = "wsfleet"
	sysBaseline = "baseline"
)

// ports are where a fleet listens, all on 127.0.0.1, below the ephemeral
// range by default.
type ports struct {
	base int
}

func (p ports) ws() int                { return p.base }
func (p ports) router() int            { return p.base + 1 }
func (p ports) routerAdmin() int       { return p.base + 2 }
func (p ports) nats() int              { return p.base + 3 }
func (p ports) gatewayAdmin(i int) int { return p.base + 100 + i }

func (p ports) all(gateways int) []int {
	out := []int{p.ws(), p.router(), p.routerAdmin(), p.nats()}
	for i := 0; i < gateways; i++ {
		out = append(out, p.gatewayAdmin(i))
	}
	return out
}

// checkFree binds each port on 127.0.0.1 to see that nothing holds it.
func checkFree(list []int) error {
	for _, port := range list {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return fmt.Errorf("port %d on 127.0.0.1 is taken (%v): stop what holds it or pick another --base-port", port, err)
		}
		ln.Close()
	}
	return nil
}

// fleet is one system's processes: NATS, K gateways on one port, the router.
type fleet struct {
	system    string
	ps        *procs
	nats      *proc
	gateways  []*proc
	router    *proc
	admins    []string // http://127.0.0.1:port of each gateway's admin
	wsURL     string
	natsURL   string
	routerURL string
	// routerAdmin is the router's admin endpoint, http://127.0.0.1:port.
	routerAdmin string
	tag         string
}

type fleetConfig struct {
	system   string
	gateways int
	bin      string
	ports    ports
	secret   string
	apiKey   string
	tag      string   // names the log files
	env      []string // extra environment of the gateway processes (both systems)
	resume   bool     // JetStream on NATS, --resume on wsfleet's gateways and router
}

// startFleet starts NATS, the gateways and the router, and waits until each
// is ready. On error, whatever started is stopped.
func startFleet(ctx context.Context, ps *procs, c fleetConfig) (f *fleet, err error) {
	p := c.ports
	f = &fleet{system: c.system, ps: ps, tag: c.tag,
		wsURL:       fmt.Sprintf("ws://127.0.0.1:%d/ws", p.ws()),
		natsURL:     fmt.Sprintf("nats://127.0.0.1:%d", p.nats()),
		routerURL:   fmt.Sprintf("http://127.0.0.1:%d", p.router()),
		routerAdmin: fmt.Sprintf("http://127.0.0.1:%d", p.routerAdmin())}
	defer func() {
		if err != nil {
			f.stop()
			f = nil
		}
	}()
	if err := checkFree(p.all(c.gateways)); err != nil {
		return f, err
	}
	natsArgs := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(p.nats())}
	if c.resume {
		natsArgs = append(natsArgs, "-js", "-sd", filepath.Join(ps.dir, c.tag+"-jetstream"))
	}
	f.nats, err = ps.Start(c.tag+"-nats", filepath.Join(c.bin, "nats-server"), natsArgs, nil, nil)
	if err != nil {
		return f, err
	}
	if err := waitTCP(ctx, f.nats, fmt.Sprintf("127.0.0.1:%d", p.nats()), 20*time.Second); err != nil {
		return f, err
	}
	env := append([]string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + c.secret}, c.env...)
	if c.resume {
		env = append(env, "WSFLEET_RESUME=true")
	}
	for i := 0; i < c.gateways; i++ {
		admin := fmt.Sprintf("127.0.0.1:%d", p.gatewayAdmin(i))
		var args []string
		var exe string
		switch c.system {
		case sysWsfleet:
			exe = filepath.Join(c.bin, "gateway")
			// --admin-pprof: the memory figures read MemStats from the heap profile.
			args = []string{"--listen", fmt.Sprintf("127.0.0.1:%d", p.ws()), "--reuseport", "--admin-listen", admin, "--admin-pprof",
				"--nats-url", f.natsURL, "--node-id", fmt.Sprintf("bench-gw-%d", i), "--log-level", "warn", "--drain-timeout", "1s"}
		case sysBaseline:
			exe = filepath.Join(c.bin, "baseline-gateway")
			args = []string{"--listen", fmt.Sprintf("127.0.0.1:%d", p.ws()), "--reuseport", "--admin-listen", admin,
				"--nats-url", f.natsURL, "--node-id", fmt.Sprintf("bench-baseline-%d", i)}
		default:
			return f, fmt.Errorf("unknown system %q", c.system)
		}
		g, err := ps.Start(fmt.Sprintf("%s-%s-%d", c.tag, c.system, i), exe, args, env, nil)
		if err != nil {
			return f, err
		}
		f.gateways = append(f.gateways, g)
		f.admins = append(f.admins, "http://"+admin)
	}
	for i, g := range f.gateways {
		if err := waitHTTP(ctx, g, f.admins[i]+"/readyz", 30*time.Second); err != nil {
			return f, err
		}
	}
	f.router, err = ps.Start(c.tag+"-router", filepath.Join(c.bin, "router"),
		[]string{"--listen", fmt.Sprintf("127.0.0.1:%d", p.router()), "--admin-listen", fmt.Sprintf("127.0.0.1:%d", p.routerAdmin()),
			"--nats-url", f.natsURL, "--rate-limit", "-1", "--log-level", "warn", "--idempotency-store", "memory"},
		append([]string{"WSFLEET_ROUTER_API_KEY=" + c.apiKey}, resumeEnv(c.resume)...), nil)
	if err != nil {
		return f, err
	}
	if err := waitHTTP(ctx, f.router, fmt.Sprintf("http://127.0.0.1:%d/readyz", p.routerAdmin()), 30*time.Second); err != nil {
		return f, err
	}
	return f, nil
}

// dead names a fleet process that has exited, if any.
func (f *fleet) dead() string {
	for _, p := range append([]*proc{f.nats, f.router}, f.gateways...) {
		if p != nil && p.exited() {
			return fmt.Sprintf("%s exited (%v); see %s", p.name, p.err, p.log)
		}
	}
	return ""
}

// stop ends the fleet: router and gateways first, NATS last.
func (f *fleet) stop() {
	if f == nil {
		return
	}
	f.ps.Stop(f.router, syscall.SIGTERM, 10*time.Second)
	f.ps.StopMany(f.gateways, syscall.SIGTERM, 10*time.Second)
	f.ps.Stop(f.nats, syscall.SIGTERM, 10*time.Second)
}

func waitTCP(ctx context.Context, p *proc, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s (%v); see %s", p.name, addr, p.err, p.log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within %s; see %s", p.name, addr, d, p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitHTTP(ctx context.Context, p *proc, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v); see %s", p.name, p.err, p.log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %s; see %s", p.name, url, d, p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// resumeEnv is the router's environment for --resume.
func resumeEnv(on bool) []string {
	if on {
		return []string{"WSFLEET_RESUME=true"}
	}
	return nil
}

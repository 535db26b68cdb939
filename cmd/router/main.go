// Command router runs the wsfleet router: the HTTP API services use to
// publish messages to the users connected to the gateway fleet, over NATS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/flagenv"
	"github.com/wsfleet/wsfleet/internal/logx"
	"github.com/wsfleet/wsfleet/router"
)

const usage = `Usage: router [flags]

Runs the wsfleet router: an HTTP API (and the same operations as NATS
request/reply on <prefix>.router.*) that publishes messages to the users
connected to the gateways, tracks their presence and closes their
connections:

  POST   /v1/users/{user}/messages      body: any JSON value; {user} percent-encoded
  POST   /v1/messages                   {"users":[...],"data":...}
  POST   /v1/broadcast                  body: any JSON value
  GET    /v1/users/{user}/presence
  POST   /v1/presence/query             {"users":[...]}
  GET    /v1/stats
  DELETE /v1/users/{user}/connections   closes every device with 4403
  GET    /v1/openapi.json               the OpenAPI 3 description

With --resume (set it, and the same --history-* flags, on the gateways
too) every message is stored in the JetStream history stream clients
resume from: a publish is answered once the stream has acknowledged it,
and its "id" is the stream sequence the devices see; an Idempotency-Key
also keeps the stream from storing a retry twice. The router then refuses
to start when NATS has no JetStream, or when the stream exists with
other --history-* settings.

Requests carry "Authorization: Bearer <api key or JWT>": set API keys
(--api-key), a JWT key source (--jwt-hs256-secret, --jwt-jwks-file,
--jwt-jwks-url) or both; at least one is required. Set secrets with
WSFLEET_ROUTER_API_KEY and WSFLEET_ROUTER_JWT_HS256_SECRET rather than
flags, which other users of the host can see in the process list. Every
flag can also be set as WSFLEET_ROUTER_<FLAG> (the few shared with the
gateway also as WSFLEET_<FLAG>, shown below). An unknown WSFLEET_* name
stops the router at start.
docs/router.md describes the API.`

// shutdownTimeout bounds the graceful shutdown after SIGTERM or SIGINT; a
// second signal ends it at once.
const shutdownTimeout = 30 * time.Second

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Environ(), os.Stderr, sig, nil))
}

// config is what the command line and the environment set.
type config struct {
	opts      router.Options
	logFormat string
	logLevel  string
}

// newFlags defines the command's flags, filling c.
func newFlags(c *config) *flagenv.Set {
	var def router.Options
	def.SetDefaults()
	o := &c.opts
	fs := flagenv.NewFleet("router", "ROUTER", usage)
	fs.String(&o.Listen, "listen", def.Listen, "HTTP API listen address")
	fs.String(&o.AdminListen, "admin-listen", def.AdminListen, `admin address for /healthz, /readyz, /metrics ("off" disables; loopback by default: set ":8091" to scrape from elsewhere)`)
	fs.Bool(&o.AdminPprof, "admin-pprof", false, "serve Go's profiler at /debug/pprof/ on --admin-listen (unauthenticated)")
	fs.String(&o.NATSURL, "nats-url", def.NATSURL, "NATS server URLs, comma-separated")
	fs.Duration(&o.NATSConnectTimeout, "nats-connect-timeout", def.NATSConnectTimeout, "how long to retry the first NATS connection before failing")
	fs.String(&o.SubjectPrefix, "subject-prefix", def.SubjectPrefix, "prefix of every NATS subject (the gateways' --subject-prefix)")
	fs.List(&o.APIKeys, "api-key", nil, fmt.Sprintf("API keys callers authenticate with, comma-separated or repeated; any one is accepted, so keys can be rotated (each at least %d bytes; an API key or a JWT key source is required)", router.MinAPIKeyBytes))
	fs.ShowDefault("api-key", "none")
	fs.Int(&o.MaxBodyBytes, "max-body-bytes", def.MaxBodyBytes, "largest request body, the message data (413 above); must fit the NATS server's max_payload")
	o.JWT.RegisterFlags(fs, "bearer JWTs")
	fs.String(&o.JWTScope, "jwt-scope", def.JWTScope, "scope a JWT must grant (scope or scp claim); 403 without it")
	fs.Float(&o.RateLimit, "rate-limit", def.RateLimit, "requests per second per credential (API key or JWT sub); 429 above (negative: no limit)")
	fs.Int(&o.RateLimitBurst, "rate-limit-burst", 0, "burst of the per-credential rate limit")
	fs.ShowDefault("rate-limit-burst", "2x --rate-limit")
	fs.Int(&o.MaxBatchUsers, "max-batch-users", def.MaxBatchUsers, "users in one batch publish or presence query (400 too_many_users above)")
	fs.Duration(&o.IdempotencyWindow, "idempotency-window", def.IdempotencyWindow, "how long an Idempotency-Key is remembered")
	fs.String(&o.IdempotencyStore, "idempotency-store", def.IdempotencyStore, "auto (JetStream KV when available, else memory), jetstream (shared by the replicas) or memory (per replica)")
	fs.String(&o.IdempotencyBucket, "idempotency-bucket", def.IdempotencyBucket, "JetStream KV bucket of the idempotency keys")
	fs.Int(&o.IdempotencyMaxKeys, "idempotency-max-keys", def.IdempotencyMaxKeys, "keys the in-memory idempotency store holds (oldest dropped first)")
	fs.Duration(&o.NodeTTL, "node-ttl", def.NodeTTL, "probe a gateway node silent this long; it is dropped with its users at once if its NATS connection is gone, kept if only late")
	fs.Duration(&o.NodeMaxSilence, "node-max-silence", def.NodeMaxSilence, "drop a gateway node and its users after this long silent whatever its probes say (more than --node-ttl)")
	fs.Duration(&o.PublishWait, "publish-wait", def.PublishWait, "how long a publish that finds NATS disconnected waits for it to come back before answering 503 (0: at once)")
	fs.Duration(&o.SnapshotTimeout, "snapshot-timeout", def.SnapshotTimeout, "bound on a presence snapshot request")
	fs.Duration(&o.KickTimeout, "kick-timeout", def.KickTimeout, "longest wait for the nodes' answers to a kick")
	fs.Bool(&o.Resume, "resume", false, "resumable delivery (the gateways' --resume): publish to the JetStream history stream, answer once it stored the message, its stream sequence as the id (needs JetStream)")
	o.History.RegisterFlags(fs)
	fs.String(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.String(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	// In router.Options a zero is "unset, use the default": a 0 given here
	// is refused rather than silently replaced.
	fs.Positive("max-batch-users", "kick-timeout", "snapshot-timeout", "node-ttl", "node-max-silence",
		"idempotency-window", "idempotency-max-keys", "max-body-bytes", "nats-connect-timeout")
	fs.NonZero("a negative value means no limit", "rate-limit")
	return fs
}

// parse reads the environment (environ, "NAME=value" entries) then args.
func parse(args []string, environ []string) (config, error) {
	var c config
	err := newFlags(&c).ParseEnv(args, environ)
	if err == nil && c.opts.PublishWait == 0 {
		// --publish-wait 0 answers at once; in router.Options a zero is
		// unset and becomes the default.
		c.opts.PublishWait = router.NoPublishWait
	}
	return c, err
}

// run is the command: exit status 0 after a signal and a clean shutdown, 2
// for a bad setting, 1 for anything else. started, when not nil, is called
// once the router serves (for tests).
func run(args []string, environ []string, stderr io.Writer, sig <-chan os.Signal, started func(*router.Server)) int {
	c, err := parse(args, environ)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "router:", err)
		return 2
	}
	log, err := logx.New(c.logFormat, c.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "router:", err)
		return 2
	}
	c.opts.Logger = log
	srv, err := router.New(c.opts)
	if err != nil {
		fmt.Fprintln(stderr, "router:", err)
		return 2
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintln(stderr, "router:", err)
		if errors.Is(err, router.ErrBadOption) {
			return 2
		}
		return 1
	}
	if started != nil {
		started(srv)
	}
	got := <-sig
	log.Info("signal received; shutting down", zap.String("signal", got.String()))
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	go func() {
		select {
		case <-sig: // a second signal ends the wait for requests in flight
			log.Warn("second signal; closing now")
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown", zap.Error(err))
		return 1
	}
	return 0
}

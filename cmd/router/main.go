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

Runs the wsfleet router, an HTTP API that publishes messages over NATS to
the users connected to the gateways:

  POST /v1/users/{user}/messages   body: any JSON value; {user} percent-encoded
  POST /v1/broadcast               body: any JSON value

Requests carry "Authorization: Bearer <api key>"; the answer is
202 {"id":"<message id>"}. Set the keys with WSFLEET_API_KEY rather than
--api-key, which other users of the host can see in the process list.`

// shutdownTimeout bounds the graceful shutdown after SIGTERM or SIGINT; a
// second signal ends it at once.
const shutdownTimeout = 30 * time.Second

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stderr, sig, nil))
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
	fs := flagenv.New("router", "WSFLEET_", usage)
	fs.String(&o.Listen, "listen", def.Listen, "HTTP API listen address")
	fs.String(&o.AdminListen, "admin-listen", def.AdminListen, `admin address for /healthz, /readyz, /metrics, /debug/pprof/ ("off" disables)`)
	fs.String(&o.NATSURL, "nats-url", def.NATSURL, "NATS server URLs, comma-separated")
	fs.Duration(&o.NATSConnectTimeout, "nats-connect-timeout", def.NATSConnectTimeout, "how long to retry the first NATS connection before failing")
	fs.String(&o.SubjectPrefix, "subject-prefix", def.SubjectPrefix, "prefix of every NATS subject (the gateways' --subject-prefix)")
	fs.List(&o.APIKeys, "api-key", nil, fmt.Sprintf("API keys callers authenticate with, comma-separated or repeated; any one is accepted, so keys can be rotated (each at least %d bytes; required)", router.MinAPIKeyBytes))
	fs.ShowDefault("api-key", "none")
	fs.Int(&o.MaxBodyBytes, "max-body-bytes", def.MaxBodyBytes, "largest request body, the message data (413 above); must fit the NATS server's max_payload")
	fs.String(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.String(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return fs
}

// parse reads the environment (environ) then args.
func parse(args []string, environ func(string) (string, bool)) (config, error) {
	var c config
	err := newFlags(&c).Parse(args, environ)
	return c, err
}

// run is the command: exit status 0 after a signal and a clean shutdown, 2
// for a bad setting, 1 for anything else. started, when not nil, is called
// once the router serves (for tests).
func run(args []string, environ func(string) (string, bool), stderr io.Writer, sig <-chan os.Signal, started func(*router.Server)) int {
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

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/router"
)

const (
	key1 = "cmd-test-key-0123456789"
	key2 = "cmd-test-key-abcdefghij"
)

// env is m as os.Environ entries.
func env(m map[string]string) []string {
	var l []string
	for k, v := range m {
		l = append(l, k+"="+v)
	}
	return l
}

func startNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func TestParseEnv(t *testing.T) {
	full := map[string]string{
		"WSFLEET_ROUTER_LISTEN":               "127.0.0.1:9000",
		"WSFLEET_ROUTER_ADMIN_LISTEN":         "off",
		"WSFLEET_ROUTER_NATS_URL":             "nats://a:4222,nats://b:4222",
		"WSFLEET_ROUTER_NATS_CONNECT_TIMEOUT": "3s",
		"WSFLEET_ROUTER_SUBJECT_PREFIX":       "acme",
		"WSFLEET_ROUTER_API_KEY":              key1 + "," + key2,
		"WSFLEET_ROUTER_MAX_BODY_BYTES":       "1000",
		"WSFLEET_ROUTER_LOG_FORMAT":           "console",
		"WSFLEET_ROUTER_LOG_LEVEL":            "debug",
	}
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			o := c.opts
			if o.Listen != ":8090" || o.AdminListen != "127.0.0.1:8091" || o.NATSURL != "nats://127.0.0.1:4222" ||
				o.NATSConnectTimeout != 10*time.Second || o.SubjectPrefix != "wsfleet" || o.MaxBodyBytes != 262144 ||
				len(o.APIKeys) != 0 || c.logFormat != "json" || c.logLevel != "info" {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{name: "every variable", env: full, check: func(t *testing.T, c config) {
			o := c.opts
			if o.Listen != "127.0.0.1:9000" || o.AdminListen != "off" || o.NATSURL != "nats://a:4222,nats://b:4222" ||
				o.NATSConnectTimeout != 3*time.Second || o.SubjectPrefix != "acme" || o.MaxBodyBytes != 1000 ||
				strings.Join(o.APIKeys, " ") != key1+" "+key2 || c.logFormat != "console" || c.logLevel != "debug" {
				t.Fatalf("from the environment: %+v", c)
			}
		}},
		{name: "API v1 variables", env: map[string]string{
			"WSFLEET_ROUTER_JWT_HS256_SECRET":     "0123456789abcdef0123456789abcdef",
			"WSFLEET_ROUTER_JWT_ISSUER":           "idp",
			"WSFLEET_ROUTER_JWT_AUDIENCE":         "router",
			"WSFLEET_ROUTER_JWT_SCOPE":            "notify",
			"WSFLEET_ROUTER_RATE_LIMIT":           "50",
			"WSFLEET_ROUTER_RATE_LIMIT_BURST":     "70",
			"WSFLEET_ROUTER_MAX_BATCH_USERS":      "10",
			"WSFLEET_ROUTER_IDEMPOTENCY_WINDOW":   "10m",
			"WSFLEET_ROUTER_IDEMPOTENCY_STORE":    "memory",
			"WSFLEET_ROUTER_IDEMPOTENCY_MAX_KEYS": "5",
			"WSFLEET_ROUTER_NODE_TTL":             "20s",
			"WSFLEET_ROUTER_NODE_MAX_SILENCE":     "90s",
			"WSFLEET_ROUTER_PUBLISH_WAIT":         "2s",
			"WSFLEET_ROUTER_SNAPSHOT_TIMEOUT":     "3s",
			"WSFLEET_ROUTER_KICK_TIMEOUT":         "1s",
		}, check: func(t *testing.T, c config) {
			o := c.opts
			if o.JWT.HS256Secret != "0123456789abcdef0123456789abcdef" || o.JWT.Issuer != "idp" || o.JWT.Audience != "router" ||
				o.JWTScope != "notify" || o.RateLimit != 50 || o.RateLimitBurst != 70 || o.MaxBatchUsers != 10 ||
				o.IdempotencyWindow != 10*time.Minute || o.IdempotencyStore != "memory" || o.IdempotencyMaxKeys != 5 ||
				o.NodeTTL != 20*time.Second || o.NodeMaxSilence != 90*time.Second || o.PublishWait != 2*time.Second ||
				o.SnapshotTimeout != 3*time.Second || o.KickTimeout != time.Second {
				t.Fatalf("from the environment: %+v", o)
			}
		}},
		{name: "liveness and publish wait defaults", check: func(t *testing.T, c config) {
			if o := c.opts; o.NodeTTL != 15*time.Second || o.NodeMaxSilence != 2*time.Minute || o.PublishWait != 5*time.Second {
				t.Fatalf("defaults: node-ttl %s, node-max-silence %s, publish-wait %s", o.NodeTTL, o.NodeMaxSilence, o.PublishWait)
			}
		}},
		{name: "publish wait 0 answers at once", args: []string{"--publish-wait", "0"}, check: func(t *testing.T, c config) {
			if c.opts.PublishWait != router.NoPublishWait {
				t.Fatalf("--publish-wait 0: %s, want router.NoPublishWait", c.opts.PublishWait)
			}
		}},
		{name: "publish wait 0 from the environment", env: map[string]string{"WSFLEET_ROUTER_PUBLISH_WAIT": "0s"}, check: func(t *testing.T, c config) {
			if c.opts.PublishWait != router.NoPublishWait {
				t.Fatalf("WSFLEET_ROUTER_PUBLISH_WAIT=0s: %s, want router.NoPublishWait", c.opts.PublishWait)
			}
		}},
		{name: "flags win", env: full, args: []string{"--api-key", key2, "--max-body-bytes=2000", "--listen", ":1"}, check: func(t *testing.T, c config) {
			if strings.Join(c.opts.APIKeys, " ") != key2 || c.opts.MaxBodyBytes != 2000 || c.opts.Listen != ":1" {
				t.Fatalf("flags did not replace the environment: %+v", c.opts)
			}
		}},
		{name: "repeated key flag", args: []string{"--api-key", key1, "--api-key", key2}, check: func(t *testing.T, c config) {
			if strings.Join(c.opts.APIKeys, " ") != key1+" "+key2 {
				t.Fatalf("keys %q", c.opts.APIKeys)
			}
		}},
		{name: "resume off by default, history defaults", check: func(t *testing.T, c config) {
			if h := c.opts.History; c.opts.Resume || h.TTL != history.DefaultTTL || h.MaxPerUser != history.DefaultMaxPerUser ||
				h.MaxBytes != history.DefaultMaxBytes || h.Replicas != history.DefaultReplicas || h.Storage != history.DefaultStorage {
				t.Fatalf("resume %v, history %+v", c.opts.Resume, h)
			}
		}},
		{name: "resume flags", args: []string{"--resume", "--history-ttl", "30m", "--history-max-per-user=20", "--history-storage", "memory"}, check: func(t *testing.T, c config) {
			if h := c.opts.History; !c.opts.Resume || h.TTL != 30*time.Minute || h.MaxPerUser != 20 || h.Storage != "memory" || h.Replicas != 1 {
				t.Fatalf("resume %v, history %+v", c.opts.Resume, h)
			}
		}},
		{name: "resume from the variables shared with the gateways", env: map[string]string{
			"WSFLEET_RESUME":               "true",
			"WSFLEET_HISTORY_TTL":          "1h",
			"WSFLEET_HISTORY_MAX_PER_USER": "50",
			"WSFLEET_HISTORY_MAX_BYTES":    "2097152",
			"WSFLEET_HISTORY_REPLICAS":     "3",
			"WSFLEET_HISTORY_STORAGE":      "memory",
		}, check: func(t *testing.T, c config) {
			if h := c.opts.History; !c.opts.Resume || h.TTL != time.Hour || h.MaxPerUser != 50 || h.MaxBytes != 2<<20 || h.Replicas != 3 || h.Storage != "memory" {
				t.Fatalf("resume %v, history %+v", c.opts.Resume, h)
			}
		}},
		{name: "the router's own history variable wins", env: map[string]string{
			"WSFLEET_RESUME": "true", "WSFLEET_ROUTER_RESUME": "false", "WSFLEET_HISTORY_TTL": "1h", "WSFLEET_ROUTER_HISTORY_TTL": "2h",
		}, check: func(t *testing.T, c config) {
			if c.opts.Resume || c.opts.History.TTL != 2*time.Hour {
				t.Fatalf("resume %v, history ttl %s; want the WSFLEET_ROUTER_* values", c.opts.Resume, c.opts.History.TTL)
			}
		}},
		{name: "key list trims spaces", env: map[string]string{"WSFLEET_ROUTER_API_KEY": " " + key1 + " , " + key2 + ","}, check: func(t *testing.T, c config) {
			if strings.Join(c.opts.APIKeys, " ") != key1+" "+key2 {
				t.Fatalf("keys %q", c.opts.APIKeys)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(tc.args, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestHelpHidesKeys(t *testing.T) {
	var c config
	fs := newFlags(&c)
	if err := fs.ParseEnv(nil, env(map[string]string{"WSFLEET_ROUTER_API_KEY": key1})); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fs.PrintUsage(&b)
	out := b.String()
	for _, want := range []string{"--api-key", "default none, env WSFLEET_ROUTER_API_KEY", "default 262144, env WSFLEET_ROUTER_MAX_BODY_BYTES",
		"default 10s, env WSFLEET_ROUTER_NATS_CONNECT_TIMEOUT", `default ":8090", env WSFLEET_ROUTER_LISTEN`} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, key1) {
		t.Fatal("help shows the API key")
	}
	for _, flag := range []string{"--jwt-hs256-secret", "--jwt-scope", "--rate-limit", "--max-batch-users",
		"--idempotency-window", "--node-ttl", "--kick-timeout", "default 2x --rate-limit",
		"default 2m0s, env WSFLEET_ROUTER_NODE_MAX_SILENCE", "default 5s, env WSFLEET_ROUTER_PUBLISH_WAIT",
		"--resume", "default false, env WSFLEET_ROUTER_RESUME (or WSFLEET_RESUME", "With --resume",
		"default 24h0m0s, env WSFLEET_ROUTER_HISTORY_TTL (or WSFLEET_HISTORY_TTL", "--history-max-per-user",
		"--history-max-bytes", "--history-replicas", "--history-storage"} {
		if !strings.Contains(out, flag) {
			t.Errorf("help lacks %s", flag)
		}
	}
}

func TestBadSettings(t *testing.T) {
	ok := map[string]string{"WSFLEET_ROUTER_API_KEY": key1}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "no key", args: nil, want: "--api-key"},
		{name: "short key", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1 + ",tiny-secret"}, want: "--api-key"},
		{name: "bad env names the variable", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1, "WSFLEET_ROUTER_MAX_BODY_BYTES": "lots"}, want: "WSFLEET_ROUTER_MAX_BODY_BYTES"},
		{name: "bad timeout", env: ok, args: []string{"--nats-connect-timeout", "soon"}, want: "nats-connect-timeout"},
		{name: "zero body", env: ok, args: []string{"--max-body-bytes=-5"}, want: "--max-body-bytes"},
		{name: "bad listen", env: ok, args: []string{"--listen", "nowhere"}, want: "--listen"},
		{name: "bad prefix", env: ok, args: []string{"--subject-prefix", "a.>"}, want: "--subject-prefix"},
		{name: "bad log format", env: ok, args: []string{"--log-format", "xml"}, want: "--log-format"},
		{name: "max silence not above the ttl", env: ok, args: []string{"--node-ttl", "30s", "--node-max-silence", "30s"}, want: "--node-max-silence"},
		{name: "ttl above the default max silence", env: ok, args: []string{"--node-ttl", "3m"}, want: "--node-max-silence"},
		{name: "negative publish wait", env: ok, args: []string{"--publish-wait=-1s"}, want: "--publish-wait"},
		{name: "bad publish wait in the environment", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1, "WSFLEET_ROUTER_PUBLISH_WAIT": "soon"}, want: "WSFLEET_ROUTER_PUBLISH_WAIT"},
		{name: "stray argument", env: ok, args: []string{"serve"}, want: "serve"},
		{name: "history ttl under a second with resume", env: ok, args: []string{"--resume", "--history-ttl", "500ms"}, want: "router: invalid setting --history-ttl: 500ms is less than a second"},
		{name: "zero history ttl", env: ok, args: []string{"--history-ttl", "0s"}, want: "--history-ttl (WSFLEET_ROUTER_HISTORY_TTL): must be more than 0"},
		{name: "bad history storage in the shared variable", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1, "WSFLEET_RESUME": "1", "WSFLEET_HISTORY_STORAGE": "disk"}, want: `--history-storage: "disk" is neither file nor memory`},
		{name: "bad resume variable", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1, "WSFLEET_RESUME": "maybe"}, want: "WSFLEET_RESUME"},
		{name: "bad duration says what it wants", env: ok, args: []string{"--kick-timeout", "abc"}, want: `--kick-timeout: "abc" is not a duration (e.g. 30s`},
		{name: "zero batch", env: ok, args: []string{"--max-batch-users", "0"}, want: "--max-batch-users (WSFLEET_ROUTER_MAX_BATCH_USERS): must be more than 0"},
		{name: "zero rate limit", env: ok, args: []string{"--rate-limit", "0"}, want: "--rate-limit (WSFLEET_ROUTER_RATE_LIMIT): 0 is not a setting: a negative value means no limit"},
		{name: "Kubernetes service links are not settings", env: map[string]string{"WSFLEET_ROUTER_PORT": "tcp://10.0.0.1:8090", "WSFLEET_NATS_SERVICE_HOST": "10.0.0.2"}, want: "no API key configured"},
		{name: "zero kick timeout", env: ok, args: []string{"--kick-timeout", "0s"}, want: "--kick-timeout (WSFLEET_ROUTER_KICK_TIMEOUT): must be more than 0"},
		{name: "http NATS URL", env: ok, args: []string{"--nats-url", "http://127.0.0.1:8222"}, want: `router: invalid setting --nats-url: "http://127.0.0.1:8222" is an HTTP URL`},
		{name: "typo in a variable", env: map[string]string{"WSFLEET_ROUTER_API_KEY": key1, "WSFLEET_ROUTER_RATE_LIMITT": "5"}, want: "unknown environment variable WSFLEET_ROUTER_RATE_LIMITT: router has no --rate-limitt flag"},
		{name: "a name of an older release", env: map[string]string{"WSFLEET_API_KEY": key1}, want: "WSFLEET_GATEWAY_API_KEY or WSFLEET_ROUTER_API_KEY"},
		{name: "the gateway's secret is not an API credential", env: map[string]string{"WSFLEET_GATEWAY_JWT_HS256_SECRET": "0123456789abcdef0123456789abcdef"}, want: "no API key configured"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, env(tc.env), &stderr, nil, nil)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not name %q", stderr.String(), tc.want)
			}
			if strings.Contains(stderr.String(), "router: router:") {
				t.Fatalf("the program name twice: %q", stderr.String())
			}
			if strings.Contains(stderr.String(), "tiny-secret") || strings.Contains(stderr.String(), key1) {
				t.Fatalf("stderr %q shows an API key", stderr.String())
			}
		})
	}
}

func startJetStreamNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// runUntilStarted runs the command with args until it serves, then stops
// it with SIGTERM; it must exit 0.
func runUntilStarted(t *testing.T, args []string, environ []string) {
	t.Helper()
	sig := make(chan os.Signal, 1)
	started := make(chan struct{})
	exited := make(chan int, 1)
	go func() { exited <- run(args, environ, io.Discard, sig, func(*router.Server) { close(started) }) }()
	select {
	case <-started:
	case code := <-exited:
		t.Fatalf("exited with %d before serving", code)
	case <-time.After(10 * time.Second):
		t.Fatal("did not start")
	}
	sig <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
}

// TestResumeRefusedAtStart: with --resume the router refuses to start,
// exit status 2 and one line naming what to change, when NATS has no
// JetStream or the history stream exists with other --history-* settings
// (here created by a router with another --history-ttl).
func TestResumeRefusedAtStart(t *testing.T) {
	cases := []struct {
		name  string
		js    bool
		first []string // a run that creates the stream first, when not nil
		args  []string
		want  []string
	}{
		{name: "no JetStream", args: []string{"--resume"},
			want: []string{"router: invalid setting: --resume needs JetStream", "start nats-server with -js"}},
		{name: "no JetStream from the shared variable", args: []string{"WSFLEET_RESUME=true"},
			want: []string{"router: invalid setting: --resume needs JetStream"}},
		{name: "stream with another history ttl", js: true, first: []string{"--resume", "--history-ttl", "1h"}, args: []string{"--resume"},
			want: []string{"router: invalid setting --resume: the history stream exists with another configuration", "max_age 1h0m0s, --history-ttl says 24h0m0s"}},
		{name: "stream with another history ttl, from the shared variable", js: true, first: []string{"--resume"},
			args: []string{"--resume", "WSFLEET_HISTORY_TTL=2h"}, want: []string{"max_age 24h0m0s, --history-ttl says 2h0m0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ns *server.Server
			if tc.js {
				ns = startJetStreamNATS(t)
			} else {
				ns = startNATS(t)
			}
			base := []string{"--listen", "127.0.0.1:0", "--admin-listen", "off", "--nats-url", ns.ClientURL(), "--log-level", "error"}
			environ := []string{"WSFLEET_ROUTER_API_KEY=" + key1}
			if tc.first != nil {
				runUntilStarted(t, append(base, tc.first...), environ)
			}
			var args []string
			for _, a := range tc.args {
				if strings.Contains(a, "=") && !strings.HasPrefix(a, "--") {
					environ = append(environ, a)
				} else {
					args = append(args, a)
				}
			}
			var stderr bytes.Buffer
			code := run(append(base, args...), environ, &stderr, nil, nil)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Fatalf("stderr %q is not one line", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr %q does not say %q", out, w)
				}
			}
		})
	}
}

func TestNATSUnreachableExits1(t *testing.T) {
	ns := startNATS(t)
	url := ns.ClientURL()
	ns.Shutdown()
	ns.WaitForShutdown()
	var stderr bytes.Buffer
	code := run([]string{"--listen", "127.0.0.1:0", "--admin-listen", "off", "--nats-url", url, "--nats-connect-timeout", "200ms", "--log-level", "error"},
		env(map[string]string{"WSFLEET_ROUTER_API_KEY": key1}), &stderr, nil, nil)
	if code != 1 || !strings.Contains(stderr.String(), "--nats-url") {
		t.Fatalf("exit %d, stderr %q; want 1 naming --nats-url", code, stderr.String())
	}
}

// TestRunPublishesAndStopsOnSignal runs the command in-process: settings
// from the environment, a publish through it, then a signal and exit 0.
func TestRunPublishesAndStopsOnSignal(t *testing.T) {
	ns := startNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("acme.user.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	sig := make(chan os.Signal, 2)
	started := make(chan *router.Server, 1)
	exited := make(chan int, 1)
	go func() {
		exited <- run(nil, env(map[string]string{
			"WSFLEET_ROUTER_API_KEY":        key1 + "," + key2,
			"WSFLEET_ROUTER_LISTEN":         "127.0.0.1:0",
			"WSFLEET_ROUTER_ADMIN_LISTEN":   "127.0.0.1:0",
			"WSFLEET_ROUTER_NATS_URL":       ns.ClientURL(),
			"WSFLEET_ROUTER_SUBJECT_PREFIX": "acme",
			"WSFLEET_ROUTER_LOG_LEVEL":      "error",
		}), io.Discard, sig, func(s *router.Server) { started <- s })
	}()
	var srv *router.Server
	select {
	case srv = <-started:
	case code := <-exited:
		t.Fatalf("exited with %d", code)
	case <-time.After(10 * time.Second):
		t.Fatal("did not start")
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+srv.Addr().String()+"/v1/users/bob.smith/messages", strings.NewReader(`{"hi":1}`))
	req.Header.Set("Authorization", "Bearer "+key2)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.StatusCode)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || m.Subject != "acme.user.bob_2Esmith" || string(m.Data) != `{"hi":1}` {
		t.Fatalf("got %v %v", m, err)
	}
	sig <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if !srv.NATSConn().IsClosed() {
		t.Fatal("NATS connection still open after exit")
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the router command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "router-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "router")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestProcessSIGTERM runs the built binary and stops it with a real SIGTERM.
func TestProcessSIGTERM(t *testing.T) {
	ns := startNATS(t)
	cmd := exec.Command(binary(t), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-url", ns.ClientURL())
	cmd.Env = append(os.Environ(), "WSFLEET_ROUTER_API_KEY="+key1)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "router started" {
				l, _ := m["listen"].(string)
				a, _ := m["admin"].(string)
				addrs <- [2]string{l, a}
			}
		}
	}()
	var listen, admin string
	select {
	case a := <-addrs:
		listen, admin = a[0], a[1]
	case <-time.After(20 * time.Second):
		t.Fatal("router did not start")
	}
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+listen+"/v1/broadcast", strings.NewReader(`"hello"`))
	req.Header.Set("Authorization", "Bearer "+key1)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
}

// Command gateway runs one wsfleet gateway node. `gateway token` mints a
// development token signed with an HS256 secret; `gateway drain` drains the
// node running on this host (the Helm chart's preStop hook).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/flagenv"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/logx"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/protocol"
)

const usage = `Usage: gateway [flags]
       gateway token --sub USER [--jwt-hs256-secret S] [--ttl 24h]
       gateway drain --control-socket PATH [--delay 5s] [--wait=true]

Runs a wsfleet gateway node: WebSocket clients authenticate with a JWT and
receive what services publish on NATS to <prefix>.user.<user> and
<prefix>.broadcast. Without --nats-url it starts an embedded NATS server.

Every flag can also be set as WSFLEET_GATEWAY_<FLAG> (the few shared with
the router also as WSFLEET_<FLAG>, shown below). An unknown WSFLEET_* name
stops the gateway at start.`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "token":
			os.Exit(tokenCmd(os.Args[2:]))
		case "drain":
			os.Exit(drainCmd(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var def gateway.Options
	def.SetDefaults()
	var o gateway.Options
	var logFormat, logLevel, memLimit, natsListen, natsStore string
	var gcPercent int
	fs := flagenv.NewFleet("gateway", "GATEWAY", usage)
	fs.String(&o.Listen, "listen", def.Listen, "WebSocket listen address")
	fs.Bool(&o.ReusePort, "reuseport", false, "set SO_REUSEPORT so several gateway processes share --listen")
	fs.String(&o.AdminListen, "admin-listen", def.AdminListen, `admin address for /healthz, /readyz, /metrics ("off" disables; loopback by default: set ":8081" to scrape from elsewhere)`)
	fs.Bool(&o.AdminPprof, "admin-pprof", false, "serve Go's profiler at /debug/pprof/ on --admin-listen (unauthenticated)")
	fs.String(&o.ControlSocket, "control-socket", "", `Unix socket for actions on the node, such as `+"`gateway drain`"+`, in a directory only this user can reach, e.g. /tmp/wsfleet/gateway.sock (created 0700 if missing; "": none)`)
	fs.String(&o.NodeID, "node-id", "", "node name in welcome frames, NATS headers and logs")
	fs.ShowDefault("node-id", "<hostname>-<pid>")
	fs.String(&o.SubjectPrefix, "subject-prefix", def.SubjectPrefix, "prefix of every NATS subject")
	fs.String(&o.NATSURL, "nats-url", "", `NATS server URLs, comma-separated ("" starts an embedded NATS server, for development)`)
	fs.String(&natsListen, "nats-embedded-listen", "127.0.0.1:4222", "where the embedded NATS server listens for other processes (port 0: any)")
	fs.String(&natsStore, "nats-embedded-store-dir", "", `JetStream directory of the embedded NATS server ("off": no JetStream)`)
	fs.ShowDefault("nats-embedded-store-dir", "a temporary directory")
	fs.Duration(&o.NATSConnectTimeout, "nats-connect-timeout", def.NATSConnectTimeout, "how long to retry the first NATS connection")
	fs.Duration(&o.NATSOutageGrace, "nats-outage-grace", def.NATSOutageGrace, "without NATS this long, send clients a reconnect notice (to move to a node that can deliver), then close those left with 1013")
	o.JWT.RegisterFlags(fs, "tokens")
	fs.Bool(&o.AllowQueryToken, "allow-query-token", false, "accept ?token= in the upgrade URL (URLs are logged by proxies; prefer the auth frame)")
	fs.Duration(&o.AuthTimeout, "auth-timeout", def.AuthTimeout, "time from upgrade to authentication before close 4408")
	fs.Int(&o.AuthWorkers, "auth-workers", def.AuthWorkers, "goroutines verifying JWT signatures")
	fs.Int(&o.AuthQueue, "auth-queue", def.AuthQueue, "tokens waiting for a worker before clients get 1013")
	fs.Duration(&o.Heartbeat, "heartbeat", def.Heartbeat, "interval of server pings")
	fs.Duration(&o.IdleTimeout, "idle-timeout", def.IdleTimeout, "close (4504) a client silent this long")
	fs.Duration(&o.HandshakeTimeout, "handshake-timeout", def.HandshakeTimeout, "close a socket whose upgrade request is not complete in this time")
	fs.Duration(&o.DrainTimeout, "drain-timeout", def.DrainTimeout, "on SIGTERM, spread connection closes (1012) over this time")
	fs.Duration(&o.CloseTimeout, "close-timeout", def.CloseTimeout, "wait this long for a client's close frame")
	fs.Int(&o.MaxMessageBytes, "max-message-bytes", def.MaxMessageBytes, "largest client frame or message (1009 above)")
	fs.Int(&o.MaxPendingBytes, "max-pending-bytes", def.MaxPendingBytes, "outbound queue per connection before a slow-consumer close (4500)")
	fs.Int(&o.MaxHeaderBytes, "max-header-bytes", def.MaxHeaderBytes, "largest upgrade request (431 above)")
	fs.Duration(&o.WriteTimeout, "write-timeout", def.WriteTimeout, "close (4500) a client whose queued frames made no progress this long")
	fs.List(&o.AllowedOrigins, "allowed-origins", nil, `browser Origins allowed to connect, comma-separated ("https://app.example.com", "https://*.example.com"); others get 403`)
	fs.ShowDefault("allowed-origins", "any origin")
	fs.Int(&o.MaxConnections, "max-connections", 0, "sockets the node holds; upgrades over it get 503 with Retry-After")
	fs.ShowDefault("max-connections", "the open-file limit less 256 ("+strconv.Itoa(def.MaxConnections)+" here)")
	fs.Float(&o.MaxConnectRate, "max-connect-rate", 0, "new upgrades per second on the node; over it 503 with Retry-After (0: no limit)")
	fs.Int(&o.MaxPendingConnects, "max-pending-connects", def.MaxPendingConnects, "connections admitted but not yet welcomed; over it new upgrades get 503 overloaded with Retry-After")
	fs.Duration(&o.ShedLag, "shed-lag", def.ShedLag, "refuse new upgrades (503 overloaded) while the event loops, auth workers or NATS confirmations run this late")
	fs.Int(&o.MaxDevicesPerUser, "max-devices-per-user", 0, "connections per user on the node (0: no limit); see --device-policy")
	fs.String(&o.DevicePolicy, "device-policy", def.DevicePolicy, "over --max-devices-per-user: close-oldest or reject-newest (both close 4409)")
	fs.Float(&o.MaxClientMsgsPerSec, "max-client-msgs-per-sec", def.MaxClientMsgsPerSec, "messages per second per connection; over it an error frame, then 4429 (negative: no limit)")
	fs.Int(&o.MaxClientMsgsBurst, "max-client-msgs-burst", 0, "burst of the per-connection message rate")
	fs.ShowDefault("max-client-msgs-burst", "2 × --max-client-msgs-per-sec")
	fs.String(&o.TopicsClaim, "jwt-topics-claim", def.TopicsClaim, "JWT claim listing the topic patterns a connection may subscribe to (room.42, prices.*, team.7.>)")
	fs.String(&o.PublishClaim, "jwt-publish-claim", def.PublishClaim, "JWT claim listing the topic patterns a connection may publish to")
	fs.String(&o.ClientTopicPublish, "client-topic-publish", def.ClientTopicPublish, "a client's publish to a topic goes to services on <prefix>.in.topic.<topic> (service: the connection holds the topic or its publish claim allows it) or straight to the topic's subscribers (direct: the publish claim must allow it)")
	fs.List(&o.TopicPresence, "topic-presence", nil, `topic patterns whose members are announced, comma-separated ("room.*"): presence batches, GET /v1/topics/{topic}/presence on the router, join and leave events on <prefix>.presence.topic.<topic>`)
	fs.ShowDefault("topic-presence", "none")
	fs.Int(&o.MaxTopicsPerConnection, "max-topics-per-connection", def.MaxTopicsPerConnection, "topics one connection may hold; over it a too_many_topics error frame")
	fs.Int(&o.Pollers, "pollers", def.Pollers, "epoll event loops")
	fs.Int(&o.Dispatchers, "dispatchers", def.Dispatchers, "goroutines delivering NATS messages")
	fs.Int(&o.DispatchQueue, "dispatch-queue", def.DispatchQueue, "NATS messages queued per dispatcher before NATS drops (slow consumer)")
	fs.Int(&o.PublishQueue, "publish-queue", def.PublishQueue, "client publishes queued for NATS before \"overloaded\" errors")
	fs.Int(&o.LoopQueueBytes, "loop-queue-bytes", def.LoopQueueBytes, "broadcast bytes queued per event loop; over it a broadcast is dropped for that loop (counted)")
	fs.Bool(&o.Resume, "resume", false, "resumable delivery from a JetStream history stream: message ids are stream sequences, clients reconnect with \"since\" and miss nothing (needs JetStream)")
	o.History.RegisterFlags(fs)
	fs.Int(&o.MaxConcurrentReplays, "max-concurrent-replays", def.MaxConcurrentReplays, "with --resume: replays running at once (more wait their turn)")
	fs.Duration(&o.PresenceInterval, "presence-interval", def.PresenceInterval, "period of the node's presence heartbeat on NATS")
	fs.Duration(&o.PresenceBatchInterval, "presence-batch-interval", def.PresenceBatchInterval, "how long presence changes are coalesced before they are published")
	fs.Int(&gcPercent, "gc-percent", 25, "Go GC target (GOGC): the heap may grow this percentage over live data between collections; lower holds less memory per connection for some GC CPU; the GOGC environment variable, when set, wins")
	fs.String(&memLimit, "memory-limit", "", `Go soft memory limit (GOMEMLIMIT), e.g. "1800MiB"; set it below the container's memory limit ("": none)`)
	fs.String(&logFormat, "log-format", "json", "log format: json or console")
	fs.String(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	// In gateway.Options a zero is "unset, use the default": a 0 given
	// here is refused rather than silently replaced.
	fs.Positive("nats-connect-timeout", "nats-outage-grace", "auth-timeout", "auth-workers", "auth-queue",
		"heartbeat", "idle-timeout", "handshake-timeout", "drain-timeout", "close-timeout",
		"max-message-bytes", "max-pending-bytes", "max-header-bytes", "write-timeout",
		"max-pending-connects", "shed-lag", "pollers", "dispatchers", "dispatch-queue",
		"publish-queue", "loop-queue-bytes", "presence-interval", "presence-batch-interval", "max-concurrent-replays",
		"max-topics-per-connection")
	fs.NonZero("a negative value means no limit", "max-client-msgs-per-sec")
	// The variables of `gateway token` and `gateway drain`, which run
	// beside the node with its environment.
	fs.Known("sub", "ttl", "delay", "wait", "timeout")
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	log, err := logx.New(logFormat, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	if err := runtimeSettings(gcPercent, memLimit); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	o.Logger = log
	if o.NATSURL == "" {
		// Development: a NATS server in this process, which the node
		// reaches without a socket and the router and services on
		// --nats-embedded-listen.
		ns, err := natsembed.Start(natsembed.Options{Listen: natsListen, StoreDir: natsStore,
			Name: "wsfleet-gateway-nats", Logger: log.Named("nats")})
		if err != nil {
			flag := "nats-embedded-store-dir"
			if errors.Is(err, natsembed.ErrListen) {
				flag = "nats-embedded-listen"
			}
			fmt.Fprintf(os.Stderr, "gateway: invalid setting --%s: %v (set --nats-url to use an existing NATS server)\n", flag, err)
			return 2
		}
		defer ns.Close()
		log.Info("started embedded NATS server", zap.String("client_url", ns.ClientURL()))
		o.NATSURL = ns.ClientURL()
		o.NATSOptions = append(o.NATSOptions, nats.InProcessServer(ns.Server))
	}
	srv, err := gateway.New(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 1
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	got := <-sig
	log.Info("signal received; draining", zap.String("signal", got.String()))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sig // a second signal skips the drain
		log.Warn("second signal; closing now")
		cancel()
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown", zap.Error(err))
		return 1
	}
	return 0
}

// runtimeSettings applies --gc-percent (unless GOGC is set) and
// --memory-limit. A gateway's heap is mostly long-lived connection state
// and little garbage: with Go's default target of 100 the heap, and the
// memory the runtime keeps from the OS, settles near twice the live
// connections' size; 25 keeps it near 1.25 times (docs/benchmarks.md
// measures both, and the CPU it costs).
func runtimeSettings(gcPercent int, memLimit string) error {
	if gcPercent < 1 && gcPercent != -1 {
		return fmt.Errorf("invalid setting --gc-percent: %d (a positive percentage, or -1 to turn the GC off)", gcPercent)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if memLimit != "" {
		n, err := parseBytes(memLimit)
		if err != nil {
			return fmt.Errorf("invalid setting --memory-limit %q: %v", memLimit, err)
		}
		debug.SetMemoryLimit(n)
	}
	return nil
}

// parseBytes reads a size such as "512MiB", "2GiB", "1500000000".
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("want a positive number of bytes with an optional KiB, MiB, GiB or TiB")
			}
			if n > math.MaxInt64/u.mul {
				return 0, fmt.Errorf("more bytes than a 64-bit count holds")
			}
			return n * u.mul, nil
		}
	}
	return 0, fmt.Errorf("unreachable")
}

const drainUsage = `Usage: gateway drain [flags]

Drains the gateway node that serves --control-socket (the same flag and
WSFLEET_GATEWAY_CONTROL_SOCKET variable as the node's): its /readyz turns 503, it
stops accepting, and its clients are asked to reconnect elsewhere (a
reconnect notice, then 1012) over its --drain-timeout. The node keeps
running, with no connection, until it is stopped. The Helm chart's preStop
hook runs it in the gateway's container.`

func drainCmd(args []string) int {
	var socket string
	var delay, timeout time.Duration
	var wait bool
	fs := flagenv.NewFleet("gateway drain", "GATEWAY", drainUsage)
	fs.Lenient()
	fs.String(&socket, "control-socket", "", "the node's control socket (its --control-socket)")
	fs.Duration(&delay, "delay", 0, "wait this long before starting the drain (so load balancers stop sending new connections first)")
	fs.Bool(&wait, "wait", true, "return once the node holds no connection")
	fs.Duration(&timeout, "timeout", 0, "give up after this long, the delay included (0: no limit)")
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "gateway drain:", err)
		return 2
	}
	if socket == "" {
		fmt.Fprintln(os.Stderr, "gateway drain: --control-socket (or WSFLEET_GATEWAY_CONTROL_SOCKET) is required: the node's --control-socket")
		return 2
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "gateway drain: --timeout passed during --delay")
		return 1
	}
	url := "http://gateway/drain"
	if wait {
		url += "?wait"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway drain:", err)
		return 1
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gateway drain: %s: %v\n", socket, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		fmt.Fprintf(os.Stderr, "gateway drain: %s\n", resp.Status)
		return 1
	}
	return 0
}

func tokenCmd(args []string) int {
	var sub, topics, topicsClaim, topic string
	var ttl time.Duration
	// The gateway's own settings (and WSFLEET_* variables) for the secret,
	// iss and aud, so a token minted beside a node passes its checks.
	var jc jwtverify.Config
	fs := flagenv.NewFleet("gateway token", "GATEWAY", "Usage: gateway token --sub USER [flags]\n\nPrints an HS256 JWT for USER, for development and smoke tests.")
	fs.Lenient()
	fs.String(&sub, "sub", "", "user id (the sub claim); required")
	fs.Secret(&jc.HS256Secret, "jwt-hs256-secret", "HMAC secret the gateway verifies with")
	fs.Duration(&ttl, "ttl", 24*time.Hour, "lifetime (exp = now + ttl)")
	fs.String(&jc.Issuer, "jwt-issuer", "", "iss claim")
	fs.String(&jc.Audience, "jwt-audience", "", "aud claim")
	fs.String(&topics, "topics", "", `topic patterns the token may subscribe to, separated by spaces ("room.42 prices.* team.7.>"; "": no claim)`)
	fs.String(&topicsClaim, "jwt-topics-claim", "topics", "the claim --topics goes in (the gateway's --jwt-topics-claim)")
	fs.String(&topic, "topic", "", `make a subscription token for this topic (a "topic" claim), sent in a subscribe frame`)
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "gateway token:", err)
		return 2
	}
	switch {
	case sub == "":
		fmt.Fprintln(os.Stderr, "gateway token: --sub is required")
		return 2
	case len(jc.HS256Secret) < jwtverify.MinHS256SecretBytes:
		fmt.Fprintf(os.Stderr, "gateway token: --jwt-hs256-secret (or WSFLEET_GATEWAY_JWT_HS256_SECRET) of at least %d bytes is required\n", jwtverify.MinHS256SecretBytes)
		return 2
	}
	c := jwtmint.Claims{Subject: sub, TTL: ttl, Issuer: jc.Issuer}
	if ps := strings.Fields(topics); len(ps) > 0 {
		for _, p := range ps {
			if err := protocol.ValidateTopicPattern(p); err != nil {
				fmt.Fprintln(os.Stderr, "gateway token: --topics:", err)
				return 2
			}
		}
		c.Extra = map[string]any{topicsClaim: ps}
	}
	if topic != "" {
		if err := protocol.ValidateTopic(topic); err != nil {
			fmt.Fprintln(os.Stderr, "gateway token: --topic:", err)
			return 2
		}
		if c.Extra == nil {
			c.Extra = map[string]any{}
		}
		c.Extra["topic"] = topic
	}
	if jc.Audience != "" {
		c.Audience = []string{jc.Audience}
	}
	tok, err := jwtmint.Mint("HS256", []byte(jc.HS256Secret), c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway token:", err)
		return 1
	}
	fmt.Println(tok)
	return 0
}

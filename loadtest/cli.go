package loadtest

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

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

const usage = `Usage: loadtest SCENARIO [flags]

Load tests a wsfleet gateway fleet: opens N WebSocket connections (or,
with --transport sse, server-sent-event streams), mints their JWTs,
publishes to them through the router or NATS, and reports connect rate,
handshake and end-to-end latency percentiles, and exactly how many
messages were lost, duplicated or reordered.

Scenarios:
  connect     ramp to --conns at --connect-rate, hold for --duration
  deliver     with the connections up, publish --msg-rate messages/s to random
              users for --duration; every device checks its sequence numbers
  broadcast   publish --broadcasts messages to everyone; time until the last
              connection has each
  storm       drop --drop-share of the connections at once (TCP reset) after
              --drop-after, reconnect with jittered exponential back-off;
              time to full recovery, messages missed meanwhile
  churn       close --churn-rate connections/s (each back after --churn-down)
              while delivering
  live        every connection subscribes to --topic; publish --msg-rate
              messages/s to it for --duration; every subscriber checks it
              got each exactly once and in order; fan-out time per message
  rooms       connections in rooms of --room-size, each room a topic; members
              publish --msg-rate messages/s in all to their rooms (their own
              frames, or --room-publish router|nats on their behalf); every
              member checks it got each of its room's messages once, in order

--resume (any scenario but live and rooms, which do not resume topics
yet) tests a fleet running with resumable delivery: devices reconnect
with "since" and must get every message published while they were away,
with no gap and no duplicate.

--transport sse connects with GET /sse on each --url's host:port instead
(the token in Authorization, topics= for live and rooms, Last-Event-ID
for --resume) and measures the same; an event stream is push only, so
rooms --room-publish client and --token-refresh are refused with it.

Run "loadtest SCENARIO --help" for the flags. Full guide: docs/loadtest.md.

The report ends with the verdict: one "FAILED:" line per reason the run
failed. Exit status:
  0    passed
  1    the run could not be made (the router or NATS unreachable, the
       machine's limits), or it failed: connections never welcomed (the
       ramp did not reach --conns), publishes or kicks that failed, a
       storm's dropped connections not all back, connections the gateway
       closed still down at the end, worker problems, --resume against a
       gateway without it, connections never subscribed to their topic,
       rooms --room-publish client against gateways that do not publish
       client frames to the topic (no --client-topic-publish direct)
  2    a bad invocation, refused before anything starts: a flag (named),
       no signing key, a --jwt-private-key it cannot use, a --json or --html
       file it cannot write, or an --api-key the router refuses (one
       request to the router, before the ramp)
  3    messages were lost, duplicated, out of order, or missed because the
       gateway closed their connections, --resume reconnects were not
       recovered, or the counts do not add up
  130  interrupted (Ctrl-C): the report is partial
`

// Main is the loadtest command: Main(os.Args[1:]).
func Main(args []string) int {
	if IsWorker() {
		return RunWorker()
	}
	return mainWith(args, nil, os.Stdout, os.Stderr, true)
}

// mainWith is Main with the environment (nil: the process's), the output
// and the signal handling given.
func mainWith(args []string, environ func(string) (string, bool), stdout, stderr io.Writer, signals bool) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return ExitBadFlags
		}
		return ExitOK
	}
	cfg, err := ParseArgs(args[0], args[1:], environ)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintln(stderr, "loadtest:", err)
		return ExitBadFlags
	}
	cfg.Stdout, cfg.Stderr = stdout, stderr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if signals {
		sig := make(chan os.Signal, 2)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sig)
		go func() {
			<-sig
			fmt.Fprintln(stderr, "\nloadtest: stopping (Ctrl-C again to quit at once)")
			cancel()
			<-sig
			os.Exit(ExitInterrupted) // workers die with us (Pdeathsig)
		}()
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		var ue *UsageError
		if errors.As(err, &ue) {
			return ExitBadFlags
		}
		return ExitFailed
	}
	return ExitStatus(res)
}

// ParseArgs reads a scenario's flags (and LOADTEST_* environment variables).
func ParseArgs(scenario string, args []string, environ func(string) (string, bool)) (Config, error) {
	c := Config{Scenario: scenario}
	switch scenario {
	case ScenarioConnect, ScenarioDeliver, ScenarioBroadcast, ScenarioStorm, ScenarioChurn, ScenarioLive, ScenarioRooms:
	default:
		return c, fmt.Errorf("unknown scenario %q (connect, deliver, broadcast, storm, churn, live, rooms; see --help)", scenario)
	}
	fs := flagenv.New("loadtest "+scenario, "LOADTEST_", fmt.Sprintf("Usage: loadtest %s [flags]\n\nSee loadtest --help for the scenarios and docs/loadtest.md for the guide.", scenario))
	fs.List(&c.URLs, "url", []string{"ws://127.0.0.1:8080/ws"}, "gateway WebSocket URL (with --transport sse: its /sse on the same host:port is requested, or give http://host:port/sse); repeat (or comma-separate) to spread connections over several gateways")
	fs.String(&c.Transport, "transport", TransportWS, `how devices connect: ws (WebSocket: upgrade, auth frame) or sse (server-sent events: GET /sse with "Authorization: Bearer", topics= for live and rooms, Last-Event-ID for --resume; push only: not with rooms --room-publish client or --token-refresh)`)
	fs.Int(&c.Conns, "conns", 1000, "connections to open (N)")
	fs.Float(&c.ConnectRate, "connect-rate", 1000, "new connections per second during the ramp")
	backoff := true
	fs.Bool(&backoff, "ramp-backoff", true, "slow the ramp when the fleet is behind: bound its attempts in flight, cut its rate to 70% each second a tenth or more of its attempts are refused (503, close 1013) or time out, and wait out Retry-After when most are; false: --connect-rate whatever the fleet answers (open loop)")
	fs.Duration(&c.Duration, "duration", 30*time.Second, "the measured phase after the ramp: hold (connect), publishing (deliver, storm, churn, live, rooms)")
	fs.Int(&c.MaxConns, "max-conns", 100000, "hard cap: --conns above it is refused")
	fs.Int(&c.Devices, "devices-per-user", 1, "connections per user: users are <user-prefix>0, 1, …; every device of a user must receive each of its messages")
	fs.String(&c.UserPrefix, "user-prefix", "lt-", "user ids (JWT sub) are this followed by a number")
	fs.Secret(&c.Auth.HS256Secret, "jwt-hs256-secret", "HMAC secret the gateways verify tokens with (the gateway's --jwt-hs256-secret, WSFLEET_GATEWAY_JWT_HS256_SECRET)")
	fs.String(&c.PrivateKeyFile, "jwt-private-key", "", "PEM private key file (RSA, EC or Ed25519) to sign tokens with instead of an HMAC secret")
	fs.String(&c.Auth.Alg, "jwt-alg", "", "signing algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA); default HS256 or from the key type")
	fs.String(&c.Auth.Kid, "jwt-kid", "", "key id put in the token header (for a gateway with a JWKS)")
	fs.String(&c.Auth.Issuer, "jwt-issuer", "", "iss claim")
	fs.String(&c.Auth.Audience, "jwt-audience", "", "aud claim")
	fs.Duration(&c.Auth.TTL, "token-ttl", time.Hour, "token lifetime (exp = now + ttl); short ones exercise expiry (close 4401) and reconnects")
	fs.Bool(&c.Auth.Refresh, "token-refresh", false, "send a fresh auth frame when a fifth of the token's lifetime is left instead of letting it expire (not with --transport sse)")
	fs.String(&c.Workers, "workers", "auto", `worker processes: "auto" (enough for --conns-per-worker each; none below it) or a number`)
	fs.Int(&c.ConnsPerWorker, "conns-per-worker", DefaultConnsPerWorker, "most connections per process (capped by the open-file limit)")
	fs.String(&c.SourceIPs, "source-ips", "", "source addresses to spread connections over, past the ephemeral ports of one: 127.0.0.2-127.0.0.60 or a comma list")
	fs.Int(&c.Pollers, "pollers", 0, "epoll loops per process (default GOMAXPROCS)")
	fs.Duration(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "TCP connect + upgrade + welcome must finish within it, else the attempt fails and is retried")
	fs.Duration(&c.RampTimeout, "ramp-timeout", 0, "longest wait for every connection's welcome (0: 1.5 × conns/connect-rate + connect-timeout + 5s)")
	fs.Duration(&c.BackoffMin, "backoff-min", 250*time.Millisecond, "first reconnect delay bound (doubles per failed attempt; half fixed, half random)")
	fs.Duration(&c.BackoffMax, "backoff-max", 10*time.Second, "largest reconnect delay bound")
	fs.Duration(&c.CloseTimeout, "close-timeout", 2*time.Second, "wait for the gateway's close echo before closing the socket")
	fs.String(&c.JSONFile, "json", "", "write the whole result as JSON to this file")
	fs.String(&c.HTMLFile, "html", "", "write a self-contained HTML page with the report and charts to this file")
	fs.List(&c.MetricsURLs, "metrics-url", nil, "a gateway admin /metrics URL to scrape at start, peak, before close and end (repeatable)")
	fs.String(&c.Progress, "progress", "auto", "auto (bars on a terminal, lines otherwise), bars, lines or off")
	fs.Duration(&c.ProgressInterval, "progress-interval", time.Second, "how often progress lines are printed")
	var seed int
	fs.Int(&seed, "seed", 0, "random seed (0: random)")
	fs.Bool(&c.Resume, "resume", false, `(not live, rooms: topics are live-only) the fleet runs with --resume: each device remembers the last message id it received and reconnects with "since" (whatever closed it: churn, a drop, a kick, a drain's reconnect notice, a token expiry); messages published while it was away are owed to it, and any lost or received twice fails the run, as does a recovered:false (history too small); with --via nats, publishes go through JetStream to learn each message's id`)
	if scenario != ScenarioConnect && scenario != ScenarioRooms {
		fs.String(&c.Publish.Via, "via", "router", "publish through the router's HTTP API (router) or directly on NATS (nats)")
	}
	if scenario != ScenarioConnect {
		fs.String(&c.Publish.RouterURL, "router-url", "http://127.0.0.1:8090", "router base URL")
		fs.Secret(&c.Publish.APIKey, "api-key", "router API key (one of the router's --api-key, WSFLEET_ROUTER_API_KEY); checked with one request before the ramp")
		fs.String(&c.Publish.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server for --via nats")
		fs.String(&c.Publish.SubjectPrefix, "subject-prefix", "wsfleet", "the fleet's subject prefix (--via nats)")
		fs.Int(&c.Publish.MsgBytes, "msg-bytes", 128, "size of each message's data JSON (padded)")
		fs.Int(&c.Publish.Concurrency, "publish-concurrency", 32, "router requests in flight per process")
		fs.Duration(&c.Publish.Timeout, "publish-timeout", 10*time.Second, "router request or NATS flush timeout")
		fs.Duration(&c.Drain, "drain", 10*time.Second, "after the last publish, wait at most this long for deliveries")
		fs.Duration(&c.DrainQuiet, "drain-quiet", 2*time.Second, "end the drain early after this long without a delivery")
	}
	switch scenario {
	case ScenarioDeliver, ScenarioStorm, ScenarioChurn:
		def := 100.0
		fs.Float(&c.MsgRate, "msg-rate", def, "messages per second to random users (storm, churn: 0 for none)")
	case ScenarioLive:
		fs.Float(&c.MsgRate, "msg-rate", 100, "messages per second to the topic")
		fs.String(&c.Topic, "topic", "live.prices", "the topic every connection subscribes to (the tokens' topics claim allows it)")
	case ScenarioRooms:
		fs.Float(&c.MsgRate, "msg-rate", 100, "messages per second, all rooms together, each from a random member to its room")
		fs.Int(&c.RoomSize, "room-size", 10, "members per room (2-1000, a multiple of --devices-per-user): room k is the topic <room-prefix>.<run id>.<k>")
		fs.String(&c.RoomPrefix, "room-prefix", "room", "the rooms' topics are <room-prefix>.<run id>.<k>")
		fs.String(&c.RoomPublish, "room-publish", RoomPublishClient, "who publishes a member's message: client (the member's own publish frame; the gateways must run --client-topic-publish direct; not with --transport sse), router (POST /v1/topics/{topic}/messages) or nats (on <prefix>.topic.<topic>)")
	}
	if scenario == ScenarioLive || scenario == ScenarioRooms {
		fs.String(&c.Auth.TopicsClaim, "jwt-topics-claim", "topics", "the claim the tokens list their topic in (the gateways' --jwt-topics-claim)")
		fs.String(&c.Auth.PublishClaim, "jwt-publish-claim", "publish", "rooms --room-publish client: the claim the tokens list their room in for publishing (the gateways' --jwt-publish-claim)")
	}
	if scenario == ScenarioDeliver {
		fs.Int(&c.KickUsers, "kick-users", 0, "close the connections of the first N users through the router (DELETE /v1/users/{user}/connections, close 4403) --kick-after into the deliver phase; they reconnect after their back-off")
		fs.Duration(&c.KickAfter, "kick-after", time.Second, "when, after the ramp, --kick-users are kicked (within --duration)")
	}
	switch scenario {
	case ScenarioBroadcast:
		fs.Int(&c.Broadcasts, "broadcasts", 1, "broadcasts to publish")
		fs.Duration(&c.BroadcastInterval, "broadcast-interval", time.Second, "time between broadcasts")
	case ScenarioStorm:
		fs.Float(&c.DropShare, "drop-share", 0.5, "share of the open connections dropped at once (0-1]")
		fs.Duration(&c.DropAfter, "drop-after", 5*time.Second, "when, after the ramp, the drop happens (within --duration)")
	case ScenarioChurn:
		fs.Float(&c.ChurnRate, "churn-rate", 10, "connections closed per second (close 1000)")
		fs.Duration(&c.ChurnDown, "churn-down", time.Second, "how long a closed connection stays away (±50%)")
	}
	// A zero would be taken for "the default" (SetDefaults): refuse it.
	fs.Positive("conns", "connect-rate", "duration", "max-conns", "devices-per-user", "token-ttl", "conns-per-worker",
		"connect-timeout", "backoff-min", "backoff-max", "close-timeout", "progress-interval")
	if scenario != ScenarioConnect {
		fs.Positive("publish-concurrency", "publish-timeout", "drain", "drain-quiet", "msg-bytes")
	}
	switch scenario {
	case ScenarioBroadcast:
		fs.Positive("broadcasts", "broadcast-interval")
	case ScenarioStorm:
		fs.Positive("drop-share", "drop-after")
	case ScenarioChurn:
		fs.Positive("churn-rate", "churn-down")
	case ScenarioLive:
		fs.Positive("msg-rate")
	case ScenarioRooms:
		fs.Positive("msg-rate", "room-size")
	}
	if err := fs.Parse(args, environ); err != nil {
		return c, err
	}
	c.Seed = uint64(seed)
	c.OpenLoopRamp = !backoff
	// an empty string would be taken for the default (SetDefaults): refuse it
	for _, f := range []struct {
		name string
		v    *string
		on   bool
	}{
		{"--transport", &c.Transport, true},
		{"--topic", &c.Topic, scenario == ScenarioLive},
		{"--room-prefix", &c.RoomPrefix, scenario == ScenarioRooms},
		{"--room-publish", &c.RoomPublish, scenario == ScenarioRooms},
		{"--jwt-topics-claim", &c.Auth.TopicsClaim, scenario == ScenarioLive || scenario == ScenarioRooms},
		{"--jwt-publish-claim", &c.Auth.PublishClaim, scenario == ScenarioLive || scenario == ScenarioRooms},
	} {
		if f.on && *f.v == "" {
			return c, fmt.Errorf("%s must not be empty", f.name)
		}
	}
	return c, nil
}

package gateway

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsurl"
	"github.com/wsfleet/wsfleet/protocol"
)

// Options configures a gateway node. Every field documents its default; the
// defaults are applied by [Options.SetDefaults] in one place and checked by
// [Options.Validate], whose errors name the command-line flag.
type Options struct {
	// Listen is the WebSocket address, host:port. Default ":8080".
	Listen string
	// ReusePort sets SO_REUSEPORT so several gateway processes share Listen.
	// Default false.
	ReusePort bool
	// AdminListen serves /healthz, /readyz and /metrics (and /debug/pprof/
	// with AdminPprof). Default "127.0.0.1:8081", loopback only: a
	// deployment that scrapes metrics from elsewhere sets it (the Helm chart
	// sets ":8081"); "off" disables it.
	AdminListen string
	// AdminPprof serves Go's profiler at /debug/pprof/ on AdminListen. It
	// is unauthenticated: keep AdminListen private when it is on. Default
	// false.
	AdminPprof bool
	// ControlSocket is a Unix socket path for actions on the node
	// (`gateway drain`). The node creates the socket's directory with mode
	// 0700 if it is missing and refuses a directory that other users can
	// open, so only the node's own user reaches the socket. Default ""
	// (none).
	ControlSocket string
	// NodeID names this node in welcome frames, headers and logs.
	// Default "<hostname>-<pid>".
	NodeID string
	// SubjectPrefix starts every NATS subject. Default "wsfleet".
	SubjectPrefix string

	// NATSURL is the NATS server(s) to connect to, comma-separated.
	// Required: the node does not start NATS servers (cmd/gateway starts an
	// embedded one for development when --nats-url is not set).
	NATSURL string
	// NATSOptions are extra options for the node's NATS connection, after
	// the node's own (nats.InProcessServer for an embedded server, TLS or
	// credentials, say). Default none.
	NATSOptions []nats.Option
	// NATSOutageGrace is how long the node keeps its clients while it is
	// disconnected from NATS (nothing reaches them meanwhile). Past it,
	// every client gets the drain's reconnect notice, so it moves to a node
	// that can deliver, and those still here a grace later are closed with
	// 1013; /readyz is 503 from the start of the outage. Default 10s.
	NATSOutageGrace time.Duration
	// NATSConnectTimeout bounds the first NATS connection at start.
	// Default 10s.
	NATSConnectTimeout time.Duration

	// JWT is how tokens are verified: the key sources (at least one is
	// required), the algorithm allowlist and the claims checked, the
	// --jwt-* flags; SetDefaults applies the defaults its fields document.
	// A refused token closes the connection with 4401; the connection of a
	// token accepted without exp (JWT.AllowNoExp) never expires.
	JWT jwtverify.Config
	// AllowQueryToken accepts a token in the ?token= query parameter of the
	// upgrade request or of a stream request (GET /sse from EventSource,
	// which sends no headers). URLs end up in logs: prefer the auth frame or
	// an Authorization header. Default false.
	AllowQueryToken bool
	// AuthTimeout is how long a client has, from the upgrade, to be
	// authenticated; then it is closed with 4408. Default 5s.
	AuthTimeout time.Duration
	// AuthWorkers verify JWT signatures off the event loops. Default GOMAXPROCS.
	AuthWorkers int
	// AuthQueue bounds tokens waiting for a worker; over it a client is closed
	// with 1013. Default 8192.
	AuthQueue int

	// Heartbeat is the interval of server pings. Default 30s.
	Heartbeat time.Duration
	// IdleTimeout closes (4504) a client from which nothing arrived for this
	// long. Default 90s.
	IdleTimeout time.Duration
	// HandshakeTimeout closes a socket that has not completed its HTTP
	// upgrade request in this time. Default 5s.
	HandshakeTimeout time.Duration
	// DrainTimeout is how long a SIGTERM drain spreads connection closes
	// (1012) over. Default 30s.
	DrainTimeout time.Duration
	// CloseTimeout is how long a closing connection waits for the client's
	// close frame before the socket is closed. Default 2s.
	CloseTimeout time.Duration

	// MaxMessageBytes bounds a client frame and a reassembled message;
	// over it the client is closed with 1009. Default 65536.
	MaxMessageBytes int
	// MaxPendingBytes bounds a connection's outbound queue; over it the
	// client is closed with 4500 (slow consumer). Default 1048576.
	MaxPendingBytes int
	// MaxHeaderBytes bounds the HTTP upgrade request; over it the reply is
	// 431. Default 8192.
	MaxHeaderBytes int
	// WriteTimeout closes (4500) a client whose queued frames made no
	// progress for this long: it stopped reading. Default 10s.
	WriteTimeout time.Duration

	// AllowedOrigins lists the browser origins that may connect
	// ("https://app.example.com", "https://*.example.com", "*"); a request
	// whose Origin is not on it gets 403 (cross-site WebSocket hijacking).
	// Requests without an Origin (non-browser clients) are not checked.
	// Default: empty, every origin; authentication is by token, never by
	// cookie, so a foreign page cannot act for a user without the token.
	AllowedOrigins []string
	// MaxConnections bounds the node's sockets; an upgrade over it gets 503
	// with Retry-After. Default 0: the open-file limit (RLIMIT_NOFILE) less
	// 256 for NATS, the admin endpoint and the process itself.
	MaxConnections int
	// MaxConnectRate bounds new WebSocket upgrades per second on the node
	// (a token bucket holding one second's worth), flattening reconnect
	// storms; over it the upgrade gets 503 with Retry-After. Default 0: no limit.
	MaxConnectRate float64
	// MaxPendingConnects bounds the connections admitted but not yet
	// welcomed (upgraded, waiting for their token's check or for the
	// confirmation of their subscription). Over it a new upgrade request is
	// refused at once with 503 {"code":"overloaded"} and Retry-After,
	// before any work is spent on it, so the connections already admitted
	// keep their guarantees. Default 1024.
	MaxPendingConnects int
	// ShedLag is how far behind the node may run before it refuses new
	// connections the same way: when its event loops run this late (the
	// process is starved of CPU), when a token has waited this long for an
	// auth worker, or when a subscription has waited this long for NATS to
	// confirm it. Refusals are counted by reason in
	// wsfleet_gateway_connections_shed_total. Default 1s.
	ShedLag time.Duration
	// MaxDevicesPerUser bounds one user's connections on this node; see
	// DevicePolicy. Default 0: no limit.
	MaxDevicesPerUser int
	// DevicePolicy says what happens when a user goes over MaxDevicesPerUser:
	// "close-oldest" closes the user's oldest connection with 4409,
	// "reject-newest" closes the new one with 4409. Default "close-oldest".
	DevicePolicy string
	// MaxClientMsgsPerSec is each connection's inbound rate (messages and
	// pings) as a token bucket; a message over it is dropped with a
	// "rate_limited" error frame, and a client that goes on past a second
	// burst is closed with 4429. Default 100; negative: no limit.
	MaxClientMsgsPerSec float64
	// MaxClientMsgsBurst is the bucket's size. Default 2×MaxClientMsgsPerSec.
	MaxClientMsgsBurst int

	// TopicsClaim is the JWT claim listing the topic patterns a
	// connection may subscribe to (an array of strings, or one string of
	// patterns separated by spaces; '*' matches one segment, a last '>' the
	// rest). A topic no pattern allows needs a subscription token in the
	// subscribe frame. Default "topics".
	TopicsClaim string
	// PublishClaim is the JWT claim listing the topic patterns a
	// connection may publish to (as TopicsClaim). Default "publish".
	PublishClaim string
	// ClientTopicPublish says where a client's publish frame to a topic
	// goes: "service" to <prefix>.in.topic.<topic>, for a service to act
	// on (the connection must hold the topic, or its publish claim allow
	// it); "direct" to the topic itself, delivered to its subscribers
	// without a service in the path (the publish claim must allow it).
	// Default "service".
	ClientTopicPublish string
	// TopicPresence lists the topic patterns whose members are announced:
	// for a topic matching one, the node counts each user's devices in it
	// and publishes the changes with its presence batches (the router's
	// GET /v1/topics/{topic}/presence) and as join and leave events on
	// <prefix>.presence.topic.<topic>. A map entry per (topic, user) on
	// the node: meant for rooms, not for a feed of a million watchers.
	// Default: none.
	TopicPresence []string
	// MaxTopicsPerConnection bounds the topics one connection holds
	// (subscribed, or waiting for NATS to confirm); a subscribe over it is
	// refused with a "too_many_topics" error frame. Default 100.
	MaxTopicsPerConnection int

	// Pollers is the number of epoll event loops. Default GOMAXPROCS.
	Pollers int
	// Dispatchers is the number of goroutines delivering NATS messages to
	// users. Default GOMAXPROCS.
	Dispatchers int
	// DispatchQueue is each dispatcher's queue of NATS messages; when it is
	// full NATS reports a slow consumer and drops. Default 65536.
	DispatchQueue int
	// PublishQueue bounds client publishes waiting for NATS; over it the
	// client gets an "overloaded" error. Default 8192.
	PublishQueue int
	// LoopQueueBytes bounds the broadcast frames waiting for one event
	// loop. Over it, a broadcast is dropped for that loop's connections and
	// counted (wsfleet_gateway_dropped_total{reason="loop_queue_full"}), so
	// a broadcast rate beyond what the node can write never grows memory or
	// starves reads, flushes and timers. Default 4194304 (4 MiB).
	LoopQueueBytes int

	// PresenceInterval is the period of the node's presence heartbeat;
	// listeners drop a node silent for a few of them. Default 5s.
	PresenceInterval time.Duration
	// PresenceBatchInterval is how long presence changes are coalesced
	// before they are published. Default 100ms.
	PresenceBatchInterval time.Duration

	// Resume turns on resumable delivery: every message is delivered from
	// the JetStream history stream (package internal/history), with its
	// stream sequence as its id; a client reconnecting with "since" gets
	// what it missed, in order, with no gap and no duplicate, and the node
	// fills any gap of its live feed (a NATS outage, a dropped message)
	// from the stream. Start fails when NATS has no JetStream or the stream
	// exists with another configuration. Default false.
	Resume bool
	// History is the history stream's configuration (--history-*); the
	// subject prefix is SubjectPrefix. Defaults: see history.Config.
	History history.Config
	// MaxConcurrentReplays bounds the replays (a "since", a gap to fill)
	// running at once; more wait their turn, each in a few dozen bytes, so
	// a reconnect storm never holds more than this many replays' batches.
	// Default 64.
	MaxConcurrentReplays int

	// Logger receives the node's logs. Default: zap production JSON logger.
	Logger *zap.Logger
	// Clock is the node's clock: ticks, timeouts and token expiry follow
	// it. Default: the system clock. Tests move a fake one.
	Clock Clock

	// directGetSubject replaces the subject of the replays' batched direct
	// gets, for tests that stand a lagging replica in front of the stream.
	directGetSubject string
}

// Clock tells the time. The system clock's Now carries a monotonic
// reading, so durations between its times ignore wall-clock steps.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SetDefaults fills every unset field with its default.
func (o *Options) SetDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.Listen, ":8080")
	def(&o.AdminListen, "127.0.0.1:8081")
	if o.NodeID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "gateway"
		}
		o.NodeID = host + "-" + strconv.Itoa(os.Getpid())
	}
	def(&o.SubjectPrefix, protocol.DefaultSubjectPrefix)
	defDur(&o.NATSConnectTimeout, 10*time.Second)
	o.JWT.SetDefaults()
	defDur(&o.AuthTimeout, 5*time.Second)
	defInt(&o.AuthWorkers, runtime.GOMAXPROCS(0))
	defInt(&o.AuthQueue, 8192)
	defDur(&o.Heartbeat, 30*time.Second)
	defDur(&o.IdleTimeout, 90*time.Second)
	defDur(&o.HandshakeTimeout, 5*time.Second)
	defDur(&o.DrainTimeout, 30*time.Second)
	defDur(&o.CloseTimeout, 2*time.Second)
	defInt(&o.MaxMessageBytes, 64<<10)
	defInt(&o.MaxPendingBytes, 1<<20)
	defInt(&o.MaxHeaderBytes, 8<<10)
	defDur(&o.WriteTimeout, 10*time.Second)
	defDur(&o.PresenceInterval, 5*time.Second)
	defDur(&o.PresenceBatchInterval, 100*time.Millisecond)
	defInt(&o.MaxPendingConnects, 1024)
	defDur(&o.ShedLag, time.Second)
	if o.MaxConnections == 0 {
		o.MaxConnections = defaultMaxConnections()
	}
	def(&o.DevicePolicy, "close-oldest")
	def(&o.TopicsClaim, "topics")
	def(&o.PublishClaim, "publish")
	def(&o.ClientTopicPublish, "service")
	defInt(&o.MaxTopicsPerConnection, 100)
	if o.MaxClientMsgsPerSec == 0 {
		o.MaxClientMsgsPerSec = 100
	}
	if o.MaxClientMsgsBurst == 0 && o.MaxClientMsgsPerSec > 0 {
		o.MaxClientMsgsBurst = int(2 * o.MaxClientMsgsPerSec)
	}
	defInt(&o.Pollers, runtime.GOMAXPROCS(0))
	defInt(&o.Dispatchers, runtime.GOMAXPROCS(0))
	defInt(&o.DispatchQueue, 65536)
	defInt(&o.PublishQueue, 8192)
	defInt(&o.LoopQueueBytes, 4<<20)
	defDur(&o.NATSOutageGrace, 10*time.Second)
	o.History.Prefix = o.SubjectPrefix
	o.History.SetDefaults()
	defInt(&o.MaxConcurrentReplays, 64)
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
}

func badOption(flag string, format string, args ...any) error {
	return fmt.Errorf("%w --%s: %s", ErrBadOption, flag, fmt.Sprintf(format, args...))
}

// Validate checks the options after SetDefaults. The error names the flag.
func (o *Options) Validate() error {
	if err := checkHostPort("listen", o.Listen); err != nil {
		return err
	}
	if o.AdminListen != "off" {
		if err := checkHostPort("admin-listen", o.AdminListen); err != nil {
			return err
		}
	}
	if len(o.ControlSocket) > 107 {
		return badOption("control-socket", "path %q is longer than a Unix socket path may be (107 bytes)", o.ControlSocket)
	}
	if err := checkNATSURL(o.NATSURL); err != nil {
		return err
	}
	if strings.ContainsAny(o.NodeID, " \t\r\n") || len(o.NodeID) > 128 {
		return badOption("node-id", "%q must be at most 128 bytes without spaces", o.NodeID)
	}
	if err := protocol.ValidatePrefix(o.SubjectPrefix); err != nil {
		return badOption("subject-prefix", "%q: %v", o.SubjectPrefix, err)
	}
	if !o.JWT.Configured() {
		return fmt.Errorf("%w: %w", ErrBadOption, ErrNoKeys)
	}
	if err := o.JWT.Validate(); err != nil {
		return fmt.Errorf("%w %w", ErrBadOption, err)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"nats-connect-timeout", o.NATSConnectTimeout},
		{"auth-timeout", o.AuthTimeout}, {"heartbeat", o.Heartbeat}, {"idle-timeout", o.IdleTimeout},
		{"handshake-timeout", o.HandshakeTimeout}, {"drain-timeout", o.DrainTimeout},
		{"close-timeout", o.CloseTimeout}, {"write-timeout", o.WriteTimeout},
		{"presence-interval", o.PresenceInterval}, {"presence-batch-interval", o.PresenceBatchInterval},
		{"nats-outage-grace", o.NATSOutageGrace}, {"shed-lag", o.ShedLag},
	} {
		if d.v <= 0 {
			return badOption(d.flag, "must be positive, got %s", d.v)
		}
		if d.v < time.Millisecond {
			return badOption(d.flag, "must be at least 1ms, got %s", d.v)
		}
	}
	if o.IdleTimeout <= o.Heartbeat {
		return badOption("idle-timeout", "(%s) must be longer than --heartbeat (%s) so a client can answer a ping", o.IdleTimeout, o.Heartbeat)
	}
	for _, n := range []struct {
		flag    string
		v, min_ int
	}{
		{"auth-workers", o.AuthWorkers, 1}, {"auth-queue", o.AuthQueue, 1},
		{"max-message-bytes", o.MaxMessageBytes, 125}, {"max-pending-bytes", o.MaxPendingBytes, 4096},
		{"max-header-bytes", o.MaxHeaderBytes, 1024}, {"pollers", o.Pollers, 1},
		{"dispatchers", o.Dispatchers, 1}, {"dispatch-queue", o.DispatchQueue, 16},
		{"publish-queue", o.PublishQueue, 1}, {"loop-queue-bytes", o.LoopQueueBytes, 64 << 10},
		{"max-pending-connects", o.MaxPendingConnects, 1},
	} {
		if n.v < n.min_ {
			return badOption(n.flag, "must be at least %d, got %d", n.min_, n.v)
		}
	}
	if o.MaxMessageBytes > 64<<20 {
		return badOption("max-message-bytes", "must be at most 64 MiB, got %d", o.MaxMessageBytes)
	}
	if o.MaxHeaderBytes > 1<<20 {
		return badOption("max-header-bytes", "must be at most 1 MiB, got %d", o.MaxHeaderBytes)
	}
	for _, origin := range o.AllowedOrigins {
		if _, err := parseOriginPattern(origin); err != nil {
			return badOption("allowed-origins", "%q: %v", origin, err)
		}
	}
	if o.MaxConnections < 1 {
		return badOption("max-connections", "must be at least 1, got %d", o.MaxConnections)
	}
	if o.MaxConnectRate < 0 {
		return badOption("max-connect-rate", "must not be negative, got %g", o.MaxConnectRate)
	}
	if o.MaxDevicesPerUser < 0 {
		return badOption("max-devices-per-user", "must not be negative, got %d", o.MaxDevicesPerUser)
	}
	if o.MaxTopicsPerConnection < 1 || o.MaxTopicsPerConnection > maxTopicsPerConnection {
		return badOption("max-topics-per-connection", "must be 1 to %d, got %d", maxTopicsPerConnection, o.MaxTopicsPerConnection)
	}
	if err := checkClaimName(o.TopicsClaim); err != nil {
		return badOption("jwt-topics-claim", "%v", err)
	}
	if err := checkClaimName(o.PublishClaim); err != nil {
		return badOption("jwt-publish-claim", "%v", err)
	}
	if o.PublishClaim == o.TopicsClaim {
		return badOption("jwt-publish-claim", "%q is --jwt-topics-claim too: they must differ", o.PublishClaim)
	}
	for _, p := range o.TopicPresence {
		if err := protocol.ValidateTopicPattern(p); err != nil {
			return badOption("topic-presence", "%v", err)
		}
	}
	if o.ClientTopicPublish != "service" && o.ClientTopicPublish != "direct" {
		return badOption("client-topic-publish", "%q must be service or direct", o.ClientTopicPublish)
	}
	if o.DevicePolicy != "close-oldest" && o.DevicePolicy != "reject-newest" {
		return badOption("device-policy", "%q must be close-oldest or reject-newest", o.DevicePolicy)
	}
	if o.MaxClientMsgsPerSec > 0 && o.MaxClientMsgsBurst < 1 {
		return badOption("max-client-msgs-burst", "must be at least 1, got %d", o.MaxClientMsgsBurst)
	}
	if o.Resume {
		if err := o.History.Validate(); err != nil {
			return fmt.Errorf("%w %w", ErrBadOption, err)
		}
		if o.MaxConcurrentReplays < 1 {
			return badOption("max-concurrent-replays", "must be at least 1, got %d", o.MaxConcurrentReplays)
		}
	}
	if o.Pollers > 1024 || o.Dispatchers > 1024 || o.AuthWorkers > 1024 {
		return fmt.Errorf("%w: --pollers, --dispatchers and --auth-workers must be at most 1024", ErrBadOption)
	}
	return nil
}

// checkNATSURL checks --nats-url (natsurl.Check).
func checkNATSURL(urls string) error {
	if err := natsurl.Check(urls); err != nil {
		return badOption("nats-url", "%v", err)
	}
	return nil
}

func checkHostPort(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return badOption(flag, "%q is not host:port: %v", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < -1 || p > 65535 {
		return badOption(flag, "%q has a bad port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return badOption(flag, "%q: host must be an IP address or localhost", addr)
	}
	return nil
}

// defaultMaxConnections is the open-file limit less a reserve for
// everything else the process opens.
func defaultMaxConnections() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<31 {
		return 1 << 20
	}
	return max(int(lim.Cur)-256, 1)
}

// maxTopicsPerConnection is the highest MaxTopicsPerConnection accepted.
const maxTopicsPerConnection = 10000

// checkClaimName refuses a claim name the topics claim cannot be: a
// registered claim (RFC 7519 §4.1), the scope claims, the subscription
// token's "topic", or a name that is not plain.
func checkClaimName(name string) error {
	switch name {
	case "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", topicClaim:
		return fmt.Errorf("%q is a claim with another meaning", name)
	}
	if len(name) > 64 {
		return fmt.Errorf("%q is longer than 64 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':' || c == '/') {
			return fmt.Errorf("%q: byte %q is not one of A-Z a-z 0-9 _ - . : /", name, c)
		}
	}
	return nil
}

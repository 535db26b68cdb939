package loadtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wsfleet/wsfleet/protocol"
)

// Scenarios.
const (
	ScenarioConnect   = "connect"
	ScenarioDeliver   = "deliver"
	ScenarioBroadcast = "broadcast"
	ScenarioStorm     = "storm"
	ScenarioChurn     = "churn"
	ScenarioLive      = "live"  // every connection subscribes to one topic; the run publishes to it (topics.go)
	ScenarioRooms     = "rooms" // connections in rooms of --room-size, each a topic; members publish to their room (topics.go)
)

// Transports (--transport): how the connections reach the gateways.
const (
	TransportWS  = "ws"  // WebSocket: GET /ws, upgrade, auth frame (the default)
	TransportSSE = "sse" // server-sent events: GET /sse with the token in Authorization, push only (sse.go)
)

// Room publishing modes (--room-publish).
const (
	RoomPublishClient = "client" // the member's own publish frame (gateways with --client-topic-publish direct)
	RoomPublishRouter = "router" // POST /v1/topics/{topic}/messages on the member's behalf
	RoomPublishNATS   = "nats"   // a NATS publish on <prefix>.topic.<topic> on the member's behalf
)

// Bounds of the topic scenarios.
const (
	maxRoomSize = 1000
	// maxLiveMsgs bounds a live run's messages (--msg-rate × --duration):
	// every process keeps a record per message (its publish, and its
	// first and last receipt for the fan-out time).
	maxLiveMsgs = 1_000_000
	// maxRoomMsgs bounds a rooms run's messages: a record per message.
	maxRoomMsgs = 10_000_000
)

// Config is one run. Zero fields take the defaults of SetDefaults.
type Config struct {
	Scenario string

	URLs        []string      // gateway URLs (ws://host:port/ws; with --transport sse also http://host:port/sse); connections are spread over them
	Transport   string        // TransportWS or TransportSSE
	Conns       int           // N
	ConnectRate float64       // connects per second during the ramp
	Duration    time.Duration // the measured phase after the ramp
	MaxConns    int           // hard cap on Conns
	Devices     int           // connections per user
	UserPrefix  string

	// OpenLoopRamp starts the ramp's connects at ConnectRate whatever the
	// fleet answers (--ramp-backoff=false). Default false: each event loop
	// bounds its attempts in flight and backs off on refusals and timeouts.
	OpenLoopRamp bool

	Auth           AuthConfig
	PrivateKeyFile string

	Publish PublishConfig
	MsgRate float64 // deliver, storm, churn: messages per second to random users (0: none); live, rooms: to the topics

	// Topic (live): the topic every connection subscribes to.
	Topic string
	// RoomSize (rooms): members per room; room k is the topic
	// <RoomPrefix>.<run id>.<k>, its members the connections k·RoomSize …
	// (k+1)·RoomSize-1. RoomPublish says who publishes a member's
	// message: client, router or nats (RoomPublish*).
	RoomSize    int
	RoomPrefix  string
	RoomPublish string

	Broadcasts        int
	BroadcastInterval time.Duration

	DropShare float64       // storm
	DropAfter time.Duration // storm: after the ramp
	ChurnRate float64       // churn: disconnects per second
	ChurnDown time.Duration // churn: how long a churned connection stays away

	// Resume (--resume): the fleet runs with resumable delivery. Devices
	// reconnect with "since" (the last id they received) and are owed every
	// message published while they were away; with Publish.Via "nats" the
	// publishes go through JetStream to learn each message's id. See
	// resume.go.
	Resume bool

	// KickUsers (deliver): the first KickUsers users have their connections
	// closed by the fleet (DELETE /v1/users/{user}/connections through the
	// router, close 4403) KickAfter into the deliver phase.
	KickUsers int
	KickAfter time.Duration

	Workers        string // "auto" or a number
	ConnsPerWorker int
	SourceIPs      string
	Pollers        int

	ConnectTimeout time.Duration
	// RampTimeout bounds the wait for every connection's welcome; 0:
	// RampLimit's default.
	RampTimeout  time.Duration
	BackoffMin   time.Duration
	BackoffMax   time.Duration
	CloseTimeout time.Duration
	Drain        time.Duration // longest wait for deliveries after the last publish
	DrainQuiet   time.Duration // end the drain after this long without a delivery

	JSONFile    string
	HTMLFile    string
	MetricsURLs []string

	Progress         string // auto, bars, lines, off
	ProgressInterval time.Duration
	Seed             uint64

	Stdout, Stderr io.Writer
	// WorkerExe and WorkerArgs start worker processes (default: this
	// executable, re-executed with WorkerEnv set).
	WorkerExe string
	WorkerEnv []string
}

// SetDefaults fills the zero fields.
func (c *Config) SetDefaults() {
	if len(c.URLs) == 0 {
		c.URLs = []string{"ws://127.0.0.1:8080/ws"}
	}
	if c.Transport == "" {
		c.Transport = TransportWS
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Conns == 0 {
		c.Conns = 1000
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 1000
	}
	def(&c.Duration, 30*time.Second)
	if c.MaxConns == 0 {
		c.MaxConns = 100000
	}
	if c.Devices == 0 {
		c.Devices = 1
	}
	if c.UserPrefix == "" {
		c.UserPrefix = "lt-"
	}
	def(&c.Auth.TTL, time.Hour)
	if c.Publish.Via == "" {
		c.Publish.Via = "router"
	}
	if c.Publish.RouterURL == "" {
		c.Publish.RouterURL = "http://127.0.0.1:8090"
	}
	if c.Publish.NATSURL == "" {
		c.Publish.NATSURL = "nats://127.0.0.1:4222"
	}
	if c.Publish.SubjectPrefix == "" {
		c.Publish.SubjectPrefix = "wsfleet"
	}
	if c.Publish.MsgBytes == 0 {
		c.Publish.MsgBytes = 128
	}
	if c.Publish.Concurrency == 0 {
		c.Publish.Concurrency = 32
	}
	def(&c.Publish.Timeout, 10*time.Second)
	if c.Broadcasts == 0 {
		c.Broadcasts = 1
	}
	def(&c.BroadcastInterval, time.Second)
	if c.DropShare == 0 {
		c.DropShare = 0.5
	}
	def(&c.DropAfter, 5*time.Second)
	if c.ChurnRate == 0 {
		c.ChurnRate = 10
	}
	def(&c.ChurnDown, time.Second)
	if c.Topic == "" {
		c.Topic = "live.prices"
	}
	if c.RoomSize == 0 {
		c.RoomSize = 10
	}
	if c.RoomPrefix == "" {
		c.RoomPrefix = "room"
	}
	if c.RoomPublish == "" {
		c.RoomPublish = RoomPublishClient
	}
	if c.Auth.TopicsClaim == "" {
		c.Auth.TopicsClaim = "topics"
	}
	if c.Auth.PublishClaim == "" {
		c.Auth.PublishClaim = "publish"
	}
	if c.Scenario == ScenarioRooms {
		// --via is not a rooms flag: --room-publish says it
		switch c.RoomPublish {
		case RoomPublishRouter, RoomPublishNATS:
			c.Publish.Via = c.RoomPublish
		}
	}
	if c.Workers == "" {
		c.Workers = "auto"
	}
	if c.ConnsPerWorker == 0 {
		c.ConnsPerWorker = DefaultConnsPerWorker
	}
	def(&c.ConnectTimeout, 10*time.Second)
	def(&c.BackoffMin, 250*time.Millisecond)
	def(&c.BackoffMax, 10*time.Second)
	def(&c.CloseTimeout, 2*time.Second)
	def(&c.Drain, 10*time.Second)
	def(&c.DrainQuiet, 2*time.Second)
	if c.Progress == "" {
		c.Progress = "auto"
	}
	def(&c.ProgressInterval, time.Second)
}

// publishes reports whether the scenario publishes to users.
func (c *Config) publishes() bool {
	switch c.Scenario {
	case ScenarioDeliver, ScenarioStorm, ScenarioChurn:
		return c.MsgRate > 0
	}
	return false
}

// topics reports whether the scenario is about topics (live, rooms).
func (c *Config) topics() bool { return c.Scenario == ScenarioLive || c.Scenario == ScenarioRooms }

// topicVia is how the run publishes to its topics: "router" or "nats"
// (live, and rooms with --room-publish router or nats), "client" (rooms:
// the members' own frames), "" (no topic scenario).
func (c *Config) topicVia() string {
	switch c.Scenario {
	case ScenarioLive:
		return c.Publish.Via
	case ScenarioRooms:
		return c.RoomPublish
	}
	return ""
}

// rooms is the number of rooms of a rooms run (the last may be smaller).
func (c *Config) rooms() int {
	if c.RoomSize < 1 {
		return 0
	}
	return (c.Conns + c.RoomSize - 1) / c.RoomSize
}

// UsageError is an invocation the load tester refuses before it starts
// anything: a flag's value (named), a setting that is missing (the signing
// key, the API key), a key file it cannot use, an output file it cannot
// write, or an API key the router refuses. The command exits with
// ExitBadFlags (2), like for a flag that does not parse.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// usagef returns a *UsageError.
func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// asUsage wraps err (nil stays nil) as a *UsageError.
func asUsage(err error) error {
	var ue *UsageError
	if err == nil || errors.As(err, &ue) {
		return err
	}
	return &UsageError{Err: err}
}

// Validate checks the settings, every flag first and the signing key last;
// errors are *UsageError and name the flag.
func (c *Config) Validate() error {
	if err := c.validateFlags(); err != nil {
		return asUsage(err)
	}
	if c.Auth.HS256Secret == "" && c.PrivateKeyFile == "" && c.Auth.PrivateKeyPEM == "" {
		return usagef("no signing key: set --jwt-hs256-secret (or LOADTEST_JWT_HS256_SECRET) or --jwt-private-key")
	}
	return nil
}

func (c *Config) validateFlags() error {
	switch c.Scenario {
	case ScenarioConnect, ScenarioDeliver, ScenarioBroadcast, ScenarioStorm, ScenarioChurn, ScenarioLive, ScenarioRooms:
	default:
		return fmt.Errorf("unknown scenario %q: connect, deliver, broadcast, storm, churn, live or rooms", c.Scenario)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"--connect-timeout", c.ConnectTimeout}, {"--close-timeout", c.CloseTimeout}, {"--drain", c.Drain},
		{"--drain-quiet", c.DrainQuiet}, {"--publish-timeout", c.Publish.Timeout}, {"--broadcast-interval", c.BroadcastInterval},
		{"--drop-after", c.DropAfter}, {"--churn-down", c.ChurnDown}, {"--progress-interval", c.ProgressInterval},
		{"--kick-after", c.KickAfter},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s must not be negative", d.name)
		}
	}
	switch {
	case c.Conns < 1:
		return errors.New("--conns must be at least 1")
	case c.MaxConns < 1:
		return errors.New("--max-conns must be at least 1")
	case c.Conns > c.MaxConns:
		return fmt.Errorf("--conns %d is over --max-conns %d (the hard cap; raise it deliberately)", c.Conns, c.MaxConns)
	case c.ConnectRate <= 0:
		return errors.New("--connect-rate must be positive")
	case c.Duration <= 0 || c.Duration > 24*time.Hour:
		return errors.New("--duration must be between 1ns and 24h")
	case c.Devices < 1 || c.Devices > 1000:
		return errors.New("--devices-per-user must be between 1 and 1000")
	case (c.Scenario == ScenarioDeliver || c.topics()) && c.MsgRate <= 0:
		return fmt.Errorf("%s needs --msg-rate above 0", c.Scenario)
	case c.MsgRate < 0 || c.MsgRate > 1e6:
		return errors.New("--msg-rate must be between 0 and 1,000,000")
	case c.Publish.MsgBytes < 0 || c.Publish.MsgBytes > 1<<20:
		return errors.New("--msg-bytes must be between 0 and 1 MiB")
	case c.Publish.Concurrency < 1 || c.Publish.Concurrency > 4096:
		return errors.New("--publish-concurrency must be between 1 and 4096")
	case c.Broadcasts < 1 || c.Broadcasts > 100000:
		return errors.New("--broadcasts must be between 1 and 100,000")
	case c.DropShare <= 0 || c.DropShare > 1:
		return errors.New("--drop-share must be in (0, 1]")
	case c.Scenario == ScenarioStorm && c.DropAfter >= c.Duration:
		return fmt.Errorf("--drop-after %s must be within --duration %s", c.DropAfter, c.Duration)
	case c.ChurnRate < 0:
		return errors.New("--churn-rate must not be negative")
	case c.RampTimeout < 0:
		return errors.New("--ramp-timeout must not be negative")
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return errors.New("--backoff-min must be positive and at most --backoff-max")
	case c.Auth.TTL < 0:
		return errors.New("--token-ttl must not be negative")
	case c.Pollers < 0:
		return errors.New("--pollers must not be negative (0: GOMAXPROCS)")
	case c.ConnsPerWorker < 0:
		return errors.New("--conns-per-worker must not be negative")
	case c.KickUsers < 0:
		return errors.New("--kick-users must not be negative")
	}
	if c.KickUsers > 0 {
		if users := (c.Conns + c.Devices - 1) / c.Devices; c.KickUsers > users {
			return fmt.Errorf("--kick-users %d is more than the run's %d users", c.KickUsers, users)
		}
		if c.KickAfter >= c.Duration {
			return fmt.Errorf("--kick-after %s must be within --duration %s", c.KickAfter, c.Duration)
		}
	}
	switch c.Progress {
	case "auto", "bars", "lines", "off":
	default:
		return fmt.Errorf("--progress %q: auto, bars, lines or off", c.Progress)
	}
	if err := checkWorkers(c.Workers); err != nil {
		return err
	}
	if err := c.validateTransport(); err != nil {
		return err
	}
	for _, raw := range c.URLs {
		if _, err := targetURL(raw, c.Transport); err != nil {
			return err
		}
	}
	if c.SourceIPs != "" {
		if _, err := parseSourceIPs(c.SourceIPs); err != nil {
			return err
		}
	}
	if c.topics() {
		if err := c.validateTopics(); err != nil {
			return err
		}
	}
	if c.Scenario == ScenarioBroadcast || c.publishes() || (c.topics() && c.topicVia() != RoomPublishClient) {
		switch c.Publish.Via {
		case "router", "nats":
		default:
			return fmt.Errorf("--via %q: router or nats", c.Publish.Via)
		}
		if _, err := protocol.NewSubjects(c.Publish.SubjectPrefix); err != nil {
			return fmt.Errorf("--subject-prefix: %v", err)
		}
	}
	if c.needsRouter() {
		if err := checkHTTPURL("--router-url", c.Publish.RouterURL); err != nil {
			return err
		}
		if c.Publish.APIKey == "" {
			why := "--via router"
			switch {
			case c.Scenario == ScenarioRooms && c.RoomPublish == RoomPublishRouter:
				why = "--room-publish router"
			case c.Publish.Via != "router":
				why = "--kick-users"
			}
			return fmt.Errorf("%s needs --api-key (or LOADTEST_API_KEY): one of the router's keys (its WSFLEET_ROUTER_API_KEY)", why)
		}
	}
	for _, u := range c.MetricsURLs {
		if err := checkHTTPURL("--metrics-url", u); err != nil {
			return err
		}
	}
	return nil
}

// needsRouter reports whether the run makes router requests: it publishes
// through the router, or kicks users.
func (c *Config) needsRouter() bool {
	return (c.Publish.Via == "router" && (c.Scenario == ScenarioBroadcast || c.publishes())) || c.KickUsers > 0 ||
		c.topicVia() == "router"
}

// checkHTTPURL checks that raw is an http(s) URL with a host.
func checkHTTPURL(flag, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q is not an http(s) URL (http://host:port)", flag, raw)
	}
	return nil
}

// prepare checks everything the run needs before it starts: the flags
// (Validate), the --json and --html files (created now if they can be, so
// that a run of minutes does not end without its report), and the signing
// key, read and parsed. Every error is a *UsageError naming the flag.
func (c *Config) prepare() error {
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return err
	}
	// the topic scenarios refuse --resume (validateTopics)
	c.Publish.JetStream = c.Resume && c.Publish.Via == "nats" && (c.Scenario == ScenarioBroadcast || c.publishes())
	for _, f := range []struct{ flag, path string }{{"--json", c.JSONFile}, {"--html", c.HTMLFile}} {
		if err := checkWritable(f.path); err != nil {
			return usagef("%s: %v", f.flag, err)
		}
	}
	if c.PrivateKeyFile != "" {
		pem, err := readKeyFile(c.PrivateKeyFile)
		if err != nil {
			return asUsage(err)
		}
		c.Auth.PrivateKeyPEM = pem
	}
	if _, _, err := c.Auth.signingKey(); err != nil {
		return asUsage(err)
	}
	return nil
}

// checkWritable checks that path ("": none) can be written, leaving no
// file behind that was not there.
func checkWritable(path string) error {
	if path == "" {
		return nil
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if os.IsNotExist(statErr) {
		os.Remove(path)
	}
	return nil
}

// parseTargetURL reads one WebSocket --url (ws://host:port/path) without
// resolving its host.
func parseTargetURL(raw string) (*url.URL, error) { return targetURL(raw, TransportWS) }

// targetURL reads one --url without resolving its host and returns the
// URL the transport requests: for ws, the ws://host:port/path given; for
// sse, an http://host:port/path given, or the SSE endpoint of a gateway's
// ws://host:port/…/ws (the same host:port, the path's last "ws" made
// "sse": /ws → /sse), as http://.
func targetURL(raw, transport string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--url %q: %v", raw, err)
	}
	want := "want ws://host:port/path"
	if transport == TransportSSE {
		want = "want http://host:port/sse (the gateway's SSE endpoint) or its ws://host:port/ws"
	}
	switch u.Scheme {
	case "ws":
	case "http":
		if transport != TransportSSE {
			return nil, fmt.Errorf("--url %q: an http URL is an SSE endpoint: add --transport sse, or give ws://host:port/ws", raw)
		}
	case "wss", "https":
		return nil, fmt.Errorf("--url %q: %s is not supported (the client engine speaks plain TCP); point it at the gateways behind the TLS terminator", raw, u.Scheme)
	default:
		return nil, fmt.Errorf("--url %q: %s", raw, want)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("--url %q: %s", raw, want)
	}
	if transport == TransportSSE && u.Scheme == "ws" {
		p, ok := strings.CutSuffix(u.Path, "/ws")
		if !ok {
			return nil, fmt.Errorf("--url %q: --transport sse takes the gateway's ws://host:port/ws (its SSE endpoint is /sse on the same host:port) or the SSE endpoint itself, http://host:port/sse", raw)
		}
		v := *u
		v.Scheme, v.Path, v.RawPath = "http", p+"/sse", ""
		u = &v
	}
	return u, nil
}

// resolveTargets parses the gateway URLs and resolves their hosts; errors
// are *UsageError.
func resolveTargets(urls []string, transport string) ([]Target, error) {
	t, err := resolve(urls, transport)
	return t, asUsage(err)
}

func resolve(urls []string, transport string) ([]Target, error) {
	var out []Target
	for _, raw := range urls {
		u, err := targetURL(raw, transport)
		if err != nil {
			return nil, err
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = "80"
		}
		path := u.RequestURI()
		if path == "" {
			path = "/"
		}
		var addr netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addr = a
		} else {
			ips, err := net.LookupIP(host)
			if err != nil || len(ips) == 0 {
				return nil, fmt.Errorf("--url %q: cannot resolve %s: %v", raw, host, err)
			}
			addr, _ = netip.AddrFromSlice(ips[0])
			for _, ip := range ips {
				if ip4 := ip.To4(); ip4 != nil {
					addr, _ = netip.AddrFromSlice(ip4)
					break
				}
			}
		}
		ap, err := netip.ParseAddrPort(net.JoinHostPort(addr.Unmap().String(), port))
		if err != nil {
			return nil, fmt.Errorf("--url %q: %v", raw, err)
		}
		if transport == TransportSSE {
			raw = u.String() // the endpoint requested
		}
		out = append(out, Target{URL: raw, Host: u.Host, Path: path, Addr: ap.String()})
	}
	if len(out) == 0 {
		return nil, errors.New("--url: no gateway URL")
	}
	fam := func(a string) bool { return netip.MustParseAddrPort(a).Addr().Is4() }
	for _, t := range out[1:] {
		if fam(t.Addr) != fam(out[0].Addr) {
			return nil, errors.New("--url: mix of IPv4 and IPv6 gateways")
		}
	}
	return out, nil
}

// RampLimit is how long the run waits for every connection's welcome:
// --ramp-timeout, or by default 1.5 × conns/rate + --connect-timeout + 5 s
// (a fleet that cannot take --connect-rate for most of the ramp fails).
func (c *Config) RampLimit() time.Duration {
	if c.RampTimeout > 0 {
		return c.RampTimeout
	}
	return time.Duration(float64(c.Conns)/c.ConnectRate*1.5*float64(time.Second)) + c.ConnectTimeout + 5*time.Second
}

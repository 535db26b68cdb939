package router

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsurl"
	"github.com/wsfleet/wsfleet/protocol"
)

// Limits on settings.
const (
	// MinAPIKeyBytes is the shortest API key accepted.
	MinAPIKeyBytes = 16
	// MaxBodyLimit is the largest MaxBodyBytes accepted: nats-server's own
	// ceiling on max_payload (64 MiB).
	MaxBodyLimit = 64 << 20
	// MaxBatchUsersLimit is the largest MaxBatchUsers accepted.
	MaxBatchUsersLimit = 100000
)

// NoPublishWait as Options.PublishWait answers a publish that finds NATS
// disconnected with 503 at once (a zero PublishWait is unset and becomes
// the default).
const NoPublishWait time.Duration = math.MinInt64

// Options configures a router. Every field documents its default; the
// defaults are applied by [Options.SetDefaults] in one place and checked by
// [Options.Validate], whose errors name the command-line flag.
type Options struct {
	// Listen is the HTTP API address, host:port. Default ":8090".
	Listen string
	// AdminListen serves /healthz, /readyz and /metrics (and /debug/pprof/
	// with AdminPprof). Default "127.0.0.1:8091", loopback only: a
	// deployment that scrapes metrics from elsewhere sets it (the Helm chart
	// sets ":8091"); "off" disables it.
	AdminListen string
	// AdminPprof serves Go's profiler at /debug/pprof/ on AdminListen
	// (unauthenticated: keep AdminListen private when it is on). Default
	// false.
	AdminPprof bool

	// NATSURL is the NATS server(s) to publish to, comma-separated.
	// Default "nats://127.0.0.1:4222".
	NATSURL string
	// NATSConnectTimeout is how long Start retries the first NATS
	// connection before it fails. Default 10s.
	NATSConnectTimeout time.Duration
	// SubjectPrefix starts every NATS subject; it must match the gateways'.
	// Default "wsfleet".
	SubjectPrefix string

	// APIKeys are bearer tokens callers authenticate with; any one of
	// them is accepted, so a key can be rotated by adding the new one,
	// moving the callers over, then removing the old one. Each is at least
	// MinAPIKeyBytes bytes of printable ASCII. Default none; at least one
	// key or a JWT key source (JWT.HS256Secret, JWT.JWKSFile, JWT.JWKSURL)
	// is required.
	APIKeys []string

	// JWT is how bearer JWTs are verified: the key sources, the algorithm
	// allowlist and the claims checked, the --jwt-* flags. Its fields
	// document their defaults; SetDefaults applies them. Without a key
	// source the router accepts API keys only.
	JWT jwtverify.Config
	// JWTScope is the scope a JWT must grant ("scope" or "scp" claim);
	// a valid token without it gets 403 forbidden. Default "publish".
	JWTScope string

	// RateLimit is each credential's (API key's or JWT sub's) request rate
	// per second, a token bucket; over it the reply is 429 with
	// Retry-After. Default 1000; negative: no limit.
	RateLimit float64
	// RateLimitBurst is the bucket's size. Default 2×RateLimit.
	RateLimitBurst int

	// MaxBatchUsers bounds the users of one batch publish or presence
	// query; over it the reply is 400 too_many_users. Default 1000.
	MaxBatchUsers int

	// IdempotencyWindow is how long an Idempotency-Key is remembered: a
	// retry within it is not published again and gets the first answer.
	// Default 1h.
	IdempotencyWindow time.Duration
	// IdempotencyStore is where keys are kept: "jetstream" (a NATS KV
	// bucket shared by every router replica; Start fails without
	// JetStream), "memory" (this replica only, bounded by
	// IdempotencyMaxKeys) or "auto" (JetStream when the NATS server has
	// it, else memory with a warning). Default "auto".
	IdempotencyStore string
	// IdempotencyBucket is the JetStream KV bucket. Default
	// "wsfleet_idempotency".
	IdempotencyBucket string
	// IdempotencyMaxKeys bounds the in-memory store; the oldest keys go
	// first. Default 100000.
	IdempotencyMaxKeys int

	// NodeTTL is how long a gateway node may be silent (no batch,
	// heartbeat, snapshot chunk or probe reply from it) before the router
	// probes it on its own subject (protocol.Subjects.PresenceNode). When
	// the NATS server answers that nothing listens there, the node's NATS
	// connection is gone and the node is dropped with all its users at
	// once: a dead node's users go NodeTTL plus one round trip after its
	// last message. A probe answered, or one that times out (the node's
	// subscription, so its connection, is still there: a node starved of
	// CPU), keeps the node; it is probed again every NodeTTL/2 while it
	// stays silent. Nothing expires while the router's own NATS connection
	// is down or carries nothing. Default 15s.
	NodeTTL time.Duration
	// NodeMaxSilence drops a silent node with all its users whatever its
	// probes say: a process hung with its NATS connection open, or a
	// partition the NATS server has not noticed, keeps a node's users
	// online at most this long. It must be longer than NodeTTL. Default 2m.
	NodeMaxSilence time.Duration
	// SnapshotTimeout bounds a presence snapshot request; a node that has
	// not sent its last chunk by then is asked again later. Default 2s.
	SnapshotTimeout time.Duration
	// KickTimeout bounds the wait for gateway nodes' answers to a kick;
	// it ends earlier once every node the presence view lists for the
	// user has answered. Default 2s.
	KickTimeout time.Duration

	// PublishWait is how long a publish (user, batch, broadcast, over HTTP
	// or NATS) that finds NATS disconnected before anything of it was
	// written waits for the connection to come back, then publishes; the
	// request's context bounds it too. Only when NATS is not back in time
	// is the answer 503 nats_unavailable. Default 5s; NoPublishWait (0 on
	// the command line) answers 503 at once.
	PublishWait time.Duration

	// Resume is resumable delivery, the gateways' --resume: the JetStream
	// history stream (package internal/history) stores every message of
	// the user subjects and the broadcast subject. Every publish the
	// router makes there (user, batch, broadcast, over HTTP or NATS; a
	// kick too) is then a JetStream publish answered only once the stream
	// has acknowledged it, and a message's id is its stream sequence
	// (decimal digits), the id the devices see and resume from. An
	// Idempotency-Key also becomes the messages' Nats-Msg-Id, so the
	// stream stores a retry within history.DuplicateWindow once. Start
	// creates the stream when it is missing, and fails when NATS has no
	// JetStream or the stream exists with another configuration. Default
	// false: plain NATS publishes with a NUID as the message id.
	Resume bool
	// History is the history stream's configuration, the --history-*
	// flags, which must be the gateways' own. Its Prefix is always
	// SubjectPrefix. Defaults (history.Config's): TTL 24h, MaxPerUser
	// 100, MaxBytes 1 GiB, Replicas 1, Storage "file". Checked only with
	// Resume.
	History history.Config

	// MaxBodyBytes bounds a request body (the message data); over it the
	// reply is 413. It must leave room for the message id header within the
	// NATS server's max_payload, which Start checks once connected.
	// Default 262144.
	MaxBodyBytes int

	// Logger receives the router's logs. Default: zap production JSON logger.
	Logger *zap.Logger
}

// SetDefaults fills every unset field with its default.
func (o *Options) SetDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Listen, ":8090")
	def(&o.AdminListen, "127.0.0.1:8091")
	def(&o.NATSURL, "nats://127.0.0.1:4222")
	if o.NATSConnectTimeout == 0 {
		o.NATSConnectTimeout = 10 * time.Second
	}
	def(&o.SubjectPrefix, protocol.DefaultSubjectPrefix)
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 256 << 10
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
	o.JWT.SetDefaults()
	def(&o.JWTScope, "publish")
	if o.RateLimit == 0 {
		o.RateLimit = 1000
	}
	if o.RateLimitBurst == 0 && o.RateLimit > 0 {
		o.RateLimitBurst = int(math.Ceil(2 * o.RateLimit))
	}
	defInt(&o.MaxBatchUsers, 1000)
	defDur(&o.IdempotencyWindow, time.Hour)
	def(&o.IdempotencyStore, "auto")
	def(&o.IdempotencyBucket, "wsfleet_idempotency")
	defInt(&o.IdempotencyMaxKeys, 100000)
	defDur(&o.NodeTTL, 15*time.Second)
	defDur(&o.NodeMaxSilence, 2*time.Minute)
	defDur(&o.PublishWait, 5*time.Second)
	defDur(&o.SnapshotTimeout, 2*time.Second)
	defDur(&o.KickTimeout, 2*time.Second)
	o.History.Prefix = o.SubjectPrefix
	o.History.SetDefaults()
}

func badOption(flag string, format string, args ...any) error {
	return fmt.Errorf("%w --%s: %s", ErrBadOption, flag, fmt.Sprintf(format, args...))
}

// Validate checks the options after SetDefaults. The error names the flag
// and never shows an API key.
func (o *Options) Validate() error {
	if err := checkHostPort("listen", o.Listen); err != nil {
		return err
	}
	if o.AdminListen != "off" {
		if err := checkHostPort("admin-listen", o.AdminListen); err != nil {
			return err
		}
	}
	if err := natsurl.Check(o.NATSURL); err != nil {
		return badOption("nats-url", "%v", err)
	}
	if o.NATSConnectTimeout < time.Millisecond {
		return badOption("nats-connect-timeout", "must be at least 1ms, got %s", o.NATSConnectTimeout)
	}
	if err := protocol.ValidatePrefix(o.SubjectPrefix); err != nil {
		return badOption("subject-prefix", "%q: %v", o.SubjectPrefix, err)
	}
	if len(o.APIKeys) == 0 && !o.JWT.Configured() {
		return fmt.Errorf("%w: %w", ErrBadOption, ErrNoAPIKey)
	}
	for i, k := range o.APIKeys {
		if len(k) < MinAPIKeyBytes {
			return badOption("api-key", "key #%d is %d bytes; each key must be at least %d", i+1, len(k), MinAPIKeyBytes)
		}
		for j := 0; j < len(k); j++ {
			if c := k[j]; c <= ' ' || c >= 0x7f || c == ',' {
				return badOption("api-key", "key #%d has a byte at %d that is not printable ASCII (spaces and commas are not allowed either)", i+1, j)
			}
		}
	}
	if o.MaxBodyBytes < 1 || o.MaxBodyBytes > MaxBodyLimit {
		return badOption("max-body-bytes", "must be between 1 and %d, got %d", MaxBodyLimit, o.MaxBodyBytes)
	}
	if err := o.JWT.Validate(); err != nil {
		return fmt.Errorf("%w %w", ErrBadOption, err)
	}
	if strings.TrimSpace(o.JWTScope) != o.JWTScope || strings.ContainsAny(o.JWTScope, " \t\r\n") {
		return badOption("jwt-scope", "%q must be one scope, without spaces", o.JWTScope)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"idempotency-window", o.IdempotencyWindow},
		{"node-ttl", o.NodeTTL}, {"snapshot-timeout", o.SnapshotTimeout}, {"kick-timeout", o.KickTimeout},
	} {
		if d.v < time.Millisecond {
			return badOption(d.flag, "must be at least 1ms, got %s", d.v)
		}
	}
	if o.NodeMaxSilence <= o.NodeTTL {
		return badOption("node-max-silence", "must be longer than --node-ttl (%s), got %s", o.NodeTTL, o.NodeMaxSilence)
	}
	if o.PublishWait < 0 && o.PublishWait != NoPublishWait {
		return badOption("publish-wait", "must not be negative, got %s (0 answers 503 at once)", o.PublishWait)
	}
	if o.RateLimit > 0 && o.RateLimitBurst < 1 {
		return badOption("rate-limit-burst", "must be at least 1, got %d", o.RateLimitBurst)
	}
	if o.MaxBatchUsers < 1 || o.MaxBatchUsers > MaxBatchUsersLimit {
		return badOption("max-batch-users", "must be between 1 and %d, got %d", MaxBatchUsersLimit, o.MaxBatchUsers)
	}
	switch o.IdempotencyStore {
	case "auto", "jetstream", "memory":
	default:
		return badOption("idempotency-store", "%q is not auto, jetstream or memory", o.IdempotencyStore)
	}
	if !validBucket(o.IdempotencyBucket) {
		return badOption("idempotency-bucket", "%q must be 1-64 bytes of [A-Za-z0-9_-]", o.IdempotencyBucket)
	}
	if o.IdempotencyMaxKeys < 1 {
		return badOption("idempotency-max-keys", "must be at least 1, got %d", o.IdempotencyMaxKeys)
	}
	if o.Resume {
		// history's errors name the flag: "--history-ttl: 500ms is less than a second".
		if err := o.History.Validate(); err != nil {
			return fmt.Errorf("%w %w", ErrBadOption, err)
		}
	}
	return nil
}

func validBucket(b string) bool {
	if b == "" || len(b) > 64 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkHostPort(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return badOption(flag, "%q is not host:port: %v", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return badOption(flag, "%q has a bad port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return badOption(flag, "%q: host must be an IP address or localhost", addr)
	}
	return nil
}

package router

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

// Limits on settings.
const (
	// MinAPIKeyBytes is the shortest API key accepted.
	MinAPIKeyBytes = 16
	// MaxBodyLimit is the largest MaxBodyBytes accepted: nats-server's own
	// ceiling on max_payload (64 MiB).
	MaxBodyLimit = 64 << 20
)

// Options configures a router. Every field documents its default; the
// defaults are applied by [Options.SetDefaults] in one place and checked by
// [Options.Validate], whose errors name the command-line flag.
type Options struct {
	// Listen is the HTTP API address, host:port. Default ":8090".
	Listen string
	// AdminListen serves /healthz, /readyz, /metrics and /debug/pprof/.
	// Default ":8091"; "off" disables it.
	AdminListen string

	// NATSURL is the NATS server(s) to publish to, comma-separated.
	// Default "nats://127.0.0.1:4222".
	NATSURL string
	// NATSConnectTimeout is how long Start retries the first NATS
	// connection before it fails. Default 10s.
	NATSConnectTimeout time.Duration
	// SubjectPrefix starts every NATS subject; it must match the gateways'.
	// Default "wsfleet".
	SubjectPrefix string

	// APIKeys are the bearer tokens callers authenticate with; any one of
	// them is accepted, so a key can be rotated by adding the new one,
	// moving the callers over, then removing the old one. Each is at least
	// MinAPIKeyBytes bytes of printable ASCII. Required: no default.
	APIKeys []string

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
	def(&o.AdminListen, ":8091")
	def(&o.NATSURL, "nats://127.0.0.1:4222")
	if o.NATSConnectTimeout == 0 {
		o.NATSConnectTimeout = 10 * time.Second
	}
	def(&o.SubjectPrefix, protocol.DefaultSubjectPrefix)
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 256 << 10
	}
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
	if strings.TrimSpace(strings.ReplaceAll(o.NATSURL, ",", "")) == "" {
		return badOption("nats-url", "at least one NATS server URL is required")
	}
	if o.NATSConnectTimeout < time.Millisecond {
		return badOption("nats-connect-timeout", "must be at least 1ms, got %s", o.NATSConnectTimeout)
	}
	if err := protocol.ValidatePrefix(o.SubjectPrefix); err != nil {
		return badOption("subject-prefix", "%q: %v", o.SubjectPrefix, err)
	}
	if len(o.APIKeys) == 0 {
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
	return nil
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

package router

import "errors"

// Sentinel errors. Option errors wrap ErrBadOption and name the setting.
var (
	// ErrBadOption: a setting is missing or out of range.
	ErrBadOption = errors.New("invalid setting")
	// ErrNoAPIKey: no credential is configured: neither an API key nor a
	// JWT key source.
	ErrNoAPIKey = errors.New("no API key configured: set --api-key (or WSFLEET_ROUTER_API_KEY, comma-separated), or a JWT key source (--jwt-hs256-secret, --jwt-jwks-file, --jwt-jwks-url)")
	// ErrServerClosed: Start after Shutdown, a second Start, or Shutdown of
	// a router that is not running.
	ErrServerClosed = errors.New("server closed")
	// ErrNATSUnavailable: the router could not reach NATS at start.
	ErrNATSUnavailable = errors.New("NATS unavailable")
)

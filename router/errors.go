package router

import "errors"

// Sentinel errors. Option errors wrap ErrBadOption and name the setting.
var (
	// ErrBadOption: a setting is missing or out of range.
	ErrBadOption = errors.New("invalid setting")
	// ErrNoAPIKey: no API key is configured.
	ErrNoAPIKey = errors.New("no API key configured: set --api-key (or WSFLEET_API_KEY, comma-separated)")
	// ErrServerClosed: Start after Shutdown, a second Start, or Shutdown of
	// a router that is not running.
	ErrServerClosed = errors.New("router: server closed")
	// ErrNATSUnavailable: the router could not reach NATS at start.
	ErrNATSUnavailable = errors.New("router: NATS unavailable")
)

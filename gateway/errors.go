package gateway

import "errors"

// Sentinel errors. Option errors wrap ErrBadOption and name the setting.
var (
	// ErrBadOption: a setting is missing or out of range.
	ErrBadOption = errors.New("invalid setting")
	// ErrNoKeys: no JWT verification key is configured.
	ErrNoKeys = errors.New("no JWT key configured: set --jwt-hs256-secret, --jwt-jwks-file or --jwt-jwks-url")
	// ErrServerClosed: Start after Shutdown, or a second Start.
	ErrServerClosed = errors.New("server closed")
	// ErrNATSUnavailable: the node could not reach NATS at start.
	ErrNATSUnavailable = errors.New("NATS unavailable")
)

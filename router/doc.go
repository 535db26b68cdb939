// Package router is wsfleet's HTTP publishing service: it lets services that
// speak HTTP, not NATS, deliver messages to the users connected to the
// gateway fleet. It authenticates the caller with an API key, validates the
// user id and the JSON body, publishes the body unchanged on the user's (or
// the broadcast) NATS subject with a new message id header, and answers once
// the NATS server has confirmed it.
//
// # API v1 (JSON everywhere)
//
//	POST /v1/users/{user}/messages   body: the message data, any JSON value
//	POST /v1/broadcast               body: the message data, any JSON value
//
// Both need "Authorization: Bearer <api key>" and answer
//
//	202 {"id":"<message id>"}
//
// {user} is the user id (the JWT sub a gateway authenticated), percent-
// encoded as one path segment: "a%2Fb" is the id "a/b". The message is
// published on <prefix>.user.<userToken> or <prefix>.broadcast with the
// Wsfleet-Msg-Id header holding the id; gateways deliver it as
// {"type":"message","id":"<id>","data":<body>}.
//
// Errors are {"error":"<code>","message":"<text>"} with a stable code:
//
//	400 bad_json            the body is empty or not one JSON value in UTF-8
//	400 bad_user            the user id fails protocol.ValidateUserID
//	401 unauthorized        no or unknown API key (WWW-Authenticate: Bearer)
//	404 not_found           no such endpoint
//	405 method_not_allowed  not POST (Allow: POST)
//	413 too_large           the body is over MaxBodyBytes
//	503 nats_unavailable    NATS is disconnected or did not confirm the
//	                        publish; nothing is buffered (Retry-After: 1)
//
// The admin listener serves /healthz, /readyz, /metrics
// (wsfleet_router_* series) and /debug/pprof/.
//
// # What lives elsewhere
//
// Subjects, the user token encoding, header names and message ids are in
// package protocol; delivering to WebSocket clients is package gateway;
// flags, environment variables, signals and the process are cmd/router.
package router

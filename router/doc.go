// Package router is wsfleet's service-facing API: it lets services publish
// to the users connected to the gateway fleet (one user, a batch, or
// everyone), tells them who is online, and closes a user's connections
// everywhere. docs/router.md is the full description; router/openapi.json
// (served at GET /v1/openapi.json) the HTTP contract.
//
// # HTTP API v1 (JSON everywhere)
//
//	POST   /v1/users/{user}/messages     body: the message data     → 202 {"id","online","devices"}
//	POST   /v1/messages                  {"users":[...],"data":...} → 202 {"results":[...]}
//	POST   /v1/broadcast                 body: the message data     → 202 {"id"}
//	GET    /v1/users/{user}/presence                                → 200 {"user","online","devices","nodes"}
//	POST   /v1/presence/query            {"users":[...]}            → 200 {"results":[...]}
//	GET    /v1/stats                                                → 200 {"nodes","connections","users","node_list"}
//	DELETE /v1/users/{user}/connections                             → 200 {"closed","nodes"}
//	GET    /v1/openapi.json
//
// The routes are net/http ServeMux patterns, matched as sent (routes.go);
// another method on a route's path is 405 with Allow, any other path 404.
//
// Callers authenticate with "Authorization: Bearer <api key or JWT>" (a
// JWT must grant JWTScope); each credential has its own rate limit.
// Publishes honour an Idempotency-Key header (idempotency.go). Errors are
// {"code":"<code>","reason":"<text>"} with a stable code (api.go).
//
// A publish that finds NATS disconnected before anything of it was written
// waits for the connection to come back, up to PublishWait and the
// request's deadline, then publishes; only then is it answered 503
// nats_unavailable (natslink.go). The NATS connection's state is kept from
// its handlers, never read under its lock, and it is taken for stale only
// after 100-120 s without a PONG, so a router or server starved of CPU for
// many seconds does not lose its link.
//
// The same operations are served as NATS request/reply on
// <prefix>.router.<op> (handlers_nats.go), for services on NATS.
//
// # Resumable delivery (Resume)
//
// With Resume (the gateways' --resume) a JetStream stream, the history
// (package internal/history; Start creates it, or refuses to start without
// JetStream or when it exists with other --history-* settings), stores
// every message of the user subjects and the broadcast subject, and the
// gateways deliver each with its stream sequence as its id. Every publish
// (user, batch, broadcast, and a kick) is then a JetStream publish the
// request waits for: the stream acknowledges it on a reply subject of the
// router's (resume.go), and the answer's "id" is the stream sequence, in
// decimal digits; a batch's messages are pipelined and each result has its
// own. An Idempotency-Key becomes the messages' Nats-Msg-Id, a hash of the
// credential, the key, the request and the user, so a retry within the
// stream's duplicate window is stored once and answered with the first
// id even when the idempotency store does not know the key.
//
// # Presence
//
// The router keeps the fleet's presence view (presence.go) from the
// gateways' batches, heartbeats and snapshots (protocol/presence.go); the
// tracker (presence_sync.go) keeps it converged and tells dead nodes from
// nodes that are only late. A node silent for NodeTTL is probed on its own
// subject, <prefix>.presence.node.<token>, which it listens on for as long
// as its NATS connection lives: an answer keeps it; the NATS server's "no
// responders" means its connection is gone, and it is dropped with its
// users at once; no answer means it is alive but late (starved of CPU),
// and it is kept and probed again every NodeTTL/2. A node silent for
// NodeMaxSilence is dropped whatever the probes say. So a dead node's
// users stay online at most NodeTTL plus a probe's round trip, and those
// of a node hung with its connection open, or cut off by a partition the
// NATS server has not noticed, at most NodeMaxSilence. Nothing expires
// while the router's own connection is down or carries nothing.
//
// The admin listener serves /healthz, /readyz, /metrics
// (wsfleet_router_* series) and /debug/pprof/.
//
// # What lives elsewhere
//
// Subjects, the user token encoding, header names, message ids and the
// presence messages are in package protocol; delivering to WebSocket
// clients is package gateway; the Go SDK is router/client; flags,
// environment variables, signals and the process are cmd/router.
package router

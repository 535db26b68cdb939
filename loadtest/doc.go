// Package loadtest is wsfleet's bundled load tester (cmd/loadtest): it opens
// many WebSocket connections (or server-sent-event streams) to a gateway
// fleet, authenticates them with JWTs it mints itself, publishes to them
// through the router or NATS, and reports how many connections the fleet
// held, how fast they connected, how long a message took end to end and
// whether any was lost, duplicated or reordered.
//
// # Engine
//
// The client side follows the gateway's engine rules: raw non-blocking
// sockets from socket(2)/connect(2) (one fd per connection, never a
// net.Conn), registered edge-triggered with easygo's epoll through
// internal/poller, read until EAGAIN and parsed incrementally with
// internal/wsframe; client frames are masked with ws.Cipher, written
// straight to the socket and queued only on EAGAIN. There is no goroutine
// per connection: each poller owns its connections and a timing wheel that
// drives connect timeouts, reconnect back-off, token refresh and close
// timeouts.
//
// One process holds what its open-file limit allows (about 19,000 sockets
// here); past that the parent re-executes its own binary as worker
// processes and merges what they report (JSON lines on a pipe, histograms
// as exported snapshots).
//
// # Transports
//
// --transport ws (the default) upgrades each connection to a WebSocket
// and authenticates it with an auth frame; --transport sse opens a
// server-sent-event stream instead (GET /sse, the token in Authorization,
// Last-Event-ID to resume, topics= to subscribe) on the same engine: the
// response head and the events are parsed incrementally on the loop, and
// each event's data, the JSON a WebSocket text frame carries, goes
// through the same accounting (sse.go). A stream is push only: the
// scenarios that need client frames are refused with it.
//
// # Accounting
//
// The publisher numbers each user's messages 1, 2, 3…; every device (a
// connection slot, across its reconnects) checks what it receives. See
// tracker.go and docs/loadtest.md for what counts as lost. With --resume
// (a fleet with resumable delivery) devices reconnect with "since", the
// messages published while they were away are owed to them, and the
// messages' ids (stream sequences) classify them where the publisher
// learnt them: see resume.go.
//
// # Topics
//
// The live and rooms scenarios test the gateway's topics (topics.go,
// topics_run.go): every connection subscribes to its topic once
// welcomed (the tokens' topics claim allows it) and a session on the
// topic starts with its "subscribed". live publishes one numbered stream
// to one topic from the parent, which announces each publish to the
// processes as it does a broadcast; rooms puts whole rooms in each
// process, whose publisher numbers each room's messages and publishes
// them as a random member (its own publish frame) or on its behalf
// (router, NATS). The accounting is the users' (tracker.go), per device
// and topic, with the subscribe in place of the welcome.
package loadtest

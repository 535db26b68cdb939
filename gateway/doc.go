// Package gateway is a wsfleet gateway node: it holds WebSocket clients on
// raw sockets, authenticates them with JWTs, and delivers what services
// publish on NATS to every device of a user.
//
// # Engine
//
// The socket engine is internal/engine, shared with the load tester; this
// package is the server side on top of it.
//
//   - Sockets are raw file descriptors: accept4(2) on a non-blocking
//     listening socket, one fd per connection, registered with an engine
//     loop (easygo's epoll). Nothing wraps them in net.Conn, and no
//     netpoll.Handle*/File() call dups them.
//   - Each event loop (loop.go) accepts for itself (the listener is in
//     every loop with EPOLLEXCLUSIVE), reads until the socket is drained,
//     and parses HTTP (handshake.go) and RFC 6455 frames (conn_frames.go)
//     incrementally: an incomplete request or frame waits in a pooled
//     buffer for the next event and blocks nothing.
//   - An idle connection holds no goroutine, timer or buffer: the loop's
//     timing wheel drives handshake and auth timeouts, heartbeats, idle
//     closes, token expiry (re-armed against the clock past the wheel's
//     horizon) and close timeouts.
//   - Writes are non-blocking: a frame goes straight to the socket; what the
//     socket does not take waits in the engine's per-connection queue,
//     bounded by MaxPendingBytes and drained with writev on EPOLLOUT
//     (conn_write.go). Overflow closes the client as a slow consumer (4500).
//   - JWT signatures are verified by a bounded worker pool (auth_pool.go),
//     never on a loop.
//   - NATS: one channel subscription per online user, fed into a fixed set
//     of dispatcher goroutines (nats_dispatch.go); no goroutine per
//     subscription. A delivery's frame is built once, copying the payload
//     without re-encoding it, and shared by every device's queue; a
//     broadcast is built once for the whole node, queued on each loop
//     within LoopQueueBytes (dropped and counted past it) and written 256
//     connections a wake-up, so fan-out never starves reads, flushes or
//     timers.
//   - A client is welcomed only once its subscription is confirmed by the
//     NATS server; without NATS past NATSOutageGrace the node moves its
//     clients away (the drain's reconnect notice). No lock is held across
//     NATS or socket I/O that may block.
//
// # What lives elsewhere
//
// The wire format, close codes and subjects are in package protocol; the
// engine, frame header coding, buffer pools and JWT checks are in
// internal/; the HTTP publishing API is package router; flags, the process
// and the embedded development NATS server are cmd/gateway. The package
// starts no NATS server: Options.NATSURL is required.
package gateway

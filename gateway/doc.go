// Package gateway is a wsfleet gateway node: it holds WebSocket clients on
// raw sockets, authenticates them with JWTs, and delivers what services
// publish on NATS to every device of a user.
//
// # Engine
//
//   - Sockets are raw file descriptors: accept4(2) on a non-blocking
//     listening socket, one fd per connection, registered with easygo's
//     epoll (netpoll.EpollCreate). Nothing wraps them in net.Conn, and no
//     netpoll.Handle*/File() call dups them.
//   - Each event loop (loop.go) is one epoll instance and its goroutine. It
//     accepts for itself (the listener is in every loop with
//     EPOLLEXCLUSIVE), reads until the socket is drained, and parses HTTP
//     and RFC 6455 frames incrementally: an incomplete request or frame
//     waits in a pooled buffer for the next event and blocks nothing.
//   - An idle connection holds no goroutine, timer or buffer: a per-loop
//     timing wheel (wheel.go) drives handshake and auth timeouts,
//     heartbeats, idle closes and close timeouts.
//   - Writes are non-blocking: a frame goes straight to the socket; what the
//     socket does not take waits in a per-connection queue bounded by
//     MaxPendingBytes, drained with writev on EPOLLOUT (conn_write.go).
//     Overflow closes the client as a slow consumer (4500).
//   - JWT signatures are verified by a bounded worker pool (auth_pool.go),
//     never on a loop.
//   - NATS: one channel subscription per online user, fed into a fixed set
//     of dispatcher goroutines (nats_dispatch.go); no goroutine per
//     subscription. A delivery's frame is built once, copying the payload
//     without re-encoding it, and shared by every device's queue; a
//     broadcast is built once for the whole node.
//
// # What lives elsewhere
//
// The wire format, close codes and subjects are in package protocol; frame
// header coding, buffer pools and the poller are in internal/; the HTTP
// publishing API is package router; flags and the process are cmd/gateway.
package gateway

// Package engine is wsfleet's epoll socket engine, shared by the gateway
// (server side) and the load tester (client side). It owns what every
// protocol on a held socket needs, documented once here:
//
//   - [Loop]: one easygo epoll instance (netpoll.EpollCreate) and its wait
//     goroutine, an eventfd that runs tasks posted from other goroutines and
//     a timerfd that ticks, all on that one goroutine, so whatever a loop
//     owns is touched without locks. The epoll fd and both easygo fds are
//     close-on-exec.
//   - Bounded hand-offs: [Loop.TryPost] refuses a droppable task (a
//     broadcast, say) once the loop's queued cost passes Config.MaxCost, and
//     the caller counts the drop. [Loop.Post] is for lifecycle tasks whose
//     number the caller bounds (at most a few per connection). One wake-up
//     runs only the tasks it found when it started, and at most
//     Config.HeavyPerWake droppable ones: the rest wait behind the socket
//     events and the tick that are ready, so fan-out never starves reads,
//     flushes or timers.
//   - [Wheel]: a hashed timing wheel, one per loop, linking connections
//     through fields of the embedded [Conn]. It drives every deadline; no timer and no
//     goroutine exists per connection. Far deadlines are parked and
//     re-linked; a clock jump (of less than 2^31 ticks) is one pass over the
//     wheel.
//   - [Conn]: the engine's part of one socket, embedded in the protocol's
//     connection type. Reads ([Conn.Read]) go until EAGAIN within a budget
//     and hand each chunk to the protocol's incremental parser; a budget
//     that runs out is the caller's to continue later. Writes go straight
//     to the socket; what it does not take waits in a queue of shared,
//     reference-counted buffers bounded in bytes, drained with writev on
//     EPOLLOUT ([Conn.FlushLocked]).
//
// A protocol is what handles a connection's bytes ([Reader]), its timer
// and its writes' results: the gateway's HTTP upgrade and RFC 6455 framing
// on the server side, the load tester's client. Another protocol on a held
// socket (a server-sent-events response after an HTTP request, say) is
// another handler over the same Conn, loop and wheel, not another engine.
//
// # File descriptor rules
//
// One fd per connection, owned raw: accept4(2) or socket(2), never a
// net.Conn, never netpoll.Handle* or (*os.File).Fd, which dup the fd and
// make it blocking. A socket is deregistered from its loop before it is
// closed ([Conn.Close] does both, closing under the write lock so no other
// goroutine writes to a number the kernel has handed out again). easygo
// resolves the callbacks of a whole epoll_wait batch before running them,
// so a callback may still run once after its fd was closed within the same
// batch: handlers ignore events once their connection is closed (or, when
// one struct outlives several sockets, compare a generation number).
//
// # What lives elsewhere
//
// HTTP upgrades, RFC 6455 frame handling and the wsfleet protocol are the
// gateway's (server side) and the load tester's (client side); frame header
// coding is internal/wsframe; buffer pools are internal/bufpool.
package engine

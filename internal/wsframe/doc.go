// Package wsframe reads and writes RFC 6455 frame headers in byte slices, for
// event loops that parse input incrementally: a header that has not fully
// arrived is reported as "need more bytes", never as an error, and nothing
// blocks or allocates.
//
// Validation of a parsed header against the connection's state uses
// gobwas/ws (ws.CheckHeader); masking uses ws.Cipher. Sockets, message
// reassembly and UTF-8 checks live with the connection code that uses this
// package.
package wsframe

package gateway

import (
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// rdState is a data message being received (RFC 6455 §5.4, §6.2): it exists
// from a data frame whose payload has not fully arrived, or the first frame
// of a fragmented message, to the message's end. Payload bytes are unmasked,
// checked as UTF-8 and appended as they arrive, so a bad byte fails the
// connection at once and nothing waits for a whole frame. An idle
// connection has none.
type rdState struct {
	buf     *[]byte // the message so far (pooled); nil when discarding
	left    int64   // payload bytes of the current frame still to come
	maskOff int     // payload bytes of the current frame unmasked so far
	mask    [4]byte
	fin     bool // the current frame ends the message
	utf8    wsframe.UTF8Stream
}

var rdPool = sync.Pool{New: func() any { return new(rdState) }}

func (c *conn) releaseRd() {
	rd := c.rd
	if rd == nil {
		return
	}
	if rd.buf != nil {
		bufpool.Put(rd.buf)
	}
	*rd = rdState{}
	rdPool.Put(rd)
	c.rd = nil
}

// parsing reports whether frames are parsed now: not while a token is
// checked or the subscription confirmed (frames wait in c.in).
func (c *conn) parsing() bool { return c.State != stAuthing && c.State != stSubscribing }

// process parses what data holds and returns how many bytes it consumed;
// the rest (a partial request, header or control frame) waits for more.
// scanned is how much of data an earlier call already searched for the end
// of the upgrade request.
func (c *conn) process(data []byte, scanned int) int {
	off := 0
	for c.State == stHandshake {
		n := c.handshake(data[off:], max(scanned-off, 0))
		if n == 0 {
			return off // the request is not complete yet
		}
		off += n // answered and kept alive (a CORS preflight): the next request
	}
	if c.State >= stLinger || c.Kind == connSSE {
		return len(data) // a stream reads nothing after its request
	}
	for off < len(data) && c.parsing() {
		if rd := c.rd; rd != nil && rd.left > 0 {
			n := int(min(int64(len(data)-off), rd.left))
			c.payload(data[off : off+n])
			off += n
		} else {
			h, hn, err := wsframe.Parse(data[off:])
			if err != nil {
				c.fail(protocol.CloseProtocolError, err.Error())
				return len(data)
			}
			if hn == 0 {
				break // part of a header
			}
			if c.checkHeader(h) != 0 {
				return len(data)
			}
			total := hn + int(h.Length) // Length is bounded by checkHeader
			switch {
			case h.OpCode.IsControl():
				if len(data)-off < total {
					return off // control frames are small: wait for all of it
				}
				p := data[off+hn : off+total]
				ws.Cipher(p, h.Mask, 0)
				off += total
				c.control(h.OpCode, p)
			case c.rd == nil && h.Fin && len(data)-off >= total:
				// The common case, a whole one-frame message: in place.
				p := data[off+hn : off+total]
				ws.Cipher(p, h.Mask, 0)
				off += total
				c.wholeMessage(h.OpCode, p)
			default:
				off += hn
				c.startFrame(h)
			}
		}
		if c.State == stClosed || c.State == stLinger {
			return len(data)
		}
	}
	return off
}

// checkHeader validates a frame header against RFC 6455 §5 and the size
// limit before any of its payload is read. On failure it closes the
// connection and returns the close code.
func (c *conn) checkHeader(h ws.Header) protocol.CloseCode {
	st := ws.StateServerSide
	if c.rd != nil {
		st |= ws.StateFragmented // a message is open: only continuations or control frames
	}
	if err := ws.CheckHeader(h, st); err != nil {
		c.fail(protocol.CloseProtocolError, err.Error())
		return protocol.CloseProtocolError
	}
	if !h.OpCode.IsControl() {
		size := h.Length
		if c.rd != nil && c.rd.buf != nil {
			size += int64(len(*c.rd.buf))
		}
		limit := int64(c.l.s.opts.MaxMessageBytes)
		if c.State == stAuthWait {
			limit = min(limit, maxAuthMessage) // before authentication, only an auth frame
		}
		if size > limit {
			c.fail(protocol.CloseMessageTooBig, "message larger than the node accepts")
			return protocol.CloseMessageTooBig
		}
	}
	return 0
}

// maxAuthMessage bounds messages before authentication: an auth frame with
// a large token fits, a client that has not authenticated cannot make the
// node hold more.
const maxAuthMessage = 16 << 10

// rdChunk is the most a message buffer grows ahead of the bytes that
// arrived: the declared length is the client's word, not memory to hand out.
const rdChunk = 4 << 10

// control handles a complete control frame (RFC 6455 §5.5).
func (c *conn) control(op ws.OpCode, p []byte) {
	switch op {
	case ws.OpPing:
		if c.State < stClosing && c.allow() {
			c.writeFrame(ws.OpPong, p) // §5.5.3: the pong echoes the ping's payload
		}
	case ws.OpPong:
		// Liveness only; lastRead is already updated.
	case ws.OpClose:
		c.onCloseFrame(p)
	}
}

// wholeMessage handles a one-frame message whose payload is all here.
func (c *conn) wholeMessage(op ws.OpCode, p []byte) {
	switch {
	case c.State >= stClosing:
		// After our close frame, data is discarded (RFC 6455 §5.5.1).
	case op == ws.OpBinary:
		c.refuseBinary()
	case !utf8.Valid(p):
		c.fail(protocol.CloseInvalidPayload, "text message is not valid UTF-8")
	default:
		c.message(p)
	}
}

func (c *conn) refuseBinary() {
	c.fail(protocol.CloseUnsupportedData, "binary frames are not accepted: send JSON text frames")
}

// fail fails the WebSocket connection (RFC 6455 §7.1.7): the close frame
// goes out and nothing the client sends afterwards is parsed, since its
// framing can no longer be trusted.
func (c *conn) fail(code protocol.CloseCode, reason string) {
	c.closeWith(code, reason)
	if c.State == stClosing {
		c.State = stLinger
	}
	c.releaseRd()
}

// startFrame begins a data frame whose payload follows, in this read or
// later ones.
func (c *conn) startFrame(h ws.Header) {
	rd := c.rd
	if rd == nil {
		if h.OpCode == ws.OpBinary && c.State < stClosing {
			c.refuseBinary()
			return
		}
		rd = rdPool.Get().(*rdState)
		if c.State < stClosing {
			rd.buf = bufpool.Get(int(min(h.Length, rdChunk)))
		}
		c.rd = rd
	}
	rd.left, rd.maskOff, rd.mask, rd.fin = h.Length, 0, h.Mask, h.Fin
	if rd.left == 0 && rd.fin {
		c.endMessage()
	}
}

// payload takes the next bytes of the current data frame.
func (c *conn) payload(p []byte) {
	rd := c.rd
	ws.Cipher(p, rd.mask, rd.maskOff)
	rd.maskOff += len(p)
	rd.left -= int64(len(p))
	if rd.buf != nil && c.State >= stClosing {
		bufpool.Put(rd.buf) // closing meanwhile: the rest is discarded
		rd.buf = nil
	}
	if rd.buf != nil {
		if !rd.utf8.Write(p) {
			c.fail(protocol.CloseInvalidPayload, "text message is not valid UTF-8")
			return
		}
		rd.buf = bufpool.Grow(rd.buf, len(p))
		*rd.buf = append(*rd.buf, p...)
	}
	if rd.left == 0 && rd.fin {
		c.endMessage()
	}
}

// endMessage handles the message once its last frame is in.
func (c *conn) endMessage() {
	rd := c.rd
	if rd.buf == nil {
		c.releaseRd() // discarded
		return
	}
	if !rd.utf8.Complete() {
		c.fail(protocol.CloseInvalidPayload, "text message is not valid UTF-8") // it ends inside a rune
		return
	}
	m := rd.buf
	rd.buf = nil
	c.releaseRd()
	c.message(*m)
	bufpool.Put(m)
}

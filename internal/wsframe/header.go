package wsframe

import (
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// MaxHeaderSize is the longest frame header (RFC 6455 §5.2): 2 bytes, 8 of
// extended length and 4 of masking key.
const MaxHeaderSize = ws.MaxHeaderSize

// ErrLengthMSB is returned for a 64-bit payload length with its most
// significant bit set, which RFC 6455 §5.2 forbids.
var ErrLengthMSB = errors.New("frame header: the most significant bit of a 64-bit length must be 0")

// Need returns how many bytes the header starting at b[0] occupies, reading
// only its first two bytes; it returns 0 while fewer than two bytes are there.
func Need(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// Parse reads the frame header at the start of b (RFC 6455 §5.2). It returns
// the header and its size in bytes, or size 0 when b holds only part of a
// header. The payload length is taken as declared: callers check it against
// their limit before waiting for the payload.
func Parse(b []byte) (h ws.Header, n int, err error) {
	n = Need(b)
	if n == 0 || len(b) < n {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	i := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		i = 4
	case 127:
		if b[2]&0x80 != 0 {
			return h, 0, ErrLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:10]))
		i = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	return h, n, nil
}

// Size returns the size of the header of a frame with a payload of n bytes,
// masked or not.
func Size(n int, masked bool) int {
	s := 2
	switch {
	case n > 0xffff:
		s = 10
	case n > 125:
		s = 4
	}
	if masked {
		s += 4
	}
	return s
}

// Put writes h into b, which must hold Size(h.Length, h.Masked) bytes, and
// returns the number of bytes written.
func Put(b []byte, h ws.Header) int {
	b[0] = h.Rsv<<4 | byte(h.OpCode)
	if h.Fin {
		b[0] |= 0x80
	}
	var n int
	switch {
	case h.Length <= 125:
		b[1] = byte(h.Length)
		n = 2
	case h.Length <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:4], uint16(h.Length))
		n = 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:10], uint64(h.Length))
		n = 10
	}
	if h.Masked {
		b[1] |= 0x80
		n += copy(b[n:], h.Mask[:])
	}
	return n
}

// Append appends h to dst.
func Append(dst []byte, h ws.Header) []byte {
	var b [MaxHeaderSize]byte
	n := Put(b[:], h)
	return append(dst, b[:n]...)
}

// AppendFrame appends one final, unmasked frame of opcode op carrying p: the
// shape of every frame a server sends (RFC 6455 §5.1).
func AppendFrame(dst []byte, op ws.OpCode, p []byte) []byte {
	dst = Append(dst, ws.Header{Fin: true, OpCode: op, Length: int64(len(p))})
	return append(dst, p...)
}

// AppendClose appends a server close frame with a status code and a reason
// (RFC 6455 §5.5.1). The reason is cut to fit the 125-byte control payload,
// never in the middle of a UTF-8 sequence.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for len(reason) > 0 && reason[len(reason)-1]&0xc0 == 0x80 {
			reason = reason[:len(reason)-1]
		}
		if len(reason) > 0 && reason[len(reason)-1] >= 0xc0 {
			reason = reason[:len(reason)-1]
		}
	}
	dst = Append(dst, ws.Header{Fin: true, OpCode: ws.OpClose, Length: int64(2 + len(reason))})
	dst = append(dst, byte(code>>8), byte(code))
	return append(dst, reason...)
}

package wsframe

import (
	"unicode/utf8"

	"github.com/gobwas/ws/wsutil"
)

// UTF8Stream checks that a text message is valid UTF-8 (RFC 6455 §8.1) as
// its bytes arrive, across frames and reads, so an invalid byte fails the
// message at once rather than at its end. Runes split between chunks are
// carried over; an impossible prefix ("\xE0\x80", a surrogate's first two
// bytes) fails as soon as it is seen.
//
// The bulk of each chunk is checked with unicode/utf8; the few bytes at a
// chunk's edges go through gobwas/ws's byte-at-a-time decoder, which keeps
// the state of a rune in progress. The zero value is ready to use.
type UTF8Stream struct {
	dfa  wsutil.UTF8Reader
	edge edgeReader
}

// edgeReader feeds the decoder the bytes it is given, once.
type edgeReader struct{ b []byte }

func (e *edgeReader) Read(p []byte) (int, error) {
	n := copy(p, e.b)
	e.b = e.b[n:]
	return n, nil
}

// feed runs b (at most 4 bytes) through the decoder; false means invalid.
func (u *UTF8Stream) feed(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	var scratch [utf8.UTFMax]byte
	u.edge.b = b
	u.dfa.Source = &u.edge
	_, err := u.dfa.Read(scratch[:len(b)])
	return err == nil
}

// Write checks the next bytes of the message and reports whether they can
// still be part of valid UTF-8.
func (u *UTF8Stream) Write(p []byte) bool {
	// Finish a rune left open by the previous chunk, one byte at a time.
	for len(p) > 0 && !u.dfa.Valid() {
		if !u.feed(p[:1]) {
			return false
		}
		p = p[1:]
	}
	if len(p) == 0 {
		return true
	}
	// The last rune may be cut: leave it (at most 3 bytes) to the decoder.
	tail := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax+1; i-- {
		if !utf8.RuneStart(p[i]) {
			continue
		}
		if !utf8.FullRune(p[i:]) {
			tail = i
		}
		break
	}
	return utf8.Valid(p[:tail]) && u.feed(p[tail:])
}

// Complete reports whether the bytes written so far end on a rune boundary:
// a message whose last rune is cut is invalid.
func (u *UTF8Stream) Complete() bool { return u.dfa.Valid() }

// Reset prepares u for a new message.
func (u *UTF8Stream) Reset() { *u = UTF8Stream{} }

package gateway

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// streamConn is an open connection on a socketpair, driven directly.
type streamConn struct {
	c    *conn
	peer int // the client's end, non-blocking
}

func newStreamConn(t testing.TB, l *loop, st connState) *streamConn {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	c := testConn(l, fds[0], st)
	t.Cleanup(func() {
		if c.State != stClosed {
			c.finalClose()
		}
	})
	return &streamConn{c: c, peer: fds[1]}
}

// output is everything the connection wrote so far (writes are synchronous
// and small, so it is all in the socket by now).
func (s *streamConn) output() []byte {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(s.peer, buf)
		if n <= 0 || err != nil {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// run feeds input in chunks cut at the given points and returns what the
// connection wrote and the state it ended in.
func run(t testing.TB, l *loop, input []byte, cuts ...int) ([]byte, connState) {
	s := newStreamConn(t, l, stOpen)
	data := append([]byte(nil), input...) // parsing unmasks in place
	prev := 0
	for _, cut := range append(cuts, len(data)) {
		cut = min(max(cut, prev), len(data))
		if s.c.State == stClosed {
			break
		}
		s.c.input(data[prev:cut])
		prev = cut
	}
	return s.output(), s.c.State
}

// FuzzFrameStream feeds arbitrary client bytes to an open connection, whole
// and split at two arbitrary points, and checks that the gateway answers
// the same either way: the incremental parser neither depends on how bytes
// arrive nor panics on any input.
func FuzzFrameStream(f *testing.F) {
	seeds := [][]byte{
		masked(`{"type":"ping"}`),
		append(masked(`{"type":"pong"}`), masked(`{"type":"publish","data":[1]}`)...),
		{0x89, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1}, // ping "hello"
		{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8},                                  // close 1000
		{0x88, 0x81, 0, 0, 0, 0, 0x03},                                        // close with 1 byte
		{0x01, 0x83, 0, 0, 0, 0, '{', '"', 't', 0x80, 0x80, 0, 0, 0, 0, 0xce}, // fragmented, continuation
		{0x81, 0x02, 'h', 'i'},                                                // unmasked
		{0xc1, 0x80, 0, 0, 0, 0},                                              // rsv1
		{0x82, 0x80, 0, 0, 0, 0},                                              // binary
		{0x81, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4},                      // 64 KiB + declared
		{0x81, 0x84, 0, 0, 0, 0, 0xed, 0xa0, 0x80, 'x'},                       // surrogate
	}
	for _, s := range seeds {
		f.Add(s, uint16(3), uint16(7))
	}
	_, l := benchServer(f)
	f.Fuzz(func(t *testing.T, input []byte, cut1, cut2 uint16) {
		if len(input) > 1<<16 {
			return
		}
		whole, st1 := run(t, l, input)
		a, b := int(cut1)%(len(input)+1), int(cut2)%(len(input)+1)
		if a > b {
			a, b = b, a
		}
		split, st2 := run(t, l, input, a, b)
		if st1 != st2 || !bytes.Equal(whole, split) {
			t.Fatalf("input %x\nwhole: state %d, wrote %x\nsplit at %d,%d: state %d, wrote %x", input, st1, whole, a, b, st2, split)
		}
	})
}

// runHandshake feeds bytes to a connection that has just been accepted,
// in chunks cut at the given points.
func runHandshake(t testing.TB, l *loop, input []byte, cuts ...int) ([]byte, connState) {
	s := newStreamConn(t, l, stHandshake)
	data := append([]byte(nil), input...)
	prev := 0
	for _, cut := range append(cuts, len(data)) {
		cut = min(max(cut, prev), len(data))
		if s.c.State == stClosed {
			break
		}
		s.c.input(data[prev:cut])
		prev = cut
	}
	return s.output(), s.c.State
}

// FuzzHandshake feeds arbitrary bytes as an upgrade request, whole and split
// at two points: the answer (101 or an HTTP error, then whatever frames
// follow) and the state reached do not depend on how the bytes arrive, and
// nothing panics.
func FuzzHandshake(f *testing.F) {
	const good = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, s := range []string{
		good + "\r\n",
		good + "Authorization: Bearer abc.def.ghi\r\n\r\n",
		good + "Origin: https://x.test\r\nSec-WebSocket-Protocol: wsfleet.v1, other\r\n\r\n",
		good + "\r\n" + string(masked(`{"type":"ping"}`)),
		strings.Replace(good, "GET /ws", "GET /ws?token=abc", 1) + "\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws HTTP/1.0\r\n\r\n",
		"\r\n\r\n",
		good + "X: " + strings.Repeat("a", 9000) + "\r\n\r\n",
		good + "Bad header line\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(5), uint16(40))
	}
	_, l := benchServer(f)
	f.Fuzz(func(t *testing.T, input []byte, cut1, cut2 uint16) {
		if len(input) > 1<<15 {
			return
		}
		whole, st1 := runHandshake(t, l, input)
		a, b := int(cut1)%(len(input)+1), int(cut2)%(len(input)+1)
		if a > b {
			a, b = b, a
		}
		split, st2 := runHandshake(t, l, input, a, b)
		if st1 != st2 || !bytes.Equal(whole, split) {
			t.Fatalf("input %q\nwhole: state %d, wrote %q\nsplit at %d,%d: state %d, wrote %q", input, st1, whole, a, b, st2, split)
		}
	})
}

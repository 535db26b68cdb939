package engine

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
)

// socketPair returns a connected non-blocking stream pair with small
// buffers, so a few writes fill it: c's side and the peer's fd.
func socketPair(t *testing.T) (*node, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	_ = unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	c := &node{}
	c.Init(fds[0])
	t.Cleanup(func() {
		if !c.Closed() {
			c.Mu.Lock()
			c.releaseOutLocked()
			c.Mu.Unlock()
			unix.Close(c.FD())
		}
		unix.Close(fds[1])
	})
	return c, fds[1]
}

// drain reads everything the peer has, up to EAGAIN or EOF.
func drain(t *testing.T, fd int) (got []byte, eof bool) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			got = append(got, buf[:n]...)
			continue
		}
		if err == unix.EAGAIN {
			return got, false
		}
		if n == 0 && err == nil {
			return got, true
		}
		t.Fatalf("read: %v", err)
	}
}

func TestWriteQueueFlushAndBound(t *testing.T) {
	c, peer := socketPair(t)
	frame := bytes.Repeat([]byte("x"), 1000)
	var sent []byte
	const limit = 8000
	c.Mu.Lock()
	results := map[Result]int{}
	for i := 0; ; i++ {
		r, _ := c.WriteLocked(frame, limit)
		results[r]++
		if r == Overflow {
			break
		}
		if !r.OK() {
			t.Fatalf("write %d: %v", i, r)
		}
		sent = append(sent, frame...)
		if i > 10000 {
			t.Fatal("the socket never refused bytes")
		}
	}
	if results[QueueStarted] != 1 || results[Written] == 0 || results[Queued] == 0 {
		t.Fatalf("results %v: want writes, one queue start, queued writes, then overflow", results)
	}
	if q := c.QueuedLocked(); q == 0 || q > limit {
		t.Fatalf("queued %d, want 1..%d", q, limit)
	}
	c.SetProgressLocked(7)
	if prog, behind := c.ProgressLocked(); !behind || prog != 7 {
		t.Fatalf("progress %d %v", prog, behind)
	}
	c.Mu.Unlock()

	var got []byte
	for i := 0; ; i++ {
		b, _ := drain(t, peer)
		got = append(got, b...)
		c.Mu.Lock()
		r, _ := c.FlushLocked(make([]unix.Iovec, 0, maxIovecs), 9)
		c.Mu.Unlock()
		if r == Drained {
			break
		}
		if r != Pending || i > 10000 {
			t.Fatalf("flush: %v", r)
		}
	}
	b, _ := drain(t, peer)
	got = append(got, b...)
	if !bytes.Equal(got, sent) {
		t.Fatalf("peer got %d bytes, want the %d written, in order", len(got), len(sent))
	}
	c.Mu.Lock()
	defer c.Mu.Unlock()
	if c.BehindLocked() {
		t.Fatal("queue kept after it drained")
	}
}

func TestSharedFrameIsQueuedByReference(t *testing.T) {
	c, peer := socketPair(t)
	fill := bytes.Repeat([]byte("f"), 512)
	c.Mu.Lock()
	for {
		if r, _ := c.PutLocked(fill); r != Written {
			break
		}
	}
	sh := bufpool.GetShared(64)
	sh.B = append(sh.B, "shared frame"...)
	if r, n := c.WriteSharedLocked(sh, 1<<20); r != Queued || n != 0 {
		t.Fatalf("WriteSharedLocked behind a queue: %v %d, want Queued 0", r, n)
	}
	sh.Release() // the queue holds the other reference
	if c.out.items[len(c.out.items)-1] != sh {
		t.Fatal("the shared frame was copied into the queue")
	}
	c.Mu.Unlock()
	var got []byte
	for {
		b, _ := drain(t, peer)
		got = append(got, b...)
		c.Mu.Lock()
		r, _ := c.FlushLocked(make([]unix.Iovec, 0, maxIovecs), 0)
		c.Mu.Unlock()
		if r == Drained {
			break
		}
	}
	b, _ := drain(t, peer)
	got = append(got, b...)
	if !bytes.HasSuffix(got, []byte("shared frame")) {
		t.Fatal("the shared frame did not reach the peer last")
	}
}

func TestTrimKeepsThePartlyWrittenFrame(t *testing.T) {
	c, peer := socketPair(t)
	big := bytes.Repeat([]byte("b"), 1<<20) // more than the socket takes at once
	c.Mu.Lock()
	if r, n := c.PutLocked(big); r != QueueStarted || n == 0 || n == len(big) {
		t.Fatalf("PutLocked: %v %d", r, n)
	}
	c.PutLocked([]byte("later"))
	dropped := c.TrimLocked()
	if dropped != len("later") || !c.BehindLocked() || len(c.out.items) != 1 {
		t.Fatalf("trim dropped %d, kept %d items", dropped, len(c.out.items))
	}
	c.CloseWriteLocked()
	if r, _ := c.WriteLocked([]byte("x"), 1<<30); r != Done {
		t.Fatalf("write after CloseWriteLocked: %v, want Done", r)
	}
	c.Mu.Unlock()
	var got []byte
	for {
		b, eof := drain(t, peer)
		got = append(got, b...)
		if eof {
			break
		}
		c.Mu.Lock()
		c.FlushLocked(make([]unix.Iovec, 0, maxIovecs), 0)
		c.Mu.Unlock()
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("peer got %d bytes then EOF, want the whole frame (%d) then EOF", len(got), len(big))
	}
}

type reader struct {
	got   []byte
	calls int
	stop  bool
}

func (r *reader) OnData(p []byte) bool {
	r.got = append(r.got, p...)
	r.calls++
	return !r.stop
}

func TestReadBudgetDrainAndEOF(t *testing.T) {
	c, peer := socketPair(t)
	buf := make([]byte, 16)
	unix.Write(peer, bytes.Repeat([]byte("r"), 100))
	var r reader
	if res, _ := c.Read(buf, 3, false, &r); res != ReadBudget || len(r.got) != 48 {
		t.Fatalf("budget 3: %v after %d bytes, want ReadBudget after 48", res, len(r.got))
	}
	if res, _ := c.Read(buf, 100, false, &r); res != ReadDrained || len(r.got) != 100 {
		t.Fatalf("%v after %d bytes, want ReadDrained after 100", res, len(r.got))
	}
	unix.Write(peer, []byte("abc"))
	r.stop = true
	if res, _ := c.Read(buf, 100, false, &r); res != ReadStopped {
		t.Fatalf("%v, want ReadStopped", res)
	}
	unix.Shutdown(peer, unix.SHUT_WR)
	r.stop = false
	if res, _ := c.Read(buf, 100, true, &r); res != ReadEOF {
		t.Fatalf("%v, want ReadEOF", res)
	}
}

func TestCloseRefusesLaterWrites(t *testing.T) {
	c, _ := socketPair(t)
	l, err := New(Config[int]{OnTask: func(*int) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Add(c.FD(), EventRead|EventEdge, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	c.Close(l)
	if !c.Closed() {
		t.Fatal("not closed")
	}
	c.Mu.Lock()
	r, _ := c.WriteLocked([]byte("x"), 100)
	c.Mu.Unlock()
	if r != Done {
		t.Fatalf("write after Close: %v, want Done", r)
	}
	c.Close(l) // twice is harmless
}

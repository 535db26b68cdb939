package gateway

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/israce"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

const benchSecret = "bench-secret-0123456789abcdef-0123456789"

// benchServer is a Server with its metrics, registry and one loop, not
// started: enough to drive the delivery and parsing paths directly.
func benchServer(tb testing.TB) (*Server, *loop) {
	tb.Helper()
	return benchServerBuf(tb, 0)
}

// benchServerBuf is benchServer with a loop read buffer of rbuf bytes
// (0: the default).
func benchServerBuf(tb testing.TB, rbuf int) (*Server, *loop) {
	tb.Helper()
	s, err := New(Options{NATSURL: "nats://127.0.0.1:4222", JWT: jwtverify.Config{HS256Secret: benchSecret}, Logger: zap.NewNop(), Pollers: 1, Dispatchers: 1, MaxClientMsgsPerSec: -1})
	if err != nil {
		tb.Fatal(err)
	}
	s.disp = newDispatcher(s)
	s.subs = newSubManager(s)
	s.reg = newRegistry(s)
	s.pres = newPresence(s)                                   // not started: changes stay pending
	s.pub = newPublisher(s)                                   // not started: publishes stay queued
	s.auth = &authPool{s: s, jobs: make(chan authJob, 1<<16)} // no workers: tokens stay queued
	l, err := newLoop(s, 0)
	if err != nil {
		tb.Fatal(err)
	}
	// The loop runs tasks but never ticks: tests drive its connections
	// from their own goroutine, and the wheel is the loop's.
	l.p.Close()
	if l.p, err = engine.New(engine.Config[task]{OnTask: l.onTask, ReadBufSize: rbuf}); err != nil {
		tb.Fatal(err)
	}
	s.loops = []*loop{l}
	tb.Cleanup(func() { l.p.Close() })
	return s, l
}

// pairConn returns an open, welcomed connection on a socketpair whose other
// end is drained by a goroutine, so writes never block.
func pairConn(tb testing.TB, s *Server, l *loop, user string) *conn {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	peer := os.NewFile(uintptr(fds[1]), "peer")
	go func() {
		buf := make([]byte, 256<<10)
		for {
			if _, err := peer.Read(buf); err != nil {
				return
			}
		}
	}()
	c := testConn(l, fds[0], stOpen)
	tok, _ := protocol.EncodeUserToken(user)
	c.user, _, _ = s.reg.add(c, user, tok)
	tb.Cleanup(func() { unix.Close(fds[0]); peer.Close() })
	return c
}

// testConn is a connection of l on fd in state st, welcomed when open,
// not in the loop's list.
func testConn(l *loop, fd int, st connState) *conn {
	c := &conn{l: l, idx: -1}
	c.Init(fd)
	c.State = st
	if st == stOpen {
		c.LockedFlags |= lfWelcomed
	}
	return c
}

func deliveryMsg(s *Server, user string, size int) *nats.Msg {
	tok, _ := protocol.EncodeUserToken(user)
	payload := `{"text":"` + strings.Repeat("x", max(size-11, 0)) + `"}`
	return &nats.Msg{Subject: s.subjects.User(tok), Data: []byte(payload), Header: nats.Header{protocol.HeaderMsgID: {"msg-1"}}}
}

// BenchmarkDeliver is the per-user delivery path: look up the user, build
// the frame once, write it to each device.
func BenchmarkDeliver(b *testing.B) {
	for _, devices := range []int{1, 3} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("devices=%d/payload=%dB", devices, size), func(b *testing.B) {
				s, l := benchServer(b)
				for i := 0; i < devices; i++ {
					pairConn(b, s, l, "alice")
				}
				m := deliveryMsg(s, "alice", size)
				b.ReportAllocs()
				b.SetBytes(int64(len(m.Data)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.deliver(m, &s.disp.stats[0])
				}
			})
		}
	}
}

func TestAllocsDeliver(t *testing.T) {
	if israce.Enabled {
		t.Skip("sync.Pool drops items at random under -race; counted without it")
	}
	s, l := benchServer(t)
	for i := 0; i < 3; i++ {
		pairConn(t, s, l, "alice")
	}
	m := deliveryMsg(s, "alice", 200)
	s.deliver(m, &s.disp.stats[0])
	if a := testing.AllocsPerRun(1000, func() { s.deliver(m, &s.disp.stats[0]) }); a != 0 {
		t.Fatalf("delivery allocates %.2f times per message", a)
	}
}

// BenchmarkEncodeDelivery is frame writing: header + JSON around the payload.
func BenchmarkEncodeDelivery(b *testing.B) {
	s, _ := benchServer(b)
	for _, size := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprintf("payload=%dB", size), func(b *testing.B) {
			m := deliveryMsg(s, "alice", size)
			b.ReportAllocs()
			b.SetBytes(int64(len(m.Data)))
			for i := 0; i < b.N; i++ {
				encodeDelivery(m).Release()
			}
		})
	}
}

// BenchmarkBroadcastFanout is the per-connection cost of one broadcast on a
// loop: the frame is shared, each connection gets one write.
func BenchmarkBroadcastFanout(b *testing.B) {
	s, l := benchServer(b)
	const conns = 1000
	for i := 0; i < conns; i++ {
		c := pairConn(b, s, l, fmt.Sprintf("u%d", i))
		c.idx = int32(len(l.conns))
		l.conns = append(l.conns, c)
	}
	sh := encodeDelivery(deliveryMsg(s, "x", 100))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := task{kind: taskBroadcast, sh: sh}
		for l.broadcast(&t) { // every step, as the loop's wake-ups would
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conns), "ns/conn")
	sh.Release()
}

// BenchmarkTopicFanout is BenchmarkBroadcastFanout for a topic every one
// of the loop's 1,000 connections holds: the same frame written to each,
// through the topic's member list (the membership check per member
// besides): the goal is the broadcast's cost.
func BenchmarkTopicFanout(b *testing.B) {
	s, l := benchServer(b)
	s.topics = newTopicHub(s)
	const conns = 1000
	for i := 0; i < conns; i++ {
		c := pairConn(b, s, l, fmt.Sprintf("u%d", i))
		c.idx = int32(len(l.conns))
		l.conns = append(l.conns, c)
		l.ctp = append(l.ctp, nil)
	}
	t := s.topics.join("room.1", 0)
	t.confirmed.Store(s.natsEpoch.Load() + 1) // as if NATS confirmed it
	for _, c := range l.conns {
		l.addTopic(c, "room.1", false, nil)
	}
	s.topics.leave(t) // the members hold it now
	if n := t.loops[0].members.Load(); n != conns {
		b.Fatalf("%d members", n)
	}
	sh := encodeTopicDelivery("room.1", deliveryMsg(s, "x", 100))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk := task{kind: taskTopic, sh: sh, t: t}
		for l.topicStep(&tk) {
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conns), "ns/conn")
	sh.Release()
}

// BenchmarkParseFrames is inbound frame parsing on an open connection: 100
// masked pong frames per buffer, as they come off the socket.
func BenchmarkParseFrames(b *testing.B) {
	s, l := benchServer(b)
	c := testConn(l, -1, stOpen)
	_ = s
	var tmpl []byte
	for i := 0; i < 100; i++ {
		p := []byte(`{"type":"pong"}`)
		h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{7, 7, 7, 7}}
		ws.Cipher(p, h.Mask, 0)
		tmpl = append(wsframe.Append(tmpl, h), p...)
	}
	buf := make([]byte, len(tmpl))
	b.ReportAllocs()
	b.SetBytes(int64(len(tmpl)))
	for i := 0; i < b.N; i++ {
		copy(buf, tmpl)
		if n := c.process(buf, 0); n != len(buf) {
			b.Fatalf("consumed %d of %d", n, len(buf))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/frame")
}

func TestAllocsParseFrames(t *testing.T) {
	if israce.Enabled {
		t.Skip("counted without -race")
	}
	_, l := benchServer(t)
	c := testConn(l, -1, stOpen)
	p := []byte(`{"type":"pong"}`)
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{7, 7, 7, 7}}
	tmpl := append(wsframe.Append(nil, h), p...)
	ws.Cipher(tmpl[len(tmpl)-len(p):], h.Mask, 0)
	buf := make([]byte, len(tmpl))
	if a := testing.AllocsPerRun(1000, func() { copy(buf, tmpl); c.process(buf, 0) }); a != 0 {
		t.Fatalf("parsing a frame allocates %.2f times", a)
	}
}

// BenchmarkVerify is JWT verification per algorithm, as an auth worker does it.
func BenchmarkVerify(b *testing.B) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	set := jwk.NewSet()
	privs := map[string]jwk.Key{}
	for alg, raw := range map[string]any{"RS256": rsaKey, "ES256": ecKey, "EdDSA": edKey} {
		k, _ := jwk.FromRaw(raw)
		k.Set(jwk.KeyIDKey, alg)
		privs[alg] = k
		pub, _ := k.PublicKey()
		set.AddKey(pub)
	}
	js, _ := json.Marshal(set)
	file := filepath.Join(b.TempDir(), "jwks.json")
	os.WriteFile(file, js, 0o600)
	o := Options{JWT: jwtverify.Config{HS256Secret: benchSecret, JWKSFile: file}}
	o.SetDefaults()
	v, err := newVerifier(&o, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer v.close()
	for _, alg := range []string{"HS256", "RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			var key any = []byte(benchSecret)
			if alg != "HS256" {
				key = privs[alg]
			}
			tok, err := jwtmint.Mint(alg, key, jwtmint.Claims{Subject: "user-1", TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.verify(tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := v.verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// startJSNATS starts a nats-server with JetStream (memory and files in a
// test directory).
func startJSNATS(t testing.TB) *natsembed.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	testNATS.Store(ns.ClientURL(), ns)
	t.Cleanup(func() { testNATS.Delete(ns.ClientURL()); ns.Close() })
	return ns
}

// resumeGateway starts a node with --resume on ns (memory storage: fast).
func resumeGateway(t testing.TB, natsURL string, mod func(*gateway.Options)) *gateway.Server {
	t.Helper()
	return startGateway(t, func(o *gateway.Options) {
		o.NATSURL = natsURL
		o.Resume = true
		o.History.Storage = "memory"
		o.History.MaxBytes = 64 << 20
		if mod != nil {
			mod(o)
		}
	})
}

// resumeConnect authenticates with "since" (none when since is "") and
// returns the connection and its welcome.
func resumeConnect(t testing.TB, srv *gateway.Server, sub, since string) (*wstest.Conn, map[string]any) {
	t.Helper()
	ws := dial(t, wsURL(srv), nil)
	f := map[string]any{"type": "auth", "token": token(t, sub)}
	if since != "" {
		f["since"] = since
	}
	send(t, ws, f)
	return ws, readType(t, ws, protocol.TypeWelcome)
}

// delivery is a message frame's id (a stream sequence) and data.
type delivery struct {
	seq  uint64
	data string
}

// readDeliveries reads n message frames.
func readDeliveries(t testing.TB, ws *wstest.Conn, n int) []delivery {
	t.Helper()
	var out []delivery
	for len(out) < n {
		m := readType(t, ws, protocol.TypeMessage)
		id, _ := m["id"].(string)
		seq, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			t.Fatalf("message id %q is not a sequence: %v", id, m)
		}
		out = append(out, delivery{seq: seq, data: fmt.Sprint(m["data"])})
	}
	return out
}

// expectQuiet checks that no message frame arrives for a while (pings are
// skipped).
func expectQuiet(t testing.TB, ws *wstest.Conn, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ws.SetReadDeadline(deadline)
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			t.Fatalf("read: %v", err)
		}
		if !strings.Contains(string(b), `"type":"ping"`) {
			t.Fatalf("unexpected frame %s", b)
		}
	}
}

func seqOf(t testing.TB, v any) uint64 {
	t.Helper()
	s, _ := v.(string)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%v is not a position", v)
	}
	return n
}

// jsPublish publishes to a subject captured by the history stream and
// returns the stream sequence from the ack.
func jsPublish(t testing.TB, js jetstream.JetStream, subj, data string) uint64 {
	t.Helper()
	ack, err := js.Publish(context.Background(), subj, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func newJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestResumeSinceGetsWhatWasMissed(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	js := newJS(t, nc)

	ws, w := resumeConnect(t, srv, "alice", "")
	if _, ok := w["recovered"]; ok {
		t.Fatalf("welcome without since has recovered: %v", w)
	}
	pos := seqOf(t, w["position"])
	s1 := jsPublish(t, js, userSubject(t, "alice"), `{"n":1}`)
	if s1 <= pos {
		t.Fatalf("sequence %d not after position %d", s1, pos)
	}
	got := readDeliveries(t, ws, 1)
	if got[0].seq != s1 {
		t.Fatalf("live delivery id %d, want %d", got[0].seq, s1)
	}
	ws.Close()

	// Offline: user messages (a plain NATS publish is stored too), a
	// broadcast, and another user's message that must not arrive.
	var want []uint64
	for i := 2; i <= 6; i++ {
		want = append(want, jsPublish(t, js, userSubject(t, "alice"), fmt.Sprintf(`{"n":%d}`, i)))
		if i == 4 {
			want = append(want, jsPublish(t, js, "wsfleet.broadcast", `{"b":1}`))
			jsPublish(t, js, userSubject(t, "bob"), `{"bob":1}`)
		}
	}
	if err := nc.Publish(userSubject(t, "alice"), []byte(`{"n":"plain"}`)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	checkFor(t, 5*time.Second, func() error {
		st, err := js.Stream(context.Background(), history.StreamName("wsfleet"))
		if err != nil {
			return err
		}
		if n := st.CachedInfo().State.LastSeq; n < want[len(want)-1]+1 {
			return fmt.Errorf("last seq %d", n)
		}
		want = append(want, st.CachedInfo().State.LastSeq)
		return nil
	})

	ws2, w2 := resumeConnect(t, srv, "alice", strconv.FormatUint(s1, 10))
	if w2["recovered"] != true || seqOf(t, w2["position"]) != s1 {
		t.Fatalf("welcome %v, want recovered from %d", w2, s1)
	}
	got = readDeliveries(t, ws2, len(want))
	for i, d := range got {
		if d.seq != want[i] {
			t.Fatalf("replayed ids %v, want %v", got, want)
		}
	}
	// Then live, with no duplicate of what was replayed.
	s := jsPublish(t, js, userSubject(t, "alice"), `{"n":"live"}`)
	if d := readDeliveries(t, ws2, 1)[0]; d.seq != s {
		t.Fatalf("after the replay got %d, want %d", d.seq, s)
	}
	expectQuiet(t, ws2, 300*time.Millisecond)
	// The first connection's position was before s1: it gets s1 too.
	ws3, w3 := resumeConnect(t, srv, "alice", strconv.FormatUint(pos, 10))
	if w3["recovered"] != true {
		t.Fatalf("welcome %v", w3)
	}
	if d := readDeliveries(t, ws3, 1)[0]; d.seq != s1 {
		t.Fatalf("from the first position got %d first, want %d", d.seq, s1)
	}
}

// TestResumeSinceNothingMissed: the stream moved on after "since" with
// other users' messages only (the replay finds nothing for the connection
// without reading the stream): recovered, nothing replayed, then live.
func TestResumeSinceNothingMissed(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	since := jsPublish(t, js, userSubject(t, "alice"), `{"n":1}`)
	for i := 0; i < 3; i++ {
		jsPublish(t, js, userSubject(t, "bob"), `{"bob":1}`)
	}
	ws, w := resumeConnect(t, srv, "alice", strconv.FormatUint(since, 10))
	if w["recovered"] != true || seqOf(t, w["position"]) != since {
		t.Fatalf("welcome %v, want recovered at position %d (since)", w, since)
	}
	// Nothing replayed: the first message is the next live one.
	s := jsPublish(t, js, userSubject(t, "alice"), `{"n":2}`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != s {
		t.Fatalf("first delivery id %d, want the live %d", d.seq, s)
	}
	expectQuiet(t, ws, 200*time.Millisecond)
}

func TestResumeSinceBeyondHistory(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { o.History.MaxPerUser = 3 })
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	first := jsPublish(t, js, userSubject(t, "alice"), `1`)
	var last uint64
	for i := 0; i < 5; i++ {
		last = jsPublish(t, js, userSubject(t, "alice"), `2`)
	}
	cases := []struct {
		name  string
		since func() uint64 // from the newest id so far
		want  bool
	}{
		{"trimmed by the per-user limit", func() uint64 { return first }, false},
		{"an id the stream never gave", func() uint64 { return last + 100 }, false},
		{"the newest", func() uint64 { return last }, true},
		{"within what is kept", func() uint64 { return last - 2 }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			since := tc.since()
			ws, w := resumeConnect(t, srv, "alice", strconv.FormatUint(since, 10))
			if w["recovered"] != tc.want {
				t.Fatalf("welcome %v, want recovered %v", w, tc.want)
			}
			if !tc.want {
				if p := seqOf(t, w["position"]); p != last {
					t.Fatalf("position %d, want the newest %d", p, last)
				}
			} else if n := int(last - since); n > 0 {
				if got := readDeliveries(t, ws, n); got[n-1].seq != last {
					t.Fatalf("replayed %v, want up to %d", got, last)
				}
			}
			s := jsPublish(t, js, userSubject(t, "alice"), `"live"`)
			if d := readDeliveries(t, ws, 1)[0]; d.seq != s {
				t.Fatalf("then live: got %d, want %d", d.seq, s)
			}
			last = s
		})
	}
}

func TestResumeSinceSources(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { o.AllowQueryToken = true })
	js := newJS(t, natsConn(t, srv))
	a := jsPublish(t, js, userSubject(t, "carol"), `1`)
	b := jsPublish(t, js, userSubject(t, "carol"), `2`)
	since := strconv.FormatUint(a, 10)
	cases := []struct {
		name string
		dial func(t *testing.T) *wstest.Conn
	}{
		{"query token and ?since=", func(t *testing.T) *wstest.Conn {
			return dial(t, wsURL(srv)+"?token="+url.QueryEscape(token(t, "carol"))+"&since="+since, nil)
		}},
		{"Authorization and Wsfleet-Since", func(t *testing.T) *wstest.Conn {
			return dial(t, wsURL(srv), http.Header{"Authorization": {"Bearer " + token(t, "carol")}, gateway.SinceHeader: {since}})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws := tc.dial(t)
			w := readType(t, ws, protocol.TypeWelcome)
			if w["recovered"] != true {
				t.Fatalf("welcome %v", w)
			}
			if d := readDeliveries(t, ws, 1)[0]; d.seq != b {
				t.Fatalf("got %d, want %d", d.seq, b)
			}
		})
	}
	t.Run("bad since in the query", func(t *testing.T) {
		resp, err := http.Get("http://" + srv.Addr().String() + "/ws?since=12a")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// gobwas answers a plain GET with 400 before the query is read:
		// the WebSocket dial below checks the code.
		_ = body
		_, r, err := wstest.DefaultDialer.Dial(wsURL(srv)+"?since=12a", nil)
		if err == nil || r == nil || r.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial with since=12a: %v %v", r, err)
		}
	})
	t.Run("bad since in the auth frame", func(t *testing.T) {
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "carol"), "since": "-1"})
		expectClose(t, ws, protocol.CloseBadRequest, "since")
	})
}

func TestResumeRefusesWithoutJetStream(t *testing.T) {
	o := testOptions(t) // a NATS server without JetStream
	o.Resume = true
	srv, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if !errors.Is(err, history.ErrNoJetStream) {
		t.Fatalf("Start: %v, want ErrNoJetStream", err)
	}
}

func TestResumeRefusesIncompatibleStream(t *testing.T) {
	ns := startJSNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	other := history.Config{Prefix: "wsfleet", TTL: time.Hour, Storage: "memory", MaxBytes: 64 << 20}
	other.SetDefaults()
	if _, err := history.Ensure(context.Background(), nc, other); err != nil {
		t.Fatal(err)
	}
	o := testOptions(t)
	o.NATSURL = ns.ClientURL()
	o.Resume = true
	o.History.Storage = "memory"
	o.History.MaxBytes = 64 << 20
	srv, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if !errors.Is(err, history.ErrIncompatible) || !strings.Contains(err.Error(), "max_age 1h0m0s, --history-ttl says 24h0m0s") {
		t.Fatalf("Start: %v", err)
	}
}

// cutProxy forwards TCP to a NATS server until cut, which closes every
// connection and refuses new ones until restore.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut_   bool
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut_ {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(c, u); c.Close() }()
			go func() { io.Copy(u, c); u.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut_ = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// cutNATS cuts the node's NATS link and waits until the node says so.
func (p *cutProxy) cutNATS(t testing.TB, srv *gateway.Server) {
	t.Helper()
	p.cut()
	checkFor(t, 5*time.Second, func() error {
		if metricValue(t, srv, "wsfleet_gateway_nats_connected") != 0 {
			return errors.New("still connected")
		}
		return nil
	})
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.cut_ = false
	p.mu.Unlock()
}

// The node's NATS link is down while messages are published: once it is
// back, its clients get what they missed, in order, then live messages,
// with no duplicate.
func TestResumeNATSLinkDropped(t *testing.T) {
	ns := startJSNATS(t)
	proxy := newCutProxy(t, ns.Addr().String())
	srv := resumeGateway(t, proxy.url(), func(o *gateway.Options) { o.NATSOutageGrace = time.Minute })
	pub, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	js := newJS(t, pub)
	ws, _ := resumeConnect(t, srv, "dave", "")
	before := jsPublish(t, js, userSubject(t, "dave"), `"before"`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != before {
		t.Fatalf("got %d, want %d", d.seq, before)
	}
	proxy.cutNATS(t, srv)
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, jsPublish(t, js, userSubject(t, "dave"), strconv.Itoa(i)))
	}
	want = append(want, jsPublish(t, js, "wsfleet.broadcast", `"all"`))
	proxy.restore()
	got := readDeliveries(t, ws, len(want))
	for i := range got {
		if got[i].seq != want[i] {
			t.Fatalf("after the outage got %v, want %v", got, want)
		}
	}
	live := jsPublish(t, js, userSubject(t, "dave"), `"after"`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != live {
		t.Fatalf("got %d, want %d", d.seq, live)
	}
	expectQuiet(t, ws, 300*time.Millisecond)
}

// Under a flood larger than the loop queues take, the node drops live
// messages (counted) and every connection fetches them from the stream:
// each client still receives every broadcast and every message of its
// user, exactly once, each chain in order.
func TestResumeFloodNoGapNoDuplicate(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) {
		o.Pollers = 1
		o.LoopQueueBytes = 64 << 10
		o.MaxConcurrentReplays = 4
		o.History.MaxPerUser = 100000
	})
	js := newJS(t, natsConn(t, srv))
	const users, rounds = 8, 150
	type client struct {
		ws   *wstest.Conn
		pos  uint64
		user string
	}
	var clients []client
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("flood%d", i)
		ws, w := resumeConnect(t, srv, u, "")
		clients = append(clients, client{ws: ws, pos: seqOf(t, w["position"]), user: u})
	}
	want := map[string][]uint64{} // user → ids owed, in order
	var bcasts []uint64
	payload := `"` + strings.Repeat("x", 2000) + `"`
	var acks []jetstream.PubAckFuture
	var subjects []string
	for r := 0; r < rounds; r++ {
		for i := 0; i < users; i++ {
			subj := userSubject(t, fmt.Sprintf("flood%d", i))
			f, err := js.PublishAsync(subj, []byte(payload))
			if err != nil {
				t.Fatal(err)
			}
			acks, subjects = append(acks, f), append(subjects, subj)
		}
		f, err := js.PublishAsync("wsfleet.broadcast", []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		acks, subjects = append(acks, f), append(subjects, "wsfleet.broadcast")
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(20 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	for i, f := range acks {
		select {
		case ack := <-f.Ok():
			if subjects[i] == "wsfleet.broadcast" {
				bcasts = append(bcasts, ack.Sequence)
			} else {
				want[subjects[i]] = append(want[subjects[i]], ack.Sequence)
			}
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for _, c := range clients {
		wg.Add(1)
		go func(c client) {
			defer wg.Done()
			owed := map[uint64]bool{}
			for _, s := range want[userSubject(t, c.user)] {
				owed[s] = true
			}
			for _, s := range bcasts {
				if s > c.pos {
					owed[s] = true
				}
			}
			seen := map[uint64]bool{}
			var lastUser, lastB uint64
			for len(seen) < len(owed) {
				c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, b, err := c.ws.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("%s: read after %d of %d: %v", c.user, len(seen), len(owed), err)
					return
				}
				if !strings.Contains(string(b), `"type":"message"`) {
					continue
				}
				i := strings.Index(string(b), `"id":"`)
				j := strings.Index(string(b[i+6:]), `"`)
				seq, _ := strconv.ParseUint(string(b[i+6:i+6+j]), 10, 64)
				switch {
				case !owed[seq]:
					errs <- fmt.Errorf("%s: got %d, not owed to it", c.user, seq)
					return
				case seen[seq]:
					errs <- fmt.Errorf("%s: %d twice", c.user, seq)
					return
				}
				seen[seq] = true
				last := &lastUser
				if slicesContains(bcasts, seq) {
					last = &lastB
				}
				if seq < *last {
					errs <- fmt.Errorf("%s: %d after %d on one chain", c.user, seq, *last)
					return
				}
				*last = seq
			}
			errs <- nil
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("loop-queue drops %v, live drops %v, gaps %v, replays %v, replayed messages %v",
		metricValue(t, srv, `wsfleet_gateway_dropped_total{reason="loop_queue_full"}`),
		metricValue(t, srv, "wsfleet_gateway_resume_live_dropped_total"),
		metricValue(t, srv, "wsfleet_gateway_resume_gaps_total"),
		metricValue(t, srv, "wsfleet_gateway_replays_total"),
		metricValue(t, srv, "wsfleet_gateway_replayed_messages_total"))
	for _, c := range clients {
		expectQuiet(t, c.ws, 200*time.Millisecond)
	}
}

func slicesContains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A kick stored by the history stream reaches the node republished,
// without its reply subject: the node answers on Wsfleet-Reply-To, and the
// kick is never replayed to a client resuming from before it.
func TestResumeKickAnswersOnReplyTo(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	ws, w := resumeConnect(t, srv, "erin", "")
	pos := seqOf(t, w["position"])
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(userSubject(t, "erin"))
	m.Header.Set(protocol.HeaderControl, protocol.ControlKick)
	m.Header.Set(protocol.HeaderReplyTo, inbox)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	r, err := replies.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no kick reply: %v", err)
	}
	if !strings.Contains(string(r.Data), `"closed":1`) {
		t.Fatalf("kick reply %s", r.Data)
	}
	expectClose(t, ws, protocol.CloseKicked, "")
	after := jsPublish(t, js, userSubject(t, "erin"), `"after the kick"`)
	ws2, w2 := resumeConnect(t, srv, "erin", strconv.FormatUint(pos, 10))
	if w2["recovered"] != true {
		t.Fatalf("welcome %v", w2)
	}
	if d := readDeliveries(t, ws2, 1)[0]; d.seq != after {
		t.Fatalf("got %d, want %d (the kick is not a message)", d.seq, after)
	}
	expectQuiet(t, ws2, 200*time.Millisecond)
}

// TestResumeReplicaBehind: a direct get answered by a replica that has not
// stored the newest messages yet must not lose them. The node's direct
// gets go through the test, which answers every third one as such a
// replica would ("nothing after it": it sent all it holds) and passes the
// rest to the stream: the gateway sees that an answer lacks the subject's
// newest message as the stream's leader gave it, asks again, and every
// reconnect gets exactly what it missed.
func TestResumeReplicaBehind(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { gateway.SetDirectGetSubject(o, "test.direct-get") })
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	var stale, passed atomic.Int64
	proxy, err := nc.Subscribe("test.direct-get", func(m *nats.Msg) {
		if (stale.Load()+passed.Load())%3 == 0 {
			stale.Add(1)
			m.RespondMsg(&nats.Msg{Header: nats.Header{"Status": []string{"404"}, "Description": []string{"Message Not Found"}}})
			return
		}
		passed.Add(1)
		nc.PublishRequest("$JS.API.DIRECT.GET."+history.StreamName("wsfleet"), m.Reply, m.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Unsubscribe()
	nc.Flush()

	ws, w := resumeConnect(t, srv, "alice", "")
	pos := seqOf(t, w["position"])
	ws.Close()
	var want []uint64
	for i := 0; i < 3; i++ {
		want = append(want, jsPublish(t, js, userSubject(t, "alice"), fmt.Sprintf(`{"n":%d}`, i)))
	}
	want = append(want, jsPublish(t, js, "wsfleet.broadcast", `{"b":1}`))
	for i := 0; i < 3; i++ {
		ws, w := resumeConnect(t, srv, "alice", strconv.FormatUint(pos, 10))
		if w["recovered"] != true {
			t.Fatalf("welcome %v", w)
		}
		got := readDeliveries(t, ws, len(want))
		for k, d := range got {
			if d.seq != want[k] {
				t.Fatalf("reconnect %d: ids %v, want %v", i, got, want)
			}
		}
		expectQuiet(t, ws, 100*time.Millisecond)
		ws.Close()
	}
	behind := metricValue(t, srv, "wsfleet_gateway_replay_replica_behind_total")
	if stale.Load() == 0 || behind < 1 {
		t.Fatalf("%d stale answers, %d passed on; replay_replica_behind_total %v", stale.Load(), passed.Load(), behind)
	}
}

// TestResumeLongCatchUp: a reconnect owed more broadcasts than one batch
// holds, with its user's messages early on: several rounds, everything in
// order, and the user subject, done after the first round, is not taken
// for a replica that is behind in the later ones.
func TestResumeLongCatchUp(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { o.History.MaxPerUser = 1000 })
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	ws, w := resumeConnect(t, srv, "alice", "")
	pos := seqOf(t, w["position"])
	ws.Close()
	var want []uint64
	for i := 0; i < 2; i++ {
		want = append(want, jsPublish(t, js, userSubject(t, "alice"), fmt.Sprintf(`{"n":%d}`, i)))
	}
	for i := 0; i < 600; i++ {
		want = append(want, jsPublish(t, js, "wsfleet.broadcast", fmt.Sprintf(`{"b":%d}`, i)))
	}
	ws, w = resumeConnect(t, srv, "alice", strconv.FormatUint(pos, 10))
	if w["recovered"] != true {
		t.Fatalf("welcome %v", w)
	}
	got := readDeliveries(t, ws, len(want))
	for k, d := range got {
		if d.seq != want[k] {
			t.Fatalf("delivery %d has id %d, want %d", k, d.seq, want[k])
		}
	}
	expectQuiet(t, ws, 200*time.Millisecond) // and nothing twice
	if n := metricValue(t, srv, "wsfleet_gateway_replay_replica_behind_total"); n != 0 {
		t.Fatalf("replay_replica_behind_total %v on a one-server stream", n)
	}
	if n := metricValue(t, srv, "wsfleet_gateway_replay_failures_total"); n != 0 {
		t.Fatalf("replay_failures_total %v", n)
	}
}

// TestResumeBatchWithAHole: a direct get batch that reaches the node with
// a message missing (its subscription dropped one) is fetched again, not
// written with a hole. The test relays the node's direct gets and drops
// the second message of the first two batches of three or more.
func TestResumeBatchWithAHole(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { gateway.SetDirectGetSubject(o, "test.direct-get") })
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	var holes atomic.Int64
	relay, err := nc.Subscribe("test.direct-get", func(req *nats.Msg) {
		inbox := nats.NewInbox()
		answers, err := nc.SubscribeSync(inbox)
		if err != nil {
			return
		}
		defer answers.Unsubscribe()
		nc.PublishRequest("$JS.API.DIRECT.GET."+history.StreamName("wsfleet"), inbox, req.Data)
		var batch []*nats.Msg
		for {
			m, err := answers.NextMsg(2 * time.Second)
			if err != nil {
				return
			}
			batch = append(batch, m)
			if m.Header.Get("Status") != "" {
				break
			}
		}
		drop := -1
		if len(batch) >= 4 && holes.Load() < 2 { // three messages and the end of batch
			holes.Add(1)
			drop = 1
		}
		for i, m := range batch {
			if i != drop {
				nc.PublishMsg(&nats.Msg{Subject: req.Reply, Header: m.Header, Data: m.Data})
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Unsubscribe()
	nc.Flush()

	ws, w := resumeConnect(t, srv, "alice", "")
	pos := seqOf(t, w["position"])
	ws.Close()
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, jsPublish(t, js, userSubject(t, "alice"), fmt.Sprintf(`{"n":%d}`, i)))
	}
	ws, w = resumeConnect(t, srv, "alice", strconv.FormatUint(pos, 10))
	if w["recovered"] != true {
		t.Fatalf("welcome %v", w)
	}
	got := readDeliveries(t, ws, len(want))
	for k, d := range got {
		if d.seq != want[k] {
			t.Fatalf("ids %v, want %v", got, want)
		}
	}
	expectQuiet(t, ws, 200*time.Millisecond)
	if holes.Load() == 0 {
		t.Fatal("no batch was relayed with a hole")
	}
	if n := metricValue(t, srv, "wsfleet_gateway_replay_failures_total"); n < 1 {
		t.Fatalf("replay_failures_total %v after %d batches with a hole", n, holes.Load())
	}
}

// TestResumeFellBehindHistory: an open connection that misses more of its
// user's messages than history keeps (here during a NATS outage, with a
// per-user limit of 3) is closed with 1013 rather than caught up with a
// hole, and its reconnect with "since" says recovered:false.
func TestResumeFellBehindHistory(t *testing.T) {
	ns := startJSNATS(t)
	proxy := newCutProxy(t, ns.Addr().String())
	srv := resumeGateway(t, proxy.url(), func(o *gateway.Options) {
		o.NATSOutageGrace = time.Minute
		o.History.MaxPerUser = 3
	})
	pub, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	js := newJS(t, pub)
	ws, _ := resumeConnect(t, srv, "erin", "")
	before := jsPublish(t, js, userSubject(t, "erin"), `"before"`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != before {
		t.Fatalf("got %d, want %d", d.seq, before)
	}
	proxy.cutNATS(t, srv)
	for i := 0; i < 5; i++ {
		jsPublish(t, js, userSubject(t, "erin"), strconv.Itoa(i))
	}
	proxy.restore()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *wstest.CloseError
			if !errors.As(err, &ce) || ce.Code != int(protocol.CloseTryAgainLater) {
				t.Fatalf("read: %v; want close 1013", err)
			}
			break
		}
		if strings.Contains(string(b), `"type":"message"`) {
			t.Fatalf("a delivery %s after history dropped what came before it", b)
		}
	}
	if n := metricValue(t, srv, "wsfleet_gateway_replay_fell_behind_total"); n != 1 {
		t.Fatalf("replay_fell_behind_total %v", n)
	}
	ws2, w := resumeConnect(t, srv, "erin", strconv.FormatUint(before, 10))
	defer ws2.Close()
	if w["recovered"] != false {
		t.Fatalf("welcome %v, want recovered:false", w)
	}
}

package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// subscribeSince subscribes with "since" (none when "") and returns the
// answer.
func subscribeSince(t testing.TB, ws *wstest.Conn, topic, since string) map[string]any {
	t.Helper()
	f := map[string]any{"type": "subscribe", "topic": topic}
	if since != "" {
		f["since"] = since
	}
	return subscribeAnswer(t, ws, f)
}

// readTopicDeliveries reads n message frames of topic.
func readTopicDeliveries(t testing.TB, ws *wstest.Conn, topic string, n int) []uint64 {
	t.Helper()
	var out []uint64
	for len(out) < n {
		m := readType(t, ws, protocol.TypeMessage)
		if m["topic"] != topic {
			t.Fatalf("got %v, want a message of %q", m, topic)
		}
		out = append(out, seqOf(t, m["id"]))
	}
	return out
}

func u64s(v ...uint64) []uint64 { return v }

// A subscribe with "since" gets what the topic had after it, then the
// topic live, each message once and in order; "subscribed" says whether
// history held it all.
func TestResumeTopicSince(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) { o.History.MaxPerUser = 5 })
	js := newJS(t, natsConn(t, srv))
	subj := topicSubject("room.1")

	a := connectWith(t, srv, topicToken(t, "ann", "room.*"))
	m := subscribeSince(t, a, "room.1", "")
	p0 := seqOf(t, m["position"])
	if _, has := m["recovered"]; has {
		t.Fatalf("subscribe without since answered %v", m)
	}
	s1 := jsPublish(t, js, subj, `"one"`)
	jsPublish(t, js, userSubject(t, "nobody"), `"not the topic's"`) // another subject between
	s2 := jsPublish(t, js, subj, `"two"`)
	s3 := jsPublish(t, js, subj, `"three"`)
	if got := readTopicDeliveries(t, a, "room.1", 3); !slices.Equal(got, u64s(s1, s2, s3)) {
		t.Fatalf("live: got %v, want %v", got, u64s(s1, s2, s3))
	}
	cases := []struct {
		name      string
		since     uint64
		recovered bool
		replay    []uint64
	}{
		{"from the position before any message", p0, true, u64s(s1, s2, s3)},
		{"from the first message", s1, true, u64s(s2, s3)},
		{"from the last message", s3, true, nil},
		{"an id the stream never gave", s3 + 1000, false, nil},
	}
	var conns []*wstest.Conn
	// Each case's connection stays subscribed for the live part below.
	for i, tc := range cases {
		b := connectWith(t, srv, topicToken(t, fmt.Sprintf("bob%d", i), "room.*"))
		conns = append(conns, b)
		m := subscribeSince(t, b, "room.1", strconv.FormatUint(tc.since, 10))
		if m["type"] != protocol.TypeSubscribed || m["recovered"] != tc.recovered {
			t.Fatalf("%s: got %v, want recovered %v", tc.name, m, tc.recovered)
		}
		pos := seqOf(t, m["position"])
		if tc.recovered && pos != tc.since {
			t.Fatalf("%s: position %d, want the since %d", tc.name, pos, tc.since)
		}
		if !tc.recovered && pos < s3 {
			t.Fatalf("%s: position %d, want the topic's newest %d or later", tc.name, pos, s3)
		}
		if got := readTopicDeliveries(t, b, "room.1", len(tc.replay)); !slices.Equal(got, tc.replay) {
			t.Fatalf("%s: replayed %v, want %v", tc.name, got, tc.replay)
		}
		expectPong(t, b)
	}
	s4 := jsPublish(t, js, subj, `"four"`)
	for _, ws := range append(conns, a) {
		if got := readTopicDeliveries(t, ws, "room.1", 1); got[0] != s4 {
			t.Fatalf("live after the replays: got %v, want %d", got, s4)
		}
		expectQuiet(t, ws, 200*time.Millisecond)
	}

	// History keeps MaxPerUser messages per topic: a since older than that
	// is not recovered.
	for i := 0; i < 6; i++ {
		jsPublish(t, js, subj, strconv.Itoa(i))
	}
	c := connectWith(t, srv, topicToken(t, "cy", "room.*"))
	if m := subscribeSince(t, c, "room.1", strconv.FormatUint(s4, 10)); m["recovered"] != false {
		t.Fatalf("since trimmed from history: %v", m)
	}
	expectPong(t, c)
}

// A topic's subscribers on a node that lost NATS get what was published
// meanwhile, in order, once; then the topic live again.
func TestResumeTopicNATSLinkDropped(t *testing.T) {
	ns := startJSNATS(t)
	proxy := newCutProxy(t, ns.Addr().String())
	srv := resumeGateway(t, proxy.url(), func(o *gateway.Options) { o.NATSOutageGrace = time.Minute })
	pub, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	js := newJS(t, pub)
	subj := topicSubject("live.x")
	var conns []*wstest.Conn
	for i := 0; i < 3; i++ {
		ws := connectWith(t, srv, topicToken(t, fmt.Sprintf("dee%d", i), "live.*"))
		mustSubscribe(t, ws, "live.x")
		conns = append(conns, ws)
	}
	before := jsPublish(t, js, subj, `"before"`)
	for _, ws := range conns {
		if got := readTopicDeliveries(t, ws, "live.x", 1); got[0] != before {
			t.Fatalf("got %v, want %d", got, before)
		}
	}
	proxy.cutNATS(t, srv)
	var want []uint64
	for i := 0; i < 5; i++ {
		want = append(want, jsPublish(t, js, subj, strconv.Itoa(i)))
	}
	proxy.restore()
	for _, ws := range conns {
		if got := readTopicDeliveries(t, ws, "live.x", len(want)); !slices.Equal(got, want) {
			t.Fatalf("after the outage got %v, want %v", got, want)
		}
	}
	live := jsPublish(t, js, subj, `"after"`)
	for _, ws := range conns {
		if got := readTopicDeliveries(t, ws, "live.x", 1); got[0] != live {
			t.Fatalf("got %v, want %d", got, live)
		}
		expectQuiet(t, ws, 200*time.Millisecond)
	}
}

// Under a flood larger than the loop's queue takes, the loop drops live
// topic messages and its members catch up from the stream; meanwhile
// clients subscribe with "since" and join: every subscriber gets every
// message after its position exactly once, in order.
func TestResumeTopicFloodNoGapNoDuplicate(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), func(o *gateway.Options) {
		o.Pollers = 1
		o.LoopQueueBytes = 64 << 10
		o.MaxConcurrentReplays = 4
		o.History.MaxPerUser = 100000
	})
	js := newJS(t, natsConn(t, srv))
	subj := topicSubject("feed.1")
	type sub struct {
		ws  *wstest.Conn
		pos uint64
	}
	var subs []sub
	for i := 0; i < 4; i++ {
		ws := connectWith(t, srv, topicToken(t, fmt.Sprintf("fl%d", i), "feed.*"))
		m := subscribeSince(t, ws, "feed.1", "")
		subs = append(subs, sub{ws: ws, pos: seqOf(t, m["position"])})
	}
	payload := []byte(`"` + strings.Repeat("y", 2000) + `"`)
	const total = 600
	var acks []jetstream.PubAckFuture
	publish := func(n int) {
		for i := 0; i < n; i++ {
			f, err := js.PublishAsync(subj, payload)
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
	}
	publish(total / 2)
	// Two late joiners with "since" while the flood runs: one from the
	// start, one from the newest at its subscribe.
	for i, since := range []uint64{subs[0].pos, 0} {
		ws := connectWith(t, srv, topicToken(t, fmt.Sprintf("late%d", i), "feed.*"))
		s := ""
		if since != 0 {
			s = strconv.FormatUint(since, 10)
		}
		m := subscribeSince(t, ws, "feed.1", s)
		if since != 0 && m["recovered"] != true {
			t.Fatalf("late subscribe: %v", m)
		}
		subs = append(subs, sub{ws: ws, pos: seqOf(t, m["position"])})
	}
	publish(total - total/2)
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	var seqs []uint64
	for _, f := range acks {
		select {
		case ack := <-f.Ok():
			seqs = append(seqs, ack.Sequence)
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(subs))
	for _, s := range subs {
		var owed []uint64
		for _, q := range seqs {
			if q > s.pos {
				owed = append(owed, q)
			}
		}
		wg.Add(1)
		go func(s sub, owed []uint64) {
			defer wg.Done()
			var got []uint64
			s.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
			for len(got) < len(owed) {
				_, b, err := s.ws.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("after %d of %d: %v", len(got), len(owed), err)
					return
				}
				if !strings.Contains(string(b), `"type":"message"`) {
					continue
				}
				i := strings.Index(string(b), `"id":"`)
				q, _ := strconv.ParseUint(string(b[i+6:i+6+strings.IndexByte(string(b[i+6:]), '"')]), 10, 64)
				if len(got) > 0 && q <= got[len(got)-1] {
					errs <- fmt.Errorf("%d after %d: a duplicate or out of order", q, got[len(got)-1])
					return
				}
				got = append(got, q)
			}
			if !slices.Equal(got, owed) {
				errs <- fmt.Errorf("got %d messages, want %d (first missing around %v)", len(got), len(owed), firstDiff(got, owed))
			}
		}(s, owed)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for _, s := range subs {
		expectQuiet(t, s.ws, 200*time.Millisecond)
	}
	// The flood made the loop drop live messages, which the catch-ups
	// replaced (else this test proves less than it says).
	if n := metricValue(t, srv, `wsfleet_gateway_dropped_total{reason="loop_queue_full"}`); n <= 0 {
		t.Errorf("the loop dropped %v live messages: the catch-up was not exercised", n)
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A history stream made before topics were stored (no topic subject) is
// given the topics' subject in place, its messages kept.
func TestResumeAddsTopicsToAnOlderStream(t *testing.T) {
	ns := startJSNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := newJS(t, nc)
	cfg := history.Config{Storage: "memory", MaxBytes: 64 << 20}
	cfg.SetDefaults()
	old := cfg.StreamConfig()
	old.Subjects = []string{"wsfleet.user.*", "wsfleet.broadcast"}
	if _, err := js.CreateStream(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	kept := jsPublish(t, js, "wsfleet.broadcast", `"kept"`)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	st, err := js.Stream(context.Background(), old.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Equal(got, history.Subjects("wsfleet")) {
		t.Fatalf("subjects %v", got)
	}
	if st.CachedInfo().State.LastSeq != kept {
		t.Fatalf("state %+v", st.CachedInfo().State)
	}
	ws := connectWith(t, srv, topicToken(t, "olga", "t.*"))
	mustSubscribe(t, ws, "t.1")
	s := jsPublish(t, js, topicSubject("t.1"), `"stored"`)
	if got := readTopicDeliveries(t, ws, "t.1", 1); got[0] != s {
		t.Fatalf("got %v, want %d", got, s)
	}
}

// A loop topic whose members missed more than history holds (a NATS
// outage longer than --history-max-per-user messages of the topic) ends
// their subscriptions with a reason; a resubscribe with since gets
// recovered:false, and the topic goes on live for everyone.
func TestResumeTopicFellBehindHistory(t *testing.T) {
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
	subj := topicSubject("news.1")
	ws := connectWith(t, srv, topicToken(t, "fay", "news.*"))
	mustSubscribe(t, ws, "news.1")
	before := jsPublish(t, js, subj, `"before"`)
	if got := readTopicDeliveries(t, ws, "news.1", 1); got[0] != before {
		t.Fatalf("got %v, want %d", got, before)
	}
	proxy.cutNATS(t, srv)
	for i := 0; i < 5; i++ {
		jsPublish(t, js, subj, strconv.Itoa(i))
	}
	proxy.restore()
	m := readType(t, ws, protocol.TypeUnsubscribed)
	if m["topic"] != "news.1" || !strings.Contains(fmt.Sprint(m["reason"]), "fell further behind") {
		t.Fatalf("got %v", m)
	}
	if m := subscribeSince(t, ws, "news.1", strconv.FormatUint(before, 10)); m["recovered"] != false {
		t.Fatalf("resubscribe: %v", m)
	}
	other := connectWith(t, srv, topicToken(t, "gus", "news.*"))
	mustSubscribe(t, other, "news.1")
	live := jsPublish(t, js, subj, `"live"`)
	for _, c := range []*wstest.Conn{ws, other} {
		if got := readTopicDeliveries(t, c, "news.1", 1); got[0] != live {
			t.Fatalf("got %v, want %d", got, live)
		}
		expectQuiet(t, c, 200*time.Millisecond)
	}
}

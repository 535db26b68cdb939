package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// topicToken mints a connection token with a topics claim.
func topicToken(t testing.TB, sub string, claim any) string {
	t.Helper()
	return mintToken(t, jwtmint.Claims{Subject: sub, TTL: time.Hour, Extra: map[string]any{"topics": claim}})
}

// connectWith authenticates with tok and returns the connection after its
// welcome.
func connectWith(t testing.TB, srv *gateway.Server, tok string) *wstest.Conn {
	t.Helper()
	ws := dial(t, wsURL(srv), nil)
	send(t, ws, map[string]any{"type": "auth", "token": tok})
	readType(t, ws, protocol.TypeWelcome)
	return ws
}

// subscribe sends a subscribe frame and returns the answer (subscribed or
// error).
func subscribe(t testing.TB, ws *wstest.Conn, topic, subToken string) map[string]any {
	t.Helper()
	f := map[string]any{"type": "subscribe", "topic": topic}
	if subToken != "" {
		f["token"] = subToken
	}
	return subscribeAnswer(t, ws, f)
}

// subscribeAnswer sends a subscribe frame and returns the answer
// (subscribed or error), skipping pings.
func subscribeAnswer(t testing.TB, ws *wstest.Conn, f map[string]any) map[string]any {
	t.Helper()
	topic := f["topic"]
	send(t, ws, f)
	for {
		m := readFrame(t, ws)
		switch m["type"] {
		case protocol.TypeSubscribed, protocol.TypeError:
			return m
		case protocol.TypePing:
			continue
		}
		t.Fatalf("got %v, want the answer to subscribe %v", m, topic)
	}
}

func mustSubscribe(t testing.TB, ws *wstest.Conn, topic string) {
	t.Helper()
	if m := subscribe(t, ws, topic, ""); m["type"] != protocol.TypeSubscribed || m["topic"] != topic {
		t.Fatalf("subscribe %q: %v", topic, m)
	}
}

func topicSubject(topic string) string { return protocol.DefaultSubjectPrefix + ".topic." + topic }

func publishTopic(t testing.TB, nc *nats.Conn, topic, id, data string) {
	t.Helper()
	m := nats.NewMsg(topicSubject(topic))
	m.Data = []byte(data)
	if id != "" {
		m.Header.Set(protocol.HeaderMsgID, id)
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// expectPong proves the connection is open and has nothing queued before
// the pong: an application ping is answered in order.
func expectPong(t testing.TB, ws *wstest.Conn) {
	t.Helper()
	send(t, ws, map[string]any{"type": "ping"})
	readType(t, ws, protocol.TypePong)
}

func TestTopicClaimPatterns(t *testing.T) {
	srv := startGateway(t, nil)
	ws := connectWith(t, srv, topicToken(t, "ann", []string{"room.42", "prices.*", "team.7.>"}))
	for _, tc := range []struct {
		name, topic, want, code string
	}{
		{name: "exact", topic: "room.42", want: "subscribed"},
		{name: "exact other", topic: "room.43", want: "error", code: "forbidden"},
		{name: "star one segment", topic: "prices.EURUSD", want: "subscribed"},
		{name: "star is one segment only", topic: "prices.fx.EURUSD", want: "error", code: "forbidden"},
		{name: "star needs a segment", topic: "prices", want: "error", code: "forbidden"},
		{name: "gt the rest", topic: "team.7.chat.general", want: "subscribed"},
		{name: "gt needs a segment", topic: "team.7", want: "error", code: "forbidden"},
		{name: "prefix is not a match", topic: "team.70.chat", want: "error", code: "forbidden"},
		{name: "empty segment", topic: "room..42", want: "error", code: "bad_topic"},
		{name: "wildcard", topic: "room.*", want: "error", code: "bad_topic"},
		{name: "space", topic: "room 42", want: "error", code: "bad_topic"},
		{name: "too long", topic: strings.Repeat("a", protocol.MaxTopicBytes+1), want: "error", code: "bad_topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := subscribe(t, ws, tc.topic, "")
			if m["type"] != tc.want || (tc.code != "" && m["code"] != tc.code) || m["topic"] != tc.topic {
				t.Fatalf("subscribe %q: %v, want %s %s", tc.topic, m, tc.want, tc.code)
			}
			if tc.want == "error" && m["reason"] == "" {
				t.Fatalf("error without a reason: %v", m)
			}
		})
	}
	expectPong(t, ws) // the refusals left the connection open
	// A topic already held: the same answer again.
	mustSubscribe(t, ws, "room.42")
	// A connection without the claim may subscribe to nothing on its own.
	plain, _ := connect(t, srv, "bob")
	if m := subscribe(t, plain, "room.42", ""); m["code"] != protocol.ErrCodeForbidden {
		t.Fatalf("without a topics claim: %v", m)
	}
}

func TestTopicClaimShapes(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.TopicsClaim = "chan" })
	tok := mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: map[string]any{"chan": "room.1 room.2"}})
	ws := connectWith(t, srv, tok)
	mustSubscribe(t, ws, "room.2") // a space-separated string, under the configured name
	for _, tc := range []struct {
		name  string
		claim any
	}{
		{name: "number", claim: 7},
		{name: "array with a number", claim: []any{"room.1", 7}},
		{name: "invalid pattern", claim: []string{"room.>.x"}},
		{name: "empty segment", claim: []string{"room..x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := dial(t, wsURL(srv), nil)
			tok := mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: map[string]any{"chan": tc.claim}})
			send(t, ws, map[string]any{"type": "auth", "token": tok})
			expectClose(t, ws, protocol.CloseUnauthorized, "invalid chan claim")
		})
	}
}

func TestTopicDeliveryAcrossNodes(t *testing.T) {
	a := startGateway(t, nil)
	b := startGateway(t, func(o *gateway.Options) { o.NATSURL = a.NATSConn().ConnectedUrl(); o.NodeID = "node-b" })
	const topic = "room.7"
	if n := numSubs(t, a, topicSubject(topic)); n != 0 {
		t.Fatalf("%d subscriptions before any member", n)
	}
	var members []*wstest.Conn
	for i := 0; i < 6; i++ {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		ws := connectWith(t, srv, topicToken(t, fmt.Sprintf("user-%d", i), []string{"room.*"}))
		mustSubscribe(t, ws, topic)
		members = append(members, ws)
	}
	// One NATS subscription per node, whatever the members.
	if n := numSubs(t, a, topicSubject(topic)); n != 2 {
		t.Fatalf("%d NATS subscriptions for a topic with members on two nodes, want 2", n)
	}
	outsider := connectWith(t, a, topicToken(t, "outsider", []string{"room.*"}))
	mustSubscribe(t, outsider, "room.8")

	nc := natsConn(t, a)
	publishTopic(t, nc, topic, "m-1", `{"text":"hi"}`)
	for i, ws := range members {
		m := readType(t, ws, protocol.TypeMessage)
		if m["topic"] != topic || m["id"] != "m-1" || fmt.Sprint(m["data"]) != "map[text:hi]" {
			t.Fatalf("member %d got %v", i, m)
		}
	}
	expectPong(t, outsider) // nothing of room.7 reached room.8's member

	// Unsubscribe: answered, and no message of the topic follows it.
	send(t, members[0], map[string]any{"type": "unsubscribe", "topic": topic})
	if m := readType(t, members[0], protocol.TypeUnsubscribed); m["topic"] != topic || m["reason"] != nil {
		t.Fatalf("unsubscribe answer %v", m)
	}
	send(t, members[0], map[string]any{"type": "unsubscribe", "topic": topic}) // again: the same answer
	readType(t, members[0], protocol.TypeUnsubscribed)
	publishTopic(t, nc, topic, "m-2", `2`)
	for i, ws := range members[1:] {
		if m := readType(t, ws, protocol.TypeMessage); m["id"] != "m-2" {
			t.Fatalf("member %d got %v", i+1, m)
		}
	}
	expectPong(t, members[0])

	// The last member of a node leaving takes its NATS subscription.
	for i := 1; i < len(members); i += 2 { // node b's
		members[i].Close()
	}
	checkFor(t, 5*time.Second, func() error {
		if n := numSubs(t, a, topicSubject(topic)); n != 1 {
			return errorf("%d NATS subscriptions after node b's members left, want 1", n)
		}
		return nil
	})
	for i := 2; i < len(members); i += 2 {
		send(t, members[i], map[string]any{"type": "unsubscribe", "topic": topic})
		readType(t, members[i], protocol.TypeUnsubscribed)
	}
	checkFor(t, 5*time.Second, func() error {
		if n := numSubs(t, a, topicSubject(topic)); n != 0 {
			return errorf("%d NATS subscriptions after every member left, want 0", n)
		}
		if v := metricValue(t, a, "wsfleet_gateway_topic_subscriptions"); v != 1 { // the outsider's room.8
			return errorf("topic_subscriptions %v, want 1", v)
		}
		return nil
	})
	// And back: a new member gets the messages published after its answer.
	mustSubscribe(t, members[0], topic)
	publishTopic(t, nc, topic, "m-3", `3`)
	if m := readType(t, members[0], protocol.TypeMessage); m["id"] != "m-3" {
		t.Fatalf("re-subscribed member got %v", m)
	}
}

// TestTopicMembershipChurn subscribes many connections of one node to a
// few topics, then closes and unsubscribes a random half in random order
// (members move in the node's lists as others leave), and checks each
// topic's message reaches exactly its remaining members, once.
func TestTopicMembershipChurn(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.Pollers = 2 })
	topics := []string{"t.a", "t.b", "t.c"}
	type member struct {
		ws     *wstest.Conn
		topics map[string]bool
		closed bool
	}
	rng := rand.New(rand.NewSource(1))
	var ms []*member
	for i := 0; i < 60; i++ {
		m := &member{ws: connectWith(t, srv, topicToken(t, fmt.Sprintf("u%d", i), []string{"t.*"})), topics: map[string]bool{}}
		for _, tp := range topics {
			if rng.Intn(3) > 0 {
				mustSubscribe(t, m.ws, tp)
				m.topics[tp] = true
			}
		}
		ms = append(ms, m)
	}
	for _, i := range rng.Perm(len(ms))[:len(ms)/2] {
		m := ms[i]
		if rng.Intn(2) == 0 {
			m.ws.Close()
			m.closed = true
			continue
		}
		for tp := range m.topics {
			if rng.Intn(2) == 0 {
				send(t, m.ws, map[string]any{"type": "unsubscribe", "topic": tp})
				readType(t, m.ws, protocol.TypeUnsubscribed)
				delete(m.topics, tp)
			}
		}
	}
	want := 0
	for _, m := range ms {
		if !m.closed {
			want += len(m.topics)
		}
	}
	checkFor(t, 5*time.Second, func() error {
		if v := metricValue(t, srv, "wsfleet_gateway_topic_subscriptions"); int(v) != want {
			return errorf("topic_subscriptions %v, want %d", v, want)
		}
		return nil
	})
	nc := natsConn(t, srv)
	for _, tp := range topics {
		publishTopic(t, nc, tp, "id-"+tp, `1`)
	}
	for i, m := range ms {
		if m.closed {
			continue
		}
		got := map[string]bool{}
		for range m.topics {
			f := readType(t, m.ws, protocol.TypeMessage)
			tp, _ := f["topic"].(string)
			if got[tp] || !m.topics[tp] || f["id"] != "id-"+tp {
				t.Fatalf("member %d (topics %v) got %v", i, m.topics, f)
			}
			got[tp] = true
		}
		expectPong(t, m.ws) // and nothing else
	}
}

func TestTopicSubscriptionTokens(t *testing.T) {
	srv := startGateway(t, nil)
	ws := connectWith(t, srv, token(t, "ann")) // no topics claim
	sign := func(c jwtmint.Claims) string { return mintToken(t, c) }
	subTok := func(sub, topic string, ttl time.Duration) string {
		return sign(jwtmint.Claims{Subject: sub, TTL: ttl, Extra: map[string]any{"topic": topic}})
	}
	other, err := jwtmint.Mint("HS256", []byte(strings.Repeat("x", 40)), jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: map[string]any{"topic": "room.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, topic, token, reason string
	}{
		{name: "bad signature", topic: "room.1", token: other, reason: "signature"},
		{name: "other user", topic: "room.1", token: subTok("bob", "room.1", time.Hour), reason: "another user"},
		{name: "other topic", topic: "room.1", token: subTok("ann", "room.2", time.Hour), reason: "does not name this topic"},
		{name: "no topic claim", topic: "room.1", token: token(t, "ann"), reason: "does not name this topic"},
		{name: "expired", topic: "room.1", token: sign(jwtmint.Claims{Subject: "ann", TTL: time.Minute, Now: time.Now().Add(-time.Hour), Extra: map[string]any{"topic": "room.1"}}), reason: "expired"},
		{name: "garbage", topic: "room.1", token: "not-a-jwt", reason: "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := subscribe(t, ws, tc.topic, tc.token)
			if m["code"] != protocol.ErrCodeForbidden || m["topic"] != tc.topic || !strings.Contains(fmt.Sprint(m["reason"]), tc.reason) {
				t.Fatalf("got %v, want forbidden with %q", m, tc.reason)
			}
		})
	}
	if m := subscribe(t, ws, "room.1", subTok("ann", "room.1", time.Hour)); m["type"] != protocol.TypeSubscribed {
		t.Fatalf("a valid subscription token: %v", m)
	}
	// A subscription token does not open a connection.
	second := dial(t, wsURL(srv), nil)
	send(t, second, map[string]any{"type": "auth", "token": subTok("ann", "room.1", time.Hour)})
	expectClose(t, second, protocol.CloseUnauthorized, "subscription token")
	publishTopic(t, natsConn(t, srv), "room.1", "x", `1`)
	if m := readType(t, ws, protocol.TypeMessage); m["topic"] != "room.1" {
		t.Fatalf("got %v", m)
	}
}

func TestTopicRefreshRevokes(t *testing.T) {
	srv := startGateway(t, nil)
	ws := connectWith(t, srv, topicToken(t, "ann", []string{"room.*"}))
	mustSubscribe(t, ws, "room.1")
	mustSubscribe(t, ws, "room.2")
	sub := mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: map[string]any{"topic": "private.9"}})
	if m := subscribe(t, ws, "private.9", sub); m["type"] != protocol.TypeSubscribed {
		t.Fatalf("subscription token: %v", m)
	}
	// The refreshed token allows room.1 only: room.2 goes, with a reason;
	// private.9, which its own token allowed, stays.
	send(t, ws, map[string]any{"type": "auth", "token": topicToken(t, "ann", []string{"room.1"})})
	m := readType(t, ws, protocol.TypeUnsubscribed)
	if m["topic"] != "room.2" || !strings.Contains(fmt.Sprint(m["reason"]), "no longer allows") {
		t.Fatalf("got %v, want room.2 unsubscribed with a reason", m)
	}
	readType(t, ws, protocol.TypeRefreshed)
	nc := natsConn(t, srv)
	for _, tp := range []string{"room.2", "room.1", "private.9"} {
		publishTopic(t, nc, tp, "id-"+strings.ReplaceAll(tp, ".", "-"), `1`)
	}
	for _, tp := range []string{"room.1", "private.9"} {
		if m := readType(t, ws, protocol.TypeMessage); m["topic"] != tp {
			t.Fatalf("got %v, want a message of %s", m, tp)
		}
	}
	expectPong(t, ws)
	if m := subscribe(t, ws, "room.2", ""); m["code"] != protocol.ErrCodeForbidden {
		t.Fatalf("room.2 after the refresh: %v", m)
	}
}

func TestTopicLimit(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.MaxTopicsPerConnection = 2 })
	ws := connectWith(t, srv, topicToken(t, "ann", []string{">"}))
	mustSubscribe(t, ws, "a")
	mustSubscribe(t, ws, "b")
	if m := subscribe(t, ws, "c", ""); m["code"] != protocol.ErrCodeTooManyTopics || m["topic"] != "c" {
		t.Fatalf("third topic: %v", m)
	}
	mustSubscribe(t, ws, "b") // one held already: no new slot needed
	send(t, ws, map[string]any{"type": "unsubscribe", "topic": "a"})
	readType(t, ws, protocol.TypeUnsubscribed)
	mustSubscribe(t, ws, "c")
	if v := metricValue(t, srv, "wsfleet_gateway_topics"); v != 2 {
		t.Fatalf("topics gauge %v, want 2", v)
	}
}

// TestTopicBeforeWelcome: frames sent right after the auth frame wait for
// the welcome, then subscribe; a subscribe before the auth frame closes
// the connection as any frame but auth does.
func TestTopicBeforeWelcome(t *testing.T) {
	srv := startGateway(t, nil)
	ws := dial(t, wsURL(srv), nil)
	send(t, ws, map[string]any{"type": "auth", "token": topicToken(t, "ann", []string{"room.*"})})
	send(t, ws, map[string]any{"type": "subscribe", "topic": "room.1"})
	readType(t, ws, protocol.TypeWelcome)
	if m := readType(t, ws, protocol.TypeSubscribed); m["topic"] != "room.1" {
		t.Fatalf("got %v", m)
	}
	early := dial(t, wsURL(srv), nil)
	send(t, early, map[string]any{"type": "subscribe", "topic": "room.1"})
	expectClose(t, early, protocol.CloseUnauthorized, "authenticate first")
}

// TestResumeTopicControl: a service's subscribe reaches a node with
// --resume through the history stream (its reply subject in
// Wsfleet-Reply-To); the node answers once the subscription is live, and
// the user's next message follows without a catch-up: the control
// message moved the connection's chain on.
func TestResumeTopicControl(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	ws, _ := resumeConnect(t, srv, "erin", "")
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(userSubject(t, "erin"))
	m.Header.Set(protocol.HeaderControl, protocol.ControlSubscribe)
	m.Header.Set(protocol.HeaderTopic, "room.1")
	m.Header.Set(protocol.HeaderReplyTo, inbox)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if f := readType(t, ws, protocol.TypeSubscribed); f["topic"] != "room.1" {
		t.Fatalf("got %v", f)
	}
	r, err := replies.NextMsg(5 * time.Second)
	if err != nil || string(r.Data) != `{"node":"test-node","devices":1}` {
		t.Fatalf("reply %v, %v", r, err)
	}
	next := jsPublish(t, js, userSubject(t, "erin"), `"after the subscribe"`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != next {
		t.Fatalf("got %d, want %d", d.seq, next)
	}
	if g := metricValue(t, srv, "wsfleet_gateway_resume_gaps_total"); g != 0 {
		t.Fatalf("%v gaps: the control message was taken for a lost message", g)
	}
	// Stored by the history stream too: its id is the stream sequence.
	publishTopic(t, nc, "room.1", "t-1", `1`)
	if f := readType(t, ws, protocol.TypeMessage); f["topic"] != "room.1" || seqOf(t, f["id"]) != next+1 {
		t.Fatalf("got %v, want id %d", f, next+1)
	}
}

// TestTopicClientPublish: a client's publish frame to a topic goes to the
// room's service on <prefix>.in.topic.<topic> (allowed to a member, or by
// the publish claim), or, with --client-topic-publish direct, straight to
// the topic's subscribers (the publish claim must allow it).
func TestTopicClientPublish(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   string
		claims map[string]any
		topic  string
		want   string // "service", "direct" or an error code
	}{
		{name: "member to the service", mode: "service", claims: map[string]any{"topics": []string{"room.*"}}, topic: "room.1", want: "service"},
		{name: "publish claim to the service", mode: "service", claims: map[string]any{"publish": []string{"news.*"}}, topic: "news.1", want: "service"},
		{name: "neither", mode: "service", claims: map[string]any{"topics": []string{"room.*"}}, topic: "room.2", want: "forbidden"},
		{name: "direct with the claim", mode: "direct", claims: map[string]any{"topics": []string{"room.*"}, "publish": []string{"room.*"}}, topic: "room.1", want: "direct"},
		{name: "direct as a member without the claim", mode: "direct", claims: map[string]any{"topics": []string{"room.*"}}, topic: "room.1", want: "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startGateway(t, func(o *gateway.Options) { o.ClientTopicPublish = tc.mode })
			ws := connectWith(t, srv, mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: tc.claims}))
			if tc.claims["topics"] != nil {
				mustSubscribe(t, ws, "room.1")
			}
			nc := natsConn(t, srv)
			in, err := nc.SubscribeSync(protocol.DefaultSubjectPrefix + ".in.topic.>")
			if err != nil {
				t.Fatal(err)
			}
			out, err := nc.SubscribeSync(topicSubject(">"))
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			send(t, ws, map[string]any{"type": "publish", "topic": tc.topic, "data": map[string]any{"text": "hi"}})
			switch tc.want {
			case "service":
				m, err := in.NextMsg(5 * time.Second)
				if err != nil || m.Subject != "wsfleet.in.topic."+tc.topic || string(m.Data) != `{"text":"hi"}` || m.Header.Get(protocol.HeaderUser) != "ann" {
					t.Fatalf("service got %v, %v", m, err)
				}
			case "direct":
				m, err := out.NextMsg(5 * time.Second)
				if err != nil || m.Subject != topicSubject(tc.topic) || m.Header.Get(protocol.HeaderUser) != "ann" || !protocol.ValidMsgID(m.Header.Get(protocol.HeaderMsgID)) {
					t.Fatalf("topic got %v, %v", m, err)
				}
				// The sender is a member: it gets its own message, with the id.
				f := readType(t, ws, protocol.TypeMessage)
				if f["topic"] != tc.topic || f["id"] != m.Header.Get(protocol.HeaderMsgID) {
					t.Fatalf("the member got %v", f)
				}
			default:
				f := readType(t, ws, protocol.TypeError)
				if f["code"] != tc.want || f["topic"] != tc.topic {
					t.Fatalf("got %v, want %s", f, tc.want)
				}
			}
			expectPong(t, ws)
			if tc.want != "service" {
				if m, err := in.NextMsg(50 * time.Millisecond); err == nil {
					t.Fatalf("the service got %v", m)
				}
			}
			if tc.want != "direct" {
				if m, err := out.NextMsg(50 * time.Millisecond); err == nil {
					t.Fatalf("the topic got %v", m)
				}
			}
		})
	}
}

// TestTopicTokenChecks: subscription tokens in flight are the
// connection's state: an unsubscribe sent while one is checked wins (the
// verdict is dropped, nothing is subscribed), and one connection has at
// most a few checked at once (the auth queue is shared with new
// connections): a burst of token subscribes in one write gets
// "overloaded" for those over the bound, each answered exactly once.
func TestTopicTokenChecks(t *testing.T) {
	srv := startGateway(t, nil)
	subTok := func(topic string) string {
		return mintToken(t, jwtmint.Claims{Subject: "ann", TTL: time.Hour, Extra: map[string]any{"topic": topic}})
	}
	frame := func(v map[string]any) []byte {
		b, _ := json.Marshal(v)
		return maskedText(b)
	}
	rc := dialRaw(t, srv.Addr().String(), token(t, "ann"))
	rc.waitWelcome(t)
	// subscribe + unsubscribe in one write: the unsubscribe is read before
	// any verdict can come back.
	burst := append(frame(map[string]any{"type": "subscribe", "topic": "room.1", "token": subTok("room.1")}),
		frame(map[string]any{"type": "unsubscribe", "topic": "room.1"})...)
	// Then six token subscribes at once: four are checked, two refused.
	for i := 0; i < 6; i++ {
		tp := fmt.Sprintf("room.%d", 10+i)
		burst = append(burst, frame(map[string]any{"type": "subscribe", "topic": tp, "token": subTok(tp)})...)
	}
	if _, err := rc.c.Write(burst); err != nil {
		t.Fatal(err)
	}
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	answers := map[string][]string{}
	for n := 0; n < 7; {
		var m map[string]any
		if err := json.Unmarshal(rc.readFrame(t), &m); err != nil {
			t.Fatal(err)
		}
		tp, _ := m["topic"].(string)
		switch m["type"] {
		case protocol.TypePing:
			continue
		case protocol.TypeError:
			answers[tp] = append(answers[tp], fmt.Sprint(m["code"]))
		default:
			answers[tp] = append(answers[tp], fmt.Sprint(m["type"]))
		}
		n++
	}
	if got := answers["room.1"]; len(got) != 1 || got[0] != protocol.TypeUnsubscribed {
		t.Fatalf("room.1 (subscribed with a token, then unsubscribed at once): %v, want only unsubscribed", got)
	}
	subscribed, refused := 0, 0
	for i := 0; i < 6; i++ {
		switch got := answers[fmt.Sprintf("room.%d", 10+i)]; {
		case len(got) == 1 && got[0] == protocol.TypeSubscribed:
			subscribed++
		case len(got) == 1 && got[0] == protocol.ErrCodeOverloaded:
			refused++
		default:
			t.Fatalf("room.%d: %v", 10+i, got)
		}
	}
	if subscribed != 4 || refused != 2 {
		t.Fatalf("%d subscribed, %d refused; want 4 and 2 (at most 4 tokens checked at once)", subscribed, refused)
	}
	checkFor(t, 5*time.Second, func() error {
		if v := metricValue(t, srv, "wsfleet_gateway_topic_subscriptions"); v != 4 {
			return errorf("topic_subscriptions %v, want 4 (room.1 was unsubscribed)", v)
		}
		return nil
	})
}

// TestTopicWhileNATSDown: with NATS down nothing can be confirmed: a
// subscribe waits, and after --auth-timeout gets "subscribe_failed" (once;
// the connection stays); subscribing and unsubscribing meanwhile is
// answered at once, and when NATS is back a subscribe goes live, answered
// once.
func TestTopicWhileNATSDown(t *testing.T) {
	nsrv := newRestartableNATS(t)
	srv := startGateway(t, func(o *gateway.Options) { o.NATSURL = nsrv.url; o.AuthTimeout = 2 * time.Second })
	ws := connectWith(t, srv, topicToken(t, "ann", []string{"room.*"}))
	nsrv.stop() // NATS down: no round trip can confirm
	waitReady(t, srv, 503)
	for i := 0; i < 20; i++ {
		send(t, ws, map[string]any{"type": "subscribe", "topic": "room.1"})
		send(t, ws, map[string]any{"type": "unsubscribe", "topic": "room.1"})
		readType(t, ws, protocol.TypeUnsubscribed)
	}
	start := time.Now()
	send(t, ws, map[string]any{"type": "subscribe", "topic": "room.2"})
	m := readType(t, ws, protocol.TypeError)
	if m["code"] != protocol.ErrCodeSubscribeFailed || m["topic"] != "room.2" {
		t.Fatalf("got %v, want subscribe_failed for room.2", m)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("subscribe_failed after %s: before the auth timeout", d)
	}
	expectPong(t, ws)
	nsrv.start()
	waitReady(t, srv, 200)
	mustSubscribe(t, ws, "room.1")
	expectPong(t, ws) // answered once
	if v := metricValue(t, srv, "wsfleet_gateway_topic_subscriptions"); v != 1 {
		t.Fatalf("topic_subscriptions %v, want 1", v)
	}
}

// TestTopicPresenceSplits: presence batches, snapshots and topic events
// are split into messages of at most the budget's bytes of entries (NATS
// refuses a message over its payload limit, and a long id makes entries
// large), numbered in order; the snapshot's last message says how many it
// has, and together they hold every entry.
func TestTopicPresenceSplits(t *testing.T) {
	defer gateway.SetPresenceBudget(600)()
	srv := startGateway(t, func(o *gateway.Options) { o.TopicPresence = []string{"room.>"} })
	nc := natsConn(t, srv)
	w := watchPresence(t, nc)
	events, err := nc.SubscribeSync("wsfleet.presence.topic.>")
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	topic := "room." + strings.Repeat("x", 60)
	for i := 0; i < n; i++ {
		ws := connectWith(t, srv, topicToken(t, fmt.Sprintf("user-%02d-%s", i, strings.Repeat("y", 40)), []string{"room.>"}))
		mustSubscribe(t, ws, topic)
	}
	// Batches: in order (until checks), every user and pair there.
	users, pairs := map[string]int{}, map[string]int{}
	nodeHas := 0 // the node's own entry for the topic (user ""): it has subscribers
	deadline := time.After(10 * time.Second)
	var last uint64
	for len(users) < n || len(pairs) < n || nodeHas != 1 {
		select {
		case b := <-w.batches:
			if last != 0 && b.Seq != last+1 {
				t.Fatalf("batch %d after %d", b.Seq, last)
			}
			last = b.Seq
			if raw, _ := json.Marshal(b); len(raw) > 600+200 {
				t.Fatalf("a batch of %d bytes over the budget", len(raw))
			}
			for _, c := range b.Changes {
				users[c.User] = c.Devices
			}
			for _, c := range b.Topics {
				if c.User == "" {
					nodeHas = c.Devices
					continue
				}
				pairs[c.User] = c.Devices
			}
		case <-deadline:
			t.Fatalf("batches: %d users, %d pairs of %d, the node's entry %d", len(users), len(pairs), n, nodeHas)
		}
	}
	joined := map[string]bool{}
	for len(joined) < n {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("join events: %d of %d: %v", len(joined), n, err)
		}
		var ev protocol.TopicPresenceEvent
		json.Unmarshal(m.Data, &ev)
		for _, u := range ev.Joined {
			joined[u] = true
		}
	}
	// A snapshot: several chunks, the last counting them, every entry.
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("wsfleet.presence.snapshot", inbox, nil); err != nil {
		t.Fatal(err)
	}
	got, chunks := 0, 0
	for {
		m, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var c protocol.SnapshotChunk
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatal(err)
		}
		chunks++
		got += len(c.Users) + len(c.Topics)
		if c.Last {
			if c.Chunks != chunks || chunks < 3 {
				t.Fatalf("last chunk says %d, got %d (want several)", c.Chunks, chunks)
			}
			break
		}
	}
	if got != 2*n+1 { // the users, their pairs, and the node's own entry for the topic
		t.Fatalf("snapshot entries %d, want %d", got, 2*n+1)
	}
}

// TestResumeTopicControlLive: a topic control sent to the user's live
// subject (how the router sends it with --resume: not stored, so it takes
// no room in the user's history) is applied and answered on its reply
// subject, and the user's chain is untouched.
func TestResumeTopicControlLive(t *testing.T) {
	ns := startJSNATS(t)
	srv := resumeGateway(t, ns.ClientURL(), nil)
	nc := natsConn(t, srv)
	js := newJS(t, nc)
	ws, _ := resumeConnect(t, srv, "erin", "")
	m := nats.NewMsg("wsfleet.live." + userSubject(t, "erin")[len("wsfleet."):])
	m.Header.Set(protocol.HeaderControl, protocol.ControlSubscribe)
	m.Header.Set(protocol.HeaderTopic, "room.1")
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil || string(r.Data) != `{"node":"test-node","devices":1}` {
		t.Fatalf("reply %v, %v", r, err)
	}
	if f := readType(t, ws, protocol.TypeSubscribed); f["topic"] != "room.1" {
		t.Fatalf("got %v", f)
	}
	next := jsPublish(t, js, userSubject(t, "erin"), `"after"`)
	if d := readDeliveries(t, ws, 1)[0]; d.seq != next {
		t.Fatalf("got %d, want %d", d.seq, next)
	}
	if g := metricValue(t, srv, "wsfleet_gateway_resume_gaps_total"); g != 0 {
		t.Fatalf("%v gaps", g)
	}
}

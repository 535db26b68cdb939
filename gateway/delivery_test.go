package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

func TestMultiDeviceDeliveryInOrder(t *testing.T) {
	srv := startGateway(t, nil)
	var alice []*wstest.Conn
	for i := 0; i < 3; i++ {
		ws, _ := connect(t, srv, "alice")
		alice = append(alice, ws)
	}
	bob, _ := connect(t, srv, "bob")
	nc := natsConn(t, srv)
	const n = 200
	for i := 0; i < n; i++ {
		m := nats.NewMsg(userSubject(t, "alice"))
		m.Header.Set(protocol.HeaderMsgID, fmt.Sprintf("m-%d", i))
		m.Data = []byte(fmt.Sprintf(`{"seq":%d}`, i))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, nc, "bob", "b-1", `"for bob"`)
	for d, ws := range alice {
		for i := 0; i < n; i++ {
			m := readType(t, ws, protocol.TypeMessage)
			data := m["data"].(map[string]any)
			if m["id"] != fmt.Sprintf("m-%d", i) || data["seq"] != float64(i) {
				t.Fatalf("device %d: message %d is %v", d, i, m)
			}
		}
	}
	m := readType(t, bob, protocol.TypeMessage)
	if m["id"] != "b-1" || m["data"] != "for bob" {
		t.Fatalf("bob got %v", m)
	}
}

func TestPayloadEncoding(t *testing.T) {
	srv := startGateway(t, nil)
	ws, _ := connect(t, srv, "carol")
	nc := natsConn(t, srv)
	cases := []struct {
		name, payload string
		want          string // the raw "data" JSON
	}{
		{"object kept byte for byte", `{"a": [1, 2]}`, `{"a": [1, 2]}`},
		{"plain text becomes a string", `hello`, `"hello"`},
		{"empty becomes null", ``, `null`},
		{"invalid utf8 replaced", "x\xffy", `"x\ufffdy"`},
		{"truncated json becomes a string", `{"a":`, `"{\"a\":"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			publish(t, nc, "carol", "", tc.payload)
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			want := `{"type":"message","data":` + tc.want + `}`
			if string(b) != want {
				t.Fatalf("frame %s, want %s", b, want)
			}
		})
	}
}

// numSubs returns how many subscriptions the node's NATS server holds on
// subject.
func numSubs(t testing.TB, srv *gateway.Server, subject string) int {
	return natsServerOf(t, srv).GlobalAccount().Interest(subject)
}

func TestSubscriptionFollowsDevices(t *testing.T) {
	srv := startGateway(t, nil)
	subj := userSubject(t, "dave")
	if n := numSubs(t, srv, subj); n != 0 {
		t.Fatalf("%d subscriptions before any device", n)
	}
	ws1, _ := connect(t, srv, "dave")
	if n := numSubs(t, srv, subj); n != 1 {
		t.Fatalf("%d subscriptions when welcomed, want 1 (welcome comes after the subscription is live)", n)
	}
	ws2, _ := connect(t, srv, "dave")
	if n := numSubs(t, srv, subj); n != 1 {
		t.Fatalf("%d subscriptions with two devices, want 1", n)
	}
	ws1.Close()
	nc := natsConn(t, srv)
	publish(t, nc, "dave", "still-here", `1`)
	if m := readType(t, ws2, protocol.TypeMessage); m["id"] != "still-here" {
		t.Fatalf("remaining device got %v", m)
	}
	if n := numSubs(t, srv, subj); n != 1 {
		t.Fatalf("%d subscriptions after one of two devices left, want 1", n)
	}
	ws2.Close()
	checkFor(t, 5*time.Second, func() error {
		if n := numSubs(t, srv, subj); n != 0 {
			return errorf("%d subscriptions after the last device left", n)
		}
		return nil
	})
	// And back again.
	connect(t, srv, "dave")
	if n := numSubs(t, srv, subj); n != 1 {
		t.Fatalf("%d subscriptions after reconnecting", n)
	}
}

func TestBroadcastReachesEveryone(t *testing.T) {
	srv := startGateway(t, nil)
	var all []*wstest.Conn
	for i := 0; i < 10; i++ {
		ws, _ := connect(t, srv, fmt.Sprintf("u%d", i%4))
		all = append(all, ws)
	}
	// An unauthenticated socket gets nothing.
	anon := dial(t, wsURL(srv), nil)
	nc := natsConn(t, srv)
	m := nats.NewMsg("wsfleet.broadcast")
	m.Header.Set(protocol.HeaderMsgID, "b-1")
	m.Data = []byte(`{"notice":"maintenance"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	for i, ws := range all {
		got := readType(t, ws, protocol.TypeMessage)
		if got["id"] != "b-1" {
			t.Fatalf("connection %d got %v", i, got)
		}
	}
	anon.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, b, err := anon.ReadMessage(); err == nil {
		t.Fatalf("unauthenticated socket got %s", b)
	}
}

// User ids built to collide with subjects or wildcards never reach another
// user's messages.
func TestHostileUserIDsAreIsolated(t *testing.T) {
	srv := startGateway(t, nil)
	ids := []string{"a", "a.b", "a.*", "a.>", "*", ">", "a b", "a_2Eb", "é", "a\tb"}
	conns := map[string]*wstest.Conn{}
	for _, id := range ids {
		if strings.ContainsAny(id, "\t") {
			continue // control characters are refused at auth (TestAuthModes)
		}
		ws, w := connect(t, srv, id)
		if w["user"] != id {
			t.Fatalf("welcome user %v, want %q", w["user"], id)
		}
		conns[id] = ws
	}
	nc := natsConn(t, srv)
	for id := range conns {
		publish(t, nc, id, "", mustJSON(t, id))
	}
	for id, ws := range conns {
		m := readType(t, ws, protocol.TypeMessage)
		if m["data"] != id {
			t.Fatalf("user %q got %v", id, m)
		}
		ws.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, b, err := ws.ReadMessage(); err == nil {
			t.Fatalf("user %q got a second message %s", id, b)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClientPublishReachesNATS(t *testing.T) {
	srv := startGateway(t, nil)
	nc := natsConn(t, srv)
	sub, err := nc.SubscribeSync("wsfleet.in.*")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	ws, welcome := connect(t, srv, "erin.x")
	send(t, ws, map[string]any{"type": "publish", "data": map[string]any{"text": "hi"}})
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "wsfleet.in.erin_2Ex" {
		t.Fatalf("subject %q", m.Subject)
	}
	if string(m.Data) != `{"text":"hi"}` {
		t.Fatalf("data %s", m.Data)
	}
	if m.Header.Get(protocol.HeaderUser) != "erin.x" || m.Header.Get(protocol.HeaderConnID) != welcome["conn_id"] || m.Header.Get(protocol.HeaderNode) != "test-node" {
		t.Fatalf("headers %v, welcome %v", m.Header, welcome)
	}
	// Bad frames get an error frame and the connection stays.
	ws.WriteMessage(wstest.TextMessage, []byte(`{"type":"publish"}`))
	e := readType(t, ws, protocol.TypeError)
	if e["code"] != protocol.ErrCodeBadRequest {
		t.Fatalf("error %v", e)
	}
	send(t, ws, map[string]string{"type": "ping"})
	readType(t, ws, protocol.TypePong)
}

func TestWebSocketPingIsAnswered(t *testing.T) {
	srv := startGateway(t, nil)
	ws, _ := connect(t, srv, "frank")
	got := make(chan string, 1)
	ws.SetPongHandler(func(p string) error { got <- p; return nil })
	if err := ws.WriteControl(wstest.PingMessage, []byte("are-you-there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() { ws.SetReadDeadline(time.Now().Add(5 * time.Second)); ws.ReadMessage() }()
	select {
	case p := <-got:
		if p != "are-you-there" {
			t.Fatalf("pong payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

func TestBinaryFramesRefused(t *testing.T) {
	srv := startGateway(t, nil)
	ws, _ := connect(t, srv, "gina")
	ws.WriteMessage(wstest.BinaryMessage, []byte{1, 2, 3})
	expectClose(t, ws, protocol.CloseUnsupportedData, "binary")
}

func TestClientCloseIsEchoed(t *testing.T) {
	srv := startGateway(t, nil)
	for _, code := range []int{1000, 1001, 1012, 1013, 3000, 4000, 4999} { // gorilla itself refuses to read 1014
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			ws, _ := connect(t, srv, "hank")
			ws.WriteMessage(wstest.CloseMessage, wstest.FormatCloseMessage(code, "bye"))
			expectClose(t, ws, protocol.CloseCode(code), "")
		})
	}
}

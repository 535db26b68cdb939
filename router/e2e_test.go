package router_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

// End-to-end tests: real gateway nodes (in-process, or a separate process
// killed with SIGKILL) sharing one nats-server with real routers.

const gatewaySecret = "gateway-test-secret-0123456789abcdef"

// startGatewayNode runs an in-process gateway node on ns.
func startGatewayNode(t testing.TB, ns *server.Server, id string) *gateway.Server {
	t.Helper()
	return startGatewayNodeWith(t, ns, id, nil)
}

// startGatewayNodeWith is startGatewayNode with the options changed by mod.
func startGatewayNodeWith(t testing.TB, ns *server.Server, id string, mod func(*gateway.Options)) *gateway.Server {
	t.Helper()
	o := gateway.Options{
		NATSURL:               ns.ClientURL(),
		Listen:                "127.0.0.1:0",
		AdminListen:           "127.0.0.1:0",
		JWT:                   jwtverify.Config{HS256Secret: gatewaySecret},
		NodeID:                id,
		PresenceInterval:      100 * time.Millisecond,
		PresenceBatchInterval: 10 * time.Millisecond,
		Pollers:               1,
		Logger:                zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
	}
	if mod != nil {
		mod(&o)
	}
	gw, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

// fleetOpts are router options for the end-to-end tests.
func fleetOpts(o *router.Options) {
	o.NodeTTL = time.Second
	o.SnapshotTimeout = 500 * time.Millisecond
	o.KickTimeout = 5 * time.Second
}

// wsClient is a WebSocket client of a gateway; one goroutine reads.
type wsClient struct {
	ws     *wstest.Conn
	frames chan map[string]any
	closed chan int // the close code (1006 when the connection just dropped)
}

// connect opens a connection to addr as user and waits for its welcome.
func connect(t testing.TB, addr, user string) *wsClient {
	t.Helper()
	return connectClaims(t, addr, user, nil)
}

// connectClaims is connect with private claims in the token.
func connectClaims(t testing.TB, addr, user string, extra map[string]any) *wsClient {
	t.Helper()
	ws, _, err := wstest.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { ws.Close() })
	tok, err := jwtmint.Mint("HS256", []byte(gatewaySecret), jwtmint.Claims{Subject: user, TTL: time.Hour, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteJSON(map[string]string{"type": protocol.TypeAuth, "token": tok}); err != nil {
		t.Fatal(err)
	}
	c := &wsClient{ws: ws, frames: make(chan map[string]any, 64), closed: make(chan int, 1)}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				code := wstest.CloseAbnormalClosure
				var ce *wstest.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				c.closed <- code
				close(c.frames)
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				c.frames <- m
			}
		}
	}()
	if m := c.next(t, protocol.TypeWelcome); m["user"] != user {
		t.Fatalf("welcome %v", m)
	}
	return c
}

// next returns the next frame of type typ (pings are skipped).
func (c *wsClient) next(t testing.TB, typ string) map[string]any {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				t.Fatalf("connection closed waiting for a %q frame", typ)
			}
			if m["type"] == typ {
				return m
			}
			if m["type"] != protocol.TypePing {
				t.Fatalf("got %v, want a %q frame", m, typ)
			}
		case <-timeout:
			t.Fatalf("no %q frame", typ)
		}
	}
}

// closeCode waits for the connection to be closed and returns the code.
func (c *wsClient) closeCode(t testing.TB) int {
	t.Helper()
	for {
		select {
		case code := <-c.closed:
			return code
		case _, ok := <-c.frames:
			if !ok {
				continue
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the connection was not closed")
		}
	}
}

func gwAddr(gw *gateway.Server) string { return gw.Addr().String() }

// TestFleetPresence: presence follows connects and disconnects on two
// in-process gateway nodes.
func TestFleetPresence(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g1, g2 := startGatewayNode(t, ns, "gw-1"), startGatewayNode(t, ns, "gw-2")
	srv := startRouter(t, ns, fleetOpts)
	a1 := connect(t, gwAddr(g1), "alice")
	a2 := connect(t, gwAddr(g1), "alice")
	a3 := connect(t, gwAddr(g2), "alice")
	b1 := connect(t, gwAddr(g2), "bob.smith")
	waitWhere(t, srv, "alice", "gw-1=2,gw-2=1")
	waitWhere(t, srv, "bob.smith", "gw-2=1")
	checkFor(t, 5*time.Second, func() error {
		s := statsOf(t, srv)
		if s.Nodes != 2 || s.Users != 2 || s.Connections != 4 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	a1.ws.Close()
	waitWhere(t, srv, "alice", "gw-1=1,gw-2=1")
	a3.ws.Close()
	waitWhere(t, srv, "alice", "gw-1=1")
	a2.ws.Close()
	b1.ws.Close()
	waitWhere(t, srv, "alice", "")
	waitWhere(t, srv, "bob.smith", "")
	checkFor(t, 5*time.Second, func() error {
		if s := statsOf(t, srv); s.Users != 0 || s.Connections != 0 || s.Nodes != 2 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
}

// TestFleetDeliveryAndKick: a batch reaches every device on both nodes
// with the ids of the answer; a kick closes every device of the user on
// both nodes with 4403 and counts them.
func TestFleetDeliveryAndKick(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g1, g2 := startGatewayNode(t, ns, "gw-1"), startGatewayNode(t, ns, "gw-2")
	srv := startRouter(t, ns, fleetOpts)
	alice := []*wsClient{connect(t, gwAddr(g1), "alice"), connect(t, gwAddr(g1), "alice"), connect(t, gwAddr(g2), "alice")}
	bob := connect(t, gwAddr(g2), "bob")
	waitWhere(t, srv, "alice", "gw-1=2,gw-2=1")
	waitWhere(t, srv, "bob", "gw-2=1")

	rs := resultsOf(t, do(t, http.MethodPost, apiURL(srv)+"/v1/messages", testKey,
		`{"users":["alice","bob","carol"],"data":{"text":"shipped"}}`), http.StatusAccepted)
	if got, want := summary(rs), "alice:online=true:devices=3:id bob:online=true:devices=1:id carol:online=false:devices=0:id"; got != want {
		t.Fatalf("results %q, want %q", got, want)
	}
	for _, c := range alice {
		if m := c.next(t, protocol.TypeMessage); m["id"] != rs[0].ID || fmt.Sprint(m["data"]) != "map[text:shipped]" {
			t.Fatalf("alice got %v, want id %s", m, rs[0].ID)
		}
	}
	if m := bob.next(t, protocol.TypeMessage); m["id"] != rs[1].ID {
		t.Fatalf("bob got %v", m)
	}

	start := time.Now()
	r := do(t, http.MethodDelete, apiURL(srv)+"/v1/users/alice/connections", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"closed":3,"nodes":2}`+"\n" {
		t.Fatalf("kick: %d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("kick took %s; it should end when both nodes answered", d)
	}
	for i, c := range alice {
		if code := c.closeCode(t); code != int(protocol.CloseKicked) {
			t.Fatalf("alice device %d closed with %d, want 4403", i, code)
		}
	}
	waitWhere(t, srv, "alice", "")
	// bob is untouched.
	id := post(t, srv, "bob", `"still here"`).accepted(t)
	if m := bob.next(t, protocol.TypeMessage); m["id"] != id {
		t.Fatalf("bob got %v", m)
	}
}

// TestFleetTopicPublish: POST /v1/topics/{topic}/messages reaches every
// subscriber of the topic on both nodes, with the answer's id, and no one
// else; a bad topic is a 400 that publishes nothing.
func TestFleetTopicPublish(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g1, g2 := startGatewayNode(t, ns, "gw-1"), startGatewayNode(t, ns, "gw-2")
	srv := startRouter(t, ns, fleetOpts)
	room := map[string]any{"topics": []string{"room.*"}}
	var members []*wsClient
	for i, g := range []*gateway.Server{g1, g1, g2} {
		c := connectClaims(t, gwAddr(g), fmt.Sprintf("member-%d", i), room)
		if err := c.ws.WriteJSON(map[string]string{"type": "subscribe", "topic": "room.1"}); err != nil {
			t.Fatal(err)
		}
		c.next(t, protocol.TypeSubscribed)
		members = append(members, c)
	}
	other := connectClaims(t, gwAddr(g2), "other", room)
	if err := other.ws.WriteJSON(map[string]string{"type": "subscribe", "topic": "room.2"}); err != nil {
		t.Fatal(err)
	}
	other.next(t, protocol.TypeSubscribed)

	for _, tc := range []struct{ name, topic string }{
		{"empty segment", "room..1"},
		{"wildcard", "room.*"},
		{"space", "room%201"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, apiURL(srv)+"/v1/topics/"+tc.topic+"/messages", testKey, `1`)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"code":"bad_topic"`) {
				t.Fatalf("%s: %d %s", tc.topic, r.status, r.body)
			}
		})
	}
	// Both nodes have subscribers of room.1 once their presence batches
	// say so; the answer counts them.
	checkFor(t, 5*time.Second, func() error {
		r := do(t, http.MethodGet, apiURL(srv)+"/v1/topics/room.1/presence", testKey, nil)
		if !strings.Contains(string(r.body), `"nodes":2`) {
			return fmt.Errorf("%d %s", r.status, r.body)
		}
		return nil
	})
	r := do(t, http.MethodPost, apiURL(srv)+"/v1/topics/room.1/messages", testKey, `{"text":"hi"}`)
	var ans struct {
		Topic, ID string
		Nodes     int
	}
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &ans) != nil || ans.Topic != "room.1" || ans.ID == "" || ans.Nodes != 2 {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	for i, c := range members {
		if m := c.next(t, protocol.TypeMessage); m["topic"] != "room.1" || m["id"] != ans.ID || fmt.Sprint(m["data"]) != "map[text:hi]" {
			t.Fatalf("member %d got %v, want id %s", i, m, ans.ID)
		}
	}
	if err := other.ws.WriteJSON(map[string]string{"type": "ping"}); err != nil {
		t.Fatal(err)
	}
	other.next(t, protocol.TypePong) // nothing of room.1 (and none of the refused) before it

	// A batch to a user and topics: member-0 gets it twice (as itself and
	// in room.1), the others once, room.2's member once; a bad topic is
	// its own error.
	r = do(t, http.MethodPost, apiURL(srv)+"/v1/messages", testKey,
		`{"users":["member-0"],"topics":["room.1","room.2","room..x","room.1"],"data":"batch"}`)
	var b struct {
		Results []struct{ User, ID string }
		Topics  []struct{ Topic, ID, Error string }
	}
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &b) != nil || len(b.Results) != 1 || len(b.Topics) != 3 ||
		b.Topics[0].Topic != "room.1" || b.Topics[0].ID == "" || b.Topics[1].ID == "" || b.Topics[2].Error != "bad_topic" {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	// Member 0 gets its own and room.1's, in either order (two subjects:
	// no order between them).
	own, inRoom := 0, 0
	for range 2 {
		switch m := members[0].next(t, protocol.TypeMessage); {
		case m["topic"] == nil && m["id"] == b.Results[0].ID:
			own++
		case m["topic"] == "room.1" && m["id"] == b.Topics[0].ID:
			inRoom++
		default:
			t.Fatalf("member 0: %v", m)
		}
	}
	if own != 1 || inRoom != 1 {
		t.Fatalf("member 0 got its own %d times and room.1's %d times", own, inRoom)
	}
	for i, c := range members[1:] {
		if m := c.next(t, protocol.TypeMessage); m["topic"] != "room.1" || m["id"] != b.Topics[0].ID {
			t.Fatalf("member %d: %v", i+1, m)
		}
	}
	if m := other.next(t, protocol.TypeMessage); m["topic"] != "room.2" || m["id"] != b.Topics[1].ID {
		t.Fatalf("room.2's member: %v", m)
	}
	if r := do(t, http.MethodPost, apiURL(srv)+"/v1/messages", testKey, `{"users":[],"topics":[],"data":1}`); r.status != http.StatusBadRequest {
		t.Fatalf("an empty batch: %d %s", r.status, r.body)
	}
}

// TestFleetUserTopics: PUT /v1/users/{user}/topics/{topic} subscribes
// every device of the user on both nodes (no claim needed: the service
// says so), answered once the subscriptions are live; a token refresh
// keeps them; DELETE ends them with an "unsubscribed" that says why.
func TestFleetUserTopics(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g1, g2 := startGatewayNode(t, ns, "gw-1"), startGatewayNode(t, ns, "gw-2")
	srv := startRouter(t, ns, fleetOpts)
	alice := []*wsClient{connect(t, gwAddr(g1), "alice"), connect(t, gwAddr(g1), "alice"), connect(t, gwAddr(g2), "alice")}
	bob := connect(t, gwAddr(g2), "bob")
	waitWhere(t, srv, "alice", "gw-1=2,gw-2=1")

	r := do(t, http.MethodPut, apiURL(srv)+"/v1/users/alice/topics/room.5", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"user":"alice","topic":"room.5","devices":3,"nodes":2}`+"\n" {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	for i, c := range alice {
		if m := c.next(t, protocol.TypeSubscribed); m["topic"] != "room.5" {
			t.Fatalf("device %d: %v", i, m)
		}
	}
	// Again: the devices hold it already, nothing changes.
	if r := do(t, http.MethodPut, apiURL(srv)+"/v1/users/alice/topics/room.5", testKey, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"devices":3`) {
		t.Fatalf("PUT again: %d %s", r.status, r.body)
	}
	// A refresh without any topics claim keeps what the service subscribed.
	tok, err := jwtmint.Mint("HS256", []byte(gatewaySecret), jwtmint.Claims{Subject: "alice", TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice[0].ws.WriteJSON(map[string]string{"type": protocol.TypeAuth, "token": tok}); err != nil {
		t.Fatal(err)
	}
	alice[0].next(t, protocol.TypeRefreshed)
	r = do(t, http.MethodPost, apiURL(srv)+"/v1/topics/room.5/messages", testKey, `"to the room"`)
	var ans struct{ ID string }
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	for i, c := range alice {
		if m := c.next(t, protocol.TypeMessage); m["topic"] != "room.5" || m["id"] != ans.ID {
			t.Fatalf("device %d: %v", i, m)
		}
	}
	if err := bob.ws.WriteJSON(map[string]string{"type": "ping"}); err != nil {
		t.Fatal(err)
	}
	bob.next(t, protocol.TypePong) // bob was not subscribed

	r = do(t, http.MethodDelete, apiURL(srv)+"/v1/users/alice/topics/room.5", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"user":"alice","topic":"room.5","devices":3,"nodes":2}`+"\n" {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	for i, c := range alice {
		if m := c.next(t, protocol.TypeUnsubscribed); m["topic"] != "room.5" || !strings.Contains(fmt.Sprint(m["reason"]), "service") {
			t.Fatalf("device %d: %v", i, m)
		}
	}
	if r := do(t, http.MethodDelete, apiURL(srv)+"/v1/users/alice/topics/room.5", testKey, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"devices":0,"nodes":2`) {
		t.Fatalf("DELETE again: %d %s", r.status, r.body)
	}
	for _, tc := range []struct{ name, path, code string }{
		{"bad topic", "/v1/users/alice/topics/room..5", "bad_topic"},
		{"wildcard topic", "/v1/users/alice/topics/room.%3E", "bad_topic"},
		{"bad user", "/v1/users/%0A/topics/room.5", "bad_user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPut, apiURL(srv)+tc.path, testKey, nil)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"code":"`+tc.code+`"`) {
				t.Fatalf("%s: %d %s", tc.path, r.status, r.body)
			}
		})
	}
	// A user with no device: nobody to answer, at once.
	if r := do(t, http.MethodPut, apiURL(srv)+"/v1/users/carol/topics/room.5", testKey, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"devices":0,"nodes":0`) {
		t.Fatalf("offline user: %d %s", r.status, r.body)
	}
}

// TestFleetTopicPresence: topic presence follows subscribes, unsubscribes
// and closes on two nodes, for the topics of --topic-presence only; join
// and leave events reach services; a node that goes away takes its
// members with it.
func TestFleetTopicPresence(t *testing.T) {
	ns := startNATS(t, -1, nil)
	pres := func(o *gateway.Options) { o.TopicPresence = []string{"room.*"} }
	g1, g2 := startGatewayNodeWith(t, ns, "gw-1", pres), startGatewayNodeWith(t, ns, "gw-2", pres)
	srv := startRouter(t, ns, fleetOpts)
	nc := natsConnect(t, ns)
	events, err := nc.SubscribeSync("wsfleet.presence.topic.room.1")
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"topics": []string{"room.*", "feed.*"}}
	sub := func(c *wsClient, topic string) {
		t.Helper()
		if err := c.ws.WriteJSON(map[string]string{"type": "subscribe", "topic": topic}); err != nil {
			t.Fatal(err)
		}
		c.next(t, protocol.TypeSubscribed)
	}
	a1, a2 := connectClaims(t, gwAddr(g1), "alice", claims), connectClaims(t, gwAddr(g2), "alice", claims)
	b1 := connectClaims(t, gwAddr(g2), "bob", claims)
	sub(a1, "room.1")
	sub(a2, "room.1")
	sub(b1, "room.1")
	sub(b1, "feed.1") // not a presence topic
	wait := 5 * time.Second
	want := func(topic, body string) {
		t.Helper()
		checkFor(t, wait, func() error {
			r := do(t, http.MethodGet, apiURL(srv)+"/v1/topics/"+topic+"/presence", testKey, nil)
			if r.status != http.StatusOK || string(r.body) != body+"\n" {
				return fmt.Errorf("%d %s, want %s", r.status, r.body, body)
			}
			return nil
		})
	}
	want("room.1", `{"topic":"room.1","users":2,"devices":3,"nodes":2,"members":[{"user":"alice","devices":2},{"user":"bob","devices":1}]}`)
	want("feed.1", `{"topic":"feed.1","users":0,"devices":0,"nodes":1,"members":[]}`)
	joined := map[string]int{}
	for len(joined) < 2 || joined["alice"] < 2 {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("join events so far %v: %v", joined, err)
		}
		var ev protocol.TopicPresenceEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Topic != "room.1" {
			t.Fatalf("event %s: %v", m.Data, err)
		}
		for _, u := range ev.Joined {
			joined[u]++ // once per node the user joined on
		}
	}
	if err := b1.ws.WriteJSON(map[string]string{"type": "unsubscribe", "topic": "room.1"}); err != nil {
		t.Fatal(err)
	}
	b1.next(t, protocol.TypeUnsubscribed)
	a1.ws.Close()
	want("room.1", `{"topic":"room.1","users":1,"devices":1,"nodes":1,"members":[{"user":"alice","devices":1}]}`)
	// gw-2 vanishes without a word (its NATS connection cut, no batch can
	// say its members left): the router drops it, and alice's last device
	// in the room with it.
	g2.NATSConn().Close()
	wait = 20 * time.Second // --node-ttl, a probe, the drop
	want("room.1", `{"topic":"room.1","users":0,"devices":0,"nodes":0,"members":[]}`)
	if r := do(t, http.MethodGet, apiURL(srv)+"/v1/topics/room..1/presence", testKey, nil); r.status != http.StatusBadRequest {
		t.Fatalf("bad topic: %d %s", r.status, r.body)
	}
}

// TestFleetTopicPresenceSnapshot: a router started after the members
// joined learns them from the nodes' snapshots.
func TestFleetTopicPresenceSnapshot(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g := startGatewayNodeWith(t, ns, "gw-1", func(o *gateway.Options) { o.TopicPresence = []string{"room.>"} })
	for _, u := range []string{"carol", "dave", "dave"} {
		c := connectClaims(t, gwAddr(g), u, map[string]any{"topics": []string{"room.>"}})
		if err := c.ws.WriteJSON(map[string]string{"type": "subscribe", "topic": "room.9.general"}); err != nil {
			t.Fatal(err)
		}
		c.next(t, protocol.TypeSubscribed)
	}
	srv := startRouter(t, ns, fleetOpts)
	checkFor(t, 10*time.Second, func() error {
		r := do(t, http.MethodGet, apiURL(srv)+"/v1/topics/room.9.general/presence", testKey, nil)
		if want := `{"topic":"room.9.general","users":2,"devices":3,"nodes":1,"members":[{"user":"carol","devices":1},{"user":"dave","devices":2}]}` + "\n"; r.status != http.StatusOK || string(r.body) != want {
			return fmt.Errorf("%d %s", r.status, r.body)
		}
		return nil
	})
}

// TestFleetRouterRestart: clients connect while no router runs; a new
// router converges through snapshots, and a restarted gateway node is
// resynced.
func TestFleetRouterRestart(t *testing.T) {
	ns := startNATS(t, -1, nil)
	g1, g2 := startGatewayNode(t, ns, "gw-1"), startGatewayNode(t, ns, "gw-2")
	first := startRouter(t, ns, fleetOpts)
	connect(t, gwAddr(g1), "alice")
	waitWhere(t, first, "alice", "gw-1=1")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		connect(t, gwAddr(g2), fmt.Sprintf("user-%d", i))
	}
	connect(t, gwAddr(g2), "alice")
	second := startRouter(t, ns, fleetOpts)
	waitWhere(t, second, "alice", "gw-1=1,gw-2=1")
	for i := 0; i < 5; i++ {
		waitWhere(t, second, fmt.Sprintf("user-%d", i), "gw-2=1")
	}
	checkFor(t, 5*time.Second, func() error {
		if s := statsOf(t, second); s.Users != 6 || s.Connections != 7 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	// gw-1 restarts (a new process, a new epoch): its alice is gone.
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	startGatewayNode(t, ns, "gw-1")
	waitWhere(t, second, "alice", "gw-2=1")
}

var (
	gatewayBinOnce sync.Once
	gatewayBin     string
	gatewayBinErr  error
)

// buildGateway builds ./cmd/gateway once per test run.
func buildGateway(t *testing.T) string {
	t.Helper()
	gatewayBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wsfleet-gateway-bin")
		if err != nil {
			gatewayBinErr = err
			return
		}
		gatewayBin = filepath.Join(dir, "gateway")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", gatewayBin, "./cmd/gateway")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			gatewayBinErr = fmt.Errorf("go build ./cmd/gateway: %v\n%s", err, out)
		}
	})
	if gatewayBinErr != nil {
		t.Fatal(gatewayBinErr)
	}
	return gatewayBin
}

// TestFleetGatewayKilled: a gateway process killed with SIGKILL sends no
// goodbye; the router drops it and its users after --node-ttl, while the
// other node's users stay.
func TestFleetGatewayKilled(t *testing.T) {
	t.Parallel()
	bin := buildGateway(t)
	ns := startNATS(t, -1, nil)
	g2 := startGatewayNode(t, ns, "gw-2")
	srv := startRouter(t, ns, fleetOpts)
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin-listen", "off", "--nats-url", ns.ClientURL(),
		"--node-id", "gw-proc", "--presence-interval", "100ms", "--presence-batch-interval", "10ms", "--pollers", "1")
	cmd.Env = append(os.Environ(), "WSFLEET_GATEWAY_JWT_HS256_SECRET="+gatewaySecret)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	listen := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "gateway started" {
				l, _ := m["listen"].(string)
				listen <- l
			}
		}
	}()
	var addr string
	select {
	case addr = <-listen:
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway process did not start")
	}
	connect(t, addr, "alice")
	connect(t, addr, "alice")
	connect(t, addr, "bob")
	connect(t, gwAddr(g2), "alice")
	waitWhere(t, srv, "alice", "gw-2=1,gw-proc=2")
	waitWhere(t, srv, "bob", "gw-proc=1")

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = cmd.Wait()
	waitWhere(t, srv, "bob", "")
	if d := time.Since(killed); d < 800*time.Millisecond {
		t.Fatalf("dropped %s after the kill, before --node-ttl (1s)", d)
	}
	waitWhere(t, srv, "alice", "gw-2=1")
	s := statsOf(t, srv)
	if s.Nodes != 1 || s.NodeList[0].Node != "gw-2" || s.Users != 1 {
		t.Fatalf("stats after the kill: %+v", s)
	}
	if !strings.Contains(metricsText(t, srv), `wsfleet_router_presence_nodes_expired_total{reason="gone"} 1`) {
		t.Fatal("the expiry is not counted as gone")
	}
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/internal/promtext"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/router"
)

// Gateway processes paused with SIGSTOP for longer than the NATS ping
// interval (20 s) are alive, only late, as nodes starved of CPU are: the
// router keeps publishing (202 for every publish, to users on paused and
// running nodes alike), keeps the paused nodes and their users in presence
// (its probes find their NATS subscriptions alive), and once the nodes
// resume their clients get every message published meanwhile, in order.
// Then a node that really dies is dropped at once, well inside
// --node-max-silence.
func TestPausedGatewaysStayPresent(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses gateways for 25 s")
	}
	const pause = 25 * time.Second
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(ns.Shutdown)

	r, err := router.New(router.Options{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: ns.ClientURL(),
		APIKeys:        []string{"overload-test-api-key-0001"},
		NodeTTL:        time.Second,
		NodeMaxSilence: 2 * time.Minute,
		Logger:         zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	api, admin := "http://"+r.Addr().String(), "http://"+r.AdminAddr().String()

	// Three nodes, two users on each.
	var nodes []*node
	users := map[string]*wstest.Conn{}
	for i := range 3 {
		n := startNode(t, []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret},
			"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-url", ns.ClientURL(),
			"--node-id", fmt.Sprintf("paused-%d", i), "--presence-interval", "250ms")
		nodes = append(nodes, n)
		for j := range 2 {
			u := fmt.Sprintf("u%d-%d", i, j)
			ws, _, err := wstest.Dial("ws://"+n.listen+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			ws.WriteJSON(map[string]string{"type": "auth", "token": mint(t, u)})
			readFrame(t, ws, "welcome")
			users[u] = ws
		}
	}
	online := func(u string) bool {
		var p struct{ Online bool }
		status, body := call(t, http.MethodGet, api+"/v1/users/"+u+"/presence", "")
		return status == 200 && json.Unmarshal(body, &p) == nil && p.Online
	}
	checkFor(t, 10*time.Second, func() error {
		for u := range users {
			if !online(u) {
				return fmt.Errorf("%s not online yet", u)
			}
		}
		return nil
	})

	// Pause nodes 1 and 2; publish to everyone every 500 ms meanwhile.
	for _, n := range nodes[1:] {
		if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, n := range nodes[1:] {
				n.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
	}
	t.Cleanup(resume)
	sent := 0
	for end := time.Now().Add(pause); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		for u := range users {
			if status, body := call(t, http.MethodPost, api+"/v1/users/"+u+"/messages", fmt.Sprintf(`{"n":%d}`, sent)); status != http.StatusAccepted {
				t.Fatalf("publish %d to %s while nodes are paused: %d %s, want 202", sent, u, status, body)
			}
		}
		sent++
		for u := range users {
			if !online(u) {
				t.Fatalf("%s dropped from presence %s into the pause; its node is only paused", u, time.Since(end.Add(-pause)).Round(time.Millisecond))
			}
		}
	}
	resume()

	// Every client, on a paused node or not, gets every message, in order.
	for u, ws := range users {
		for want := 0; want < sent; want++ {
			m := readFrame(t, ws, "message")
			var d struct{ N int }
			if json.Unmarshal(m["data"], &d) != nil || d.N != want {
				t.Fatalf("%s: got %s, want message %d", u, m["data"], want)
			}
		}
	}
	m := routerMetrics(t, admin)
	if m[`wsfleet_router_presence_probes_total{result="late"}`] < 1 {
		t.Errorf("no probe found a paused node late: %v", m)
	}
	if m["wsfleet_router_presence_nodes_expired_total"] != 0 {
		t.Errorf("nodes dropped while only paused: %v", m)
	}

	// A node that dies is dropped at once: NATS answers the probe that
	// nobody listens.
	killed := time.Now()
	nodes[2].cmd.Process.Kill()
	checkFor(t, 15*time.Second, func() error {
		if online("u2-0") {
			return fmt.Errorf("u2-0 still online %s after its node was killed", time.Since(killed).Round(time.Millisecond))
		}
		return nil
	})
	if m := routerMetrics(t, admin); m[`wsfleet_router_presence_nodes_expired_total{reason="gone"}`] != 1 {
		t.Errorf("the killed node was not dropped as gone: %v", m)
	}
	if !online("u0-0") || !online("u1-0") {
		t.Error("a live node was dropped with the killed one")
	}
}

// call makes an API request with the test key.
func call(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer overload-test-api-key-0001")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// readFrame reads frames until one of type typ, skipping pings.
func readFrame(t *testing.T, ws *wstest.Conn, typ string) map[string]json.RawMessage {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			t.Fatalf("frame %s is not JSON", b)
		}
		var got string
		json.Unmarshal(m["type"], &got)
		if got == typ {
			return m
		}
		if got != "ping" {
			t.Fatalf("got %s while waiting for %s", b, typ)
		}
	}
}

func routerMetrics(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, err := promtext.SumBy(bufio.NewReader(resp.Body), []string{"reason", "result"},
		"wsfleet_router_presence_probes_total", "wsfleet_router_presence_nodes_expired_total")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkFor polls f every 50 ms until it returns nil or within passes.
func checkFor(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

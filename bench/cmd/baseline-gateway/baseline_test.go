package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/protocol"
)

// The baseline must speak the same protocol for the comparison to be fair.
func TestBaselineSpeaksTheProtocol(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats")
	}
	defer ns.Shutdown()
	const secret = "baseline-secret-0123456789abcdef-01"
	s, err := New(Options{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: ns.ClientURL(), Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tok, _ := jwtmint.Mint("HS256", []byte(secret), jwtmint.Claims{Subject: "a.b", TTL: time.Hour})
	ws.WriteJSON(map[string]string{"type": "auth", "token": tok})
	read := func() map[string]any {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := read(); m["type"] != "welcome" || m["user"] != "a.b" {
		t.Fatalf("welcome %v", m)
	}
	nc, _ := nats.Connect(ns.ClientURL())
	defer nc.Close()
	checkSubscribed := time.Now().Add(5 * time.Second)
	for ns.NumSubscriptions() < 2 && time.Now().Before(checkSubscribed) {
		time.Sleep(10 * time.Millisecond)
	}
	m := nats.NewMsg("wsfleet.user.a_2Eb")
	m.Header.Set(protocol.HeaderMsgID, "m1")
	m.Data = []byte(`{"x":1}`)
	nc.PublishMsg(m)
	got := read()
	b, _ := json.Marshal(got["data"])
	if got["type"] != "message" || got["id"] != "m1" || string(b) != `{"x":1}` {
		t.Fatalf("message %v", got)
	}
}

// bench-fleet runs K baseline processes on one port and forces their GC
// through the admin port, as it does with the gateway.
func TestBaselineReusePortAndPprof(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats")
	}
	defer ns.Shutdown()
	o := Options{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: ns.ClientURL(), Secret: "baseline-secret-0123456789abcdef-01", ReusePort: true}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	o.Listen = a.Addr().String()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("second process on %s with ReusePort: %v", o.Listen, err)
	}
	defer b.Close()
	o.ReusePort = false
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err == nil {
		c.Close()
		t.Fatal("a listener without ReusePort shared the port")
	}
	c.nc.Close()
	c.verifier.Close()
	resp, err := http.Get("http://" + a.AdminAddr().String() + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/debug/pprof/heap?gc=1: %s", resp.Status)
	}
}

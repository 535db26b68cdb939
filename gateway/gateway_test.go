package gateway_test

import (
	"testing"
)

func TestSmoke(t *testing.T) {
	srv := startGateway(t, nil)
	ws, welcome := connect(t, srv, "alice")
	if welcome["user"] != "alice" || welcome["node"] != "test-node" || welcome["conn_id"] == "" || welcome["heartbeat"] != float64(30) {
		t.Fatalf("welcome %v", welcome)
	}
	nc := natsConn(t, srv)
	publish(t, nc, "alice", "m-1", `{"hello":"world"}`)
	m := readType(t, ws, "message")
	if m["id"] != "m-1" {
		t.Fatalf("message %v", m)
	}
}

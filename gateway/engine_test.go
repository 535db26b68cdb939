package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/protocol"
)

// readFrames reads raw server frames (after the 101 response) from a
// rawClient until n text frames arrived, and returns their payloads.
func (r *rawClient) readTexts(t *testing.T, n int) []string {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []string
	for len(out) < n {
		p := r.readFrame(t)
		out = append(out, string(p))
	}
	return out
}

func TestNothingBeforeWelcome(t *testing.T) {
	srv := startGateway(t, nil)
	// Upgrade, auth and a ping in one packet: the pong must follow the welcome.
	c := dialRaw(t, srv.Addr().String(), token(t, "pipelined"))
	if _, err := c.c.Write(maskedText([]byte(`{"type":"ping"}`))); err != nil {
		t.Fatal(err)
	}
	c.skipResponse(t)
	got := c.readTexts(t, 2)
	if !bytes.Contains([]byte(got[0]), []byte(`"welcome"`)) || got[1] != string(protocol.PongJSON) {
		t.Fatalf("frames %q, want the welcome then a pong", got)
	}
}

package gateway_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/protocol"
)

// presenceWatcher collects a node's presence batches and heartbeats.
type presenceWatcher struct {
	batches chan protocol.PresenceBatch
	beats   chan protocol.NodeHeartbeat
}

func watchPresence(t *testing.T, nc *nats.Conn) *presenceWatcher {
	t.Helper()
	w := &presenceWatcher{batches: make(chan protocol.PresenceBatch, 1000), beats: make(chan protocol.NodeHeartbeat, 1000)}
	if _, err := nc.Subscribe("wsfleet.presence.events", func(m *nats.Msg) {
		var b protocol.PresenceBatch
		if err := json.Unmarshal(m.Data, &b); err != nil {
			t.Errorf("batch %s: %v", m.Data, err)
		}
		w.batches <- b
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("wsfleet.presence.heartbeat", func(m *nats.Msg) {
		var h protocol.NodeHeartbeat
		json.Unmarshal(m.Data, &h)
		w.beats <- h
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	return w
}

// state applies batches until f is satisfied by the resulting device counts.
func (w *presenceWatcher) until(t *testing.T, devices map[string]int, f func() bool) []protocol.PresenceBatch {
	t.Helper()
	var seen []protocol.PresenceBatch
	deadline := time.After(5 * time.Second)
	for !f() {
		select {
		case b := <-w.batches:
			if len(seen) > 0 && b.Seq != seen[len(seen)-1].Seq+1 {
				t.Fatalf("batch seq %d after %d", b.Seq, seen[len(seen)-1].Seq)
			}
			seen = append(seen, b)
			for _, c := range b.Changes {
				devices[c.User] = c.Devices
			}
		case <-deadline:
			t.Fatalf("presence did not reach the expected state: %v", devices)
		}
	}
	return seen
}

func TestPresenceBatchesAndSnapshot(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) {
		o.PresenceInterval = 200 * time.Millisecond
		o.PresenceBatchInterval = 50 * time.Millisecond
	})
	nc := natsConn(t, srv)
	w := watchPresence(t, nc)
	devices := map[string]int{}

	a1, _ := connect(t, srv, "ann")
	connect(t, srv, "ann")
	connect(t, srv, "bo.b")
	batches := w.until(t, devices, func() bool { return devices["ann"] == 2 && devices["bo.b"] == 1 })
	onlineSeen := map[string]bool{}
	for _, b := range batches {
		if b.Node != "test-node" || b.Epoch == "" {
			t.Fatalf("batch %+v", b)
		}
		for _, c := range b.Changes {
			if c.Online != nil && *c.Online {
				onlineSeen[c.User] = true
			}
		}
	}
	if !onlineSeen["ann"] || !onlineSeen["bo.b"] {
		t.Fatalf("no online event for each user: %+v", batches)
	}

	a1.Close()
	w.until(t, devices, func() bool { return devices["ann"] == 1 })

	// A snapshot agrees with the batches.
	inbox := nats.NewInbox()
	sub, _ := nc.SubscribeSync(inbox)
	nc.PublishRequest("wsfleet.presence.snapshot", inbox, []byte(`{}`))
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var snap protocol.SnapshotChunk
	json.Unmarshal(m.Data, &snap)
	got := map[string]int{}
	for _, u := range snap.Users {
		got[u.User] = u.Devices
	}
	if !snap.Last || got["ann"] != 1 || got["bo.b"] != 1 || len(got) != 2 {
		t.Fatalf("snapshot %+v", snap)
	}
	// The heartbeat carries the batch sequence and the counts.
	checkFor(t, 5*time.Second, func() error {
		select {
		case h := <-w.beats:
			if h.Seq >= snap.Seq && h.Users == 2 && h.Connections == 2 && h.Epoch == snap.Epoch {
				return nil
			}
			return errorf("heartbeat %+v", h)
		default:
			return errorf("no heartbeat")
		}
	})
	// A request for another node gets no answer from this one.
	nc.PublishRequest("wsfleet.presence.snapshot", inbox, []byte(`{"node":"other"}`))
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("answered a snapshot request for another node: %s", m.Data)
	}
}

// A connect storm is a few presence messages, not one per connection.
// A probe on the node's own subject is answered with its heartbeat while
// the node is up; once it is gone, NATS itself answers that nobody
// listens, which is how listeners tell a dead node from a late one.
func TestPresenceProbe(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.NodeID = "probe.node*1" })
	connect(t, srv, "alice")
	nc := natsConn(t, srv)
	subj, err := mustSubjects(t).PresenceNode("probe.node*1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := nc.Request(subj, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("probe while the node is up: %v", err)
	}
	var h protocol.NodeHeartbeat
	if err := json.Unmarshal(m.Data, &h); err != nil || h.Node != "probe.node*1" || h.Connections != 1 || h.Users != 1 || h.IntervalMS <= 0 {
		t.Fatalf("probe reply %s (%v), want the node's heartbeat", m.Data, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		if _, err := nc.Request(subj, nil, time.Second); err != nats.ErrNoResponders {
			return errorf("probe after the node closed: %v, want %v", err, nats.ErrNoResponders)
		}
		return nil
	})
}

func TestPresenceCoalescesStorms(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.PresenceBatchInterval = 200 * time.Millisecond })
	nc := natsConn(t, srv)
	w := watchPresence(t, nc)
	devices := map[string]int{}
	connectMany(t, srv, 300, "storm")
	batches := w.until(t, devices, func() bool { return len(devices) == 300 })
	if len(batches) > 20 {
		t.Fatalf("%d presence messages for 300 connects", len(batches))
	}
	t.Logf("300 connects: %d presence messages", len(batches))
}

func TestKick(t *testing.T) {
	srv := startGateway(t, nil)
	a, _ := connect(t, srv, "banned")
	b, _ := connect(t, srv, "banned")
	other, _ := connect(t, srv, "fine")
	nc := natsConn(t, srv)
	m := nats.NewMsg(userSubject(t, "banned"))
	m.Header.Set(protocol.HeaderControl, protocol.ControlKick)
	reply, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var kr protocol.KickReply
	if err := json.Unmarshal(reply.Data, &kr); err != nil || kr.Closed != 2 || kr.Node != "test-node" {
		t.Fatalf("kick reply %s", reply.Data)
	}
	expectClose(t, a, protocol.CloseKicked, "")
	expectClose(t, b, protocol.CloseKicked, "")
	send(t, other, map[string]string{"type": "ping"})
	readType(t, other, protocol.TypePong)
	// The control message itself is never delivered as a message.
	publish(t, nc, "fine", "after", fmt.Sprint(1))
	if got := readType(t, other, protocol.TypeMessage); got["id"] != "after" {
		t.Fatalf("got %v", got)
	}
}

func mustSubjects(t testing.TB) protocol.Subjects {
	t.Helper()
	s, err := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

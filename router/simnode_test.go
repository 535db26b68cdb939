package router_test

import (
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/wsfleet/wsfleet/protocol"
)

// simNode is a simulated gateway node speaking the presence protocol
// (protocol/presence.go) on a real NATS server: it publishes batches and
// heartbeats, answers snapshot requests (in chunks of two users, so
// snapshots take several chunks) and kicks, and after listenProbes
// listens on its probe subject.
type simNode struct {
	t        testing.TB
	nc       *nats.Conn
	subjects protocol.Subjects
	id       string

	mu    sync.Mutex
	epoch string
	seq   uint64
	users map[string]int
	kicks map[string]bool // users kicked (their subjects are subscribed while they have devices)
	subs  map[string]*nats.Subscription

	answerSnapshots atomic.Bool
	snapshotReqs    atomic.Int32
	dropChunks      atomic.Int32 // snapshots left to answer without their first chunk
	probesSeen      atomic.Int32
	hbStop          chan struct{}
	hbDone          chan struct{}
}

func newSimNode(t testing.TB, ns *server.Server, id string) *simNode {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subjects, _ := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	n := &simNode{t: t, nc: nc, subjects: subjects, id: id, epoch: nuid.Next(), users: map[string]int{},
		kicks: map[string]bool{}, subs: map[string]*nats.Subscription{}}
	n.answerSnapshots.Store(true)
	if _, err := nc.Subscribe(subjects.PresenceSnapshot(), n.snapshot); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stopHeartbeats)
	return n
}

func (n *simNode) publish(subj string, v any) {
	b, _ := json.Marshal(v)
	if err := n.nc.Publish(subj, b); err != nil {
		n.t.Errorf("sim node publish: %v", err)
	}
}

// change sets users' device counts and publishes the batch; lost makes
// the batch go missing (its Seq is used but it is never published).
func (n *simNode) change(lost bool, kv ...any) {
	n.mu.Lock()
	b := protocol.PresenceBatch{Node: n.id, Epoch: n.epoch}
	for i := 0; i < len(kv); i += 2 {
		user, devices := kv[i].(string), kv[i+1].(int)
		before := n.users[user]
		c := protocol.PresenceChange{User: user, Devices: devices}
		if before == 0 && devices > 0 {
			on := true
			c.Online = &on
			sub, err := n.nc.Subscribe(n.userSubject(user), n.control)
			if err != nil {
				n.t.Error(err)
			}
			n.subs[user] = sub
		} else if before > 0 && devices == 0 {
			off := false
			c.Online = &off
			_ = n.subs[user].Unsubscribe()
			delete(n.subs, user)
		}
		if devices == 0 {
			delete(n.users, user)
		} else {
			n.users[user] = devices
		}
		b.Changes = append(b.Changes, c)
	}
	n.seq++
	b.Seq = n.seq
	n.mu.Unlock()
	if !lost {
		n.publish(n.subjects.PresenceEvents(), b)
	}
	_ = n.nc.Flush()
}

// set publishes a batch: user, devices, user, devices...
func (n *simNode) set(kv ...any) { n.change(false, kv...) }

func (n *simNode) userSubject(user string) string {
	s, _ := n.subjects.UserID(user)
	return s
}

func (n *simNode) heartbeatMsg() protocol.NodeHeartbeat {
	n.mu.Lock()
	defer n.mu.Unlock()
	conns := 0
	for _, d := range n.users {
		conns += d
	}
	return protocol.NodeHeartbeat{Node: n.id, Epoch: n.epoch, Seq: n.seq, Connections: conns, Users: len(n.users), IntervalMS: 50}
}

func (n *simNode) heartbeat() {
	n.publish(n.subjects.PresenceHeartbeat(), n.heartbeatMsg())
	_ = n.nc.Flush()
}

// listenProbes subscribes to the node's probe subject, as a gateway does
// for as long as its NATS connection lives. With answer it replies with
// its heartbeat; without, it never replies, like a node starved of CPU.
func (n *simNode) listenProbes(answer bool) {
	n.t.Helper()
	subj, err := n.subjects.PresenceNode(n.id)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := n.nc.Subscribe(subj, func(m *nats.Msg) {
		n.probesSeen.Add(1)
		if answer {
			b, _ := json.Marshal(n.heartbeatMsg())
			_ = m.Respond(b)
		}
	}); err != nil {
		n.t.Fatal(err)
	}
	if err := n.nc.Flush(); err != nil {
		n.t.Fatal(err)
	}
}

// kill closes the node's NATS connection, as its process dying does.
func (n *simNode) kill() {
	n.stopHeartbeats()
	n.nc.Close()
}

// heartbeats sends a heartbeat every interval until stopHeartbeats.
func (n *simNode) heartbeats(interval time.Duration) {
	n.hbStop, n.hbDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(n.hbDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			n.heartbeat()
			select {
			case <-n.hbStop:
				return
			case <-t.C:
			}
		}
	}()
}

func (n *simNode) stopHeartbeats() {
	if n.hbStop != nil {
		close(n.hbStop)
		<-n.hbDone
		n.hbStop = nil
	}
}

// restart is a new process: a new epoch, no users, Seq 0.
func (n *simNode) restart() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.epoch = nuid.Next()
	n.seq = 0
	n.users = map[string]int{}
	for u, sub := range n.subs {
		_ = sub.Unsubscribe()
		delete(n.subs, u)
	}
}

func (n *simNode) snapshot(m *nats.Msg) {
	n.snapshotReqs.Add(1)
	if !n.answerSnapshots.Load() || m.Reply == "" {
		return
	}
	var req protocol.SnapshotRequest
	_ = json.Unmarshal(m.Data, &req)
	if req.Node != "" && req.Node != n.id {
		return
	}
	n.mu.Lock()
	users := make([]string, 0, len(n.users))
	for u := range n.users {
		users = append(users, u)
	}
	sort.Strings(users)
	c := protocol.SnapshotChunk{Node: n.id, Epoch: n.epoch, Seq: n.seq}
	var chunks []protocol.SnapshotChunk
	for _, u := range users {
		c.Users = append(c.Users, protocol.UserDevices{User: u, Devices: n.users[u]})
		if len(c.Users) == 2 {
			chunks = append(chunks, c)
			c.Users = nil
		}
	}
	c.Last = true
	chunks = append(chunks, c)
	chunks[len(chunks)-1].Chunks = len(chunks)
	n.mu.Unlock()
	if n.dropChunks.Add(-1) >= 0 {
		chunks = chunks[1:] // lost on the way
	}
	for _, c := range chunks {
		n.publish(m.Reply, c)
	}
}

// control answers a kick on a user subject like a gateway: every device
// of the user goes.
func (n *simNode) control(m *nats.Msg) {
	user, _ := protocol.DecodeUserToken(m.Subject[len(n.subjects.User("")):])
	switch m.Header.Get(protocol.HeaderControl) {
	case protocol.ControlSubscribe, protocol.ControlUnsubscribe:
		// As a gateway: every device of the user holds (or left) the topic.
		n.mu.Lock()
		devices := n.users[user]
		n.mu.Unlock()
		b, _ := json.Marshal(protocol.TopicReply{Node: n.id, Devices: devices})
		_ = m.Respond(b)
		return
	case protocol.ControlKick:
	default:
		return
	}
	n.mu.Lock()
	closed := n.users[user]
	n.kicks[user] = true
	n.mu.Unlock()
	if closed > 0 {
		n.change(false, user, 0)
	}
	b, _ := json.Marshal(protocol.KickReply{Node: n.id, Closed: closed})
	_ = m.Respond(b)
}

func (n *simNode) kicked(user string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kicks[user]
}

package gateway

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

// presence announces who is connected to this node (protocol/presence.go):
// batches of device-count changes on <prefix>.presence.events, coalesced
// over PresenceBatchInterval so a connect storm is a few messages; a
// heartbeat every PresenceInterval; snapshots on request; the heartbeat
// again, on <prefix>.presence.node.<token>, to a listener that probes
// whether the node is alive (protocol.Subjects.PresenceNode: the
// subscription lives exactly as long as the node's NATS connection, so a
// dead node is told from a late one). One goroutine does all of it; the registry records changes under its shard locks, so a
// user's changes are recorded in the order they happened.
type presence struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]*pendingChange // user id -> change since the last batch
	// Topic presence (topics matching Options.TopicPresence): each
	// user's devices in each topic on this node, and the changes since the
	// last batch.
	tdev     map[topicUser]int
	tpending map[topicUser]*pendingChange
	seq      uint64         // of the last published batch; presence goroutine only
	requests chan *nats.Msg // snapshot requests (a channel subscription)
	probes   chan *nats.Msg // liveness probes (a channel subscription)
	sub      *nats.Subscription
	probeSub *nats.Subscription
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// topicUser is a user in a topic.
type topicUser struct{ topic, user string }

type pendingChange struct {
	devices   int
	wasOnline bool // the user had devices here before this batch's first change
}

// maxBatchChanges flushes a batch early when this many users changed, to
// keep each message well under NATS's payload limit.
const maxBatchChanges = 2000

// presenceBudget, when positive, replaces budget's (tests).
var presenceBudget int

// snapshotChunkUsers bounds the users in one snapshot reply (a variable
// for tests).
var snapshotChunkUsers = 10000

func newPresence(s *Server) *presence {
	return &presence{
		s:        s,
		pending:  map[string]*pendingChange{},
		tdev:     map[topicUser]int{},
		tpending: map[topicUser]*pendingChange{},
		requests: make(chan *nats.Msg, 64),
		probes:   make(chan *nats.Msg, 16),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (p *presence) start() error {
	var err error
	if p.sub, err = p.s.nc.ChanSubscribe(p.s.subjects.PresenceSnapshot(), p.requests); err != nil {
		return err
	}
	subj, err := p.s.subjects.PresenceNode(p.s.opts.NodeID)
	if err != nil {
		return err
	}
	if p.probeSub, err = p.s.nc.ChanSubscribe(subj, p.probes); err != nil {
		return err
	}
	go p.run()
	return nil
}

// changed records that a user's device count on this node went from before
// to after. The registry calls it under the user's shard lock.
func (p *presence) changed(user string, before, after int) {
	p.mu.Lock()
	c := p.pending[user]
	if c == nil {
		c = &pendingChange{wasOnline: before > 0}
		p.pending[user] = c
	}
	c.devices = after
	full := len(p.pending) >= maxBatchChanges
	p.mu.Unlock()
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// topicChanged records that one of user's devices joined (delta 1) or
// left (-1) a presence topic; loops call it. With user "" it records that
// the node has subscribers of a topic (any topic, 1) or no longer has
// (-1), which routers count as the topic's nodes; the topic hub calls it.
func (p *presence) topicChanged(topic, user string, delta int) {
	k := topicUser{topic, user}
	p.mu.Lock()
	before := p.tdev[k]
	after := before + delta
	if after <= 0 {
		delete(p.tdev, k)
		after = 0
	} else {
		p.tdev[k] = after
	}
	c := p.tpending[k]
	if c == nil {
		c = &pendingChange{wasOnline: before > 0}
		p.tpending[k] = c
	}
	c.devices = after
	full := len(p.pending)+len(p.tpending) >= maxBatchChanges
	p.mu.Unlock()
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

func (p *presence) run() {
	defer close(p.done)
	batch := time.NewTicker(p.s.opts.PresenceBatchInterval)
	defer batch.Stop()
	beat := time.NewTicker(p.s.opts.PresenceInterval)
	defer beat.Stop()
	p.flush()
	p.heartbeat()
	for {
		select {
		case <-p.stop:
			p.flush()
			p.heartbeat()
			return
		case <-batch.C:
			p.flush()
		case <-p.kick:
			p.flush()
		case <-beat.C:
			p.flush()
			p.heartbeat()
		case m := <-p.requests:
			p.snapshot(m)
		case m := <-p.probes:
			if m.Reply != "" {
				p.publish(m.Reply, p.beat())
			}
		}
	}
}

// flush publishes the changes since the last batch, if any became visible.
func (p *presence) flush() {
	p.mu.Lock()
	if len(p.pending) == 0 && len(p.tpending) == 0 {
		p.mu.Unlock()
		return
	}
	pending, tpending := p.pending, p.tpending
	p.pending = make(map[string]*pendingChange, len(pending))
	p.tpending = make(map[topicUser]*pendingChange, len(tpending))
	p.mu.Unlock()
	changes := make([]protocol.PresenceChange, 0, len(pending))
	online, offline := true, false
	for user, c := range pending {
		ch := protocol.PresenceChange{User: user, Devices: c.devices}
		switch {
		case c.devices > 0 && !c.wasOnline:
			ch.Online = &online
		case c.devices == 0 && c.wasOnline:
			ch.Online = &offline
		case c.devices == 0:
			continue // came and went within the batch: never visible
		}
		changes = append(changes, ch)
	}
	var tchanges []protocol.TopicPresenceChange
	events := map[string]*protocol.TopicPresenceEvent{}
	for k, c := range tpending {
		if c.devices == 0 && !c.wasOnline {
			continue // joined and left within the batch: never visible
		}
		tchanges = append(tchanges, protocol.TopicPresenceChange{Topic: k.topic, User: k.user, Devices: c.devices})
		if (c.devices > 0) == c.wasOnline || k.user == "" {
			continue // in the topic before and after
		}
		ev := events[k.topic]
		if ev == nil {
			ev = &protocol.TopicPresenceEvent{Node: p.s.opts.NodeID, Topic: k.topic}
			events[k.topic] = ev
		}
		if c.devices > 0 {
			ev.Joined = append(ev.Joined, k.user)
		} else {
			ev.Left = append(ev.Left, k.user)
		}
	}
	// Batches of at most budget bytes of entries (a connect storm's
	// changes can outgrow one NATS message), numbered in order.
	budget := p.budget()
	b := protocol.PresenceBatch{Node: p.s.opts.NodeID, Epoch: p.s.runID, Changes: []protocol.PresenceChange{}}
	size := 0
	emit := func() {
		if len(b.Changes)+len(b.Topics) == 0 {
			return
		}
		p.seq++
		b.Seq = p.seq
		p.publish(p.s.subjects.PresenceEvents(), b)
		b.Changes, b.Topics, size = b.Changes[:0], nil, 0
	}
	for _, ch := range changes {
		if n := entrySize(ch.User, ""); size+n > budget {
			emit()
			size = n
		} else {
			size += n
		}
		b.Changes = append(b.Changes, ch)
	}
	for _, tc := range tchanges {
		if n := entrySize(tc.User, tc.Topic); size+n > budget {
			emit()
			size = n
		} else {
			size += n
		}
		b.Topics = append(b.Topics, tc)
	}
	emit()
	for _, ev := range events {
		// In parts of at most budget bytes, like the batches.
		part := protocol.TopicPresenceEvent{Node: ev.Node, Topic: ev.Topic}
		size := 0
		add := func(list *[]string, u string) {
			if n := jsonLen(u) + 3; size+n > budget {
				p.publish(p.s.subjects.TopicPresence(ev.Topic), part)
				part.Joined, part.Left, size = nil, nil, n
			} else {
				size += n
			}
			*list = append(*list, u)
		}
		for _, u := range ev.Joined {
			add(&part.Joined, u)
		}
		for _, u := range ev.Left {
			add(&part.Left, u)
		}
		p.publish(p.s.subjects.TopicPresence(ev.Topic), part)
	}
}

func (p *presence) heartbeat() { p.publish(p.s.subjects.PresenceHeartbeat(), p.beat()) }

// beat is the node's heartbeat now.
func (p *presence) beat() protocol.NodeHeartbeat {
	return protocol.NodeHeartbeat{
		Node:        p.s.opts.NodeID,
		Epoch:       p.s.runID,
		Seq:         p.seq,
		Connections: int(p.s.nconns.Load()),
		Users:       int(p.s.reg.users.Load()),
		IntervalMS:  int(p.s.opts.PresenceInterval / time.Millisecond),
		Draining:    p.s.draining.Load(),
		Shedding:    p.s.adm.shedding(p.s.opts.PresenceInterval),
	}
}

func (p *presence) publish(subject string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		p.s.log.Error("encoding presence", zap.Error(err))
		return
	}
	if err := p.s.nc.Publish(subject, b); err != nil && p.s.natsConnected() {
		p.s.log.Warn("publishing presence", zap.String("subject", subject), zap.Error(err))
	}
}

// snapshot answers a snapshot request with every user on this node, in
// chunks. Pending changes are published first, so the snapshot is at least
// as new as batch Seq; changes recorded meanwhile may be in it too, which
// is harmless: batches carry device counts, not deltas.
func (p *presence) snapshot(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req protocol.SnapshotRequest
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &req); err != nil {
			return
		}
	}
	if req.Node != "" && req.Node != p.s.opts.NodeID {
		return
	}
	p.flush()
	chunk := protocol.SnapshotChunk{Node: p.s.opts.NodeID, Epoch: p.s.runID, Seq: p.seq}
	budget, size, chunks := p.budget(), 0, 0
	send := func(last bool) {
		chunks++
		chunk.Last = last
		if last {
			chunk.Chunks = chunks // the listener applies the snapshot only if it got them all
		}
		p.publish(m.Reply, chunk)
		chunk.Users = chunk.Users[:0]
		chunk.Topics = chunk.Topics[:0]
		size = 0
	}
	// Each entry is counted at its largest JSON size, so a chunk stays
	// under NATS's payload limit whatever the ids hold.
	room := func(n int) {
		if size+n > budget || len(chunk.Users)+len(chunk.Topics) == snapshotChunkUsers {
			send(false)
		}
		size += n
	}
	// Each shard is copied under its read lock and published after it is
	// released: a NATS publish that blocks (its buffer full, the server
	// slow) never holds a lock the loops take on every connect and close.
	var buf []protocol.UserDevices
	for i := range regShards {
		buf = p.s.reg.appendShard(i, buf[:0])
		for _, u := range buf {
			room(entrySize(u.User, ""))
			chunk.Users = append(chunk.Users, u)
		}
	}
	// Topic presence: copied under the lock, published after.
	p.mu.Lock()
	topics := make([]protocol.TopicUserDevices, 0, len(p.tdev))
	for k, n := range p.tdev {
		topics = append(topics, protocol.TopicUserDevices{Topic: k.topic, User: k.user, Devices: n})
	}
	p.mu.Unlock()
	for _, tu := range topics {
		room(entrySize(tu.User, tu.Topic))
		chunk.Topics = append(chunk.Topics, tu)
	}
	send(true)
}

// budget is the most bytes of entries one presence message carries: half
// the NATS server's payload limit, leaving room for the envelope.
func (p *presence) budget() int {
	if presenceBudget > 0 {
		return presenceBudget
	}
	mp := int(p.s.nc.MaxPayload())
	if mp <= 0 {
		mp = 1 << 20
	}
	return mp / 2
}

// entrySize bounds the JSON of one presence entry: the ids as
// encoding/json writes them, the member names and a count.
func entrySize(user, topic string) int {
	return jsonLen(user) + jsonLen(topic) + 64
}

// jsonLen bounds the length of s as a JSON string's contents from
// encoding/json: < > & become \u003c (6 bytes), " and \ two, and a byte of
// a multi-byte rune at most two (U+2028 and U+2029, 3 bytes, become 6).
// User ids hold no control characters (protocol.ValidateUserID).
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '<' || c == '>' || c == '&':
			n += 6
		case c == '"' || c == '\\' || c >= 0x80:
			n += 2
		default:
			n++
		}
	}
	return n
}

func (p *presence) close() {
	close(p.stop)
	<-p.done
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
	if p.probeSub != nil {
		_ = p.probeSub.Unsubscribe()
	}
}

// kickUser closes a user's connections on this node for a kick control
// message and answers it with how many were closed.
func (s *Server) kickUser(conns []*conn, m *nats.Msg) {
	for _, c := range conns {
		// One close task per connection however many kicks come: the
		// loop's lifecycle queue stays bounded by its connections.
		c.Mu.Lock()
		post := c.LockedFlags&lfKicked == 0 && !c.WritesDoneLocked()
		c.LockedFlags |= lfKicked
		c.Mu.Unlock()
		if post {
			c.l.p.Post(task{kind: taskClose, c: c, code: protocol.CloseKicked, reason: "connections closed by the service"})
		}
	}
	s.m.kicked.Add(float64(len(conns)))
	reply := m.Reply
	if reply == "" && s.rs != nil {
		// Republished by the history stream, which drops the reply subject.
		reply = m.Header.Get(protocol.HeaderReplyTo)
	}
	if reply != "" {
		b, _ := json.Marshal(protocol.KickReply{Node: s.opts.NodeID, Closed: len(conns)})
		_ = s.nc.Publish(reply, b)
	}
}

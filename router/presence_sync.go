package router

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

// The presence tracker keeps the view in step with the gateways
// (protocol/presence.go). One goroutine handles, in arrival order, the
// batches on <prefix>.presence.events, the heartbeats on
// <prefix>.presence.heartbeat and the snapshot chunks answering its own
// requests: the three subscriptions feed one channel, so a node's batches,
// heartbeats and snapshot replies (all published on the node's one NATS
// connection) are handled in the order the node sent them.
//
// Convergence. A node's state in the view is synced when it is a snapshot
// of the node plus every batch after it. It loses sync when the router
// starts (every node is asked at once), when the node's epoch changes (it
// restarted), when a batch's Seq skips one, and when a heartbeat's Seq is
// ahead of the last batch applied (a batch went missing). Then the tracker
// asks that node for a snapshot (at most one request in flight per node,
// each bounded by SnapshotTimeout, re-asked at most once per timeout),
// keeps applying batches as they come (device counts are absolute, so the
// view stays close), keeps them too, and when the snapshot's last chunk
// arrives replaces the node's state with it and replays the kept batches
// with a Seq above the snapshot's. Every router replica, however late it
// started, thus converges on the same view.
//
// Liveness. A node from which nothing came for NodeTTL is dropped with all
// its users. While the router itself is cut off from NATS nodes are not
// expired (silence is then no evidence), and each gets a fresh NodeTTL
// once the connection is back.

// maxBufferedBatches bounds the batches kept per node while a snapshot is
// awaited; older ones are dropped, which the replay notices as a gap.
const maxBufferedBatches = 4096

// snapReq is a snapshot request in flight.
type snapReq struct {
	id       uint64
	node     string // "" for every node
	deadline time.Time
	partial  map[string]*partialSnap // node id -> chunks received
}

type partialSnap struct {
	users []change
}

type tracker struct {
	s           *Server
	v           *view
	log         *zap.Logger
	ch          chan *nats.Msg
	subs        []*nats.Subscription
	inbox       string // replies arrive on inbox + "." + request id
	reqs        map[uint64]*snapReq
	nextReq     uint64
	global      uint64 // the all-nodes request in flight, 0: none
	reconnected chan struct{}
	stop        chan struct{}
	done        chan struct{}
	tick        time.Duration
	// test hook: called by the loop after each message (nil in production)
	handled func()
}

func newTracker(s *Server) *tracker {
	tick := min(s.opts.NodeTTL, s.opts.SnapshotTimeout) / 4
	tick = max(min(tick, 250*time.Millisecond), 5*time.Millisecond)
	return &tracker{
		s:           s,
		v:           newView(),
		log:         s.log.Named("presence"),
		ch:          make(chan *nats.Msg, 65536),
		reqs:        map[uint64]*snapReq{},
		reconnected: make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		tick:        tick,
	}
}

// start subscribes (and waits until the server has the subscriptions), then
// runs the loop, which first asks every node for a snapshot.
func (t *tracker) start(nc *nats.Conn) error {
	t.inbox = nc.NewRespInbox()
	for _, subj := range []string{t.s.subjects.PresenceEvents(), t.s.subjects.PresenceHeartbeat(), t.inbox + ".*"} {
		sub, err := nc.ChanSubscribe(subj, t.ch)
		if err != nil {
			t.unsubscribe()
			return err
		}
		t.subs = append(t.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.unsubscribe()
		return err
	}
	go t.run()
	return nil
}

func (t *tracker) unsubscribe() {
	for _, sub := range t.subs {
		_ = sub.Unsubscribe()
	}
	t.subs = nil
}

// close stops the loop and the subscriptions.
func (t *tracker) close() {
	t.unsubscribe()
	close(t.stop)
	<-t.done
}

// natsReconnected is the NATS reconnect handler's signal.
func (t *tracker) natsReconnected() {
	select {
	case t.reconnected <- struct{}{}:
	default:
	}
}

func (t *tracker) run() {
	defer close(t.done)
	tick := time.NewTicker(t.tick)
	defer tick.Stop()
	t.request("", time.Now())
	for {
		select {
		case <-t.stop:
			return
		case m := <-t.ch:
			t.handle(m, time.Now())
			if t.handled != nil {
				t.handled()
			}
		case now := <-tick.C:
			t.sweep(now)
		case <-t.reconnected:
			now := time.Now()
			t.v.mu.Lock()
			for _, n := range t.v.nodes {
				if n != nil {
					n.lastSeen = now
				}
			}
			t.v.mu.Unlock()
		}
	}
}

func (t *tracker) handle(m *nats.Msg, now time.Time) {
	switch {
	case m.Subject == t.s.subjects.PresenceEvents():
		var b protocol.PresenceBatch
		if err := json.Unmarshal(m.Data, &b); err != nil || b.Node == "" || b.Epoch == "" || b.Seq == 0 {
			t.s.m.presenceMsgs.WithLabelValues("invalid").Inc()
			return
		}
		t.s.m.presenceMsgs.WithLabelValues("batch").Inc()
		t.batch(&b, now)
	case m.Subject == t.s.subjects.PresenceHeartbeat():
		var h protocol.NodeHeartbeat
		if err := json.Unmarshal(m.Data, &h); err != nil || h.Node == "" || h.Epoch == "" {
			t.s.m.presenceMsgs.WithLabelValues("invalid").Inc()
			return
		}
		t.s.m.presenceMsgs.WithLabelValues("heartbeat").Inc()
		t.heartbeat(&h, now)
	case strings.HasPrefix(m.Subject, t.inbox+"."):
		id, err := strconv.ParseUint(m.Subject[len(t.inbox)+1:], 10, 64)
		if err != nil || len(m.Data) == 0 { // an empty body: a no-responders status
			return
		}
		var c protocol.SnapshotChunk
		if err := json.Unmarshal(m.Data, &c); err != nil || c.Node == "" || c.Epoch == "" {
			t.s.m.presenceMsgs.WithLabelValues("invalid").Inc()
			return
		}
		t.s.m.presenceMsgs.WithLabelValues("snapshot_chunk").Inc()
		t.chunk(id, &c, now)
	}
}

// nodeFor returns the node of a message, adding it, and handles an epoch
// change: the node restarted, so the old epoch's devices are gone.
func (t *tracker) nodeFor(id, epoch string, now time.Time) *nodeInfo {
	t.v.mu.Lock()
	n, added := t.v.node(id, now)
	n.lastSeen = now
	old, restarted := n.epoch, n.epoch != epoch
	if restarted {
		n.epoch, n.seq, n.synced, n.buffered = epoch, 0, false, nil
	}
	t.v.mu.Unlock()
	if added {
		t.log.Info("gateway node appeared", zap.String("node", id))
	}
	if restarted && old != "" {
		t.log.Info("gateway node restarted (new epoch); resyncing", zap.String("node", id))
		t.v.clearNode(n)
	}
	return n
}

// setSynced records whether n's state is a snapshot plus every batch since.
func (t *tracker) setSynced(n *nodeInfo, synced bool) {
	t.v.mu.Lock()
	n.synced = synced
	t.v.mu.Unlock()
}

func (t *tracker) batch(b *protocol.PresenceBatch, now time.Time) {
	changes := make([]change, 0, len(b.Changes))
	for _, c := range b.Changes {
		if c.User != "" {
			changes = append(changes, change{user: c.User, devices: clampDevices(c.Devices)})
		}
	}
	n := t.nodeFor(b.Node, b.Epoch, now)
	if n.synced {
		if b.Seq <= n.seq {
			return // already applied
		}
		if b.Seq == n.seq+1 {
			t.v.apply(n, changes)
			n.seq = b.Seq
			return
		}
		t.s.m.presenceGaps.Inc()
		t.log.Info("presence batch missed; resyncing the node", zap.String("node", n.id),
			zap.Uint64("applied", n.seq), zap.Uint64("received", b.Seq))
		t.setSynced(n, false)
	}
	// Not synced: apply now (counts are absolute) and keep for the replay.
	t.v.apply(n, changes)
	if len(n.buffered) == maxBufferedBatches {
		n.buffered = slices.Delete(n.buffered, 0, 1)
	}
	n.buffered = append(n.buffered, bufferedBatch{seq: b.Seq, changes: changes})
	t.ensureSnapshot(n, now)
}

func (t *tracker) heartbeat(h *protocol.NodeHeartbeat, now time.Time) {
	n := t.nodeFor(h.Node, h.Epoch, now)
	t.v.mu.Lock()
	n.hbConnections, n.hbUsers, n.draining = h.Connections, h.Users, h.Draining
	n.lastHeartbeat = now
	ahead := n.synced && h.Seq > n.seq
	if ahead {
		n.synced = false
	}
	t.v.mu.Unlock()
	if every := time.Duration(h.IntervalMS) * time.Millisecond; !n.warnedTTL && 2*every > t.s.opts.NodeTTL {
		n.warnedTTL = true
		t.log.Warn("a gateway's heartbeat interval is more than half of --node-ttl: one late heartbeat drops its users",
			zap.String("node", n.id), zap.Duration("heartbeat_interval", every), zap.Duration("node_ttl", t.s.opts.NodeTTL))
	}
	if ahead {
		t.s.m.presenceGaps.Inc()
		t.log.Info("heartbeat is ahead of the batches applied; resyncing the node", zap.String("node", n.id),
			zap.Uint64("applied", n.seq), zap.Uint64("heartbeat_seq", h.Seq))
	}
	if !n.synced {
		t.ensureSnapshot(n, now)
	}
}

// ensureSnapshot asks n for a snapshot unless one is in flight for it or
// the last attempt is less than SnapshotTimeout ago.
func (t *tracker) ensureSnapshot(n *nodeInfo, now time.Time) {
	if n.snapReq != 0 || (!n.lastAsked.IsZero() && now.Sub(n.lastAsked) < t.s.opts.SnapshotTimeout) {
		return
	}
	if t.global != 0 {
		// The all-nodes request may bring it; if not, the node is asked
		// on its own once that request ends.
		n.snapReq = t.global
		return
	}
	t.request(n.id, now)
}

// request publishes a snapshot request for node ("" for every node).
func (t *tracker) request(node string, now time.Time) {
	t.nextReq++
	r := &snapReq{id: t.nextReq, node: node, deadline: now.Add(t.s.opts.SnapshotTimeout), partial: map[string]*partialSnap{}}
	data, _ := json.Marshal(protocol.SnapshotRequest{Node: node})
	nc := t.s.nc.Load()
	if err := nc.PublishRequest(t.s.subjects.PresenceSnapshot(), t.inbox+"."+strconv.FormatUint(r.id, 10), data); err != nil {
		t.s.m.snapshotRequests.WithLabelValues("error").Inc()
		t.log.Debug("snapshot request not sent", zap.String("node", node), zap.Error(err))
		if node != "" {
			if n := t.nodeByID(node); n != nil {
				n.lastAsked = now
			}
		}
		return
	}
	t.s.m.snapshotRequests.WithLabelValues("sent").Inc()
	t.reqs[r.id] = r
	t.v.mu.RLock()
	defer t.v.mu.RUnlock()
	if node == "" {
		t.global = r.id
		for _, n := range t.v.nodes {
			if n != nil && n.snapReq == 0 {
				n.snapReq, n.lastAsked = r.id, now
			}
		}
		return
	}
	if i, ok := t.v.byID[node]; ok {
		n := t.v.nodes[i]
		n.snapReq, n.lastAsked = r.id, now
	}
}

func (t *tracker) nodeByID(id string) *nodeInfo {
	t.v.mu.RLock()
	defer t.v.mu.RUnlock()
	if i, ok := t.v.byID[id]; ok {
		return t.v.nodes[i]
	}
	return nil
}

func (t *tracker) chunk(id uint64, c *protocol.SnapshotChunk, now time.Time) {
	r := t.reqs[id]
	if r == nil || (r.node != "" && r.node != c.Node) {
		return // timed out, or not the node asked
	}
	p := r.partial[c.Node]
	if p == nil {
		p = &partialSnap{}
		r.partial[c.Node] = p
	}
	for _, u := range c.Users {
		if u.User != "" {
			p.users = append(p.users, change{user: u.User, devices: clampDevices(u.Devices)})
		}
	}
	if !c.Last {
		return
	}
	delete(r.partial, c.Node)
	n := t.nodeFor(c.Node, c.Epoch, now)
	if n.snapReq == id {
		n.snapReq = 0
	}
	if n.synced && c.Seq < n.seq {
		return // older than what the view already has
	}
	t.v.replaceNode(n, p.users)
	n.seq = c.Seq
	synced := true
	for _, b := range n.buffered {
		switch {
		case b.seq <= c.Seq:
			continue
		case b.seq != n.seq+1:
			synced = false // a batch is missing after the snapshot too
		}
		t.v.apply(n, b.changes)
		n.seq = b.seq
	}
	n.buffered = nil
	t.setSynced(n, synced)
	t.s.m.snapshotRequests.WithLabelValues("node_complete").Inc()
	if r.node != "" {
		t.finish(r)
	}
	if !synced {
		n.lastAsked = time.Time{}
		t.ensureSnapshot(n, now)
	}
}

// finish forgets a request: nodes it covered without answering are asked
// on their own (or again) by the sweep.
func (t *tracker) finish(r *snapReq) {
	delete(t.reqs, r.id)
	if t.global == r.id {
		t.global = 0
	}
	t.v.mu.RLock()
	for _, n := range t.v.nodes {
		if n != nil && n.snapReq == r.id {
			n.snapReq = 0
			if r.node == "" {
				// Covered by the all-nodes request without an answer of
				// its own asked: it may have started after it.
				n.lastAsked = time.Time{}
			}
		}
	}
	t.v.mu.RUnlock()
}

// sweep ends timed-out requests, asks unsynced nodes again and drops nodes
// silent for NodeTTL.
func (t *tracker) sweep(now time.Time) {
	for _, r := range t.reqs {
		if now.After(r.deadline) {
			if r.node != "" {
				t.s.m.snapshotRequests.WithLabelValues("timeout").Inc()
				t.log.Info("snapshot request timed out", zap.String("node", r.node))
			}
			t.finish(r)
		}
	}
	connected := t.s.natsConnected()
	var dead []*nodeInfo
	var unsynced []*nodeInfo
	t.v.mu.RLock()
	for _, n := range t.v.nodes {
		if n == nil {
			continue
		}
		if connected && now.Sub(n.lastSeen) > t.s.opts.NodeTTL {
			dead = append(dead, n)
		} else if !n.synced {
			unsynced = append(unsynced, n)
		}
	}
	t.v.mu.RUnlock()
	for _, n := range unsynced {
		t.ensureSnapshot(n, now)
	}
	for _, n := range dead {
		t.log.Warn("gateway node silent for --node-ttl; dropping it and its users",
			zap.String("node", n.id), zap.Int("users", n.users), zap.Duration("node_ttl", t.s.opts.NodeTTL))
		t.v.removeNode(n)
		t.s.m.nodesExpired.Inc()
	}
}

func clampDevices(d int) uint32 {
	switch {
	case d <= 0:
		return 0
	case d > math.MaxUint32-1:
		return math.MaxUint32 - 1
	}
	return uint32(d)
}

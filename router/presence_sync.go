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
// Liveness. A node that is silent (no batch, heartbeat, snapshot chunk or
// probe reply from it) may be dead or only starved of CPU, and the NATS
// server tells the two apart: the node subscribes to its own subject,
// <prefix>.presence.node.<token>, and that subscription lives exactly as
// long as the node's NATS connection. So a node silent for NodeTTL is
// probed there, with a reply subject under the tracker's inbox:
//
//   - a reply (the node's heartbeat) is hearing from it, handled as a
//     heartbeat: "alive";
//   - the server's "no responders" status (an empty message with the
//     header Status: 503) means its connection is gone: it is dropped with
//     all its users at once, "gone";
//   - no answer within probeEvery (NodeTTL/2) means its subscription, so
//     its connection, is still there: it is alive but late and is kept,
//     "late", and probed again.
//
// At most one probe per node is in flight, one every probeEvery at most.
// A node silent for NodeMaxSilence is dropped whatever its probes say
// ("silent"): a process hung with its socket open, or a partition the
// server has not noticed, keeps its users online that long at most. A dead
// node's users go NodeTTL plus a probe's round trip after its last
// message (its connection closes when it dies; if the server notices only
// later, within probeEvery of that).
//
// Nothing expires while the router itself is cut off from NATS: silence is
// then no evidence. That holds while the connection is down (each node
// gets a fresh NodeTTL once it is back) and also while it only seems up:
// nodes are dropped for silence only when something came in over it within
// NodeTTL. Any message counts, and when nothing else comes the tracker
// sends itself one on its inbox every probeEvery.

// maxBufferedBatches bounds the batches kept per node while a snapshot is
// awaited; older ones are dropped, which the replay notices as a gap.
const maxBufferedBatches = 4096

// Probe results and drop reasons (the metrics' labels).
const (
	probeAlive = "alive"
	probeLate  = "late"
	probeGone  = "gone"
	dropGone   = "gone"
	dropSilent = "silent"
)

// lateLogEvery bounds the log lines about late nodes.
const lateLogEvery = 10 * time.Second

// probe is a liveness probe of a silent node.
type probe struct {
	id   uint64
	node *nodeInfo
	sent time.Time
	late bool // timed out
}

// snapReq is a snapshot request in flight.
type snapReq struct {
	id       uint64
	node     string // "" for every node
	deadline time.Time
	partial  map[string]*partialSnap // node id -> chunks received
}

type partialSnap struct {
	users  []change
	chunks int // received
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

	// Liveness (see above).
	probes      map[uint64]*probe // by id: those in flight, and each node's last one after it timed out
	nextProbe   uint64
	probeEvery  time.Duration // a probe's timeout, and the least time between two probes of a node
	linkSeen    time.Time     // when the last message of any kind came in
	linkChecked time.Time     // when the tracker last sent itself a message
	lateLogged  time.Time
	lateCount   int // late probes since the last log line about them

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
		probes:      map[uint64]*probe{},
		probeEvery:  s.opts.NodeTTL / 2,
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
	t.linkSeen = time.Now()
	t.request("", t.linkSeen)
	for {
		select {
		case <-t.stop:
			return
		case m := <-t.ch:
			t.receive(m)
		case <-tick.C:
			// What has already arrived is handled first: a router that
			// was itself starved of CPU must not take the backlog in its
			// own queue for the nodes' silence.
			for k := len(t.ch); k > 0; k-- {
				t.receive(<-t.ch)
			}
			t.sweep(time.Now())
		case <-t.reconnected:
			t.natsBack(time.Now())
		}
	}
}

func (t *tracker) receive(m *nats.Msg) {
	now := time.Now()
	t.linkSeen = now
	t.handle(m, now)
	if t.handled != nil {
		t.handled()
	}
}

// natsBack forgets the probes sent before the router's connection went
// down: their answers may be lost. (Every node gets a fresh NodeTTL from
// the reconnect: see sweep.)
func (t *tracker) natsBack(now time.Time) {
	for id, p := range t.probes {
		p.node.probe = nil
		delete(t.probes, id)
	}
	t.linkSeen = now
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
		tok := m.Subject[len(t.inbox)+1:]
		switch {
		case tok == linkToken:
			return // the tracker's own message: its arrival was the point
		case strings.HasPrefix(tok, "p"):
			t.probeReply(tok[1:], m, now)
			return
		}
		id, err := strconv.ParseUint(tok, 10, 64)
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
		var err error
		if n.probeSubj, err = t.s.subjects.PresenceNode(id); err != nil {
			t.log.Warn("gateway node id names no probe subject; it is dropped after --node-ttl of silence without a probe",
				zap.String("node", id), zap.Error(err))
		}
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
	changes := make([]change, 0, len(b.Changes)+len(b.Topics))
	for _, c := range b.Changes {
		if c.User != "" {
			changes = append(changes, change{user: c.User, devices: clampDevices(c.Devices)})
		}
	}
	for _, c := range b.Topics {
		if protocol.ValidateTopic(c.Topic) == nil { // user "": the node has subscribers of the topic
			changes = append(changes, change{topic: c.Topic, user: c.User, devices: clampDevices(c.Devices)})
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
		t.log.Warn("a gateway's heartbeat interval is more than half of --node-ttl: each late heartbeat makes the router probe it",
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
	p.chunks++
	for _, u := range c.Users {
		if u.User != "" {
			p.users = append(p.users, change{user: u.User, devices: clampDevices(u.Devices)})
		}
	}
	for _, u := range c.Topics {
		if protocol.ValidateTopic(u.Topic) == nil { // user "": the node has subscribers of the topic
			p.users = append(p.users, change{topic: u.Topic, user: u.User, devices: clampDevices(u.Devices)})
		}
	}
	if !c.Last {
		if n := t.nodeByID(c.Node); n != nil {
			t.v.mu.Lock()
			n.lastSeen = now // hearing from it (the last chunk goes through nodeFor)
			t.v.mu.Unlock()
		}
		return
	}
	delete(r.partial, c.Node)
	n := t.nodeFor(c.Node, c.Epoch, now)
	if n.snapReq == id {
		n.snapReq = 0
	}
	if c.Chunks > 0 && p.chunks != c.Chunks {
		// A chunk was lost (or too large for NATS): applying the rest as the
		// node's whole state would drop whoever was in it. Ask again.
		t.s.m.snapshotRequests.WithLabelValues("node_incomplete").Inc()
		t.log.Warn("presence snapshot incomplete; asking again", zap.String("node", n.id),
			zap.Int("chunks", p.chunks), zap.Int("sent", c.Chunks))
		if r.node != "" {
			t.finish(r)
		}
		t.setSynced(n, false)
		n.lastAsked = time.Time{}
		t.ensureSnapshot(n, now)
		return
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

// sweep ends timed-out requests, asks unsynced nodes again, and probes
// and drops silent nodes (see Liveness above).
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
	up, since := t.s.link.state()
	// Silence is evidence only while the router's own connection carries
	// messages: it is up, and something came in within NodeTTL.
	trusted := up && now.Sub(t.linkSeen) <= t.s.opts.NodeTTL
	t.probeTimeouts(now, trusted)
	var unsynced, silent, drop []*nodeInfo
	t.v.mu.RLock()
	nodes := len(t.v.byID)
	for _, n := range t.v.nodes {
		if n == nil {
			continue
		}
		quiet := now.Sub(later(n.lastSeen, since)) // a fresh NodeTTL from a reconnect
		switch {
		case trusted && (quiet > t.s.opts.NodeMaxSilence || quiet > t.s.opts.NodeTTL && n.probeSubj == ""):
			drop = append(drop, n)
		case up && quiet > t.s.opts.NodeTTL:
			silent = append(silent, n)
		case !n.synced:
			unsynced = append(unsynced, n)
		}
	}
	t.v.mu.RUnlock()
	for _, n := range unsynced {
		t.ensureSnapshot(n, now)
	}
	for _, n := range silent {
		t.sendProbe(n, now)
	}
	for _, n := range drop {
		msg := "gateway node silent for --node-max-silence; dropping it and its users whatever its probes say"
		if n.probeSubj == "" {
			msg = "gateway node silent for --node-ttl and its id names no probe subject; dropping it and its users"
		}
		t.log.Warn(msg, zap.String("node", n.id), zap.Int("users", n.users),
			zap.Duration("silent", now.Sub(later(n.lastSeen, since)).Round(time.Millisecond)))
		t.drop(n, dropSilent)
	}
	if up && nodes > 0 && now.Sub(t.linkSeen) >= t.probeEvery && now.Sub(t.linkChecked) >= t.probeEvery {
		// Nothing came in for a while: a message to itself shows whether
		// the connection still carries any.
		t.linkChecked = now
		if err := t.s.nc.Load().Publish(t.inbox+"."+linkToken, nil); err != nil {
			t.log.Debug("link check not sent", zap.Error(err))
		}
	}
}

// linkToken ends the subject of the tracker's messages to itself.
const linkToken = "link"

// sendProbe probes a silent node, unless a probe of it went out less than
// probeEvery ago.
func (t *tracker) sendProbe(n *nodeInfo, now time.Time) {
	if p := n.probe; p != nil && now.Sub(p.sent) < t.probeEvery {
		return
	}
	if old := n.probe; old != nil {
		delete(t.probes, old.id)
	}
	t.nextProbe++
	p := &probe{id: t.nextProbe, node: n, sent: now}
	n.probe = p
	if err := t.s.nc.Load().PublishRequest(n.probeSubj, t.inbox+".p"+strconv.FormatUint(p.id, 10), nil); err != nil {
		t.log.Debug("probe not sent", zap.String("node", n.id), zap.Error(err))
		return // tried again after probeEvery
	}
	t.probes[p.id] = p
}

// probeTimeouts marks the probes unanswered for probeEvery late: the
// node's subscription exists, so its NATS connection is up. They are
// counted, and logged at most every lateLogEvery, only while the router's
// own connection is trusted (see sweep).
func (t *tracker) probeTimeouts(now time.Time, trusted bool) {
	for _, p := range t.probes {
		if p.late || now.Sub(p.sent) < t.probeEvery {
			continue
		}
		p.late = true // kept: a "no responders" may still come
		if !trusted {
			continue
		}
		t.s.m.probes.WithLabelValues(probeLate).Inc()
		t.lateCount++
		if now.Sub(t.lateLogged) >= lateLogEvery {
			t.log.Warn("gateway node silent for --node-ttl, but its NATS connection is up (a probe went unanswered): keeping it and its users",
				zap.String("node", p.node.id), zap.Duration("silent", now.Sub(p.node.lastSeen).Round(time.Millisecond)),
				zap.Int("late_probes", t.lateCount))
			t.lateLogged, t.lateCount = now, 0
		}
	}
}

// probeReply handles an answer on a probe's reply subject (tok is the
// probe's id): the node's heartbeat, or the server's "no responders".
func (t *tracker) probeReply(tok string, m *nats.Msg, now time.Time) {
	id, err := strconv.ParseUint(tok, 10, 64)
	if err != nil {
		return
	}
	p := t.probes[id]
	if len(m.Data) == 0 {
		if p != nil && m.Header.Get("Status") == noRespondersStatus {
			t.gone(p, now)
		}
		return
	}
	var h protocol.NodeHeartbeat
	if err := json.Unmarshal(m.Data, &h); err != nil || h.Node == "" || h.Epoch == "" || (p != nil && h.Node != p.node.id) {
		t.s.m.presenceMsgs.WithLabelValues("invalid").Inc()
		return
	}
	t.s.m.presenceMsgs.WithLabelValues("probe_reply").Inc()
	if p != nil {
		delete(t.probes, id)
		if !p.late {
			t.s.m.probes.WithLabelValues(probeAlive).Inc()
		}
	}
	t.heartbeat(&h, now)
}

// noRespondersStatus is the Status header of the NATS server's answer to a
// request nobody is subscribed to (nats.go's "no responders").
const noRespondersStatus = "503"

// gone drops the node of probe p, which nothing listens for any more: its
// NATS connection is gone. Unless the node was heard from since the probe
// went out (it reconnected) or was dropped already.
func (t *tracker) gone(p *probe, now time.Time) {
	delete(t.probes, p.id)
	n := p.node
	if t.nodeByID(n.id) != n || n.lastSeen.After(p.sent) {
		return
	}
	t.s.m.probes.WithLabelValues(probeGone).Inc()
	t.log.Warn("gateway node silent and its NATS connection is gone (nothing listens on its probe subject); dropping it and its users",
		zap.String("node", n.id), zap.Int("users", n.users), zap.Duration("silent", now.Sub(n.lastSeen).Round(time.Millisecond)))
	t.drop(n, dropGone)
}

// drop removes n and its users from the view.
func (t *tracker) drop(n *nodeInfo, reason string) {
	if p := n.probe; p != nil {
		delete(t.probes, p.id)
		n.probe = nil
	}
	t.v.removeNode(n)
	t.s.m.nodesExpired.WithLabelValues(reason).Inc()
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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

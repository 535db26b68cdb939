package gateway

import (
	"encoding/json"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// Topics on a node (see protocol/topic.go for names and subjects).
//
// The node holds one NATS subscription per topic that has at least one
// local subscriber, whatever their number: the hub (this file) counts, per
// topic, the event loops that hold members of it, subscribes the topic's
// subject when the first loop joins and unsubscribes it when the last
// leaves. Membership itself lives on the loops (topic_loop.go), touched by
// the loop goroutine only. A topic message is encoded once per node by a
// dispatcher and posted to each loop with members, which writes it to them
// in steps like a broadcast: the same bounded queues, the same
// slow-consumer policy.

// topic is a topic with subscribers on this node. A topic whose last loop
// left is removed from the hub; a later subscriber makes a new one (and a
// new NATS subscription), so a *topic never comes back to life.
type topic struct {
	name      string
	presence  bool               // its members are announced (Options.TopicPresence)
	disp      int32              // dispatcher channel carrying its messages (its order)
	loopsIn   int                // hub shard lock: loops holding it
	sub       *nats.Subscription // subscription manager goroutine
	subFailed bool               // subscription manager goroutine
	// confirmed is 1 + the NATS epoch in which a round trip confirmed the
	// subscription; 0: not (yet) confirmed.
	confirmed atomic.Uint32
	loops     []topicLoop // by loop index
}

// topicLoop is a topic's state on one loop: 12 bytes (written when
// membership changes, rarely enough that loops sharing a cache line do not
// matter, and a topic costs 12 bytes per loop, not a cache line).
type topicLoop struct {
	members atomic.Int32 // its members there (written by the loop, read by dispatchers)
	lid     int32        // loop goroutine only: its index in loop.tops; -1 when absent
	// catchPosted (resume): a taskTopicCatchUp for it is queued on the
	// loop, which clears it when the task runs.
	catchPosted atomic.Bool
}

const topicShards = 64

// topicHub maps topic names to the topics with subscribers on this node.
type topicHub struct {
	s      *Server
	seed   maphash.Seed
	shards [topicShards]topicShard
	count  atomic.Int64 // topics
	pairs  atomic.Int64 // (connection, topic) pairs, welcomed ones
	prefix string       // "<prefix>.topic."
	// live is, with resumable delivery, the prefix of the subjects the
	// history stream republishes the topics' messages on
	// ("<prefix>.live.topic."), which the node subscribes instead; "" without.
	live string
}

type topicShard struct {
	mu     sync.RWMutex
	topics map[string]*topic
	_      [40]byte
}

func newTopicHub(s *Server) *topicHub {
	h := &topicHub{s: s, seed: maphash.MakeSeed(), prefix: s.subjects.Topic("")}
	if s.opts.Resume {
		h.live = history.LivePrefix(s.opts.SubjectPrefix) + h.prefix[len(s.opts.SubjectPrefix)+1:]
	}
	for i := range h.shards {
		h.shards[i].topics = make(map[string]*topic)
	}
	return h
}

func (h *topicHub) shard(name string) (*topicShard, uint64) {
	x := maphash.String(h.seed, name)
	return &h.shards[x%topicShards], x
}

// join records that loop li holds members of topic name and returns the
// topic, subscribing it when it is new on the node.
func (h *topicHub) join(name string, li int) *topic {
	sh, x := h.shard(name)
	sh.mu.Lock()
	t := sh.topics[name]
	if t == nil {
		t = &topic{
			presence: topicAllowed(h.s.opts.TopicPresence, name),
			name:     strings.Clone(name),
			disp:     int32((x >> 32) % uint64(len(h.s.disp.chans))),
			loops:    make([]topicLoop, len(h.s.loops)),
		}
		for i := range t.loops {
			t.loops[i].lid = -1
		}
		sh.topics[t.name] = t
		h.count.Add(1)
		h.s.pres.topicChanged(t.name, "", 1) // the node has subscribers of it
		// Queued under the shard lock, so a leave and a join of the same
		// name reach the manager in the order they happened.
		h.s.subs.subscribeTopic(t)
	}
	t.loopsIn++
	sh.mu.Unlock()
	return t
}

// leave records that a loop no longer holds members of t; the last one
// removes the topic and its subscription.
func (h *topicHub) leave(t *topic) {
	sh, _ := h.shard(t.name)
	sh.mu.Lock()
	t.loopsIn--
	if t.loopsIn == 0 && sh.topics[t.name] == t {
		delete(sh.topics, t.name)
		h.count.Add(-1)
		h.s.pres.topicChanged(t.name, "", -1)
		h.s.subs.unsubscribeTopic(t)
	}
	sh.mu.Unlock()
}

// get returns the topic of a name, or nil.
func (h *topicHub) get(name string) *topic {
	sh, _ := h.shard(name)
	sh.mu.RLock()
	t := sh.topics[name]
	sh.mu.RUnlock()
	return t
}

// subject is the subject the node subscribes for topic name: the topic's
// own, or with resumable delivery the one the history stream republishes
// it on.
func (h *topicHub) subject(name string) string {
	if h.live != "" {
		return h.live + name
	}
	return h.prefix + name
}

// deliverTopic encodes a topic message once and posts it to every loop
// holding members of the topic. A loop whose queue is full is skipped and
// the drop counted, as for broadcasts; with resumable delivery that loop's
// members of the topic then catch up from the stream.
func (s *Server) deliverTopic(m *nats.Msg, st *dispStats) {
	st.natsIn.Add(1)
	var name string
	var seq, last uint64
	if h := s.topics; h.live != "" {
		var ok bool
		if seq, last, ok = seqHeaders(m.Header); !ok || !strings.HasPrefix(m.Subject, h.live) {
			s.rs.badHeaders.Add(1)
			return
		}
		name = m.Subject[len(h.live):]
	} else {
		name = m.Subject[len(s.topics.prefix):]
	}
	t := s.topics.get(name)
	if t == nil {
		st.undeliverable.Add(1)
		return
	}
	var sh *bufpool.Shared
	for i, l := range s.loops {
		if t.loops[i].members.Load() == 0 {
			continue
		}
		if sh == nil {
			if seq != 0 {
				sh = encodeTopicSeq(t.name, seq, m.Data)
			} else {
				sh = encodeTopicDelivery(t.name, m)
			}
		}
		sh.Retain()
		if !l.p.TryPost(task{kind: taskTopic, sh: sh, t: t, seq: seq, last: last}, int64(len(sh.B))) {
			sh.Release()
			l.stats.bcastDropped.Add(1)
			if seq != 0 && t.loops[i].catchPosted.CompareAndSwap(false, true) {
				l.p.Post(task{kind: taskTopicCatchUp, t: t})
			}
		}
	}
	if sh == nil {
		st.undeliverable.Add(1)
		return
	}
	sh.Release()
}

// isTopicSubject reports whether a subject is one of the node's topic
// subjects (with resumable delivery, a republished one).
func (h *topicHub) isTopicSubject(subj string) bool {
	if h.live != "" {
		return strings.HasPrefix(subj, h.live)
	}
	return strings.HasPrefix(subj, h.prefix)
}

// topicAllowed reports whether one of the patterns of a topics claim
// allows topic.
func topicAllowed(patterns []string, topic string) bool {
	for _, p := range patterns {
		if protocol.MatchTopic(p, topic) {
			return true
		}
	}
	return false
}

// encodeTopicDelivery builds a topic message's text frame, like
// encodeDelivery, with the topic in it.
func encodeTopicDelivery(name string, m *nats.Msg) *bufpool.Shared {
	var id string
	if m.Header != nil {
		id = m.Header.Get(protocol.HeaderMsgID)
	}
	const room = 10 // the largest unmasked header
	sh := bufpool.GetShared(room + len(m.Data) + len(name) + 128)
	b := protocol.AppendTopicMessage(sh.B[:room], name, id, m.Data)
	body := len(b) - room
	hs := wsframe.Size(body, false)
	wsframe.Put(b[room-hs:], ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(body)})
	sh.B = b[room-hs:]
	return sh
}

// encodeTopicSeq builds a resumable topic delivery's frame, its id the
// stream sequence.
func encodeTopicSeq(name string, seq uint64, data []byte) *bufpool.Shared {
	const room = 10
	sh := bufpool.GetShared(room + len(data) + len(name) + 128)
	b := protocol.AppendTopicMessageSeq(sh.B[:room], name, seq, data)
	body := len(b) - room
	hs := wsframe.Size(body, false)
	wsframe.Put(b[room-hs:], ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(body)})
	sh.B = b[room-hs:]
	return sh
}

// ctlWait answers one ControlSubscribe or ControlUnsubscribe once every
// connection it went to has applied it: the loops tell it (finish), the
// last one hands the reply to the subscription manager, which publishes
// it (a loop never writes to NATS).
type ctlWait struct {
	s       *Server
	subject string // reply subject
	left    atomic.Int32
	applied atomic.Int32
}

// finish records one connection's outcome; a nil ctlWait ignores it.
func (w *ctlWait) finish(applied bool) {
	if w == nil {
		return
	}
	if applied {
		w.applied.Add(1)
	}
	if w.left.Add(-1) == 0 {
		w.s.subs.post(subOp{kind: opReply, cw: w})
	}
}

// reply publishes the node's answer (subscription manager goroutine).
func (w *ctlWait) reply() {
	b, _ := json.Marshal(protocol.TopicReply{Node: w.s.opts.NodeID, Devices: int(w.applied.Load())})
	_ = w.s.nc.Publish(w.subject, b)
}

// topicControl applies a service's ControlSubscribe (sub) or
// ControlUnsubscribe to the user's connections on this node.
func (s *Server) topicControl(conns []*conn, m *nats.Msg, sub bool) {
	name := m.Header.Get(protocol.HeaderTopic)
	if protocol.ValidateTopic(name) != nil {
		return // the router validates; a bad one from elsewhere is dropped
	}
	reply := m.Reply
	if reply == "" && s.rs != nil {
		reply = m.Header.Get(protocol.HeaderReplyTo) // republished by the history stream
	}
	w := &ctlWait{s: s, subject: reply}
	if reply == "" {
		w = nil // nobody to answer: the loops apply it all the same
	} else if len(conns) == 0 {
		w.left.Store(1)
		w.finish(false)
		return
	} else {
		w.left.Store(int32(len(conns)))
	}
	name = strings.Clone(name)
	for _, c := range conns {
		// On the loop's bounded queue: a flood of controls is refused
		// (counted), never queued without bound.
		if !c.l.p.TryPost(task{kind: taskTopicCtl, c: c, name: name, ok: sub, cw: w}, 64) {
			s.m.topicRefused("control_dropped")
			w.finish(false)
		}
	}
}

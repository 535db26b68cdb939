package gateway

import (
	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/protocol"
)

// Topic membership on a loop (loop goroutine only).
//
// A loop keeps a table of the topics its connections hold (loop.tops,
// found by name through loop.topByName) and, per topic, the indices of its
// member connections in loop.conns. A connection keeps (in loop.ctp,
// beside its slot in loop.conns), once it has a topic claim or a
// subscription, a connTopics: its token's claims (shared by the
// connections whose tokens carry the same) and a topicRef per topic, its
// index in the loop's table and its place in that topic's member list. A
// (connection, topic) pair costs 12 bytes (a 4-byte member entry, an
// 8-byte ref) plus what slices keep in reserve, and a connection with
// topics a 32-byte connTopics; one without holds a nil pointer.

// connTopics is a connection's topics; nil while it has neither a topics
// claim nor a subscription.
type connTopics struct {
	claims *topicClaims // the token's (shared); nil: none
	refs   []topicRef
}

// allowed reports whether the connection's topics claim allows name.
func (ct *connTopics) allowed(name string) bool {
	return ct != nil && ct.claims != nil && topicAllowed(ct.claims.topics, name)
}

// mayPublish reports whether the connection's publish claim allows name.
func (ct *connTopics) mayPublish(name string) bool {
	return ct != nil && ct.claims != nil && topicAllowed(ct.claims.pub, name)
}

// topicRef is one of a connection's topics.
type topicRef struct {
	key uint32 // index in loop.tops << 1 | 1 when a subscription token allowed it
	pos int32  // index in the loop topic's members; -1 while NATS confirms the subscription
}

func (r topicRef) lid() int32     { return int32(r.key >> 1) }
func (r topicRef) viaToken() bool { return r.key&1 != 0 }
func refKey(lid int32, via bool) uint32 {
	k := uint32(lid) << 1
	if via {
		k |= 1
	}
	return k
}

// refCaps are the capacities a connection's refs grow through: each fills
// a Go size class (8-byte refs: 8, 16, 24, 32, 48, 64, 80, ... bytes), so a
// connection with ten topics holds 80 bytes of refs, not the 128 that
// append's doubling would give it.
var refCaps = [...]int{1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128}

// appendRef appends r to refs, growing it through refCaps.
func appendRef(refs []topicRef, r topicRef) []topicRef {
	if len(refs) < cap(refs) || len(refs) >= refCaps[len(refCaps)-1] {
		return append(refs, r)
	}
	n := len(refs) + 1
	for _, c := range refCaps {
		if c >= n {
			n = c
			break
		}
	}
	grown := make([]topicRef, len(refs), n)
	copy(grown, refs)
	return append(grown, r)
}

// loopTopic is a topic on one loop.
type loopTopic struct {
	t       *topic
	members []int32 // indices in loop.conns of the connections subscribed
	pending int32   // refs waiting for the subscription's confirmation
	// waiting are the connections (and services' control messages) the
	// confirmation in flight answers; one confirmation per loop topic at a
	// time (confirming), whatever the subscribes meanwhile.
	waiting    []topicWaiter
	confirming bool
	gen        uint32 // of the confirmation in flight: an answer to an older one is stale
	// Resumable delivery (topic_resume.go): pos is the stream position the
	// live members are covered to (known once a confirmation read it);
	// catching the catch-up in flight (nil: none) and skip the newest live
	// message it made the loop skip; floors the members ahead of pos.
	pos      uint64
	known    bool
	skip     uint64
	catching *replayJob
	floors   []topicFloor
}

// topicWaiter is a connection whose pending ref the loop topic's
// confirmation makes live (or failed), and the control message to tell.
type topicWaiter struct {
	c  *conn
	cw *ctlWait
}

// maxTokenChecks bounds the subscription tokens of one connection being
// checked at once: the auth queue, shared with new connections, is never
// filled by one client's subscribes.
const maxTokenChecks = 4

// checking reports whether a subscription token for name is being checked
// for c.
func (l *loop) checking(c *conn, name string) bool {
	for _, n := range l.tokChecks[c] {
		if n == name {
			return true
		}
	}
	return false
}

// endCheck forgets c's token check for name and reports whether one was
// in flight.
func (l *loop) endCheck(c *conn, name string) bool {
	ns := l.tokChecks[c]
	for i, n := range ns {
		if n == name {
			ns[i] = ns[len(ns)-1]
			ns = ns[:len(ns)-1]
			if len(ns) == 0 {
				delete(l.tokChecks, c)
			} else {
				l.tokChecks[c] = ns
			}
			return true
		}
	}
	return false
}

// tps returns c's topics, kept by its loop beside its slot in loop.conns
// (loop.ctp) rather than in the connection struct, whose size class an
// 8-byte field would push up for every connection.
// A connection no longer (or never) in the loop's list has none.
func (c *conn) tps() *connTopics {
	if c.idx < 0 {
		return nil
	}
	return c.l.ctp[c.idx]
}

func (c *conn) setTps(t *connTopics) {
	if c.idx >= 0 {
		c.l.ctp[c.idx] = t
	}
}

// topicCount is how many topics c holds or waits for.
func (c *conn) topicCount() int {
	if c.tps() == nil {
		return 0
	}
	return len(c.tps().refs)
}

// findTopic returns the index in c's refs of the topic name, or -1.
func (l *loop) findTopic(c *conn, name string) int {
	if c.tps() == nil {
		return -1
	}
	for i, r := range c.tps().refs {
		if l.tops[r.lid()].t.name == name {
			return i
		}
	}
	return -1
}

// findTopicPtr returns the index in c's refs of t, or -1.
func (l *loop) findTopicPtr(c *conn, t *topic) int {
	if c.tps() == nil {
		return -1
	}
	for i, r := range c.tps().refs {
		if l.tops[r.lid()].t == t {
			return i
		}
	}
	return -1
}

// subscribeFrame handles {"type":"subscribe"} on an open connection.
func (l *loop) subscribeFrame(c *conn, f protocol.ClientFrame) {
	name := f.Topic
	if i := l.findTopic(c, name); i >= 0 {
		if r := c.tps().refs[i]; r.pos >= 0 {
			l.writeSubscribedAt(c, r.lid()) // already live: the same answer, nothing changes
		}
		return // waiting for NATS (or its replay): the answer comes then
	}
	if l.checking(c, name) {
		return // its subscription token is being checked: the answer comes then
	}
	if c.topicCount()+len(l.tokChecks[c]) >= l.s.opts.MaxTopicsPerConnection {
		l.s.m.topicRefused("too_many_topics")
		c.writeTopicError(protocol.ErrCodeTooManyTopics, name, "the connection holds the most topics the node allows (max-topics-per-connection)")
		return
	}
	if c.tps().allowed(name) {
		l.noteSince(c, name, f.Since)
		l.addTopic(c, name, false, nil)
		return
	}
	if f.Token == "" {
		l.s.m.topicRefused("forbidden")
		c.writeTopicError(protocol.ErrCodeForbidden, name, "the token's topics claim does not allow this topic, and the frame has no subscription token")
		return
	}
	if len(l.tokChecks[c]) >= maxTokenChecks {
		l.s.m.topicRefused("overloaded")
		c.writeTopicError(protocol.ErrCodeOverloaded, name, "this connection's other subscription tokens are still being checked, subscribe again later")
		return
	}
	if !l.s.auth.submitTopic(c, f.Token, name) {
		l.s.m.authFailure("queue_full")
		c.writeTopicError(protocol.ErrCodeOverloaded, name, "authentication queue full, subscribe again later")
		return
	}
	if l.tokChecks == nil {
		l.tokChecks = map[*conn][]string{}
	}
	l.tokChecks[c] = append(l.tokChecks[c], name)
	l.noteSince(c, name, f.Since)
}

// topicAuthDone applies an auth worker's verdict on a subscription token.
func (l *loop) topicAuthDone(t *task) {
	c := t.c
	if c.State != stOpen {
		return
	}
	name := t.name
	if !l.endCheck(c, name) {
		return // unsubscribed meanwhile: it was answered
	}
	if !t.ok {
		l.dropSince(c, name)
		l.s.m.topicRefused("forbidden")
		c.writeTopicError(protocol.ErrCodeForbidden, name, t.reason)
		return
	}
	if i := l.findTopic(c, name); i >= 0 { // subscribed meanwhile (a service did)
		c.tps().refs[i].key |= 1 // the token's word stands, live or pending
		if r := c.tps().refs[i]; r.pos >= 0 {
			l.dropSince(c, name)
			l.writeSubscribedAt(c, r.lid())
		}
		return
	}
	if c.topicCount() >= l.s.opts.MaxTopicsPerConnection {
		l.dropSince(c, name)
		l.s.m.topicRefused("too_many_topics")
		c.writeTopicError(protocol.ErrCodeTooManyTopics, name, "the connection holds the most topics the node allows (max-topics-per-connection)")
		return
	}
	l.addTopic(c, name, true, nil)
}

// addTopic makes c a member of topic name: at once when the topic's NATS
// subscription is already confirmed, else once a round trip confirms it
// (taskSubscribed), so a message published after the client got its
// "subscribed" reaches it. cw, when not nil, is told the outcome.
func (l *loop) addTopic(c *conn, name string, via bool, cw *ctlWait) {
	lid, ok := l.topByName[name]
	if !ok {
		t := l.s.topics.join(name, l.idx)
		if n := len(l.topFree); n > 0 {
			lid = l.topFree[n-1]
			l.topFree = l.topFree[:n-1]
		} else {
			lid = int32(len(l.tops))
			l.tops = append(l.tops, loopTopic{})
		}
		l.tops[lid] = loopTopic{t: t}
		t.loops[l.idx].lid = lid
		if l.topByName == nil {
			l.topByName = map[string]int32{}
		}
		l.topByName[t.name] = lid
	}
	lt := &l.tops[lid]
	lt.pending++
	if c.tps() == nil {
		c.setTps(&connTopics{})
	}
	c.tps().refs = appendRef(c.tps().refs, topicRef{key: refKey(lid, via), pos: -1})
	// With resumable delivery a loop topic without live members asks for a
	// confirmation too, which reads its position from the stream.
	if lt.t.confirmed.Load() == l.s.natsEpoch.Load()+1 && (l.s.rs == nil || (lt.known && len(lt.members) > 0)) {
		l.topicLive(c, len(c.tps().refs)-1)
		cw.finish(true)
		return
	}
	l.awaitConfirm(lt, c, cw)
}

// awaitConfirm has c (and cw) answered by lt's confirmation, asking for
// one unless it is in flight.
func (l *loop) awaitConfirm(lt *loopTopic, c *conn, cw *ctlWait) {
	lt.waiting = append(lt.waiting, topicWaiter{c: c, cw: cw})
	if !lt.confirming {
		lt.confirming = true
		l.confirmGen++
		lt.gen = l.confirmGen
		l.s.subs.confirmTopic(l, lt.t, lt.gen)
	}
}

// subscribedDone takes the subscription manager's answer for the loop's
// topic t: its waiting connections' refs go live (or, when ok is false,
// fail with "subscribe_failed"), and each waiter's control message is
// told.
func (l *loop) subscribedDone(t *topic, ok bool, gen uint32, last uint64) {
	lid := t.loops[l.idx].lid
	if lid < 0 || l.tops[lid].t != t || !l.tops[lid].confirming || l.tops[lid].gen != gen {
		return // stale: the topic left the loop (its waiters were answered then) and came back
	}
	lt := &l.tops[lid]
	if ok && l.s.rs != nil && (!lt.known || (len(lt.members) == 0 && len(lt.floors) == 0 && lt.catching == nil)) {
		// Read after the subscription reached the server: every message
		// stored later comes live. (With live members the loop topic's
		// own position stands.)
		lt.pos, lt.known = max(lt.pos, last), true
	}
	ws := lt.waiting
	lt.waiting, lt.confirming = nil, false
	for _, w := range ws {
		c := w.c
		i := -1
		if c.State == stOpen {
			i = l.findTopicPtr(c, t)
		}
		switch {
		case i < 0:
			w.cw.finish(false)
		case c.tps().refs[i].pos >= 0:
			w.cw.finish(true) // made live by an earlier waiter of the same connection
		case !ok:
			l.removeTopic(c, i)
			l.s.m.topicRefused("subscribe_failed")
			c.writeTopicError(protocol.ErrCodeSubscribeFailed, t.name, "the topic's NATS subscription was not confirmed in time, subscribe again later")
			c.sseTopicLost(t.name)
			w.cw.finish(false)
		default:
			l.topicLive(c, i)
			w.cw.finish(true)
		}
	}
}

// topicControlDone applies a service's subscribe or unsubscribe of c
// (ControlSubscribe, ControlUnsubscribe). A service's subscription needs
// no claim and, like a subscription token's, outlives token refreshes.
func (l *loop) topicControlDone(t *task) {
	c, cw, name := t.c, t.cw, t.name
	if c.State != stOpen {
		cw.finish(false)
		return
	}
	i := l.findTopic(c, name)
	switch {
	case !t.ok:
		checked := l.endCheck(c, name) // a subscription token in flight: dropped too
		if i >= 0 || checked {
			if i >= 0 {
				l.removeTopic(c, i)
			}
			c.writeUnsubscribed(name, "unsubscribed by the service")
		}
		cw.finish(i >= 0)
	case i >= 0:
		c.tps().refs[i].key |= 1
		if c.tps().refs[i].pos >= 0 {
			cw.finish(true)
			return
		}
		l.awaitConfirm(&l.tops[c.tps().refs[i].lid()], c, cw) // pending: told with the others
	case c.topicCount() >= l.s.opts.MaxTopicsPerConnection:
		l.s.m.topicRefused("too_many_topics")
		cw.finish(false)
	default:
		l.addTopic(c, name, true, cw)
	}
}

// topicLive adds c to the members of its pending topic i and answers,
// or, for a subscribe with "since", starts its replay first.
func (l *loop) topicLive(c *conn, i int) {
	lid := c.tps().refs[i].lid()
	if l.s.rs != nil && l.startTopicReplay(c, lid) {
		return
	}
	l.joinLive(c, i, 0)
	l.writeSubscribedAt(c, lid)
}

// joinLive adds c to the members of its pending topic i. floor, with
// resumable delivery, is the position c is covered to when that is ahead
// of the loop topic's.
func (l *loop) joinLive(c *conn, i int, floor uint64) {
	r := &c.tps().refs[i]
	lid := r.lid()
	lt := &l.tops[lid]
	// Joining during a fan-out of the topic (it may still be in l.bconns,
	// from before it left): covered up to the message fanning out.
	fanning := l.s.rs != nil && l.fanT == lt.t && l.fanLid == lid
	if fanning {
		floor = max(floor, lt.pos)
	}
	first := len(lt.members) == 0
	if floor > lt.pos || fanning {
		if first && lt.catching == nil && !fanning {
			lt.pos = floor // nobody else is covered from it: the topic moves on
		} else {
			lt.floors = append(lt.floors, topicFloor{c: c, floor: floor})
		}
	}
	lt.pending--
	r.pos = int32(len(lt.members))
	lt.members = append(lt.members, c.idx)
	lt.t.loops[l.idx].members.Add(1)
	l.s.topics.pairs.Add(1)
	if lt.t.presence {
		l.s.pres.topicChanged(lt.t.name, c.user.id, 1)
	}
	if first && l.s.rs != nil {
		// The loop's first member: messages the node dispatched before
		// it counted (a loop without members gets none) may lie after
		// the position. A catch-up, whose position is read after this
		// count, fetches them; anything later comes live.
		l.topicCatchUp(lid, 0)
	}
}

// removeTopic drops c's topic i: from the members (the last member takes
// its place) or the pending count. The loop's last member of a topic
// takes it off the loop, and the node's last its NATS subscription.
func (l *loop) removeTopic(c *conn, i int) {
	refs := c.tps().refs
	r := refs[i]
	lid := r.lid()
	lt := &l.tops[lid]
	if r.pos < 0 {
		lt.pending--
		l.dropSince(c, lt.t.name) // its replay, if any, is dropped when it comes back
		// Its waiters leave with it (a control message waiting is told).
		kept := lt.waiting[:0]
		for _, w := range lt.waiting {
			if w.c == c {
				w.cw.finish(false)
				continue
			}
			kept = append(kept, w)
		}
		clear(lt.waiting[len(kept):])
		lt.waiting = kept
	} else {
		last := len(lt.members) - 1
		if moved := lt.members[last]; int(r.pos) != last {
			lt.members[r.pos] = moved
			m := l.conns[moved]
			for k := range m.tps().refs {
				if m.tps().refs[k].lid() == lid {
					m.tps().refs[k].pos = r.pos
					break
				}
			}
		}
		lt.members = lt.members[:last]
		if len(lt.floors) > 0 {
			lt.dropFloor(c)
		}
		lt.t.loops[l.idx].members.Add(-1)
		l.s.topics.pairs.Add(-1)
		if lt.t.presence {
			l.s.pres.topicChanged(lt.t.name, c.user.id, -1)
		}
	}
	refs[i] = refs[len(refs)-1]
	c.tps().refs = refs[:len(refs)-1]
	if len(c.tps().refs) == 0 {
		c.tps().refs = nil
		if c.tps().claims == nil {
			c.setTps(nil)
		}
	}
	if len(lt.members) == 0 && lt.pending == 0 {
		t := lt.t
		delete(l.topByName, t.name)
		t.loops[l.idx].lid = -1
		if lt.catching != nil {
			lt.catching.abandoned.Store(true) // its retries stop
		}
		l.tops[lid] = loopTopic{}
		l.topFree = append(l.topFree, lid)
		l.s.topics.leave(t)
	}
}

// unsubscribeFrame handles {"type":"unsubscribe"}: the answer is the same
// whether the connection held the topic or not.
func (l *loop) unsubscribeFrame(c *conn, name string) {
	if i := l.findTopic(c, name); i >= 0 {
		l.removeTopic(c, i)
	}
	l.endCheck(c, name) // a subscription token in flight: its verdict is dropped
	l.dropSince(c, name)
	c.writeUnsubscribed(name, "")
}

// dropTopics removes every topic of a closing connection.
func (l *loop) dropTopics(c *conn) {
	for c.tps() != nil && len(c.tps().refs) > 0 {
		l.removeTopic(c, len(c.tps().refs)-1)
	}
	c.setTps(nil)
	if l.tokChecks != nil {
		for _, name := range l.tokChecks[c] {
			l.dropSince(c, name)
		}
		delete(l.tokChecks, c)
	}
}

// movedConn fixes the member entries of c, which loop.remove moved to
// index i of loop.conns.
func (l *loop) movedConn(c *conn, i int32) {
	if c.tps() == nil {
		return
	}
	for _, r := range c.tps().refs {
		if r.pos >= 0 {
			l.tops[r.lid()].members[r.pos] = i
		}
	}
}

// setTopicClaim replaces c's topics claim (at authentication, at a token
// refresh). On a refresh, every topic the new claim no longer allows, and
// that no subscription token allowed, is unsubscribed with an
// "unsubscribed" frame that says why.
func (l *loop) setTopicClaim(c *conn, tc *topicClaims, refresh bool) {
	if c.tps() == nil {
		if tc == nil {
			return
		}
		c.setTps(&connTopics{})
	}
	c.tps().claims = tc
	if refresh {
		for i := len(c.tps().refs) - 1; i >= 0 && c.tps() != nil; i-- {
			if i >= len(c.tps().refs) {
				continue
			}
			r := c.tps().refs[i]
			name := l.tops[r.lid()].t.name
			if r.viaToken() || c.tps().allowed(name) {
				continue
			}
			l.removeTopic(c, i)
			c.writeUnsubscribed(name, "the refreshed token no longer allows this topic")
		}
	}
	if c.tps() != nil && len(c.tps().refs) == 0 && c.tps().claims == nil {
		c.setTps(nil)
	}
}

// publishTopic handles a publish frame to a topic (ClientTopicPublish).
func (l *loop) publishTopic(c *conn, name string, data []byte) {
	allowed := c.tps().mayPublish(name)
	direct := l.s.opts.ClientTopicPublish == "direct"
	if !allowed && !direct {
		if i := l.findTopic(c, name); i >= 0 && c.tps().refs[i].pos >= 0 {
			allowed = true // a member may talk to the room's service
		}
	}
	if !allowed {
		l.s.m.publishErrors.WithLabelValues("forbidden").Inc()
		reason := "the token's publish claim does not allow this topic, and the connection does not hold it"
		if direct {
			reason = "the token's publish claim does not allow this topic"
		}
		c.writeTopicError(protocol.ErrCodeForbidden, name, reason)
		return
	}
	l.s.pub.enqueue(c, data, name)
}

// isMember reports whether c is a live member of loop topic lid.
func (c *conn) isMember(lid int32) bool {
	if c.tps() == nil {
		return false
	}
	for _, r := range c.tps().refs {
		if r.lid() == lid {
			return r.pos >= 0
		}
	}
	return false
}

// topicStep writes a topic message to the next step of the topic's
// members on this loop, as broadcast does: it goes over the members the
// topic had at its first step, skipping any that left it meanwhile. With
// resumable delivery the message is written only if it is the next on the
// loop topic's chain (topic_resume.go).
func (l *loop) topicStep(t *task) (more bool) {
	lid := t.t.loops[l.idx].lid
	if lid < 0 || l.tops[lid].t != t.t {
		clear(l.bconns[t.next:])
		l.bconns, l.fanT = l.bconns[:0], nil
		return false // the topic left this loop meanwhile
	}
	if t.next == 0 {
		if t.seq != 0 && !l.topicInChain(lid, t.seq, t.last) {
			return false
		}
		l.topicBegin(lid, t.seq)
	}
	if l.step(t, l.topicWriter(lid, t.seq, t.sh)) {
		return true
	}
	l.fanT = nil
	return false
}

func (c *conn) writeUnsubscribed(name, reason string) {
	var buf [512]byte
	b := append(buf[:0], `{"type":"unsubscribed","topic":"`...)
	b = append(b, name...)
	b = append(b, '"')
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = protocol.AppendJSONString(b, []byte(reason))
	}
	c.writeFrame(ws.OpText, append(b, '}'))
}

func (c *conn) writeTopicError(code, name, reason string) {
	var buf [768]byte
	c.writeFrame(ws.OpText, protocol.AppendTopicError(buf[:0], code, name, reason))
}

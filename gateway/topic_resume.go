package gateway

import (
	"math"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/protocol"
)

// Topics with resumable delivery (Options.Resume). The history stream
// stores every topic subject's messages too and republishes them to
// "<prefix>.live.topic.<topic>" with their sequence and the previous one
// on the topic's subject; the node subscribes to those subjects.
//
//   - A loop topic keeps one chain position for all its live members
//     (loopTopic.pos): the newest message of the topic written to them.
//     It is read from the stream when the first member joins (the topic's
//     confirmation round trip reads the stream's last sequence after the
//     subscription reached the server, so everything stored later is
//     republished to the node). A live message at or below it is a
//     duplicate; one whose previous message is above it shows that a
//     message never reached the loop (a NATS outage, a full queue), and the
//     loop topic catches up from the stream before writing anything newer:
//     a replay worker fetches the topic's messages after the position in
//     batches, and the loop writes each batch to the members like a live
//     message, skipping live messages meanwhile (remembering the newest).
//     A NATS reconnect catches every loop topic up, as it does every
//     connection.
//   - A subscribe with "since" is a replay of that one topic for that
//     connection (resume_replay.go's workers, batched direct gets), which
//     first checks that history still holds everything after "since"
//     ("recovered" in the "subscribed" frame), then writes it, then makes
//     the connection a live member at the loop topic's position. A replay
//     that ends ahead of that position (live messages still on their way
//     to the loop) leaves the member a floor: it skips the messages up to
//     it, which it has. So each member gets every message after its
//     position once, in order, exactly as a user's devices do.
//   - Every member's position is a stream sequence: "position" in the
//     "subscribed" frame, and each message's id. A client resubscribes
//     after a reconnect with the id of the last message it got of the
//     topic (or the position, if none) as "since".

// tjKey names a connection's subscribe with "since" to one topic.
type tjKey struct {
	c    *conn
	name string
}

// topicFrame is one message of a loop topic's catch-up batch.
type topicFrame struct {
	seq uint64
	sh  *bufpool.Shared
}

// topicFloor is a member that joined ahead of its loop topic's position:
// it has every message of the topic up to floor.
type topicFloor struct {
	c     *conn
	floor uint64
}

// subRecovery says what a "subscribed" frame tells of the position.
type subRecovery uint8

const (
	subPlain        subRecovery = iota // no position (no resumable delivery)
	subPosition                        // the position
	subRecovered                       // the position and "recovered":true
	subNotRecovered                    // the position and "recovered":false
)

// writeSubscribed answers a subscribe.
func (c *conn) writeSubscribed(name string, pos uint64, rec subRecovery) {
	var buf [320]byte
	b := append(buf[:0], `{"type":"subscribed","topic":"`...)
	b = append(b, name...) // a valid topic needs no escaping
	b = append(b, '"')
	if rec != subPlain {
		b = append(b, `,"position":"`...)
		b = strconv.AppendUint(b, pos, 10)
		b = append(b, '"')
		switch rec {
		case subRecovered:
			b = append(b, `,"recovered":true`...)
		case subNotRecovered:
			b = append(b, `,"recovered":false`...)
		}
	}
	c.writeFrame(ws.OpText, append(b, '}'))
}

// writeSubscribedAt answers a subscribe of a live member of loop topic
// lid: with resumable delivery, at the loop topic's position (or the
// member's floor, when ahead).
func (l *loop) writeSubscribedAt(c *conn, lid int32) {
	lt := &l.tops[lid]
	if l.s.rs == nil {
		c.writeSubscribed(lt.t.name, 0, subPlain)
		return
	}
	pos := lt.pos
	for _, f := range lt.floors {
		if f.c == c {
			pos = max(pos, f.floor)
		}
	}
	c.writeSubscribed(lt.t.name, pos, subPosition)
}

// noteSince records a subscribe's "since" (resumable delivery): the
// connection replays the topic from it before it goes live.
func (l *loop) noteSince(c *conn, name, since string) {
	if l.s.rs == nil || since == "" {
		return
	}
	v, err := protocol.ParseSince(since)
	if err != nil {
		return // DecodeClientFrame refused it already
	}
	if l.tjobs == nil {
		l.tjobs = map[tjKey]*replayJob{}
	}
	l.tjobs[tjKey{c, name}] = &replayJob{c: c, l: l, since: v, tFrom: v, initial: true}
}

// dropSince forgets c's subscribe with "since" to name, if any.
func (l *loop) dropSince(c *conn, name string) {
	if l.tjobs != nil {
		delete(l.tjobs, tjKey{c, name})
	}
}

// startTopicReplay starts c's replay of loop topic lid when its subscribe
// had a "since", and reports whether the connection waits for one (it
// goes live when the replay is done).
func (l *loop) startTopicReplay(c *conn, lid int32) bool {
	lt := &l.tops[lid]
	j := l.tjobs[tjKey{c, lt.t.name}]
	if j == nil {
		return false
	}
	if j.t == nil {
		j.t, j.lid = lt.t, lid
		l.s.rs.rp.submit(j)
	}
	return true
}

// topicReplayed takes c's topic replay back from a worker: after the
// check of history, the "subscribed" frame; after a round, another round
// or the connection goes live.
func (l *loop) topicReplayed(c *conn, j *replayJob) {
	key := tjKey{c, j.t.name}
	if l.tjobs[key] != j {
		return // unsubscribed or closed meanwhile
	}
	i := -1
	if c.State == stOpen {
		i = l.findTopicPtr(c, j.t)
	}
	if i < 0 || c.tps().refs[i].pos >= 0 || l.tops[j.lid].t != j.t {
		delete(l.tjobs, key)
		return
	}
	lt := &l.tops[j.lid]
	rs := l.s.rs
	switch {
	case j.fell:
		delete(l.tjobs, key)
		l.removeTopic(c, i)
		c.writeUnsubscribed(j.t.name, "fell further behind than history holds: subscribe again with since")
		c.sseTopicLost(j.t.name)
	case j.initial && !j.recovered:
		rs.unrecovered.Add(1)
		delete(l.tjobs, key)
		l.joinLive(c, i, 0)
		c.writeSubscribed(j.t.name, lt.pos, subNotRecovered)
	case j.initial:
		rs.recovered.Add(1)
		c.writeSubscribed(j.t.name, j.since, subRecovered)
		j.initial, j.tries, j.notBefore = false, 0, 0
		rs.rp.submit(j) // writes what came after "since", up to j.upTo
	case j.upTo < lt.pos:
		// The loop wrote newer messages to the members meanwhile: another
		// round, up to there.
		j.tFrom, j.upTo, j.checked, j.tries, j.notBefore = j.upTo, lt.pos, false, 0, 0
		rs.rp.submit(j)
	default:
		delete(l.tjobs, key)
		l.joinLive(c, i, j.upTo)
	}
}

// topicInChain reports whether a live message of loop topic lid is the
// next on its chain; otherwise it is a duplicate, or skipped while the
// loop topic catches up, or shows a gap, which starts a catch-up.
func (l *loop) topicInChain(lid int32, seq, last uint64) bool {
	lt := &l.tops[lid]
	switch {
	case lt.catching != nil:
		lt.skip = max(lt.skip, seq)
		return false
	case seq <= lt.pos:
		return false
	case last > lt.pos:
		l.s.m.resumeGaps.Inc()
		l.topicCatchUp(lid, seq)
		return false
	}
	return true
}

// topicBegin starts writing message seq (0: no resumable delivery) to
// loop topic lid's members: it takes them into l.bconns, leaving out those
// whose floor covers it, and moves the topic's position.
func (l *loop) topicBegin(lid int32, seq uint64) {
	lt := &l.tops[lid]
	l.bconns = l.bconns[:0]
	for _, i := range lt.members {
		c := l.conns[i]
		if len(lt.floors) > 0 && seq != 0 && lt.floorCovers(c, seq) {
			continue
		}
		l.bconns = append(l.bconns, c)
	}
	if seq == 0 {
		return
	}
	l.fanT, l.fanLid = lt.t, lid
	lt.pos = seq
	if len(lt.floors) > 0 {
		kept := lt.floors[:0]
		for _, f := range lt.floors {
			if f.floor > seq {
				kept = append(kept, f)
			}
		}
		clear(lt.floors[len(kept):])
		lt.floors = kept
		if len(kept) == 0 {
			lt.floors = nil
		}
	}
}

// topicWriter writes message seq of loop topic lid to a connection still
// a member, unless its floor covers it (it joined during this fan-out).
func (l *loop) topicWriter(lid int32, seq uint64, sh *bufpool.Shared) func(c *conn) bool {
	lt := &l.tops[lid]
	return func(c *conn) bool {
		if c.State != stOpen || !c.isMember(lid) || (len(lt.floors) > 0 && lt.floorCovers(c, seq)) {
			return false
		}
		return c.writeShared(sh)
	}
}

// floorCovers reports whether member c already has message seq.
func (lt *loopTopic) floorCovers(c *conn, seq uint64) bool {
	for _, f := range lt.floors {
		if f.c == c {
			return f.floor >= seq
		}
	}
	return false
}

// dropFloor forgets c's floor, if any.
func (lt *loopTopic) dropFloor(c *conn) {
	for k, f := range lt.floors {
		if f.c == c {
			last := len(lt.floors) - 1
			lt.floors[k] = lt.floors[last]
			lt.floors[last] = topicFloor{}
			lt.floors = lt.floors[:last]
			if last == 0 {
				lt.floors = nil
			}
			return
		}
	}
}

// topicCatchUp starts a catch-up of loop topic lid from its position
// (skipped: a live message it did not write, 0 if none).
func (l *loop) topicCatchUp(lid int32, skipped uint64) {
	lt := &l.tops[lid]
	if l.s.rs == nil || !lt.known {
		return
	}
	if lt.catching != nil {
		if skipped == 0 {
			// A loss that shows in no chain (a NATS reconnect, a dropped
			// post) while a round runs: another round follows.
			skipped = math.MaxUint64
		}
		lt.skip = max(lt.skip, skipped)
		return
	}
	j := &replayJob{t: lt.t, l: l, lid: lid, tFrom: lt.pos}
	lt.catching, lt.skip = j, skipped
	l.s.rs.rp.submit(j)
}

// topicBatchStep writes the next step of a loop topic's catch-up batch
// and reports whether some is left; when the batch is done, the catch-up
// goes on, makes another round, or ends.
func (l *loop) topicBatchStep(t *task) (more bool) {
	j := t.rj
	lt := &l.tops[j.lid]
	if lt.t != j.t || lt.catching != j {
		releaseBatch(j)
		clear(l.bconns)
		l.bconns, l.fanT = l.bconns[:0], nil
		return false // the topic left the loop, or its members did
	}
	if j.fell {
		// The loop's members fell further behind than history holds: each
		// is unsubscribed and told, and subscribes again with "since" (and
		// gets "recovered":false), never a silent gap.
		lt.catching = nil
		// Nobody stays covered from the old position: the topic goes on
		// from where the catch-up looked (a replay with "since" checks its
		// own history).
		lt.pos, lt.floors = max(lt.pos, j.upTo), nil
		releaseBatch(j)
		lid, tp := j.lid, j.t
		for l.tops[lid].t == tp && len(l.tops[lid].members) > 0 {
			ms := l.tops[lid].members
			c := l.conns[ms[len(ms)-1]]
			if i := l.findTopicPtr(c, tp); i >= 0 {
				l.removeTopic(c, i)
				c.writeUnsubscribed(tp.name, "fell further behind than history holds: subscribe again with since")
				c.sseTopicLost(tp.name)
			}
		}
		return false
	}
	budget := broadcastStep
	for j.bi < len(j.batch) {
		f := j.batch[j.bi]
		if t.next == 0 {
			if f.seq <= lt.pos {
				j.bi++
				continue
			}
			l.topicBegin(j.lid, f.seq)
			budget -= len(l.bconns)
		}
		if l.step(t, l.topicWriter(j.lid, f.seq, f.sh)) {
			return true
		}
		l.fanT = nil
		t.next = 0
		j.bi++
		if budget <= 0 && j.bi < len(j.batch) {
			return true // the rest at the next wake-up
		}
	}
	releaseBatch(j)
	lt.pos = max(lt.pos, j.cover)
	rp := l.s.rs.rp
	switch {
	case j.cover < j.upTo:
		j.tFrom, j.tries, j.notBefore = j.cover, 0, 0
		rp.submit(j)
	case lt.skip > j.upTo:
		// It skipped a live message beyond this round: another round.
		j.tFrom, j.upTo, j.checked, j.tries, j.notBefore = lt.pos, 0, false, 0, 0
		lt.skip = 0
		rp.submit(j)
	default:
		lt.catching, lt.skip = nil, 0
	}
	return false
}

// releaseBatch lets go of a catch-up batch's frames.
func releaseBatch(j *replayJob) {
	for _, f := range j.batch {
		f.sh.Release()
	}
	clear(j.batch)
	j.batch, j.bi = j.batch[:0], 0
}

// ---- the workers' side ----

// runLoopTopic fetches the next batch of a loop topic's catch-up and
// hands it to the loop.
func (w *replayWorker) runLoopTopic(j *replayJob) {
	p := w.p
	r := p.r
	if j.abandoned.Load() || !w.topicPosition(j) {
		return
	}
	subj := r.s.subjects.Topic(j.t.name)
	if !w.topicLast(j, subj) {
		return
	}
	j.cover = j.upTo
	var cost int64 = 64
	if j.tFrom < j.upTo && j.tFrom < j.tLast {
		res, ok := w.topicFetch(j, subj)
		if !ok {
			return
		}
		if res.total >= uint64(r.cfg.MaxPerUser) {
			j.fell = true // an older message after the position may be trimmed
		} else {
			if res.more {
				j.cover = res.msgs[len(res.msgs)-1].seq
			}
			for _, m := range res.msgs {
				if m.control {
					continue
				}
				sh := encodeTopicSeq(j.t.name, m.seq, m.data)
				cost += int64(len(sh.B))
				j.batch = append(j.batch, topicFrame{seq: m.seq, sh: sh})
			}
		}
	}
	j.bi = 0
	if !j.l.p.TryPost(task{kind: taskTopicBatch, rj: j}, cost) {
		// The loop's queue is full (a fan-out in progress): later.
		releaseBatch(j)
		j.fell = false
		j.notBefore = mono() + int64(replayPace)
		p.submit(j)
	}
}

// runConnTopic runs a connection's replay of one topic: first (initial)
// the check that history holds everything after its "since", then
// rounds that write it.
func (w *replayWorker) runConnTopic(j *replayJob) {
	p := w.p
	r := p.r
	s := r.s
	c := j.c
	if c.closed() {
		return
	}
	if j.tries == 0 && !j.initial && j.tFrom == j.since {
		p.started.Add(1)
	}
	if !w.topicPosition(j) {
		return
	}
	done := func() { c.l.p.Post(task{kind: taskTopicReplayed, c: c, rj: j}) }
	if j.initial && (j.since > j.upTo || j.since+1 < j.first) {
		// An id this stream never gave, or history expired past it.
		j.recovered = false
		done()
		return
	}
	subj := s.subjects.Topic(j.t.name)
	if !w.topicLast(j, subj) {
		return
	}
	for {
		if j.tFrom < j.upTo && j.tFrom >= j.tLast {
			j.tFrom = j.upTo // nothing on the topic after it, up to upTo
		}
		if j.tFrom >= j.upTo {
			break
		}
		if c.closed() {
			return
		}
		if !j.initial && c.queued() > s.opts.MaxPendingBytes/2 {
			j.notBefore = mono() + int64(replayPace)
			p.submit(j)
			return
		}
		res, ok := w.topicFetch(j, subj)
		if !ok {
			return
		}
		whole := res.total < uint64(r.cfg.MaxPerUser)
		if j.initial {
			j.recovered = whole
			done()
			return
		}
		if !whole {
			p.fellBehind.Add(1)
			j.fell = true
			done()
			return
		}
		h := j.upTo
		if res.more {
			h = res.msgs[len(res.msgs)-1].seq
		}
		wrote, full, ok := w.write(j, res.msgs, nil, h)
		if !ok {
			return
		}
		if full {
			j.tFrom = max(j.tFrom, wrote)
			j.notBefore = mono() + int64(replayPace)
			p.submit(j)
			return
		}
		j.tFrom = max(j.tFrom, h)
	}
	if j.initial {
		j.recovered = true // nothing after "since": recovered
	} else {
		p.completed.Add(1)
	}
	done()
}

// topicPosition reads the stream's position for j's round when it has
// none yet; false: that failed, and j is queued again.
func (w *replayWorker) topicPosition(j *replayJob) bool {
	if j.upTo != 0 {
		return true
	}
	first, pos, err := w.p.r.pos.state(w.p.ctx, j.queued)
	if err != nil {
		w.retry(j, err)
		return false
	}
	j.first, j.upTo = first, pos
	return true
}

// topicLast looks up the topic's newest message (from the leader) once a
// round, when the round has something to cover; false: that failed, and j
// is queued again.
func (w *replayWorker) topicLast(j *replayJob, subj string) bool {
	if j.checked || j.tFrom >= j.upTo {
		return true
	}
	last, err := w.lastOn(w.p.ctx, subj)
	if err != nil {
		w.retry(j, err)
		return false
	}
	j.tLast, j.checked = last, true
	return true
}

// topicFetch fetches the topic's next batch after j.tFrom; false: the
// fetch failed or a replica behind answered, and j is queued again.
func (w *replayWorker) topicFetch(j *replayJob, subj string) (fetchResult, bool) {
	res, err := w.fetch(w.p.ctx, subj, j.tFrom, j.upTo, replayMaxBytes(w.p.r.s), &w.um)
	if err != nil {
		w.retry(j, err)
		return res, false
	}
	if res.behind(j.tLast, j.upTo) {
		w.p.behind.Add(1)
		j.checked = false
		w.retry(j, errReplicaBehind)
		return res, false
	}
	return res, true
}

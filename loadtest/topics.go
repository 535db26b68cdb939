package loadtest

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"github.com/wsfleet/wsfleet/protocol"
)

// The topic scenarios: live and rooms.
//
// live: every connection subscribes to one topic (--topic) once welcomed;
// when all are subscribed, the parent publishes --msg-rate messages a
// second to it, numbered 1, 2, 3… in one stream, through the router (one
// request at a time: the topic's order is the requests') or NATS (one
// connection, flushed every 5 ms), and announces each publish (its time
// and whether it was acknowledged) to every process in batches, as it does
// a broadcast. Every device checks the numbers it receives.
//
// rooms: room k is the topic <room-prefix>.<run id>.<k>, its members the
// connections k·R … k·R+R-1 (R: --room-size, a multiple of
// --devices-per-user, so a user's devices are in one room). A process
// holds whole rooms (and whole users), so the messages of a room are
// published and checked in the same process: each process's publisher
// picks a random room of its own and a random member of it, numbers the
// room's messages 1, 2, 3…, and publishes it as the member (its publish
// frame: --room-publish client) or on its behalf (router, nats), at most
// one message of a room in flight (so a room's messages are stamped in
// their numbering order).
//
// A device's session on its topic starts when its "subscribed" frame
// arrives (the gateway sends it once the node's subscription is live) and
// ends with its connection (or an "unsubscribed" the gateway sends). What
// counts as delivered, lost, missed, duplicated, early, unconfirmed and
// unknown is as for users (tracker.go), with the subscribe in place of the
// welcome. Out of order is counted per stream of the topic whose order the
// fleet promises: the topic's for live and for rooms published through the
// router or NATS (one publisher); per sender in a room whose members publish
// their own frames (each member's frames are published in order by its
// node, but two members' frames reach NATS through different connections,
// in no promised order).
//
// These scenarios number the messages themselves (their Wsfleet-Msg-Id)
// and account for them live; with --resume a fleet gives a topic message
// its stream sequence for its id, and a since replays it, which they do
// not account for yet: --resume is refused for them.

// Topic session states of a slot.
const (
	tpNone    uint8 = iota // no subscription asked on the current connection
	tpPending              // subscribe sent, no answer yet
	tpLive                 // "subscribed" received
)

// Probe states of a slot (rooms --room-publish client).
const (
	probeNone uint8 = iota
	probeSent
	probeBack
)

// topicTrack is one device's view of its topic's stream, across its
// sessions. The numbers received are kept as the highest (top) and the
// holes below it: memory grows with the gaps, not with the messages, as a
// live topic's device receives every message of the run.
type topicTrack struct {
	top    uint32
	holes  []uint32 // inclusive ranges [a, b] of numbers below top not received, ascending: a0, b0, a1, b1…
	firstW int64    // first "subscribed" (0: never)
	w      int64    // "subscribed" of the current or last session
	open   bool
	order  []uint32 // per order key (sender, or one for the topic): highest number the current session received
	dup    int64
	ooo    int64
	recv   int64
	unexp  [][2]int64 // as devTrack.unexp
}

// welcome starts a session at t with keys order keys.
func (d *topicTrack) welcome(t int64, keys int) {
	if d.firstW == 0 {
		d.firstW = t
	}
	if n := len(d.unexp); n > 0 && d.unexp[n-1][1] == 0 {
		d.unexp[n-1][1] = t
	}
	d.w, d.open = t, true
	if len(d.order) != keys {
		d.order = make([]uint32, keys)
	} else {
		clear(d.order)
	}
}

// owes reports whether a receipt of a message published at t counts
// against the outstanding deliveries: the current session was subscribed
// before the publish.
func (d *topicTrack) owes(t int64) bool { return d.open && d.w < t }

// closed ends the current session (unexpected: the gateway or the network
// ended it, or the gateway unsubscribed the connection).
func (d *topicTrack) closed(unexpected bool) {
	if d.open && unexpected {
		d.unexp = append(d.unexp, [2]int64{d.w, 0})
	}
	d.open = false
}

func (d *topicTrack) missedByClose(t int64) bool {
	for _, u := range d.unexp {
		if u[0] < t && (u[1] == 0 || t <= u[1]) {
			return true
		}
	}
	return false
}

// hole returns the index (of its a) of the hole holding seq, or -1.
func (d *topicTrack) hole(seq uint32) int {
	n := len(d.holes) / 2
	i := sort.Search(n, func(i int) bool { return d.holes[2*i+1] >= seq })
	if i < n && d.holes[2*i] <= seq {
		return 2 * i
	}
	return -1
}

// has reports whether some session received seq.
func (d *topicTrack) has(seq uint32) bool {
	return seq >= 1 && seq <= d.top && d.hole(seq) < 0
}

// add records seq and reports whether it was there already.
func (d *topicTrack) add(seq uint32) (had bool) {
	if seq > d.top {
		if seq > d.top+1 {
			d.holes = append(d.holes, d.top+1, seq-1)
		}
		d.top = seq
		return false
	}
	h := d.hole(seq)
	if h < 0 {
		return true
	}
	a, b := d.holes[h], d.holes[h+1]
	switch {
	case a == b:
		d.holes = append(d.holes[:h], d.holes[h+2:]...)
	case seq == a:
		d.holes[h]++
	case seq == b:
		d.holes[h+1]--
	default:
		d.holes = append(d.holes, 0, 0)
		copy(d.holes[h+4:], d.holes[h+2:])
		d.holes[h+1], d.holes[h+2], d.holes[h+3] = seq-1, seq+1, b
	}
	return false
}

// receive records a receipt of seq (≥ 1) of order key k and reports
// whether it was a duplicate or out of order (below the highest number
// the session received of the same key).
func (d *topicTrack) receive(seq uint32, k int) (dup, ooo bool) {
	d.recv++
	if d.add(seq) {
		d.dup++
		return true, false
	}
	if seq < d.order[k] {
		d.ooo++
		return false, true
	}
	d.order[k] = seq
	return false, false
}

// topicLog is a stream's publish log, final, with its acknowledged
// publishes counted: acked[i] is the number among recs[:i]. Its times
// never decrease (one goroutine stamps a stream's messages in order).
type topicLog struct {
	recs  []pubRec
	acked []int32
}

func newTopicLog(recs []pubRec) *topicLog {
	lg := &topicLog{recs: recs, acked: make([]int32, len(recs)+1)}
	for i, r := range recs {
		lg.acked[i+1] = lg.acked[i]
		if r.state == pubAcked {
			lg.acked[i+1]++
		}
	}
	return lg
}

// ackedIn counts the acknowledged publishes of indices [lo, hi).
func (lg *topicLog) ackedIn(lo, hi int) int64 {
	if hi <= lo {
		return 0
	}
	return int64(lg.acked[hi] - lg.acked[lo])
}

// account classifies every message of the stream for this device, as
// devTrack.account does (the subscribe in place of the welcome), and
// counts as pending the lost messages after the last one it received;
// openAtEnd says whether its last session was open at the end of the
// drain window. It walks the device's received ranges and its missing
// numbers, not every message: a device of a live topic that received
// everything costs O(log n).
func (d *topicTrack) account(lg *topicLog, openAtEnd bool) SeqCounts {
	c := SeqCounts{Duplicated: d.dup, OutOfOrder: d.ooo, Receipts: d.recv}
	n := len(lg.recs)
	// i0: the first index published after the first subscribe (n: none)
	i0 := n
	if d.firstW != 0 {
		i0 = sort.Search(n, func(i int) bool { return lg.recs[i].t > d.firstW })
	}
	// seen, 0-based [lo, hi): received, split at i0
	seen := func(lo, hi int) {
		hi = min(hi, n)
		if lo >= hi {
			return
		}
		if m := min(hi, i0); lo < m {
			a := lg.ackedIn(lo, m)
			c.Early += a
			c.Unconfirmed += int64(m-lo) - a
		}
		if m := max(lo, i0); m < hi {
			a := lg.ackedIn(m, hi)
			c.Delivered += a
			c.Expected += a
			c.Unconfirmed += int64(hi-m) - a
		}
	}
	// missing, 0-based [lo, hi): not received; those owed are lost or missed
	missing := func(lo, hi int) {
		for i := max(lo, i0); i < min(hi, n); i++ {
			r := lg.recs[i]
			if r.state != pubAcked {
				continue
			}
			c.Expected++
			switch {
			case openAtEnd && d.w < r.t:
				c.Lost++
				if i >= int(d.top) {
					// nothing later received: the device's stream was
					// behind at the cut (still queued, or cut off)
					c.Pending++
				}
			default:
				c.Missed++
				if d.unexp != nil && d.missedByClose(r.t) {
					c.MissedClosed++
				}
			}
		}
	}
	prev := 0 // 0-based index of the first number not yet walked
	for h := 0; h < len(d.holes); h += 2 {
		a, b := int(d.holes[h]), int(d.holes[h+1]) // 1-based, inclusive
		seen(prev, a-1)
		missing(a-1, b)
		prev = b
	}
	seen(prev, int(d.top))
	missing(int(d.top), n)
	// unknown: numbers received past the log's
	if int(d.top) > n {
		u := int64(int(d.top) - n)
		for h := 0; h < len(d.holes); h += 2 {
			a, b := max(int(d.holes[h]), n+1), int(d.holes[h+1])
			if b >= a {
				u -= int64(b - a + 1)
			}
		}
		c.Unknown = u
	}
	return c
}

// room is a topic of this process: the live topic, or one room.
type room struct {
	topic   string
	num     int    // global room number (live: 0)
	sub     []byte // the subscribe frame
	query   []byte // --transport sse: the topics= query parameter that subscribes at connect
	pubHead []byte // a publish frame up to its data
	members []*slot
	live    int32  // sessions subscribed now (under its topicSet lock)
	pubs    uint32 // messages stamped: the last one's number (under its topicSet lock)
}

// topicSet is a process's topics.
type topicSet struct {
	live   bool // live, else rooms
	client bool // rooms --room-publish client
	keys   int  // order keys per device
	rooms  []*room
	mu     [64]sync.Mutex // guards each room's live and pubs (room i: mu[i%64])

	subscribed atomic.Int64 // slots subscribed at least once
	subDone    atomic.Int64 // mono ns when every slot of the process was
	// deliveries owed (acknowledged messages × sessions subscribed at
	// their publish) and received by such sessions
	elig, got atomic.Int64

	// live: the parent's publishes as announced
	logMu sync.Mutex
	log   []pubRec
}

// roomTopic is the topic of room k of a run.
func roomTopic(prefix, run string, k int) string {
	return prefix + "." + run + "." + strconv.Itoa(k)
}

// newTopicSet sets up a live or rooms process: its topics, each slot's,
// and the claims of its users' tokens.
func newTopicSet(e *clientSet) *topicSet {
	p := e.plan
	ts := &topicSet{live: p.Scenario == ScenarioLive, keys: 1}
	mk := func(topic string, num int) *room {
		r := &room{topic: topic, num: num}
		r.sub = []byte(`{"type":"subscribe","topic":"` + topic + `"}`)
		r.query = sseTopicsQuery(topic)
		r.pubHead = []byte(`{"type":"publish","topic":"` + topic + `","data":`)
		return r
	}
	if ts.live {
		r := mk(p.Topic, 0)
		r.members = e.slots
		ts.rooms = []*room{r}
		claim := map[string]any{p.Auth.TopicsClaim: []string{p.Topic}}
		e.tokens.extra = func(int) map[string]any { return claim }
		return ts
	}
	ts.client = p.RoomPublish == RoomPublishClient
	if ts.client {
		ts.keys = p.RoomSize
	}
	first := p.SlotFrom / p.RoomSize
	for _, s := range e.slots {
		k := int(s.gidx)/p.RoomSize - first
		for len(ts.rooms) <= k {
			n := first + len(ts.rooms)
			ts.rooms = append(ts.rooms, mk(roomTopic(p.RoomPrefix, p.RunID, n), n))
		}
		s.room = int32(k)
		ts.rooms[k].members = append(ts.rooms[k].members, s)
	}
	claims := make([]map[string]any, len(ts.rooms))
	for i, r := range ts.rooms {
		claims[i] = map[string]any{p.Auth.TopicsClaim: []string{r.topic}}
		if ts.client {
			claims[i][p.Auth.PublishClaim] = []string{r.topic}
		}
	}
	dev := p.Devices
	e.tokens.extra = func(u int) map[string]any {
		// local user u's devices are local slots u·dev…, all in one room
		if i := u * dev; i < len(e.slots) {
			return claims[e.slots[i].room]
		}
		return nil
	}
	return ts
}

// stamp takes the publish time of a message to local room u and the
// number of its sessions subscribed then (the publisher's stamp).
func (ts *topicSet) stamp(u int) (int64, int32) {
	mu := &ts.mu[u%len(ts.mu)]
	mu.Lock()
	t := mono()
	r := ts.rooms[u]
	n := r.live
	r.pubs++
	mu.Unlock()
	return t, n
}

// opened starts a session of room u: the time, and the room's last
// message stamped before it.
func (ts *topicSet) opened(u int32) (int64, uint32) {
	mu := &ts.mu[int(u)%len(ts.mu)]
	mu.Lock()
	t := mono()
	r := ts.rooms[u]
	r.live++
	from := r.pubs
	mu.Unlock()
	return t, from
}

// closed ends a session of room u: the room's last message stamped.
func (ts *topicSet) closed(u int32) uint32 {
	mu := &ts.mu[int(u)%len(ts.mu)]
	mu.Lock()
	r := ts.rooms[u]
	r.live--
	to := r.pubs
	mu.Unlock()
	return to
}

// subscribe asks for the slot's topic on its new connection. An event
// stream asked for it with topics= in its request: its "subscribed" is
// awaited from the welcome on.
func (s *slot) subscribe() {
	r := s.l.e.tp.rooms[s.room]
	s.tpState = tpPending
	s.tpSent = mono()
	if s.l.e.sse {
		return
	}
	s.sendFrame(ws.OpText, r.sub)
}

// subscribed handles a "subscribed" frame.
func (s *slot) subscribed(p []byte) {
	l := s.l
	e := l.e
	ts := e.tp
	if ts == nil || s.tpState != tpPending || !frameTopicIs(p, ts.rooms[s.room].topic) {
		return // an answer to nothing asked: ignore
	}
	t, from := ts.opened(s.room)
	s.tpState = tpLive
	s.tpFrom = from
	recordMicros(l.hSub, t-s.tpSent)
	first := s.tp.firstW == 0
	s.tp.welcome(t, ts.keys)
	l.st.tlive.Add(1)
	if first && ts.subscribed.Add(1) == int64(len(e.slots)) {
		ts.subDone.CompareAndSwap(0, t)
	}
}

// unsubscribed handles an "unsubscribed" frame: the gateway ended the
// subscription (the load tester never unsubscribes).
func (s *slot) unsubscribed(p []byte) {
	ts := s.l.e.tp
	if ts == nil || !frameTopicIs(p, ts.rooms[s.room].topic) {
		return
	}
	switch s.tpState {
	case tpLive:
		s.l.terr("unsubscribed_by_gateway")
		s.topicEnd(true)
	case tpPending:
		s.l.terr("subscribe_refused_unsubscribed")
		s.tpState = tpNone
	}
}

// topicError handles an error frame naming the slot's topic: the answer
// to its subscribe while one is pending, else to a publish frame.
func (s *slot) topicError(code string) {
	l := s.l
	switch {
	case s.tpState == tpPending:
		l.terr("subscribe_refused_" + code)
		s.tpState = tpNone
	case s.probe == probeSent && !l.probeClosed:
		l.terr("probe_refused_" + code)
	default:
		l.terr("publish_refused_" + code)
	}
}

// topicEnd ends the slot's topic session; unexpected says the gateway or
// the network ended it. The deliveries it was owed and did not get are
// taken off the outstanding count.
func (s *slot) topicEnd(unexpected bool) {
	l := s.l
	e := l.e
	ts := e.tp
	switch s.tpState {
	case tpPending:
		s.tpState = tpNone
		return
	case tpNone:
		return
	}
	to := ts.closed(s.room)
	if !l.finishing {
		if ts.live {
			ts.writeOff(&s.tp)
		} else if e.pub != nil && to > s.tpFrom {
			var missed []uint32
			for seq := s.tpFrom + 1; seq <= to; seq++ {
				if !s.tp.has(seq) {
					missed = append(missed, seq)
				}
			}
			if len(missed) > 0 {
				e.pub.writeOff(int(s.room), missed)
			}
		}
	}
	s.tp.closed(unexpected)
	s.tpState = tpNone
	l.st.tlive.Add(-1)
}

// writeOff takes off the outstanding count (live) the acknowledged
// messages announced after the session's subscribe that it did not get.
func (ts *topicSet) writeOff(d *topicTrack) {
	ts.logMu.Lock()
	defer ts.logMu.Unlock()
	i := sort.Search(len(ts.log), func(i int) bool { return ts.log[i].t > d.w })
	var n int64
	for ; i < len(ts.log); i++ {
		if ts.log[i].state == pubAcked && !d.has(uint32(i+1)) {
			n++
		}
	}
	ts.elig.Add(-n)
}

// announceTopic records the parent's live publishes numbered from, from
// on: their times and outcomes.
func (e *clientSet) announceTopic(from uint32, ts []int64, oks []bool) {
	tp := e.tp
	if tp == nil || len(ts) == 0 || len(oks) != len(ts) {
		return
	}
	tp.logMu.Lock()
	for uint32(len(tp.log)) < from-1 {
		tp.log = append(tp.log, pubRec{state: pubFailed})
	}
	tp.log = tp.log[:from-1]
	var acked []int64
	var seqs []uint32
	for i, t := range ts {
		st := pubFailed
		if oks[i] {
			st = pubAcked
			acked = append(acked, t)
			seqs = append(seqs, from+uint32(i))
		}
		tp.log = append(tp.log, pubRec{t: t, state: st})
	}
	tp.logMu.Unlock()
	if len(acked) == 0 {
		return
	}
	// owed to the sessions subscribed before each publish and open now,
	// and counted for those that received it before they closed (their
	// receipt was counted)
	e.onLoops(func(l *loop) {
		var n int64
		for _, s := range l.slots {
			switch i := sort.Search(len(acked), func(i int) bool { return acked[i] > s.tp.w }); {
			case s.tpState == tpLive && s.tp.open:
				n += int64(len(acked) - i)
			case s.tp.firstW != 0:
				for ; i < len(acked); i++ {
					if s.tp.has(seqs[i]) {
						n++
					}
				}
			}
		}
		tp.elig.Add(n)
	})
}

// probe (rooms --room-publish client) has, in each room, its first
// members (one per gateway URL, at most the room's size) publish one test
// message to the room; each must come back to its sender.
func (e *clientSet) probe() {
	tp := e.tp
	if tp == nil || !tp.client {
		return
	}
	per := len(e.plan.Targets)
	e.onLoops(func(l *loop) {
		for _, r := range tp.rooms {
			for i, s := range r.members {
				if i >= per {
					break
				}
				if s.l != l || s.state != stLive || s.tpState != tpLive {
					continue
				}
				b := append(append([]byte(nil), r.pubHead...), e.prefix...)
				b = append(b, `,"probe":`...)
				b = strconv.AppendInt(b, int64(s.gidx), 10)
				b = append(b, "}}"...)
				s.probe = probeSent
				l.st.probeSent.Add(1)
				s.sendFrame(ws.OpText, b)
			}
		}
	})
}

// probeEnd stops counting the test messages' return.
func (e *clientSet) probeEnd() {
	e.onLoops(func(l *loop) { l.probeClosed = true })
}

// clientPublish sends a member's publish frame (--room-publish client) on
// its loop; done gets "" once it is written, else why not.
func (e *clientSet) clientPublish(u, member int, body []byte, done func(reason string)) {
	r := e.tp.rooms[u]
	s := r.members[member]
	s.l.p.Post(func() {
		switch {
		case s.state != stLive:
			done("sender_not_connected")
			return
		case s.l.finishing:
			done("run_over")
			return
		}
		l := s.l
		b := append(append(l.pbuf[:0], r.pubHead...), body...)
		b = append(b, '}')
		l.pbuf = b
		s.sendFrame(ws.OpText, b)
		if s.state == stDown {
			done("sender_write_failed")
			return
		}
		done("")
	})
}

// frameTopicIs reports whether the frame p's "topic" is topic.
func frameTopicIs(p []byte, topic string) bool {
	v, ok := frameTopic(p)
	return ok && string(v) == topic
}

var topicKey = []byte(`"topic":"`)

// frameTopic returns the value of a frame's "topic" (topic names need no
// escaping).
func frameTopic(p []byte) ([]byte, bool) {
	i := bytes.Index(p, topicKey)
	if i < 0 {
		return nil, false
	}
	q := p[i+len(topicKey):]
	j := bytes.IndexByte(q, '"')
	if j < 0 {
		return nil, false
	}
	return q[:j], true
}

// appendLiveBody appends a live message's data JSON, padded to size:
//
//	{"lt":"<run>","l":<seq>,"t":<mono ns>,"p":"xxx"}
func appendLiveBody(dst []byte, run string, seq uint32, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"lt":"`...)
	dst = append(dst, run...)
	dst = append(dst, `","l":`...)
	dst = strconv.AppendUint(dst, uint64(seq), 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	return pad(dst, start, size)
}

// appendRoomBody appends a room message's data JSON, padded to size:
//
//	{"lt":"<run>","r":<room>,"s":<seq>,"f":<member>,"t":<mono ns>,"p":"xxx"}
func appendRoomBody(dst []byte, run string, room int, seq uint32, from int, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"lt":"`...)
	dst = append(dst, run...)
	dst = append(dst, `","r":`...)
	dst = strconv.AppendInt(dst, int64(room), 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendUint(dst, uint64(seq), 10)
	dst = append(dst, `,"f":`...)
	dst = strconv.AppendInt(dst, int64(from), 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	return pad(dst, start, size)
}

// pad closes a data JSON begun at start, padded to size bytes.
func pad(dst []byte, start, size int) []byte {
	if n := size - (len(dst) - start) - len(`,"p":""}`); n > 0 {
		dst = append(dst, `,"p":"`...)
		for i := 0; i < n; i++ {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

var (
	liveKey  = []byte(`,"l":`)
	roomKey  = []byte(`,"r":`)
	probeKey = []byte(`,"probe":`)
)

// topicDelivery accounts for one topic message frame.
func (s *slot) topicDelivery(p []byte, now int64) {
	l := s.l
	e := l.e
	ts := e.tp
	topic, ok := frameTopic(p)
	i := bytes.Index(p, dataKey)
	if !ok || i < 0 || ts == nil {
		l.st.tforeign.Add(1)
		return
	}
	d := p[i+len(dataKey):]
	if !bytes.HasPrefix(d, e.prefix) {
		l.st.tforeign.Add(1)
		return
	}
	d = d[len(e.prefix):]
	r := ts.rooms[s.room]
	if bytes.HasPrefix(d, probeKey) {
		// a test message (--room-publish client): its sender's own only
		if g, ok := jsonUint(d, `,"probe":`); ok && g == uint64(s.gidx) && s.probe == probeSent && !l.probeClosed {
			s.probe = probeBack
			l.st.probeOK.Add(1)
		}
		return
	}
	if string(topic) != r.topic {
		l.st.tmisrouted.Add(1)
		return
	}
	t, okT := jsonUint(d, `"t":`)
	var seq uint64
	key := 0
	switch {
	case ts.live && bytes.HasPrefix(d, liveKey):
		seq, ok = jsonUint(d, `,"l":`)
	case !ts.live && bytes.HasPrefix(d, roomKey):
		var rn, f uint64
		var ok1, ok2 bool
		rn, ok1 = jsonUint(d, `,"r":`)
		seq, ok = jsonUint(d, `,"s":`)
		f, ok2 = jsonUint(d, `,"f":`)
		switch {
		case !ok1 || !ok2:
			ok = false
		case int(rn) != r.num || f >= uint64(e.plan.RoomSize):
			l.st.tmisrouted.Add(1)
			return
		case ts.client:
			key = int(f)
		}
	default:
		ok = false
	}
	if !ok || !okT || seq == 0 || seq > 1<<31 {
		l.st.tforeign.Add(1)
		return
	}
	if s.tpState != tpLive {
		l.terr("message_while_not_subscribed")
		return
	}
	l.st.lastRecv.Store(now)
	l.st.treceipts.Add(1)
	dup, ooo := s.tp.receive(uint32(seq), key)
	if dup {
		l.st.dups.Add(1)
		return
	}
	if ooo {
		l.st.ooo.Add(1)
	}
	if s.tp.owes(int64(t)) {
		ts.got.Add(1)
	}
	lat := now - int64(t)
	recordMicros(l.hTopic, lat)
	recordMicros(l.ivE2E, lat)
	if ts.live && seq <= maxLiveMsgs {
		for len(l.fan) < int(seq) {
			l.fan = append(l.fan, fanStat{})
		}
		f := &l.fan[seq-1]
		if f.n == 0 || now < f.first {
			f.first = now
		}
		f.last = max(f.last, now)
		f.n++
	}
}

// fanStat is one live message's receipts on a loop: the first and last
// (mono ns) and how many.
type fanStat struct {
	first, last int64
	n           int32
}

// fanWire is a process's live receipts per message (index seq-1).
type fanWire struct {
	First []int64 `json:"first"`
	Last  []int64 `json:"last"`
	N     []int32 `json:"n"`
}

// add merges a loop's or a process's receipts.
func (w *fanWire) add(first, last int64, n int32, i int) {
	for len(w.N) <= i {
		w.First, w.Last, w.N = append(w.First, 0), append(w.Last, 0), append(w.N, 0)
	}
	if n == 0 {
		return
	}
	if w.N[i] == 0 || first < w.First[i] {
		w.First[i] = first
	}
	w.Last[i] = max(w.Last[i], last)
	w.N[i] += n
}

func (w *fanWire) merge(o fanWire) {
	for i := range o.N {
		w.add(o.First[i], o.Last[i], o.N[i], i)
	}
}

// topicWire is a process's topic figures.
type topicWire struct {
	Counts     SeqCounts        `json:"counts"`
	Errors     map[string]int64 `json:"errors"`
	Foreign    int64            `json:"foreign"`
	Misrouted  int64            `json:"misrouted"`
	Subscribed int64            `json:"subscribed"` // slots subscribed at least once
	Rooms      int64            `json:"rooms"`
	RoomsBad   int64            `json:"rooms_bad"` // rooms with a delivery lost, duplicated, out of order or missed after a gateway close
	Fan        fanWire          `json:"fan"`
	ProbeSent  int64            `json:"probe_sent"`
	ProbeBack  int64            `json:"probe_back"`
	NotBack    map[string]int64 `json:"probe_not_back"` // by gateway URL
}

// topicLogs are the final logs of the process's streams: live, the
// parent's as announced; rooms, each room's.
func (e *clientSet) topicLogs() []*topicLog {
	tp := e.tp
	if tp.live {
		tp.logMu.Lock()
		lg := newTopicLog(append([]pubRec(nil), tp.log...))
		tp.logMu.Unlock()
		return []*topicLog{lg}
	}
	out := make([]*topicLog, len(tp.rooms))
	for i := range tp.rooms {
		var recs []pubRec
		if e.pub != nil {
			recs = e.pub.users[i].log
		}
		out[i] = newTopicLog(recs)
	}
	return out
}

// accountTopics classifies a loop's topic deliveries at the cut; bad
// collects the rooms with a delivery problem.
func (l *loop) accountTopics(logs []*topicLog, bad map[int32]bool) SeqCounts {
	var c SeqCounts
	for _, s := range l.slots {
		lg := logs[0]
		if !l.e.tp.live {
			lg = logs[s.room]
		}
		sc := s.tp.account(lg, s.tpState == tpLive)
		if sc.Lost+sc.Duplicated+sc.OutOfOrder+sc.MissedClosed > 0 {
			bad[s.room] = true
		}
		c.add(sc)
	}
	return c
}

// finishTopics fills a process's topic figures (its loops are done).
func (e *clientSet) finishTopics(w *topicWire, counts SeqCounts, bad map[int32]bool) {
	tp := e.tp
	w.Counts = counts
	w.Errors = map[string]int64{}
	w.NotBack = map[string]int64{}
	w.Subscribed = tp.subscribed.Load()
	w.Rooms = int64(len(tp.rooms))
	w.RoomsBad = int64(len(bad))
	for _, l := range e.loops {
		for k, v := range l.terrs {
			w.Errors[k] += v
		}
		w.Foreign += l.st.tforeign.Load()
		w.Misrouted += l.st.tmisrouted.Load()
		w.ProbeSent += l.st.probeSent.Load()
		w.ProbeBack += l.st.probeOK.Load()
		for i, f := range l.fan {
			w.Fan.add(f.first, f.last, f.n, i)
		}
	}
	for _, s := range e.slots {
		if s.probe == probeSent {
			w.NotBack[e.plan.Targets[s.tgt].URL]++
		}
	}
}

// validateTopics checks the topic scenarios' flags.
func (c *Config) validateTopics() error {
	if c.Resume {
		return fmt.Errorf("--resume: %s accounts for topic messages live, by the ids it gives them, and does not resume topics with since yet; run %s without --resume (against a fleet with --resume too: its subscribers then miss what is published while they are away)", c.Scenario, c.Scenario)
	}
	for _, f := range []struct{ flag, v string }{{"--jwt-topics-claim", c.Auth.TopicsClaim}, {"--jwt-publish-claim", c.Auth.PublishClaim}} {
		switch f.v {
		case "sub", "iss", "aud", "exp", "nbf", "iat", "jti":
			return fmt.Errorf("%s %q is a registered claim", f.flag, f.v)
		}
	}
	if c.Auth.TopicsClaim == c.Auth.PublishClaim {
		return fmt.Errorf("--jwt-publish-claim %q is --jwt-topics-claim too: they must differ (as the gateways' do)", c.Auth.PublishClaim)
	}
	msgs := c.MsgRate * c.Duration.Seconds()
	switch c.Scenario {
	case ScenarioLive:
		if err := protocol.ValidateTopic(c.Topic); err != nil {
			return fmt.Errorf("--topic %q: %v", c.Topic, err)
		}
		if msgs > maxLiveMsgs {
			return fmt.Errorf("--msg-rate %g × --duration %s is %s messages: a live run keeps a record of each in every process, at most %s (lower --msg-rate or --duration)",
				c.MsgRate, c.Duration, numfmt.Thousands(int64(msgs)), numfmt.Thousands(maxLiveMsgs))
		}
	case ScenarioRooms:
		switch {
		case c.RoomSize < 2 || c.RoomSize > maxRoomSize:
			return fmt.Errorf("--room-size %d: a room has 2 to %s members", c.RoomSize, numfmt.Thousands(maxRoomSize))
		case c.RoomSize > c.Conns:
			return fmt.Errorf("--room-size %d is more than --conns %d: not one room could be filled", c.RoomSize, c.Conns)
		case c.RoomSize%c.Devices != 0:
			return fmt.Errorf("--room-size %d must be a multiple of --devices-per-user %d: a user's devices are in one room", c.RoomSize, c.Devices)
		}
		switch c.RoomPublish {
		case RoomPublishClient, RoomPublishRouter, RoomPublishNATS:
		default:
			return fmt.Errorf("--room-publish %q: client, router or nats", c.RoomPublish)
		}
		if last := roomTopic(c.RoomPrefix, "00000000", c.rooms()-1); protocol.ValidateTopic(last) != nil {
			return fmt.Errorf("--room-prefix %q: the rooms' topics (%s…) would not be topics: %v", c.RoomPrefix, last, protocol.ValidateTopic(last))
		}
		if msgs > maxRoomMsgs {
			return fmt.Errorf("--msg-rate %g × --duration %s is %s messages: a rooms run keeps a record of each, at most %s (lower --msg-rate or --duration)",
				c.MsgRate, c.Duration, numfmt.Thousands(int64(msgs)), numfmt.Thousands(maxRoomMsgs))
		}
	}
	return nil
}

package gateway

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// dispatcher delivers NATS messages to local devices. Per-user
// subscriptions are channel subscriptions (nats.go ChanSubscribe), not
// callback subscriptions, so no goroutine exists per user: every user's
// subject feeds one of a fixed set of channels, each drained by one
// goroutine. A user always maps to the same channel, which keeps its
// messages in publish order.
//
// Every queue between NATS and a socket is bounded: the channels
// (DispatchQueue; when one is full NATS drops and reports a slow
// consumer), each loop's broadcast queue (LoopQueueBytes; a full one drops
// the broadcast for that loop, counted), and each connection's write queue
// (MaxPendingBytes; a full one closes that client as a slow consumer).
type dispatcher struct {
	s     *Server
	chans []chan *nats.Msg
	bcast chan *nats.Msg
	stats []dispStats // per channel, then one for broadcasts
	wg    sync.WaitGroup
}

// dispStats are one dispatcher goroutine's counters, summed when the
// metrics are scraped.
type dispStats struct {
	natsIn, msgsOut, undeliverable atomic.Uint64
	_                              [40]byte // one cache line each
}

func newDispatcher(s *Server) *dispatcher {
	d := &dispatcher{
		s:     s,
		chans: make([]chan *nats.Msg, s.opts.Dispatchers),
		bcast: make(chan *nats.Msg, s.opts.DispatchQueue),
		stats: make([]dispStats, s.opts.Dispatchers+1),
	}
	for i := range d.chans {
		d.chans[i] = make(chan *nats.Msg, s.opts.DispatchQueue)
	}
	return d
}

func (d *dispatcher) start() {
	for i, ch := range d.chans {
		d.wg.Add(1)
		go d.run(ch, &d.stats[i])
	}
	d.wg.Add(1)
	go d.runBroadcast(&d.stats[len(d.chans)])
}

// stop ends the goroutines once NATS no longer feeds the channels.
func (d *dispatcher) stop() {
	for _, ch := range d.chans {
		close(ch)
	}
	close(d.bcast)
	d.wg.Wait()
}

// sum adds up one counter over every dispatcher.
func (d *dispatcher) sum(f func(*dispStats) *atomic.Uint64) uint64 {
	var n uint64
	for i := range d.stats {
		n += f(&d.stats[i]).Load()
	}
	return n
}

func (d *dispatcher) run(ch chan *nats.Msg, st *dispStats) {
	defer d.wg.Done()
	for m := range ch {
		if d.s.topics.isTopicSubject(m.Subject) {
			d.s.deliverTopic(m, st)
			continue
		}
		d.s.deliver(m, st)
	}
}

// runBroadcast encodes each broadcast once and offers it to every loop.
// A loop whose queue is full is skipped and the drop counted: the loops
// never queue more than LoopQueueBytes, and never more work per wake-up
// than leaves room for their sockets and timers.
func (d *dispatcher) runBroadcast(st *dispStats) {
	defer d.wg.Done()
	for m := range d.bcast {
		st.natsIn.Add(1)
		sh := encodeDelivery(m)
		for _, l := range d.s.loops {
			sh.Retain()
			if !l.p.TryPost(task{kind: taskBroadcast, sh: sh}, int64(len(sh.B))) {
				sh.Release()
				l.stats.bcastDropped.Add(1)
			}
		}
		sh.Release()
	}
}

// deliver writes one user message to each of the user's devices on this
// node. The frame is encoded once and shared by every device's queue.
func (s *Server) deliver(m *nats.Msg, st *dispStats) {
	st.natsIn.Add(1)
	tok, ok := s.subjects.UserTokenOf(m.Subject)
	if !ok {
		return
	}
	var buf [8]*conn
	u, conns := s.reg.devices(tok, buf[:0])
	if m.Header != nil && m.Header.Get(protocol.HeaderControl) != "" {
		s.control(u, conns, m)
		return
	}
	if len(conns) == 0 {
		st.undeliverable.Add(1)
		return
	}
	sh := encodeDelivery(m)
	n := 0
	for _, c := range conns {
		c.Mu.Lock()
		if c.welcomedLocked() && c.writeSharedLocked(sh) {
			n++
		}
		c.Mu.Unlock()
	}
	sh.Release()
	st.msgsOut.Add(uint64(n))
}

// control handles a control message on a user's subject (never delivered).
func (s *Server) control(u *user, conns []*conn, m *nats.Msg) {
	switch m.Header.Get(protocol.HeaderControl) {
	case protocol.ControlKick:
		s.kickUser(conns, m)
	case protocol.ControlSubscribe:
		s.topicControl(conns, m, true)
	case protocol.ControlUnsubscribe:
		s.topicControl(conns, m, false)
	}
}

// encodeDelivery builds the text frame of a delivery: the WebSocket header,
// then protocol.AppendMessage's JSON around the payload, copied once into a
// pooled buffer. The header is written last, into the room left before the
// body, because its size depends on the body's.
func encodeDelivery(m *nats.Msg) *bufpool.Shared {
	var id string
	if m.Header != nil {
		id = m.Header.Get(protocol.HeaderMsgID)
	}
	const room = 10 // the largest unmasked header
	sh := bufpool.GetShared(room + len(m.Data) + 128)
	b := protocol.AppendMessage(sh.B[:room], id, m.Data)
	body := len(b) - room
	hs := wsframe.Size(body, false)
	wsframe.Put(b[room-hs:], ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(body)})
	sh.B = b[room-hs:]
	return sh
}

// subManager applies subscription changes on one goroutine and sends welcome
// frames once the user's subscription is confirmed live: after subscribing,
// it makes a NATS round trip (a flush: the server answers the PING after it
// has processed every SUB sent before it), so a message published after a
// client got its welcome reaches it.
//
// Confirmations are pipelined and bulk: one round trip is in flight at a
// time, on a goroutine of its own, covering every client queued before it
// was sent; the clients queued meanwhile are covered by the next one. Under
// load a round trip confirms thousands of subscriptions, and the manager
// goes on applying changes while it waits. A round trip has no timeout of
// its own shorter than the clients' auth timeout: a NATS server that is
// slow (starved of CPU, say) confirms late, never falsely. The welcome is
// honest: while NATS is disconnected, or when a round trip fails, clients
// wait (tried again every confirmRetry, and at once on reconnect) until
// they are confirmed or their auth timeout closes them with 1013; no
// client is welcomed on a subscription the server has not confirmed. The
// oldest wait feeds the node's load shedding (admission.go, "nats_lag").
type subManager struct {
	s       *Server
	drops   dropCounter
	mu      sync.Mutex
	ops     []subOp
	spare   []subOp
	waiting []waiter // subManager goroutine only: queued for the next round trip
	flight  []waiter // covered by the round trip in flight
	flying  bool
	flushed chan flushResult // the round trip's outcome
	wake    chan struct{}
	done    chan struct{}
}

type subOpKind uint8

const (
	opSubscribe subOpKind = iota
	opUnsubscribe
	opWelcome
	opTopicSubscribe
	opTopicUnsubscribe
	opTopicConfirm
	opReply // answer a control message (cw)
)

type subOp struct {
	u    *user
	c    *conn
	t    *topic
	l    *loop    // opTopicConfirm: the loop to tell
	gen  uint32   // opTopicConfirm: the loop topic's confirmation
	cw   *ctlWait // opReply
	kind subOpKind
}

// waiter is a connection whose welcome waits for a confirmed subscription
// (its loop closes it at its auth deadline; past that it is dropped here),
// or, with t set, loop l's subscribers of topic t (past the deadline the
// loop is told the subscribe failed).
type waiter struct {
	c        *conn
	t        *topic
	l        *loop
	gen      uint32
	queued   int64 // mono() when it started waiting
	deadline time.Time
}

type flushResult struct {
	err   error
	epoch uint32 // Server.natsEpoch when the round trip was sent
	// resume: the stream's first and last sequence, read from its leader
	// after the round trip
	first, last uint64
}

// confirmRetry is how often unconfirmed welcomes are tried again.
const confirmRetry = 250 * time.Millisecond

func newSubManager(s *Server) *subManager {
	return &subManager{s: s, wake: make(chan struct{}, 1), done: make(chan struct{}), flushed: make(chan flushResult, 1)}
}

func (m *subManager) post(op subOp) {
	m.mu.Lock()
	m.ops = append(m.ops, op)
	m.mu.Unlock()
	m.kick()
}

// kick wakes the manager (a change was posted, or NATS reconnected).
func (m *subManager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *subManager) subscribe(u *user)   { m.post(subOp{u: u, kind: opSubscribe}) }
func (m *subManager) unsubscribe(u *user) { m.post(subOp{u: u, kind: opUnsubscribe}) }
func (m *subManager) welcome(c *conn)     { m.post(subOp{c: c, kind: opWelcome}) }

func (m *subManager) subscribeTopic(t *topic)   { m.post(subOp{t: t, kind: opTopicSubscribe}) }
func (m *subManager) unsubscribeTopic(t *topic) { m.post(subOp{t: t, kind: opTopicUnsubscribe}) }

// confirmTopic tells loop l (taskSubscribed) once a round trip confirmed
// t's subscription, or that it failed.
func (m *subManager) confirmTopic(l *loop, t *topic, gen uint32) {
	m.post(subOp{l: l, t: t, gen: gen, kind: opTopicConfirm})
}

// run works until stop is closed, then applies what is left, waits for the
// round trip in flight and returns.
func (m *subManager) run(stop <-chan struct{}) {
	defer close(m.done)
	retry := time.NewTimer(confirmRetry)
	defer retry.Stop()
	for {
		select {
		case <-m.wake:
		case <-retry.C:
		case r := <-m.flushed:
			m.landed(r)
		case <-stop:
			m.batch()
			m.confirm()
			if m.flying {
				m.landed(<-m.flushed)
			}
			return
		}
		m.batch()
		m.confirm()
		if len(m.waiting) > 0 && !m.flying {
			retry.Reset(confirmRetry)
		}
	}
}

// batch applies the posted changes and queues the posted welcomes.
func (m *subManager) batch() {
	m.mu.Lock()
	ops := m.ops
	m.ops = m.spare[:0]
	m.mu.Unlock()
	nc := m.s.nc
	authTimeout := m.s.opts.AuthTimeout
	now := time.Now()
	queued := mono()
	for _, op := range ops {
		u := op.u
		switch op.kind {
		case opSubscribe:
			subject, ch := m.s.subjects.User(u.token()), m.s.disp.chans[u.disp]
			if rs := m.s.rs; rs != nil {
				subject, ch = rs.liveUser(u.token()), rs.ch
			}
			var err error
			u.confirmed.Store(0)
			// While NATS is disconnected nats.go records the subscription
			// and sends it on reconnect; the welcome waits for that.
			u.sub, err = nc.ChanSubscribe(subject, ch)
			if u.subFailed = err != nil; u.subFailed {
				m.s.log.Error("subscribe failed", zap.String("subject", subject), zap.Error(err))
				m.s.m.subscribeErrors.Inc()
			}
		case opUnsubscribe:
			if u.sub != nil {
				m.drops.forget(u.sub)
				if err := u.sub.Unsubscribe(); err != nil && err != nats.ErrConnectionClosed {
					m.s.log.Warn("unsubscribe failed", zap.String("subject", u.sub.Subject), zap.Error(err))
				}
				u.sub = nil
			}
		case opWelcome:
			if op.c.user.subFailed {
				m.sendWelcome(op.c, false)
				continue
			}
			m.waiting = append(m.waiting, waiter{c: op.c, queued: queued, deadline: now.Add(authTimeout)})
		case opTopicSubscribe:
			t := op.t
			subject := m.s.topics.subject(t.name)
			var err error
			t.sub, err = nc.ChanSubscribe(subject, m.s.disp.chans[t.disp])
			if t.subFailed = err != nil; t.subFailed {
				m.s.log.Error("subscribe failed", zap.String("subject", subject), zap.Error(err))
				m.s.m.subscribeErrors.Inc()
			}
		case opTopicUnsubscribe:
			t := op.t
			if t.sub != nil {
				m.drops.forget(t.sub)
				if err := t.sub.Unsubscribe(); err != nil && err != nats.ErrConnectionClosed {
					m.s.log.Warn("unsubscribe failed", zap.String("subject", t.sub.Subject), zap.Error(err))
				}
				t.sub = nil
			}
		case opTopicConfirm:
			if op.t.subFailed {
				op.l.p.Post(task{kind: taskSubscribed, t: op.t, seq: uint64(op.gen)})
				continue
			}
			m.waiting = append(m.waiting, waiter{l: op.l, t: op.t, gen: op.gen, queued: queued, deadline: now.Add(authTimeout)})
		case opReply:
			op.cw.reply()
		}
	}
	clear(ops)
	m.spare = ops
	m.publishOldest()
}

// confirm sends a round trip for the queued clients when none is in flight
// and NATS is up. Clients past their auth deadline are forgotten first
// (their loop closed them with 1013).
func (m *subManager) confirm() {
	if m.flying || len(m.waiting) == 0 {
		return
	}
	m.waiting = expire(m.waiting, time.Now())
	m.publishOldest()
	if len(m.waiting) == 0 || !m.s.natsConnected() {
		return
	}
	m.flight, m.waiting = m.waiting, m.flight[:0]
	m.flying = true
	// The round trip covers every SUB written so far; it may take as long
	// as the clients may wait, never less than a second.
	timeout := max(time.Until(m.flight[len(m.flight)-1].deadline), time.Second)
	epoch := m.s.natsEpoch.Load()
	nc := m.s.nc
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := nc.FlushWithContext(ctx)
		var first, last uint64
		if err == nil && m.s.rs != nil {
			// The stream's position, read by its leader after the SUBs
			// reached it: every message stored later is republished to
			// this node, so it is each welcomed client's position.
			first, last, err = m.s.rs.streamState(ctx)
		}
		cancel()
		m.flushed <- flushResult{err: err, epoch: epoch, first: first, last: last}
	}()
}

// landed takes a round trip's outcome: on success every client it covered
// is welcomed, else they go back to the front of the queue.
func (m *subManager) landed(r flushResult) {
	m.flying = false
	if r.err != nil || m.s.natsEpoch.Load() != r.epoch {
		m.s.m.confirmFailures.Inc()
		if r.err != nil && m.s.natsConnected() {
			m.s.log.Warn("NATS did not confirm new subscriptions; the clients wait for the next round trip", zap.Int("clients", len(m.flight)), zap.Error(r.err))
		}
		m.waiting = append(m.flight, m.waiting...)
		m.flight = nil
		m.publishOldest()
		return
	}
	for _, w := range m.flight {
		if w.t != nil {
			w.t.confirmed.Store(r.epoch + 1)
			w.l.p.Post(task{kind: taskSubscribed, t: w.t, seq: uint64(w.gen), last: r.last, ok: true})
			continue
		}
		w.c.user.confirmed.Store(r.epoch + 1)
		w.c.l.p.Post(task{kind: taskWelcome, c: w.c, ok: true, seq: r.last, last: r.first})
	}
	clear(m.flight)
	m.flight = m.flight[:0]
	m.publishOldest()
}

// publishOldest tells admission when the oldest unconfirmed client started
// waiting.
func (m *subManager) publishOldest() {
	var oldest int64
	switch {
	case len(m.flight) > 0:
		oldest = m.flight[0].queued + 1
	case len(m.waiting) > 0:
		oldest = m.waiting[0].queued + 1
	}
	m.s.adm.natsSince.Store(oldest)
}

// expire drops the waiters past their deadline, keeping the order; a
// topic waiter's loop is told its subscribe failed.
func expire(ws []waiter, now time.Time) []waiter {
	kept := ws[:0]
	for _, w := range ws {
		switch {
		case now.Before(w.deadline):
			kept = append(kept, w)
		case w.t != nil:
			w.l.p.Post(task{kind: taskSubscribed, t: w.t, seq: uint64(w.gen)})
		}
	}
	clear(ws[len(kept):])
	return kept
}

// dropCounter counts the NATS messages dropped because a dispatch queue
// was full. nats.go counts them per subscription (Subscription.Dropped) but
// reports a slow consumer once per episode, so the count is read from the
// subscriptions that ever reported one when the metric is scraped: a
// handful, not every user's. The total never goes down: a subscription's
// last count is kept when it is unsubscribed or NATS closes it.
type dropCounter struct {
	mu   sync.Mutex
	seen map[*nats.Subscription]int // subscriptions that dropped → their last count
	gone int64                      // the counts of those unsubscribed
}

// slow records that sub reported a slow consumer.
func (d *dropCounter) slow(sub *nats.Subscription) {
	if sub == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[*nats.Subscription]int{}
	}
	if _, ok := d.seen[sub]; !ok {
		d.seen[sub] = 0
	}
}

// forget moves sub's count to the total of the unsubscribed; call it
// before Unsubscribe, after which nats.go no longer reports it.
func (d *dropCounter) forget(sub *nats.Subscription) {
	d.mu.Lock()
	defer d.mu.Unlock()
	last, ok := d.seen[sub]
	if !ok {
		return
	}
	if n, err := sub.Dropped(); err == nil {
		last = max(last, n)
	}
	d.gone += int64(last)
	delete(d.seen, sub)
}

// total is every message dropped so far.
func (d *dropCounter) total() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.gone
	for sub, last := range d.seen {
		if k, err := sub.Dropped(); err == nil && k > last {
			d.seen[sub], last = k, k
		}
		n += int64(last)
	}
	return float64(n)
}

// sendWelcome hands c back to its loop, which writes the welcome (ok) or
// closes it with 1013.
func (m *subManager) sendWelcome(c *conn, ok bool) {
	c.l.p.Post(task{kind: taskWelcome, c: c, ok: ok})
}

// publisher forwards client publish frames to NATS on one goroutine, so a
// loop never waits on the NATS connection and each client's publishes keep
// their order. Its queue is bounded; a full queue answers "overloaded".
type publisher struct {
	s   *Server
	ch  chan pubJob
	wg  sync.WaitGroup
	seq uint64 // publisher goroutine: numbers the ids of direct topic publishes
}

type pubJob struct {
	c     *conn
	data  json.RawMessage
	topic string // "": the user's in-subject
}

func newPublisher(s *Server) *publisher {
	return &publisher{s: s, ch: make(chan pubJob, s.opts.PublishQueue)}
}

func (p *publisher) start() {
	p.wg.Add(1)
	go p.run()
}

func (p *publisher) stop() {
	close(p.ch)
	p.wg.Wait()
}

// enqueue queues data (a copy the decoder made) from c, for topic ("":
// the user's in-subject).
func (p *publisher) enqueue(c *conn, data json.RawMessage, topic string) {
	select {
	case p.ch <- pubJob{c: c, data: data, topic: topic}:
	default:
		p.s.m.publishErrors.WithLabelValues("overloaded").Inc()
		if topic != "" {
			c.writeTopicError(protocol.ErrCodeOverloaded, topic, "publish queue full, message not published")
			return
		}
		c.writeError(protocol.ErrCodeOverloaded, "publish queue full, message not published")
	}
}

func (p *publisher) run() {
	defer p.wg.Done()
	s := p.s
	for j := range p.ch {
		c := j.c
		var err error
		if !s.natsConnected() {
			err = nats.ErrConnectionReconnecting
		} else {
			connID := string(s.appendConnID(nil, c.id))
			m := &nats.Msg{
				Subject: s.subjects.In(c.user.token()),
				Data:    j.data,
				Header: nats.Header{
					protocol.HeaderUser:   {c.user.id},
					protocol.HeaderConnID: {connID},
					protocol.HeaderNode:   {s.opts.NodeID},
				},
			}
			switch {
			case j.topic == "":
			case s.opts.ClientTopicPublish == "direct":
				// Straight to the subscribers, with an id of its own.
				m.Subject = s.subjects.Topic(j.topic)
				p.seq++
				m.Header[protocol.HeaderMsgID] = []string{"c" + connID + "." + strconv.FormatUint(p.seq, 36)}
			default:
				m.Subject = s.subjects.InTopic(j.topic)
			}
			err = s.nc.PublishMsg(m)
		}
		if err != nil {
			s.m.publishErrors.WithLabelValues("nats").Inc()
			if j.topic != "" {
				c.writeTopicError(protocol.ErrCodePublishFailed, j.topic, "message not published: NATS unavailable")
				continue
			}
			c.writeError(protocol.ErrCodePublishFailed, "message not published: NATS unavailable")
			continue
		}
		s.m.published.Inc()
	}
}

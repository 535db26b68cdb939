package gateway

import (
	"encoding/json"
	"sync"
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
type dispatcher struct {
	s     *Server
	chans []chan *nats.Msg
	bcast chan *nats.Msg
	wg    sync.WaitGroup
}

func newDispatcher(s *Server) *dispatcher {
	d := &dispatcher{s: s, chans: make([]chan *nats.Msg, s.opts.Dispatchers), bcast: make(chan *nats.Msg, s.opts.DispatchQueue)}
	for i := range d.chans {
		d.chans[i] = make(chan *nats.Msg, s.opts.DispatchQueue)
	}
	return d
}

func (d *dispatcher) start() {
	for _, ch := range d.chans {
		d.wg.Add(1)
		go d.run(ch)
	}
	d.wg.Add(1)
	go d.runBroadcast()
}

// stop ends the goroutines once NATS no longer feeds the channels.
func (d *dispatcher) stop() {
	for _, ch := range d.chans {
		close(ch)
	}
	close(d.bcast)
	d.wg.Wait()
}

func (d *dispatcher) run(ch chan *nats.Msg) {
	defer d.wg.Done()
	for m := range ch {
		d.s.deliver(m)
	}
}

func (d *dispatcher) runBroadcast() {
	defer d.wg.Done()
	for m := range d.bcast {
		d.s.m.natsIn.Inc()
		sh := encodeDelivery(m)
		for _, l := range d.s.loops {
			sh.Retain()
			l.p.Post(task{kind: taskBroadcast, sh: sh})
		}
		sh.Release()
	}
}

// deliver writes one user message to each of the user's devices on this
// node. The frame is encoded once and shared by every device's queue.
func (s *Server) deliver(m *nats.Msg) {
	s.m.natsIn.Inc()
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
		s.m.undeliverable.Inc()
		return
	}
	sh := encodeDelivery(m)
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if c.welcomed && c.writeSharedLocked(sh) {
			n++
		}
		c.mu.Unlock()
	}
	sh.Release()
	s.m.msgsOut.Add(float64(n))
}

// control handles a control message on a user's subject (never delivered).
func (s *Server) control(u *user, conns []*conn, m *nats.Msg) {
	switch m.Header.Get(protocol.HeaderControl) {
	case protocol.ControlKick:
		s.kickUser(conns, m)
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
// frames once the user's subscription is live: after subscribing, it flushes
// the NATS connection (one round trip per batch of connects, not per
// connect), so a message published after a client got its welcome reaches it.
type subManager struct {
	s     *Server
	drops dropCounter
	mu    sync.Mutex
	ops   []subOp
	spare []subOp
	wake  chan struct{}
	done  chan struct{}
}

type subOpKind uint8

const (
	opSubscribe subOpKind = iota
	opUnsubscribe
	opWelcome
)

type subOp struct {
	u    *user
	c    *conn
	kind subOpKind
}

func newSubManager(s *Server) *subManager {
	return &subManager{s: s, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (m *subManager) post(op subOp) {
	m.mu.Lock()
	m.ops = append(m.ops, op)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *subManager) subscribe(u *user)   { m.post(subOp{u: u, kind: opSubscribe}) }
func (m *subManager) unsubscribe(u *user) { m.post(subOp{u: u, kind: opUnsubscribe}) }
func (m *subManager) welcome(c *conn)     { m.post(subOp{c: c, kind: opWelcome}) }

// run works until stop is closed, then applies what is left and returns.
func (m *subManager) run(stop <-chan struct{}) {
	defer close(m.done)
	for {
		select {
		case <-m.wake:
		case <-stop:
			m.batch()
			return
		}
		m.batch()
	}
}

func (m *subManager) batch() {
	m.mu.Lock()
	ops := m.ops
	m.ops = m.spare[:0]
	m.mu.Unlock()
	nc := m.s.nc
	subscribed := false
	for _, op := range ops {
		u := op.u
		switch op.kind {
		case opSubscribe:
			subject := m.s.subjects.User(u.token())
			var err error
			u.sub, err = nc.ChanSubscribe(subject, m.s.disp.chans[u.disp])
			if u.subFailed = err != nil; u.subFailed {
				m.s.log.Error("subscribe failed", zap.String("subject", subject), zap.Error(err))
				m.s.m.subscribeErrors.Inc()
			}
			subscribed = true
		case opUnsubscribe:
			if u.sub != nil {
				m.drops.forget(u.sub)
				if err := u.sub.Unsubscribe(); err != nil && err != nats.ErrConnectionClosed {
					m.s.log.Warn("unsubscribe failed", zap.String("subject", u.sub.Subject), zap.Error(err))
				}
				u.sub = nil
			}
		}
	}
	if subscribed && nc.IsConnected() {
		if err := nc.FlushTimeout(2 * time.Second); err != nil {
			m.s.log.Warn("NATS flush after subscribing failed", zap.Error(err))
		}
	}
	for _, op := range ops {
		if op.kind == opWelcome {
			m.sendWelcome(op.c)
		}
	}
	clear(ops)
	m.spare = ops
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

// sendWelcome hands c back to its loop, which writes the welcome.
func (m *subManager) sendWelcome(c *conn) {
	c.l.p.Post(task{kind: taskWelcome, c: c, ok: !c.user.subFailed})
}

// publisher forwards client publish frames to NATS on one goroutine, so a
// loop never waits on the NATS connection and each client's publishes keep
// their order. Its queue is bounded; a full queue answers "overloaded".
type publisher struct {
	s  *Server
	ch chan pubJob
	wg sync.WaitGroup
}

type pubJob struct {
	c    *conn
	data json.RawMessage
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

// enqueue queues data (a copy the decoder made) from c.
func (p *publisher) enqueue(c *conn, data json.RawMessage) {
	select {
	case p.ch <- pubJob{c: c, data: data}:
	default:
		p.s.m.publishErrors.WithLabelValues("overloaded").Inc()
		c.writeError(protocol.ErrCodeOverloaded, "publish queue full, message not published")
	}
}

func (p *publisher) run() {
	defer p.wg.Done()
	s := p.s
	for j := range p.ch {
		c := j.c
		var err error
		if !s.nc.IsConnected() {
			err = nats.ErrConnectionReconnecting
		} else {
			connID := string(s.appendConnID(nil, c.id))
			err = s.nc.PublishMsg(&nats.Msg{
				Subject: s.subjects.In(c.user.token()),
				Data:    j.data,
				Header: nats.Header{
					protocol.HeaderUser:   {c.user.id},
					protocol.HeaderConnID: {connID},
					protocol.HeaderNode:   {s.opts.NodeID},
				},
			})
		}
		if err != nil {
			s.m.publishErrors.WithLabelValues("nats").Inc()
			c.writeError(protocol.ErrCodePublishFailed, "message not published: NATS unavailable")
			continue
		}
		s.m.published.Inc()
	}
}

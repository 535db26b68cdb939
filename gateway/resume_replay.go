package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/protocol"
)

// replayJob is one connection's catch-up: every user message after uFrom
// and every broadcast after bFrom, up to the stream position upTo, written
// in stream order. A job is owned by one goroutine at a time: its loop
// (which creates it and takes it back when a round is done), the
// replayer's queue, or a worker.
type replayJob struct {
	c      *conn
	tok    string // the user's subject token
	uFrom  uint64
	bFrom  uint64
	since  uint64 // the client's "since" (initial replays): the welcome's position when recovered
	upTo   uint64 // 0: read the stream's position first
	queued int64  // mono() when it was (re)submitted: the position must be read after it
	// initial: the replay of a "since" before the welcome, which only
	// checks that history holds everything after it (recovered) and
	// writes nothing; its loop then welcomes the client and submits the
	// job again to write.
	initial   bool
	recovered bool
	notBefore int64 // mono(): paced (the connection's queue was half full) or retrying
	tries     int
	written   int
	// checked: each subject's newest message was looked up (lastOn) for
	// this upTo: uLast and bLast, read from the stream's leader; a subject
	// with nothing after its start is skipped.
	checked      bool
	uLast, bLast uint64
	// Topics (topic_resume.go): t is the topic. A connection's replay of it
	// (c set) covers c from tFrom; a loop topic's catch-up (c nil: lid on
	// loop l) fetches batch, the topic's messages after tFrom up to cover,
	// for the loop to write to the topic's members.
	t            *topic
	l            *loop
	lid          int32
	tFrom, tLast uint64
	first        uint64 // the stream's first sequence, read with upTo
	cover        uint64
	batch        []topicFrame
	bi           int  // the batch's next message to write
	fell         bool // history no longer holds everything after tFrom
	// abandoned: the loop topic of a catch-up left its loop (set by the
	// loop): the job ends rather than retry.
	abandoned atomic.Bool
}

// replayer runs the replays: a bounded queue of jobs (one per connection
// at most, so bounded by the connections) and MaxConcurrentReplays
// workers. A worker fetches a batch of each subject with one direct get
// each (answered by any current replica), writes what both batches cover,
// and goes on; a connection whose write queue is half full is set aside
// for a moment, so a replay counts against MaxPendingBytes without ever
// closing a client for reading slowly.
type replayer struct {
	r       *resumer
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*replayJob
	parked  []*replayJob
	stopped bool
	stopCh  chan struct{}
	parkCh  chan struct{}   // a job was parked (cap 1): unpark re-arms its timer
	ctx     context.Context // canceled by stop: ends the fetches in flight
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	started, completed, msgs, failures atomic.Uint64
	behind                             atomic.Uint64 // rounds made again: a replica was behind
	fellBehind                         atomic.Uint64 // open connections closed: history no longer held what they missed
	running                            atomic.Int64
	queuedN                            atomic.Int64
	lastFailLog                        atomic.Int64
}

const (
	replayBatch = 256
	// replayPace is how long a replay whose connection's queue is half
	// full waits before it writes more.
	replayPace = 20 * time.Millisecond
)

func newReplayer(r *resumer) *replayer {
	p := &replayer{r: r, stopCh: make(chan struct{}), parkCh: make(chan struct{}, 1)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *replayer) start() {
	for i := 0; i < p.r.s.opts.MaxConcurrentReplays; i++ {
		p.wg.Add(1)
		go p.worker()
	}
	p.wg.Add(1)
	go p.unpark()
}

func (p *replayer) stop() {
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
	close(p.stopCh)
	p.cancel()
	p.wg.Wait()
}

// submit queues a job (from a loop, or a worker handing one back).
func (p *replayer) submit(j *replayJob) {
	j.queued = mono()
	p.mu.Lock()
	parked := j.notBefore > j.queued
	if parked {
		p.parked = append(p.parked, j)
	} else {
		p.queue = append(p.queue, j)
		p.cond.Signal()
	}
	p.queuedN.Store(int64(len(p.queue) + len(p.parked)))
	p.mu.Unlock()
	if parked {
		select {
		case p.parkCh <- struct{}{}:
		default:
		}
	}
}

// unpark moves parked jobs (paced, or retrying) back to the queue when
// their time comes. Its timer runs only while jobs are parked, set for the
// earliest of them: an idle node does not wake up for it.
func (p *replayer) unpark() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-p.stopCh:
			timer.Stop()
			return
		case <-p.parkCh:
		case <-timer.C:
		}
		now := mono()
		var next int64 // the earliest notBefore still parked; 0: none
		p.mu.Lock()
		kept := p.parked[:0]
		for _, j := range p.parked {
			if j.notBefore <= now {
				p.queue = append(p.queue, j)
				p.cond.Signal()
			} else {
				kept = append(kept, j)
				if next == 0 || j.notBefore < next {
					next = j.notBefore
				}
			}
		}
		clear(p.parked[len(kept):])
		p.parked = kept
		p.mu.Unlock()
		timer.Stop()
		if next != 0 {
			timer.Reset(time.Duration(next - now))
		}
	}
}

// retryNow queues the jobs waiting to retry at once (NATS is back).
func (p *replayer) retryNow() {
	p.mu.Lock()
	for _, j := range p.parked {
		if j.tries > 0 {
			j.notBefore = 0
		}
	}
	p.mu.Unlock()
	select {
	case p.parkCh <- struct{}{}:
	default:
	}
}

// next takes the oldest queued job, waiting for one; nil once stopped.
func (p *replayer) next() *replayJob {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) == 0 && !p.stopped {
		p.cond.Wait()
	}
	if p.stopped {
		return nil
	}
	j := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil // let a storm's array go
	}
	p.queuedN.Store(int64(len(p.queue) + len(p.parked)))
	return j
}

func (p *replayer) worker() {
	defer p.wg.Done()
	s := p.r.s
	inbox := s.nc.NewInbox()
	// A channel subscription with a small channel of its own: a sync
	// subscription's would be nats.go's default 64k entries, per worker.
	ch := make(chan *nats.Msg, 2*replayBatch+8)
	sub, err := s.nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		s.log.Error("replay worker: subscribe failed", zap.Error(err))
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	w := &replayWorker{p: p, ch: ch, inbox: inbox}
	for {
		j := p.next()
		if j == nil {
			return
		}
		p.running.Add(1)
		w.run(j)
		p.running.Add(-1)
	}
}

// replayWorker is one worker's state: its reply inbox and fetch buffers.
type replayWorker struct {
	p     *replayer
	ch    chan *nats.Msg
	inbox string
	reqN  uint64
	um    []replayMsg
	bm    []replayMsg
}

type replayMsg struct {
	seq     uint64
	data    []byte
	control bool
}

// fetchResult is one direct get batch: the messages, whether the subject
// has more after them, and how many it held after the start.
type fetchResult struct {
	msgs  []replayMsg
	more  bool
	total uint64 // messages on the subject from the start (first message's Nats-Num-Pending + 1)
	// after: messages the answering replica holds on the subject after the
	// batch (the end of batch's Nats-Num-Pending); maxSeq: the newest
	// sequence in the batch, beyond upTo too.
	after, maxSeq uint64
}

// behind reports whether the replica that answered may lack a message of
// the subject up to upTo: it sent all it holds (nothing after the batch),
// and that ends before the subject's message last, which the leader had
// stored before the request, or before upTo when last is beyond it.
// (Replicas apply in stream order: one that holds a message at or past
// upTo holds everything before it.)
func (f *fetchResult) behind(last, upTo uint64) bool {
	return f.after == 0 && f.maxSeq < min(last, upTo)
}

// errBatchBroken: a direct get batch arrived with a message missing (or
// an answer without the sequence headers a batch carries).
var errBatchBroken = errors.New("a direct get batch arrived with a message missing; fetching it again")

// errReplicaBehind: a direct get was answered by a replica that had not
// stored the subject's newest message yet.
var errReplicaBehind = errors.New("a replica answered before it had the newest messages; asking again")

// retry queues j again after a failure, later the more it failed.
func (w *replayWorker) retry(j *replayJob, err error) {
	p := w.p
	s := p.r.s
	p.failures.Add(1)
	j.tries++
	if now := mono(); now-p.lastFailLog.Load() > int64(time.Second) && s.natsConnected() {
		p.lastFailLog.Store(now)
		var id uint64
		if j.c != nil {
			id = j.c.id
		}
		topic := ""
		if j.t != nil {
			topic = j.t.name
		}
		s.log.Warn("replay failed; retrying (logged at most once a second)", zap.Uint64("conn", id), zap.String("topic", topic), zap.Int("tries", j.tries), zap.Error(err))
	}
	j.notBefore = mono() + int64(min(time.Duration(j.tries)*100*time.Millisecond, 2*time.Second))
	if p.ctx.Err() == nil && (j.c == nil || !j.c.closed()) && !j.abandoned.Load() {
		p.submit(j)
	}
}

func (w *replayWorker) run(j *replayJob) {
	if j.t != nil {
		if j.c != nil {
			w.runConnTopic(j)
		} else {
			w.runLoopTopic(j)
		}
		return
	}
	p := w.p
	r := p.r
	s := r.s
	c := j.c
	if j.tries == 0 && !j.initial {
		p.started.Add(1)
	}
	ctx := p.ctx
	fail := func(err error) { w.retry(j, err) }
	if c.closed() {
		return
	}
	if j.upTo == 0 {
		pctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		pos, err := r.pos.after(pctx, j.queued)
		cancel()
		if err != nil {
			fail(err)
			return
		}
		j.upTo = pos
	}
	userSubj := s.subjects.User(j.tok)
	if !j.checked {
		// A batched direct get costs the server a scan of the stream from
		// the start to the subject's next message (its pending count and
		// its next-by-subject lookup), while the subject's newest message
		// is an index lookup: a connection that missed nothing on a
		// subject (most of a reconnect storm's, and the broadcast subject
		// between broadcasts) costs no scan. Read from the leader, the
		// newest message also tells whether a replica that answers a
		// direct get is behind (below).
		for _, sub := range []struct {
			subj string
			from *uint64
			last *uint64
		}{{userSubj, &j.uFrom, &j.uLast}, {r.bcastSubj, &j.bFrom, &j.bLast}} {
			if *sub.from >= j.upTo {
				continue
			}
			last, err := w.lastOn(ctx, sub.subj)
			if err != nil {
				fail(err)
				return
			}
			*sub.last = last
			if last <= *sub.from {
				*sub.from = j.upTo
			}
		}
		j.checked = true
	}
	maxBytes := replayMaxBytes(s)
	for {
		// A subject already covered up to its newest message (as the
		// leader gave it, after upTo was read) has nothing more up to upTo.
		if j.uFrom < j.upTo && j.uFrom >= j.uLast {
			j.uFrom = j.upTo
		}
		if j.bFrom < j.upTo && j.bFrom >= j.bLast {
			j.bFrom = j.upTo
		}
		if j.uFrom >= j.upTo && j.bFrom >= j.upTo {
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
		var ur, br fetchResult
		var err error
		if j.uFrom < j.upTo {
			if ur, err = w.fetch(ctx, userSubj, j.uFrom, j.upTo, maxBytes, &w.um); err != nil {
				fail(err)
				return
			}
		}
		if j.bFrom < j.upTo {
			if br, err = w.fetch(ctx, r.bcastSubj, j.bFrom, j.upTo, maxBytes, &w.bm); err != nil {
				fail(err)
				return
			}
		}
		// Direct gets are answered by any replica, and a replica may not
		// have applied the newest messages yet. Its answer is the
		// subject's messages up to where it is: complete when it shows the
		// subject's newest message as the leader gave it, or says more
		// follow; else it is behind, and the round is made again (with a
		// fresh look at the leader, in case that message expired).
		if (j.uFrom < j.upTo && ur.behind(j.uLast, j.upTo)) || (j.bFrom < j.upTo && br.behind(j.bLast, j.upTo)) {
			p.behind.Add(1)
			j.checked = false
			fail(errReplicaBehind)
			return
		}
		// History holds everything after a position unless a subject is at
		// its per-subject limit with all of it after the position: an older
		// message after it may have been trimmed.
		lim := uint64(r.cfg.MaxPerUser)
		whole := (j.uFrom >= j.upTo || ur.total < lim) && (j.bFrom >= j.upTo || br.total < lim)
		if j.initial {
			j.recovered = whole
			c.l.p.Post(task{kind: taskWelcome, c: c, ok: true, rj: j})
			return
		}
		if !whole {
			// The open connection fell further behind than history holds
			// (a long outage, a flood): it is closed, and its reconnect
			// with "since" gets recovered:false, never a silent gap.
			p.fellBehind.Add(1)
			c.l.p.Post(task{kind: taskClose, c: c, code: protocol.CloseTryAgainLater,
				reason: "fell further behind than history holds: reconnect with since"})
			return
		}
		// Both batches cover the stream up to the lower of their ends.
		h := j.upTo
		if ur.more {
			h = min(h, ur.msgs[len(ur.msgs)-1].seq)
		}
		if br.more {
			h = min(h, br.msgs[len(br.msgs)-1].seq)
		}
		wrote, full, ok := w.write(j, ur.msgs, br.msgs, h)
		if !ok {
			return
		}
		if full {
			// The socket is behind: what is written so far is covered;
			// the rest waits for the queue to drain.
			j.uFrom, j.bFrom = max(j.uFrom, wrote), max(j.bFrom, wrote)
			j.notBefore = mono() + int64(replayPace)
			p.submit(j)
			return
		}
		j.uFrom, j.bFrom = max(j.uFrom, h), max(j.bFrom, h)
	}
	if j.initial {
		// Nothing after "since" for this connection: recovered.
		j.recovered = true
		c.l.p.Post(task{kind: taskWelcome, c: c, ok: true, rj: j})
		return
	}
	p.completed.Add(1)
	c.l.p.Post(task{kind: taskReplayed, c: c, rj: j})
}

// replayMaxBytes bounds one direct get batch: half of what a connection
// may have queued, at most 1 MiB.
func replayMaxBytes(s *Server) int { return min(s.opts.MaxPendingBytes/2, 1<<20) }

// write writes the messages of both batches up to h, merged in stream
// order (a topic replay's one batch: um, its frames with the topic). It stops early (full) once the connection's queue holds half of
// MaxPendingBytes, so a replay never makes a slow consumer of a client; it
// returns the sequence written last and whether the connection still takes
// frames.
func (w *replayWorker) write(j *replayJob, um, bm []replayMsg, h uint64) (last uint64, full, ok bool) {
	c := j.c
	half := c.l.s.opts.MaxPendingBytes / 2
	i, k := 0, 0
	n := 0
	c.Mu.Lock()
	defer c.Mu.Unlock()
	defer func() {
		j.written += n
		w.p.msgs.Add(uint64(n))
		c.l.stats.msgsOut.Add(uint64(n))
	}()
	for {
		var m replayMsg
		switch {
		case i < len(um) && um[i].seq <= h && (k >= len(bm) || bm[k].seq > h || um[i].seq < bm[k].seq):
			m = um[i]
			i++
		case k < len(bm) && bm[k].seq <= h:
			m = bm[k]
			k++
		default:
			return last, false, true
		}
		last = m.seq
		if m.control {
			continue
		}
		if !c.welcomedLocked() {
			return last, false, false
		}
		var sh *bufpool.Shared
		if j.t != nil {
			sh = encodeTopicSeq(j.t.name, m.seq, m.data)
		} else {
			sh = encodeSeq(m.seq, m.data)
		}
		ok := c.writeSharedLocked(sh)
		sh.Release()
		if !ok {
			return last, false, false
		}
		n++
		if c.QueuedLocked() > half {
			return last, true, true
		}
	}
}

// fetch reads a batch of subj's messages with a sequence in (from, upTo]
// with one batched direct get ($JS.API.DIRECT.GET.<stream>, nats-server
// 2.11+): the messages, then an end-of-batch status (204) whose
// Nats-Num-Pending says what the subject holds after them; a subject with
// nothing from the start answers 404.
func (w *replayWorker) fetch(ctx context.Context, subj string, from, upTo uint64, maxBytes int, buf *[]replayMsg) (fetchResult, error) {
	r := w.p.r
	w.reqN++
	reply := w.inbox + "." + strconv.FormatUint(w.reqN, 10)
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{from + 1, subj, replayBatch, maxBytes})
	if err := r.s.nc.PublishRequest(r.directSubj, reply, req); err != nil {
		return fetchResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	clear(*buf)
	msgs := (*buf)[:0]
	var res fetchResult
	var lastSent uint64 // the sequence of the batch's message received last
	for {
		var m *nats.Msg
		select {
		case m = <-w.ch:
		case <-ctx.Done():
			return fetchResult{}, ctx.Err()
		}
		if m.Subject != reply {
			continue // an answer to an earlier, abandoned request
		}
		status := m.Header.Get("Status")
		switch status {
		case "", "204":
		case "404": // nothing after from (only ever the whole answer)
			if lastSent != 0 {
				return fetchResult{}, errBatchBroken
			}
			*buf = msgs
			res.msgs = msgs
			return res, nil
		default:
			return fetchResult{}, &replayError{status: status, desc: m.Header.Get("Description")}
		}
		// Each message of a batch, and its end, names the sequence sent
		// before it in the batch (0 for the first): a message this
		// worker's subscription dropped shows as a break, and the batch is
		// fetched again rather than written with a hole.
		if prev, err := strconv.ParseUint(m.Header.Get(jsLastSequence), 10, 64); err != nil || prev != lastSent {
			return fetchResult{}, errBatchBroken
		}
		if status == "204" { // end of batch
			np, _ := strconv.ParseUint(m.Header.Get(jsNumPending), 10, 64)
			res.after = np
			res.more = np > 0 && len(msgs) > 0 && msgs[len(msgs)-1].seq < upTo
			*buf = msgs
			res.msgs = msgs
			return res, nil
		}
		seq, err := strconv.ParseUint(m.Header.Get(nats.JSSequence), 10, 64)
		if err != nil {
			return fetchResult{}, errBatchBroken
		}
		lastSent = seq
		if res.maxSeq == 0 {
			np, _ := strconv.ParseUint(m.Header.Get(jsNumPending), 10, 64)
			res.total = np + 1
		}
		res.maxSeq = max(res.maxSeq, seq)
		if seq > upTo {
			continue // stored after the round's position: the next round, or live
		}
		msgs = append(msgs, replayMsg{seq: seq, data: m.Data, control: m.Header.Get(protocol.HeaderControl) != ""})
	}
}

const jsNumPending = "Nats-Num-Pending"

// lastOn returns the sequence of subj's newest message (0: none), which
// the server answers from its per-subject index without reading the
// stream. A replicated stream is asked through its leader
// ($JS.API.STREAM.MSG.GET), never a replica that may be behind; a stream of
// one replica with a direct get, which that one replica answers and which
// costs the server less.
func (w *replayWorker) lastOn(ctx context.Context, subj string) (uint64, error) {
	r := w.p.r
	w.reqN++
	reply := w.inbox + "." + strconv.FormatUint(w.reqN, 10)
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subj})
	leader := r.replicated()
	subject := r.lastSubj
	if leader {
		subject = r.msgGetSubj
	}
	if err := r.s.nc.PublishRequest(subject, reply, req); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	for {
		var m *nats.Msg
		select {
		case m = <-w.ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if m.Subject != reply {
			continue // an answer to an earlier, abandoned request
		}
		if !leader {
			if status := m.Header.Get("Status"); status != "" {
				if status == "404" { // no message on subj
					return 0, nil
				}
				return 0, &replayError{status: status, desc: m.Header.Get("Description")}
			}
			seq, err := strconv.ParseUint(m.Header.Get(nats.JSSequence), 10, 64)
			if err != nil {
				return 0, &replayError{status: "bad", desc: "direct get: no " + nats.JSSequence + " header"}
			}
			return seq, nil
		}
		var resp struct {
			Error *struct {
				Code        int    `json:"code"`
				ErrCode     int    `json:"err_code"`
				Description string `json:"description"`
			} `json:"error"`
			Message *struct {
				Seq uint64 `json:"seq"`
			} `json:"message"`
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return 0, &replayError{status: "bad", desc: "stream message get: " + err.Error()}
		}
		switch {
		case resp.Error != nil && resp.Error.ErrCode == jsNoMessageFound:
			return 0, nil
		case resp.Error != nil:
			return 0, &replayError{status: strconv.Itoa(resp.Error.Code), desc: resp.Error.Description}
		case resp.Message == nil:
			return 0, &replayError{status: "bad", desc: "stream message get: no message"}
		}
		return resp.Message.Seq, nil
	}
}

// jsNoMessageFound is JetStream's error code for a message get that finds
// none (JSNoMessageFoundErr).
const jsNoMessageFound = 10037

// fetchTimeout bounds one direct get batch, and one read of the stream's
// position.
const fetchTimeout = 5 * time.Second

type replayError struct{ status, desc string }

func (e *replayError) Error() string { return "direct get: " + e.status + " " + e.desc }

// ---- the loop's side ----

// closed reports whether c takes no more frames (any goroutine).
func (c *conn) closed() bool {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	return c.WritesDoneLocked()
}

// queued is the bytes waiting in c's write queue (any goroutine).
func (c *conn) queued() int {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	return c.QueuedLocked()
}

// postCatchUp asks c's loop, once until it acts, to catch c up (the
// sequencer could not queue a message for it).
func (c *conn) postCatchUp() {
	c.Mu.Lock()
	posted := c.LockedFlags&lfCatchUpPosted != 0
	c.LockedFlags |= lfCatchUpPosted
	c.Mu.Unlock()
	if !posted {
		c.l.p.Post(task{kind: taskCatchUp, c: c})
	}
}

// postCatchUpAll asks the loop, once until it acts, to catch every
// connection up.
func (l *loop) postCatchUpAll() {
	if l.catchAllPosted.CompareAndSwap(false, true) {
		l.p.Post(task{kind: taskCatchUpAll})
	}
}

// deliverSeq writes one live message to c if it is the next on its chain
// (user: uPos, broadcast: bPos); sh nil is a control message, which moves
// the chain on without writing. Loop goroutine.
func (l *loop) deliverSeq(c *conn, sh *bufpool.Shared, seq, last uint64, user bool) bool {
	pos := &c.bPos
	if user {
		pos = &c.uPos
	}
	switch {
	case c.State == stSubscribing:
		c.set(flSkipped, true) // its welcome looks
		return false
	case c.State != stOpen:
		return false
	case c.has(flCatchUp):
		l.skipped(c, seq)
		return false
	case seq <= *pos:
		return false // a replay wrote it already
	case last > *pos:
		// The message before it on its subject never reached c.
		l.s.m.resumeGaps.Inc()
		l.catchUp(c, seq)
		return false
	case sh == nil:
		*pos = seq // a control message: nothing to write, the chain moves on
		return false
	}
	c.Mu.Lock()
	ok := c.welcomedLocked() && c.writeSharedLocked(sh)
	c.Mu.Unlock()
	if ok {
		*pos = seq
	}
	return ok
}

// skipped notes a live message c did not get while it catches up.
func (l *loop) skipped(c *conn, seq uint64) {
	if seq > l.skips[c] {
		l.skips[c] = seq
	}
}

// catchUp starts a replay for an open connection from its positions
// (skippedSeq: a live message it did not write, 0 if none).
func (l *loop) catchUp(c *conn, skippedSeq uint64) {
	if c.has(flCatchUp) {
		if skippedSeq == 0 {
			// A loss that shows in no chain (a NATS reconnect, a dropped
			// post) while a round runs: it may lie beyond the round's
			// position, so another round follows from a fresh one.
			skippedSeq = math.MaxUint64
		}
		l.skipped(c, skippedSeq)
		return
	}
	c.set(flCatchUp, true)
	if l.skips == nil {
		l.skips = map[*conn]uint64{}
	}
	l.skips[c] = skippedSeq
	l.s.rs.rp.submit(&replayJob{c: c, tok: c.user.token(), uFrom: c.uPos, bFrom: c.bPos})
}

// replayed takes a finished round back: c is covered up to its position;
// it goes live, or replays again when it skipped a message beyond.
func (l *loop) replayed(c *conn, j *replayJob) {
	if c.State != stOpen {
		delete(l.skips, c)
		return
	}
	c.uPos, c.bPos = max(c.uPos, j.upTo), max(c.bPos, j.upTo)
	if l.skips[c] > j.upTo {
		l.skips[c] = 0
		j.uFrom, j.bFrom, j.upTo, j.tries, j.notBefore, j.checked = c.uPos, c.bPos, 0, 0, 0, false
		l.s.rs.rp.submit(j)
		return
	}
	delete(l.skips, c)
	c.set(flCatchUp, false)
}

// catchUpOne handles a posted catch-up for c.
func (l *loop) catchUpOne(c *conn) {
	c.Mu.Lock()
	c.LockedFlags &^= lfCatchUpPosted
	c.Mu.Unlock()
	switch c.State {
	case stSubscribing:
		c.set(flSkipped, true)
	case stOpen:
		l.catchUp(c, 0)
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// Resumable delivery (Options.Resume). The history stream (package
// internal/history) stores every message of the user subjects and the
// broadcast subject and republishes it to "<prefix>.live.<subject>" with
// its stream sequence (Nats-Sequence) and the sequence of the previous
// message stored on the same subject (Nats-Last-Sequence). The node
// subscribes to the live subjects instead of the plain ones:
//
//   - One goroutine, the sequencer, takes every live message in the order
//     NATS delivers it (the stream's order: one republisher, one
//     connection) and posts it to the loops of the connections it is for,
//     on their droppable, first-in first-out queues: a connection's
//     messages reach its loop in stream order, broadcasts and its user's
//     messages alike. A frame is encoded once.
//   - Each connection keeps two positions (uPos, bPos): the newest user
//     message and the newest broadcast it is covered to. A message at or
//     below its chain's position is a duplicate and is not written; a
//     message whose Nats-Last-Sequence is above it means the chain's
//     previous message never reached the connection (a NATS outage, a
//     full queue, interest not yet spread over a cluster): the connection
//     then catches up from the stream before anything newer is written.
//     Duplicates are impossible by construction, and so are silent gaps.
//   - A catch-up is a replay (resume_replay.go): bounded in number, run by
//     a fixed pool of workers with batched direct gets (checked against
//     each subject's newest message as the leader gives it, so a replica
//     that is behind is asked again), paced by the connection's write
//     queue. While it runs, live messages for the
//     connection are skipped (and remembered by sequence); when the replay
//     has written everything up to a stream position U, the connection
//     goes live at U, or replays again when a skipped message lies beyond.
//   - Where a loss cannot show in a chain (the last message before a quiet
//     spell), the node catches every connection up: after a NATS reconnect,
//     after the live queue overflowed, after a loop's queue refused a
//     message.
//   - The welcome carries "position": the stream's last sequence read from
//     the stream's leader after the user's subscription was sent, so every
//     message stored later is republished to the node. With "since" the
//     connection replays from there first, and "recovered" says whether
//     history still held everything after it.
type resumer struct {
	s           *Server
	cfg         history.Config
	stream      string
	infoSubj    string // $JS.API.STREAM.INFO.<stream>
	directSubj  string // $JS.API.DIRECT.GET.<stream>: the replays' batches
	lastSubj    string // $JS.API.DIRECT.GET.<stream>: newest by subject (one replica)
	msgGetSubj  string // $JS.API.STREAM.MSG.GET.<stream>: newest by subject (the leader)
	livePrefix  string // "<prefix>.live."
	liveBcast   string // "<prefix>.live.<prefix>.broadcast"
	bcastSubj   string // "<prefix>.broadcast"
	ch          chan *nats.Msg
	bsub        *nats.Subscription
	needAll     atomic.Bool // catch every connection up once the live queue is empty
	wake        chan struct{}
	done        chan struct{}
	rp          *replayer
	pos         positionOracle
	replicas    atomic.Int32 // the stream's replicas, from its info
	badHeaders  atomic.Uint64
	catchAlls   atomic.Uint64
	liveDropped atomic.Uint64
	recovered   atomic.Uint64
	unrecovered atomic.Uint64
}

func newResumer(s *Server) *resumer {
	cfg := s.opts.History
	cfg.Prefix = s.opts.SubjectPrefix
	name := history.StreamName(cfg.Prefix)
	live := history.LivePrefix(cfg.Prefix)
	r := &resumer{
		s:          s,
		cfg:        cfg,
		stream:     name,
		infoSubj:   "$JS.API.STREAM.INFO." + name,
		directSubj: "$JS.API.DIRECT.GET." + name,
		lastSubj:   "$JS.API.DIRECT.GET." + name,
		msgGetSubj: "$JS.API.STREAM.MSG.GET." + name,
		livePrefix: live,
		liveBcast:  live + s.subjects.Broadcast()[len(cfg.Prefix)+1:],
		bcastSubj:  s.subjects.Broadcast(),
		ch:         make(chan *nats.Msg, s.opts.DispatchQueue*s.opts.Dispatchers),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if s.opts.directGetSubject != "" {
		r.directSubj = s.opts.directGetSubject
	}
	r.pos.r = r
	r.rp = newReplayer(r)
	return r
}

// liveUser is the live subject of a user token.
func (r *resumer) liveUser(tok string) string {
	return r.livePrefix + r.s.subjects.User(tok)[len(r.cfg.Prefix)+1:]
}

// ensure creates or checks the history stream (Start).
func (r *resumer) ensure(ctx context.Context) error {
	info, err := history.Ensure(ctx, r.s.nc, r.cfg)
	if err != nil {
		return err
	}
	r.s.log.Info("resumable delivery on", zap.String("stream", r.stream),
		zap.Uint64("first_seq", info.State.FirstSeq), zap.Uint64("last_seq", info.State.LastSeq),
		zap.Duration("ttl", r.cfg.TTL), zap.Int("max_per_user", r.cfg.MaxPerUser), zap.Int("replicas", r.cfg.Replicas))
	return nil
}

func (r *resumer) start() error {
	var err error
	if r.bsub, err = r.s.nc.ChanSubscribe(r.liveBcast, r.ch); err != nil {
		return fmt.Errorf("subscribing %s: %w", r.liveBcast, err)
	}
	go r.run()
	r.rp.start()
	return nil
}

// catchUpAll asks for every connection to catch up once the live queue
// is empty (a NATS reconnect, a slow consumer).
func (r *resumer) catchUpAll() {
	r.needAll.Store(true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run is the sequencer.
func (r *resumer) run() {
	defer close(r.done)
	st := &r.s.disp.stats[0]
	for {
		select {
		case m, ok := <-r.ch:
			if !ok {
				return
			}
			r.live(m, st)
		case <-r.wake:
		}
		if len(r.ch) == 0 && r.needAll.Swap(false) {
			r.catchAlls.Add(1)
			for _, l := range r.s.loops {
				l.postCatchUpAll()
			}
		}
	}
}

// seqHeaders reads a republished message's sequence and the previous
// sequence on its subject.
func seqHeaders(h nats.Header) (seq, last uint64, ok bool) {
	if h == nil {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(h.Get(nats.JSSequence), 10, 64)
	last, err2 := strconv.ParseUint(h.Get(jsLastSequence), 10, 64)
	return seq, last, err1 == nil && err2 == nil && seq > 0
}

const jsLastSequence = "Nats-Last-Sequence"

// live takes one republished message.
func (r *resumer) live(m *nats.Msg, st *dispStats) {
	st.natsIn.Add(1)
	seq, last, ok := seqHeaders(m.Header)
	if !ok {
		if m.Header.Get(protocol.HeaderControl) != "" && len(m.Subject) > len(r.livePrefix) {
			// A control message sent to the live subject itself, not
			// stored (a topic subscribe): applied, the chain untouched.
			if tok, isUser := r.s.subjects.UserTokenOf(r.cfg.Prefix + "." + m.Subject[len(r.livePrefix):]); isUser {
				var buf [8]*conn
				u, conns := r.s.reg.devices(tok, buf[:0])
				r.s.control(u, conns, m)
				return
			}
		}
		r.badHeaders.Add(1)
		return
	}
	if m.Subject == r.liveBcast {
		sh := encodeSeq(seq, m.Data)
		for _, l := range r.s.loops {
			sh.Retain()
			if !l.p.TryPost(task{kind: taskBroadcast, sh: sh, seq: seq, last: last}, int64(len(sh.B))) {
				sh.Release()
				l.stats.bcastDropped.Add(1)
				l.postCatchUpAll() // its connections fetch it from the stream
			}
		}
		sh.Release()
		return
	}
	if len(m.Subject) <= len(r.livePrefix) {
		return
	}
	tok, ok := r.s.subjects.UserTokenOf(r.cfg.Prefix + "." + m.Subject[len(r.livePrefix):])
	if !ok {
		return
	}
	var buf [8]*conn
	u, conns := r.s.reg.devices(tok, buf[:0])
	if m.Header.Get(protocol.HeaderControl) != "" {
		r.s.control(u, conns, m)
		// The user's chain moves past it: the next message, whose
		// Nats-Last-Sequence names it, is no gap.
		for _, c := range conns {
			if !c.l.p.TryPost(task{kind: taskDeliver, c: c, seq: seq, last: last}, 64) {
				r.liveDropped.Add(1)
				c.postCatchUp()
			}
		}
		return
	}
	if len(conns) == 0 {
		st.undeliverable.Add(1)
		return
	}
	sh := encodeSeq(seq, m.Data)
	for _, c := range conns {
		sh.Retain()
		if !c.l.p.TryPost(task{kind: taskDeliver, c: c, sh: sh, seq: seq, last: last}, int64(len(sh.B))) {
			sh.Release()
			r.liveDropped.Add(1)
			c.postCatchUp()
		}
	}
	sh.Release()
}

// encodeSeq builds a resumable delivery's frame, its id the sequence.
func encodeSeq(seq uint64, data []byte) *bufpool.Shared {
	const room = 10
	sh := bufpool.GetShared(room + len(data) + 128)
	b := protocol.AppendMessageSeq(sh.B[:room], seq, data)
	body := len(b) - room
	hs := wsframe.Size(body, false)
	wsframe.Put(b[room-hs:], ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(body)})
	sh.B = b[room-hs:]
	return sh
}

// infoAttempt bounds one stream info request. While the stream elects a
// leader no server answers at all, and the election takes tens of
// milliseconds: the request is sent again rather than waited on.
const infoAttempt = 500 * time.Millisecond

// streamState asks the stream's leader for its first and last sequence,
// asking again every infoAttempt until ctx is done. Sent after a
// subscription on the same NATS connection, its answer is a point after
// the subscription's interest reached the leader's server.
func (r *resumer) streamState(ctx context.Context) (first, last uint64, err error) {
	for {
		actx, cancel := context.WithTimeout(ctx, infoAttempt)
		first, last, err = r.streamStateOnce(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return first, last, err
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			// An answer that is an error (no responders while the stream
			// has no leader, say): a moment before the next try.
			select {
			case <-ctx.Done():
				return 0, 0, err
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (r *resumer) streamStateOnce(ctx context.Context) (first, last uint64, err error) {
	msg, err := r.s.nc.RequestWithContext(ctx, r.infoSubj, nil)
	if err != nil {
		return 0, 0, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		State struct {
			FirstSeq uint64 `json:"first_seq"`
			LastSeq  uint64 `json:"last_seq"`
		} `json:"state"`
		Config struct {
			Replicas int `json:"num_replicas"`
		} `json:"config"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, 0, fmt.Errorf("stream info: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == 10059 { // stream not found: recreate it
			if _, e := history.Ensure(ctx, r.s.nc, r.cfg); e == nil {
				r.s.log.Warn("the history stream was gone and is created again: clients resuming from before get recovered:false", zap.String("stream", r.stream))
			}
		}
		return 0, 0, fmt.Errorf("stream info: %s", resp.Error.Description)
	}
	r.replicas.Store(int32(resp.Config.Replicas))
	return resp.State.FirstSeq, resp.State.LastSeq, nil
}

// replicated reports whether the stream has more than one replica, as
// configured or as its info said last (it may be edited while the node
// runs).
func (r *resumer) replicated() bool { return r.cfg.Replicas > 1 || r.replicas.Load() > 1 }

// positionOracle hands out the stream's last sequence as read by a request
// sent after a given time, one request serving every caller waiting
// meanwhile: a reconnect storm of replays makes one request per round
// trip, not one per connection.
type positionOracle struct {
	r        *resumer
	mu       sync.Mutex
	flying   bool
	sentAt   int64 // mono() when the request in flight was sent
	lastSent int64 // mono() when the last answered request was sent
	first    uint64
	last     uint64
	lastErr  error
	landed   chan struct{} // closed when the request in flight lands
}

// after returns the stream's last sequence read by a request sent after t
// (mono()).
func (p *positionOracle) after(ctx context.Context, t int64) (uint64, error) {
	_, last, err := p.state(ctx, t)
	return last, err
}

// state returns the stream's first and last sequence read by a request
// sent after t (mono()).
func (p *positionOracle) state(ctx context.Context, t int64) (first, last uint64, err error) {
	for {
		p.mu.Lock()
		if p.lastSent > t && p.lastErr == nil {
			first, last := p.first, p.last
			p.mu.Unlock()
			return first, last, nil
		}
		if !p.flying {
			p.flying = true
			p.sentAt = mono()
			p.landed = make(chan struct{})
			go p.ask(p.sentAt, p.landed)
		}
		ch, sent := p.landed, p.sentAt
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		p.mu.Lock()
		err := p.lastErr
		p.mu.Unlock()
		if err != nil && sent > t {
			return 0, 0, err
		}
	}
}

func (p *positionOracle) ask(sent int64, landed chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	first, last, err := p.r.streamState(ctx)
	cancel()
	p.mu.Lock()
	p.flying = false
	p.lastErr = err
	if err == nil {
		p.first, p.last, p.lastSent = first, last, sent
	}
	close(landed)
	p.mu.Unlock()
}

// errReplayClosed: the connection closed during its replay.
var errReplayClosed = errors.New("connection closed")

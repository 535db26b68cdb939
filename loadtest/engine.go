package loadtest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// Target is one gateway endpoint: its WebSocket URL, or with --transport
// sse its SSE endpoint.
type Target struct {
	URL  string `json:"url"`
	Host string `json:"host"` // Host header
	Path string `json:"path"` // request URI
	Addr string `json:"addr"` // resolved ip:port
}

// workerPlan is what one process (the only one, or a worker) runs: its
// share of the slots, whole users, and everything it needs to reach the
// fleet. The parent sends it to a worker as JSON.
type workerPlan struct {
	Index          int           `json:"index"`
	Workers        int           `json:"workers"`
	RunID          string        `json:"run_id"`
	T0             int64         `json:"t0"` // mono ns of the run's start, shared by every process
	Targets        []Target      `json:"targets"`
	SourceIPs      []string      `json:"source_ips,omitempty"`
	SlotFrom       int           `json:"slot_from"` // global slots [SlotFrom, SlotTo)
	SlotTo         int           `json:"slot_to"`
	Devices        int           `json:"devices_per_user"`
	UserPrefix     string        `json:"user_prefix"`
	Auth           AuthConfig    `json:"auth"`
	Publish        PublishConfig `json:"publish"`
	NeedPublisher  bool          `json:"need_publisher"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	BackoffMin     time.Duration `json:"backoff_min"`
	BackoffMax     time.Duration `json:"backoff_max"`
	CloseTimeout   time.Duration `json:"close_timeout"`
	OpenLoopRamp   bool          `json:"open_loop_ramp,omitempty"` // --ramp-backoff=false
	Resume         bool          `json:"resume,omitempty"`         // --resume
	Transport      string        `json:"transport,omitempty"`      // --transport: ws ("" too) or sse
	Scenario       string        `json:"scenario,omitempty"`
	Topic          string        `json:"topic,omitempty"`        // live: the topic
	RoomSize       int           `json:"room_size,omitempty"`    // rooms: members per room
	RoomPrefix     string        `json:"room_prefix,omitempty"`  // rooms: topics <RoomPrefix>.<RunID>.<k>
	RoomPublish    string        `json:"room_publish,omitempty"` // rooms: client, router or nats
	Pollers        int           `json:"pollers"`
	Seed           uint64        `json:"seed"`
}

// userName is the JWT sub of user n.
func userName(prefix string, n int) string { return prefix + strconv.Itoa(n) }

const tick = 10 * time.Millisecond

// clientSet holds one process's connections: its loops, slots and users.
type clientSet struct {
	plan    *workerPlan
	loops   []*loop
	slots   []*slot
	names   []string // local users' names
	nums    []int    // local users' numbers
	tokens  *tokenSource
	sink    *sink
	pub     *publisher
	running atomic.Bool // connections that drop are reconnected
	resume  bool        // plan.Resume
	sse     bool        // plan.Transport is sse: the connections are event streams (sse.go)
	prefix  []byte      // `{"lt":"<run>"` that starts every data payload of this run
	tp      *topicSet   // live, rooms: the process's topics (topics.go); nil otherwise

	// userMu guards userLive; a welcome, a close and a publish's stamp take
	// it, so "welcomed before the publish" and "counted as open at the
	// publish" are the same thing.
	userMu     [64]sync.Mutex
	userLive   []int32
	userJoined []int32  // --resume: devices welcomed at least once (each is owed every later message)
	userPubs   []uint32 // messages stamped per user: the last one's number

	// deliveries owed (acknowledged messages × sessions open at their
	// publish; --resume: × devices welcomed before it, away or not) and
	// received by such sessions (devices); equal when nothing is
	// outstanding.
	eligible, eligGot atomic.Int64
	bElig, bGot       atomic.Int64

	bMu  sync.Mutex
	bLog []pubRec // broadcasts as announced by the parent

	rampWelcomed atomic.Int64
	rampStart    atomic.Int64
	rampDone     atomic.Int64
	firstDrop    atomic.Int64
	lastRecovery atomic.Int64

	series seriesCollector
	done   chan struct{} // closed when every slot is down after finish
}

func newClientSet(plan *workerPlan) (*clientSet, error) {
	if plan.SlotTo < plan.SlotFrom || plan.Devices < 1 || len(plan.Targets) == 0 {
		return nil, errors.New("bad worker plan")
	}
	e := &clientSet{plan: plan, resume: plan.Resume, sse: plan.Transport == TransportSSE, prefix: []byte(`{"lt":"` + plan.RunID + `"`)}
	e.series.init()
	dev := plan.Devices
	userFrom := plan.SlotFrom / dev
	nUsers := (plan.SlotTo - plan.SlotFrom + dev - 1) / dev
	for i := 0; i < nUsers; i++ {
		e.nums = append(e.nums, userFrom+i)
		e.names = append(e.names, userName(plan.UserPrefix, userFrom+i))
	}
	e.userLive = make([]int32, nUsers)
	e.userJoined = make([]int32, nUsers)
	e.userPubs = make([]uint32, nUsers)
	var err error
	if e.tokens, err = newTokenSource(plan.Auth, nUsers); err != nil {
		return nil, err
	}
	if plan.NeedPublisher && plan.Scenario != ScenarioRooms {
		if e.sink, err = newSink(plan.Publish); err != nil {
			return nil, err
		}
		e.pub = newPublisher(e.sink, plan.RunID, e.nums, e.names, e.stamp, &e.eligible)
	}
	targets := make([]netip.AddrPort, len(plan.Targets))
	for i, t := range plan.Targets {
		if targets[i], err = netip.ParseAddrPort(t.Addr); err != nil {
			return nil, fmt.Errorf("target %s: %v", t.URL, err)
		}
	}
	var srcs []netip.Addr
	for _, s := range plan.SourceIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--source-ips: %v", err)
		}
		srcs = append(srcs, a)
	}
	np := plan.Pollers
	if np <= 0 {
		np = runtime.GOMAXPROCS(0)
	}
	e.running.Store(true)
	for i := 0; i < np; i++ {
		l, err := newLoop(e, i, targets, srcs)
		if err != nil {
			e.closeLoops()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	for i := plan.SlotFrom; i < plan.SlotTo; i++ {
		li := len(e.slots) % np
		s := &slot{
			l:    e.loops[li],
			idx:  int32(len(e.slots)),
			gidx: int32(i),
			user: int32(len(e.slots) / dev),
		}
		s.Init(-1)
		s.tgt = int16(i % len(targets))
		if len(srcs) > 0 {
			s.src = int16((i / len(targets)) % len(srcs))
		}
		e.slots = append(e.slots, s)
		e.loops[li].slots = append(e.loops[li].slots, s)
	}
	if plan.Scenario == ScenarioLive || plan.Scenario == ScenarioRooms {
		e.tp = newTopicSet(e)
	}
	if plan.Scenario == ScenarioRooms {
		if plan.NeedPublisher {
			if e.sink, err = newSink(plan.Publish); err != nil {
				e.closeLoops()
				return nil, err
			}
		}
		e.pub = newRoomPublisher(e.sink, plan, e.tp, e.clientPublish)
	}
	// after the topic set: a topic scenario's tokens carry their topics
	if err := e.tokens.premint(e.names); err != nil {
		e.closeLoops()
		if e.sink != nil {
			e.sink.close()
		}
		return nil, fmt.Errorf("minting tokens: %v", err)
	}
	return e, nil
}

func (e *clientSet) closeLoops() {
	for _, l := range e.loops {
		if l.p != nil {
			l.p.Close()
		}
	}
}

// stamp takes the publish time of a message to local user u and the number
// of deliveries it is owed: the user's sessions open then, or with
// --resume its devices welcomed before (they get it when they come back).
func (e *clientSet) stamp(u int) (int64, int32) {
	mu := &e.userMu[u%len(e.userMu)]
	mu.Lock()
	t := mono()
	n := e.userLive[u]
	if e.resume {
		n = e.userJoined[u]
	}
	e.userPubs[u]++
	mu.Unlock()
	return t, n
}

// sessionOpened and sessionClosed keep userLive; opened returns the
// welcome time, and both the number of the user's last message stamped
// then: the session was open at the publish of the messages numbered
// (opened, closed]. first says it is the device's first welcome.
func (e *clientSet) sessionOpened(u int32, first bool) (int64, uint32) {
	mu := &e.userMu[int(u)%len(e.userMu)]
	mu.Lock()
	t := mono()
	e.userLive[u]++
	if first && e.resume {
		e.userJoined[u]++
	}
	n := e.userPubs[u]
	mu.Unlock()
	return t, n
}

func (e *clientSet) sessionClosed(u int32) uint32 {
	mu := &e.userMu[int(u)%len(e.userMu)]
	mu.Lock()
	e.userLive[u]--
	n := e.userPubs[u]
	mu.Unlock()
	return n
}

// onLoops runs f on every loop's goroutine and waits for all of them.
func (e *clientSet) onLoops(f func(l *loop)) {
	var wg sync.WaitGroup
	for _, l := range e.loops {
		wg.Add(1)
		l.p.Post(func() { defer wg.Done(); f(l) })
	}
	wg.Wait()
}

// connect starts the ramp: every slot that is down is connected, rate per
// second across this process, each loop backing off on its own unless the
// plan asks for the open-loop ramp.
func (e *clientSet) connect(rate float64) {
	e.rampStart.CompareAndSwap(0, mono())
	per := rate / float64(len(e.loops))
	e.onLoops(func(l *loop) {
		l.rampRate = per
		l.ramp = l.ramp[:0]
		for _, s := range l.slots {
			if s.state == stDown && !s.want {
				l.ramp = append(l.ramp, s)
			}
		}
		l.rampNext = 0
		if len(l.ramp) > 0 {
			l.rc.start(per, !e.plan.OpenLoopRamp, mono())
		}
	})
	if len(e.slots) == 0 {
		e.rampDone.CompareAndSwap(0, mono())
	}
}

// drop closes share of the open connections at once, without a close
// frame (a TCP reset), and lets them reconnect with back-off.
func (e *clientSet) drop(share float64) {
	e.onLoops(func(l *loop) { l.drop(share) })
}

// churn closes rate connections a second (close 1000) across this process;
// each comes back after down (±50% jitter).
func (e *clientSet) churn(rate float64, down time.Duration) {
	per := rate / float64(len(e.loops))
	e.onLoops(func(l *loop) { l.churnRate, l.churnDown, l.churnBudget = per, down, 0 })
}

// announce records a broadcast the parent published (id: its stream
// sequence, 0 if unknown).
func (e *clientSet) announce(seq int, t int64, ok bool, id uint64) {
	e.bMu.Lock()
	for len(e.bLog) < seq {
		e.bLog = append(e.bLog, pubRec{state: pubFailed})
	}
	st := pubFailed
	if ok {
		st = pubAcked
	}
	e.bLog[seq-1] = pubRec{t: t, id: id, state: st}
	e.bMu.Unlock()
	if !ok {
		return
	}
	resume := e.resume
	e.onLoops(func(l *loop) {
		var n int64
		for _, s := range l.slots {
			if (s.bc.open || resume) && s.bc.firstW != 0 && s.bc.owes(t, resume) {
				n++
			}
		}
		e.bElig.Add(n)
	})
}

// Progress is a process's running totals, sent every second.
type Progress struct {
	At           int64 `json:"at"` // mono ns when it was taken
	Worker       int   `json:"worker"`
	Slots        int64 `json:"slots"`
	Live         int64 `json:"live"`
	Connecting   int64 `json:"connecting"`
	Attempts     int64 `json:"attempts"`
	Welcomes     int64 `json:"welcomes"`
	EverWelcomed int64 `json:"ever_welcomed"` // slots welcomed at least once
	Fails        int64 `json:"fails"`
	Closes       int64 `json:"closes"`
	Published    int64 `json:"published"`
	Acked        int64 `json:"acked"`
	PubFailed    int64 `json:"pub_failed"`
	Receipts     int64 `json:"receipts"`
	BReceipts    int64 `json:"broadcast_receipts"`
	Dups         int64 `json:"dups"`
	OOO          int64 `json:"ooo"`
	Outstanding  int64 `json:"outstanding"`
	LastRecv     int64 `json:"last_recv"`
	Dropped      int64 `json:"dropped"`
	Recovered    int64 `json:"recovered"`
	RampStart    int64 `json:"ramp_start"`
	RampDone     int64 `json:"ramp_done"`
	FirstDrop    int64 `json:"first_drop"`
	LastRecovery int64 `json:"last_recovery"`

	Refused int64 `json:"refused"` // attempts the gateways refused (HTTP 503, 429, close 1013)
	// --resume: devices welcomed before and down now (their deliveries
	// are still owed), and receipts replayed from history.
	Away     int64 `json:"away"`
	Replayed int64 `json:"replayed"`
	// The ramp's allowed rate (0 while paused) and its target, summed over
	// the loops that have connections left to start.
	RampRate   float64 `json:"ramp_rate"`
	RampTarget float64 `json:"ramp_target"`

	// live, rooms: slots subscribed to their topic at least once, when the
	// last of the process's was (mono ns; 0: not yet), sessions
	// subscribed now, topic receipts, and the client publish check's test
	// messages sent and come back.
	Subscribed int64 `json:"subscribed,omitempty"`
	SubDone    int64 `json:"sub_done,omitempty"`
	TLive      int64 `json:"topic_live,omitempty"`
	TReceipts  int64 `json:"topic_receipts,omitempty"`
	ProbeSent  int64 `json:"probe_sent,omitempty"`
	ProbeOK    int64 `json:"probe_ok,omitempty"`
}

func (e *clientSet) progress() Progress {
	p := Progress{At: mono(), Worker: e.plan.Index, Slots: int64(len(e.slots))}
	for _, l := range e.loops {
		st := &l.st
		p.Live += st.live.Load()
		p.Connecting += st.connecting.Load()
		p.Attempts += st.attempts.Load()
		p.Welcomes += st.welcomes.Load()
		p.Fails += st.fails.Load()
		p.Closes += st.closes.Load()
		p.Receipts += st.receipts.Load()
		p.BReceipts += st.breceipts.Load()
		p.Dups += st.dups.Load()
		p.OOO += st.ooo.Load()
		p.Dropped += st.dropped.Load()
		p.Recovered += st.recovered.Load()
		p.Refused += st.refused.Load()
		p.Away += st.away.Load()
		p.Replayed += st.replayed.Load()
		p.RampRate += math.Float64frombits(st.rampRate.Load())
		p.RampTarget += math.Float64frombits(st.rampTarget.Load())
		p.LastRecv = max(p.LastRecv, st.lastRecv.Load())
		p.TLive += st.tlive.Load()
		p.TReceipts += st.treceipts.Load()
		p.ProbeSent += st.probeSent.Load()
		p.ProbeOK += st.probeOK.Load()
	}
	if tp := e.tp; tp != nil {
		p.Subscribed = tp.subscribed.Load()
		p.SubDone = tp.subDone.Load()
		if len(e.slots) == 0 {
			p.SubDone = max(p.At, 1)
		}
		p.Outstanding += tp.elig.Load() - tp.got.Load()
	}
	if e.pub != nil {
		p.Published = e.pub.published.Load()
		p.Acked = e.pub.acked.Load()
		p.PubFailed = e.pub.failed.Load()
	}
	p.Outstanding += e.eligible.Load() - e.eligGot.Load() + e.bElig.Load() - e.bGot.Load()
	p.EverWelcomed = e.rampWelcomed.Load()
	p.RampStart = e.rampStart.Load()
	p.RampDone = e.rampDone.Load()
	p.FirstDrop = e.firstDrop.Load()
	p.LastRecovery = e.lastRecovery.Load()
	return p
}

// BroadcastStat is one broadcast as one process saw it.
type BroadcastStat struct {
	Seq       int   `json:"seq"`
	Receivers int64 `json:"receivers"`
	First     int64 `json:"first"` // mono ns of the first and last receipt
	Last      int64 `json:"last"`
}

// workerResult is what a process reports at the end.
type workerResult struct {
	Index      int                 `json:"index"`
	Final      Progress            `json:"final"`
	Msgs       SeqCounts           `json:"msgs"`
	Bcast      SeqCounts           `json:"bcast"`
	Hists      map[string]HistWire `json:"hists"`
	Broadcasts []BroadcastStat     `json:"broadcasts,omitempty"`
	Closes     map[string]int64    `json:"closes"`
	Errors     map[string]int64    `json:"errors"`
	Refusals   map[string]int64    `json:"refusals"` // of Errors, the gateways' refusals
	Ramp       rampWire            `json:"ramp"`
	PubErrors  map[string]int64    `json:"pub_errors"`
	Foreign    int64               `json:"foreign"`
	Misrouted  int64               `json:"misrouted"`
	Refreshed  int64               `json:"refreshed"`
	Churned    int64               `json:"churned"`
	Behind     int64               `json:"behind"`
	OpenAtEnd  int64               `json:"open_at_end"`
	Unexpected int64               `json:"closed_unexpectedly"` // live sessions the gateway or the network ended
	NotBack    int64               `json:"closed_not_back"`     // of the slots, down at the cut after such a close
	Resume     resumeWire          `json:"resume"`
	Topic      *topicWire          `json:"topic,omitempty"` // live, rooms
	Mints      int64               `json:"token_mints"`
	CPUUser    float64             `json:"cpu_user_s"`
	CPUSys     float64             `json:"cpu_sys_s"`
	Series     []seriesWire        `json:"series,omitempty"`
	Lats       []secHist           `json:"lats,omitempty"`
	Live       []liveWire          `json:"live,omitempty"`
}

// rampWire is a process's ramp figures (see RampResult).
type rampWire struct {
	Pushbacks int64   `json:"pushbacks"`
	Cuts      int64   `json:"cuts"`
	MinRate   float64 `json:"min_rate"`  // sum of each loop's lowest allowed rate
	Below     int64   `json:"below_ns"`  // the longest a loop spent below its target or paused
	Paused    int64   `json:"paused_ns"` // the longest a loop was paused
	Held      int64   `json:"held_ns"`   // the longest a loop waited with its window full
	Window    int64   `json:"window"`    // sum of the loops' windows
}

// add merges another loop's or process's figures.
func (w *rampWire) add(o rampWire) {
	w.Pushbacks += o.Pushbacks
	w.Cuts += o.Cuts
	w.MinRate += o.MinRate
	w.Below = max(w.Below, o.Below)
	w.Paused = max(w.Paused, o.Paused)
	w.Held = max(w.Held, o.Held)
	w.Window += o.Window
}

// finish stops publishing, stops reconnecting, takes the accounting cut
// (the end of the drain window), closes every connection (close 1000,
// waiting CloseTimeout for the echo) and returns the process's result.
func (e *clientSet) finish() *workerResult {
	e.series.sampleLive(e.plan.T0, mono(), e.liveNow())
	if e.pub != nil {
		e.pub.stopAndWait()
	}
	e.running.Store(false)
	var logs [][]pubRec
	if e.pub != nil && e.tp == nil {
		for _, u := range e.pub.users {
			logs = append(logs, u.log)
		}
	}
	var tlogs []*topicLog
	var tcounts SeqCounts
	tbad := map[int32]bool{}
	if e.tp != nil {
		tlogs = e.topicLogs()
	}
	e.bMu.Lock()
	blog := append([]pubRec(nil), e.bLog...)
	e.bMu.Unlock()

	r := &workerResult{Index: e.plan.Index, Hists: map[string]HistWire{}, Closes: map[string]int64{}, Errors: map[string]int64{}, Refusals: map[string]int64{}}
	var mu sync.Mutex
	e.onLoops(func(l *loop) {
		if l.ramping() {
			l.rc.advance(mono())
		}
		l.rampRate, l.churnRate = 0, 0
		l.rampStopped()
		var msgs, bc SeqCounts
		var open, notBack int64
		for _, s := range l.slots {
			switch {
			case e.resume:
				if logs != nil {
					msgs.add(s.msgs.accountResume(logs[s.user], s.msgs.open, &s.rs))
				}
				bc.add(s.bc.accountResume(blog, s.bc.open, &s.rs))
			default:
				if logs != nil {
					msgs.add(s.msgs.account(logs[s.user], s.msgs.open))
				}
				bc.add(s.bc.account(blog, s.bc.open))
			}
			if s.msgs.open || s.bc.open {
				open++
			} else if s.downUnexp {
				notBack++
			}
		}
		var tc SeqCounts
		bad := map[int32]bool{}
		if tlogs != nil {
			tc = l.accountTopics(tlogs, bad)
		}
		mu.Lock()
		tcounts.add(tc)
		for k := range bad {
			tbad[k] = true
		}
		r.Msgs.add(msgs)
		r.Bcast.add(bc)
		r.OpenAtEnd += open
		r.NotBack += notBack
		mu.Unlock()
		l.finishing = true
		if l.ivE2E.TotalCount() > 0 {
			e.series.addHist(l.ivIdx, l.ivE2E)
			l.ivE2E.Reset()
		}
		for _, s := range l.slots {
			s.want = false
			switch s.state {
			case stDown:
				l.w.Unlink(s)
			case stLive:
				s.closeGracefully(1000)
			case stClosing:
			default:
				s.finalClose("")
			}
		}
		l.checkFinished()
	})
	// Wait for the close handshakes (bounded by the close timeout on the wheel).
	for _, l := range e.loops {
		select {
		case <-l.finished:
		case <-time.After(e.plan.CloseTimeout + 5*time.Second):
		}
	}
	r.Final = e.progress()
	e.series.sampleUpTo(int((mono()-e.plan.T0)/int64(time.Second)), r.Final)
	e.series.sampleLiveLast(e.plan.T0, r.Final.At, r.Final.Live)
	e.closeLoops()
	if e.sink != nil {
		e.sink.close()
	}

	hs := map[string]*hdrhistogram.Histogram{}
	merge := func(name string, h *hdrhistogram.Histogram) {
		if hs[name] == nil {
			hs[name] = newHist()
		}
		hs[name].Merge(h)
	}
	bstats := map[int]*BroadcastStat{}
	for _, l := range e.loops {
		merge("upgrade", l.hUpgrade)
		merge("welcome", l.hWelcome)
		merge("e2e", l.hE2E)
		merge("broadcast", l.hBcast)
		merge("reconnect", l.hReconnect)
		merge("replay", l.hReplay)
		if e.tp != nil {
			merge("topic", l.hTopic)
			merge("subscribe", l.hSub)
		}
		for k, v := range l.closes {
			r.Closes[k] += v
		}
		for k, v := range l.errs {
			r.Errors[k] += v
		}
		for k, v := range l.refusals {
			r.Refusals[k] += v
		}
		if c := &l.rc; c.target > 0 {
			r.Ramp.add(rampWire{Pushbacks: c.pushbacks, Cuts: c.cuts, MinRate: c.minRate, Below: c.below, Paused: c.paused, Held: l.rampHeld, Window: int64(c.window)})
		}
		r.Foreign += l.st.foreign.Load()
		r.Misrouted += l.st.misrouted.Load()
		r.Refreshed += l.st.refreshed.Load()
		r.Churned += l.st.churned.Load()
		r.Unexpected += l.st.unexpected.Load()
		r.Resume.add(l.res)
		for i, b := range l.bstats {
			if b.Receivers == 0 {
				continue
			}
			t := bstats[i+1]
			if t == nil {
				t = &BroadcastStat{Seq: i + 1, First: b.First, Last: b.Last}
				bstats[i+1] = t
			}
			t.Receivers += b.Receivers
			t.First = min(t.First, b.First)
			t.Last = max(t.Last, b.Last)
		}
	}
	for i := range blog {
		if t := bstats[i+1]; t != nil {
			r.Broadcasts = append(r.Broadcasts, *t)
		} else {
			r.Broadcasts = append(r.Broadcasts, BroadcastStat{Seq: i + 1})
		}
	}
	for k, h := range hs {
		r.Hists[k] = exportHist(h)
	}
	if e.pub != nil {
		r.PubErrors = e.pub.errors()
		r.Behind = e.pub.behind.Load()
	}
	if e.tp != nil {
		r.Topic = &topicWire{}
		e.finishTopics(r.Topic, tcounts, tbad)
	}
	r.Mints = e.tokens.mints
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		r.CPUUser = float64(ru.Utime.Nano()) / 1e9
		r.CPUSys = float64(ru.Stime.Nano()) / 1e9
	}
	r.Series, r.Lats = e.series.take(1 << 30)
	r.Live = e.series.takeLive()
	return r
}

// seriesWire is a process's cumulative counters sampled at second I of
// the run.
type seriesWire struct {
	I         int     `json:"i"`
	Live      int64   `json:"live"`
	Welcomes  int64   `json:"welcomes"`
	Fails     int64   `json:"fails"`
	Closes    int64   `json:"closes"`
	Receipts  int64   `json:"receipts"`
	BReceipts int64   `json:"broadcast_receipts"`
	Acked     int64   `json:"acked"`
	RampRate  float64 `json:"ramp_rate,omitempty"`
}

// secHist is the end-to-end latencies (of messages, or in a broadcast run
// of the broadcasts' receipts) recorded during second Sec of the run (by
// some of a process's loops: a loop that stalled past the sample sends its
// part later, and the parent merges both).
type secHist struct {
	Sec int      `json:"sec"`
	H   HistWire `json:"h"`
}

// seriesCollector gathers the loops' per-second latency histograms and the
// reporter's samples.
type seriesCollector struct {
	mu     sync.Mutex
	hists  map[int]*hdrhistogram.Histogram
	points []seriesWire
	last   int // last second sampled
	// open connections every liveEvery (see timeline.go)
	live     []liveWire
	liveLast int
}

func (c *seriesCollector) init() {
	c.hists, c.last, c.liveLast = map[int]*hdrhistogram.Histogram{}, -1, -1
}

// addHist merges a loop's histogram of second i (the loop keeps h).
func (c *seriesCollector) addHist(i int, h *hdrhistogram.Histogram) {
	c.mu.Lock()
	if c.hists[i] == nil {
		c.hists[i] = newSeriesHist()
	}
	c.hists[i].Merge(h)
	c.mu.Unlock()
}

// sampleUpTo records the counters at every second after the last sampled
// up to sec (a late reporter fills the seconds it slept through).
func (c *seriesCollector) sampleUpTo(sec int, p Progress) {
	c.mu.Lock()
	for i := c.last + 1; i <= sec; i++ {
		c.points = append(c.points, seriesWire{I: i, Live: p.Live, Welcomes: p.Welcomes, Fails: p.Fails, Closes: p.Closes,
			Receipts: p.Receipts, BReceipts: p.BReceipts + p.TReceipts, Acked: p.Acked, RampRate: p.RampRate})
	}
	c.last = max(c.last, sec)
	c.mu.Unlock()
}

// take returns the points sampled since the last take and the histograms
// of the seconds before sec.
func (c *seriesCollector) take(sec int) ([]seriesWire, []secHist) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.points
	c.points = nil
	var hs []secHist
	for i, h := range c.hists {
		if i < sec {
			hs = append(hs, secHist{Sec: i, H: exportHist(h)})
			delete(c.hists, i)
		}
	}
	return p, hs
}

// backoff returns the delay before reconnect attempt a (0, 1, 2…): the
// exponential bound min(max, base·2^a), half of it fixed and half random
// ("equal jitter"), so a storm of reconnects spreads out but never retries
// at once.
func backoff(rng *rand.Rand, base, maxd time.Duration, a int) time.Duration {
	d := base
	for i := 0; i < a && d < maxd; i++ {
		d *= 2
	}
	d = min(d, maxd)
	if d <= 1 {
		return d
	}
	return d/2 + time.Duration(rng.Int64N(int64(d/2)+1))
}

package loadtest

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/protocol"
)

// The parent's side of the topic scenarios (topics.go): waiting for the
// subscriptions, live's publisher, the client publish check of rooms, and
// their figures in the result, the report and the verdict.

// livePub is a live run's publisher, in the parent.
type livePub struct {
	published, acked, failed, behind atomic.Int64
	mu                               sync.Mutex
	errs                             map[string]int64
	log                              []pubRec // the run's goroutine only
}

func (lp *livePub) fail(reason string) {
	lp.failed.Add(1)
	lp.mu.Lock()
	lp.errs[reason]++
	lp.mu.Unlock()
}

func (lp *livePub) errors() map[string]int64 {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	m := make(map[string]int64, len(lp.errs))
	for k, v := range lp.errs {
		m[k] = v
	}
	return m
}

// liveAnnounceEvery is how often the parent tells the processes what it
// published.
const liveAnnounceEvery = 100 * time.Millisecond

// waitSubscribed waits, at most --connect-timeout, for every connection
// of the run to be subscribed to its topic (when the ramp did not reach
// --conns, for every connection welcomed).
func (r *runner) waitSubscribed(ctx context.Context) {
	r.setPhase("subscribe")
	r.waitUntil(ctx, r.cfg.ConnectTimeout, func(p Progress, all []Progress) bool {
		done, ramped := true, true
		for _, q := range all {
			done = done && q.SubDone != 0
			ramped = ramped && q.RampDone != 0
		}
		return done || (!ramped && p.Subscribed >= p.EverWelcomed)
	})
	p, all := r.progress()
	r.subscribedAt = 0
	for _, q := range all {
		if q.SubDone == 0 {
			return
		}
	}
	r.subscribedAt = p.SubDone
}

// publishLive publishes --msg-rate messages a second to the live topic for
// --duration (or until ctx ends), numbered 1, 2, 3…, and announces them to
// the processes: every liveAnnounceEvery, and at the end, waiting for
// every process to have taken them. Through the router one request at a
// time (the topic's order is theirs); through NATS on one connection,
// flushed every 5 ms (the acknowledgement of the batch).
func (r *runner) publishLive(ctx context.Context, s *sink) {
	c := &r.cfg
	lp := r.lp
	path := "/v1/topics/" + url.PathEscape(c.Topic) + "/messages"
	subj := s.subj.Topic(c.Topic)
	announced := 0
	announce := func(final bool) {
		cmd := command{Cmd: "tpub", Seq: announced + 1, OK: final}
		for _, rec := range lp.log[announced:] {
			cmd.Ts = append(cmd.Ts, rec.t)
			cmd.Oks = append(cmd.Oks, rec.state == pubAcked)
		}
		if len(cmd.Ts) == 0 && !final {
			return
		}
		announced = len(lp.log)
		r.sendAll(cmd)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	end := start.Add(c.Duration)
	lastAnn := start
	var issued int64
	maxBacklog := int64(max(c.MsgRate/10, 1)) // 100 ms of messages
	body := make([]byte, 0, 256)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-tick.C:
		}
		now := time.Now()
		if !now.Before(end) {
			break
		}
		due := int64(c.MsgRate*now.Sub(start).Seconds()) - issued
		if due > maxBacklog { // fell behind: drop the backlog instead of bursting
			lp.behind.Add(due - maxBacklog)
			issued += due - maxBacklog
			due = maxBacklog
		}
		batch := len(lp.log)
		for ; due > 0 && ctx.Err() == nil; due-- {
			if s.client != nil && !time.Now().Before(end) {
				break // each request takes its time: the phase is over
			}
			seq := uint32(len(lp.log) + 1)
			t := mono()
			body = appendLiveBody(body[:0], r.runID, seq, t, c.Publish.MsgBytes)
			issued++
			lp.published.Add(1)
			rec := pubRec{t: t, state: pubAcked}
			if s.client != nil {
				if reason, _ := s.post(path, body); reason != "" {
					rec.state = pubFailed
					lp.fail(reason)
				} else {
					lp.acked.Add(1)
				}
				lp.log = append(lp.log, rec)
				continue
			}
			m := nats.NewMsg(subj)
			m.Header.Set(protocol.HeaderMsgID, "lt."+r.runID+".l."+strconv.FormatUint(uint64(seq), 10))
			m.Data = body
			if err := s.nc.PublishMsg(m); err != nil {
				rec.state = pubFailed
				lp.fail("nats_publish")
			}
			lp.log = append(lp.log, rec)
		}
		if s.nc != nil && len(lp.log) > batch {
			err := s.nc.FlushTimeout(c.Publish.Timeout)
			for i := batch; i < len(lp.log); i++ {
				switch {
				case lp.log[i].state != pubAcked:
				case err != nil:
					lp.log[i].state = pubFailed
					lp.fail("nats_flush")
				default:
					lp.acked.Add(1)
				}
			}
		}
		if time.Since(lastAnn) >= liveAnnounceEvery {
			announce(false)
			lastAnn = time.Now()
		}
	}
	announce(true)
	_ = r.waitReplies(context.Background(), "tannounced", c.Publish.Timeout+30*time.Second)
}

// probeClientPublish checks, before a rooms run publishes with
// --room-publish client, that a member's publish frame reaches its room:
// in each room its first members (one per gateway URL) publish a test
// message, which must come back to them within --connect-timeout (at most
// 5 s). Gateways without --client-topic-publish direct hand client frames
// to a service instead, and nothing would be delivered.
func (r *runner) probeClientPublish(ctx context.Context) bool {
	r.setPhase("probe")
	wait := min(r.cfg.ConnectTimeout, 5*time.Second)
	r.sendAll(command{Cmd: "probe"})
	_ = r.waitReplies(ctx, "probing", time.Minute)
	start := time.Now()
	r.waitUntil(ctx, wait, func(p Progress, _ []Progress) bool { return p.ProbeOK >= p.ProbeSent })
	r.sendAll(command{Cmd: "probe_end"})
	_ = r.waitReplies(context.Background(), "probe_ended", time.Minute)
	p, _ := r.progress()
	r.probe = &ProbeResult{Sent: p.ProbeSent, Back: p.ProbeOK, WaitSeconds: time.Since(start).Seconds(),
		Failed: ctx.Err() == nil && p.ProbeOK < p.ProbeSent}
	return !r.probe.Failed && ctx.Err() == nil
}

// TopicResult is about a live or rooms run's topic deliveries.
type TopicResult struct {
	Via      string `json:"via"`       // router, nats; rooms: client too (--room-publish)
	Topic    string `json:"topic"`     // live: the topic; rooms: the first room's
	Topics   int64  `json:"topics"`    // 1, or the rooms
	RoomSize int    `json:"room_size"` // rooms: members per room (the last may have fewer); live 0
	// Order is what out of order is counted against: "topic" (live),
	// "room" (rooms through the router or NATS: one publisher) or
	// "sender" (rooms whose members publish their own frames).
	Order string `json:"order"`
	// Subscribed counts the connections (slots) subscribed to their topic
	// at least once; AllSubscribedSeconds is when the last first did,
	// after the ramp's end (-1: not all did).
	Subscribed           int64        `json:"subscribed"`
	AllSubscribedSeconds float64      `json:"all_subscribed_s"`
	SubscribeLatency     LatencyStats `json:"subscribe_latency"` // subscribe sent → "subscribed"
	// Errors: subscribes refused (subscribe_refused_<code>), publish
	// frames refused (publish_refused_<code>, probe_refused_<code>),
	// subscriptions the gateway ended (unsubscribed_by_gateway).
	Errors     map[string]int64 `json:"errors"`
	Probe      *ProbeResult     `json:"client_publish_check"` // rooms --room-publish client
	RateTarget float64          `json:"rate_target"`
	Rate       float64          `json:"rate"`
	Published  int64            `json:"published"`
	Acked      int64            `json:"acked"` // router 202, NATS flush; client: the frame written to the member's socket
	Failed     int64            `json:"failed"`
	Skipped    int64            `json:"skipped_behind"`
	PubErrors  map[string]int64 `json:"publish_errors"`
	Counts     SeqCounts        `json:"counts"` // summed over the devices (and rooms)
	Foreign    int64            `json:"foreign"`
	Misrouted  int64            `json:"misrouted"` // a message of another topic (room) of the run
	Latency    LatencyStats     `json:"latency"`   // publish → receipt, every first receipt
	Histogram  []HistBucket     `json:"histogram"`
	Fanout     *FanoutResult    `json:"fanout"` // live
	// RoomsFailed counts the rooms (topics) with a delivery lost,
	// duplicated, out of order or missed after a gateway close.
	RoomsFailed int64  `json:"rooms_failed"`
	DrainEnd    string `json:"drain_end"`
}

// FanoutResult is how long each live message took to reach every
// subscriber: from its publish to its first and its last receipt over
// every connection.
type FanoutResult struct {
	Messages     int64        `json:"messages"` // acknowledged messages received at all
	First        LatencyStats `json:"first"`
	Last         LatencyStats `json:"last"` // the fan-out time
	Histogram    []HistBucket `json:"histogram"`
	MinReceivers int64        `json:"min_receivers"`
	MaxReceivers int64        `json:"max_receivers"`
}

// ProbeResult is the client publish check of a rooms run with
// --room-publish client.
type ProbeResult struct {
	Sent        int64            `json:"sent"`
	Back        int64            `json:"back"`
	WaitSeconds float64          `json:"wait_s"`
	NotBack     map[string]int64 `json:"not_back"` // by the gateway URL the sender used
	Refused     map[string]int64 `json:"refused"`  // error codes the gateways answered
	Failed      bool             `json:"failed"`
}

// topicResult sums the workers' topic figures.
func (r *runner) topicResult(results []*workerResult, hs map[string]*hdrhistogram.Histogram, perrs map[string]int64, behind int64, sum Progress) (*TopicResult, []string) {
	c := &r.cfg
	var problems []string
	tr := &TopicResult{Via: c.topicVia(), Topic: c.Topic, Topics: 1, Order: "topic", RateTarget: c.MsgRate,
		Errors: map[string]int64{}, PubErrors: perrs, Skipped: behind, AllSubscribedSeconds: -1,
		Latency: statsOf(hs["topic"]), Histogram: orEmpty(logBuckets(hs["topic"])), SubscribeLatency: statsOf(hs["subscribe"]),
		DrainEnd: r.drainEnd}
	if tr.DrainEnd == "" {
		tr.DrainEnd = "none: nothing was published"
	}
	if c.Scenario == ScenarioRooms {
		tr.Topic, tr.Topics, tr.RoomSize, tr.Order = roomTopic(c.RoomPrefix, r.runID, 0), int64(c.rooms()), c.RoomSize, "room"
		if c.RoomPublish == RoomPublishClient {
			tr.Order = "sender"
		}
	}
	tr.Published, tr.Acked, tr.Failed = sum.Published, sum.Acked, sum.PubFailed
	var fan fanWire
	if pr := r.probe; pr != nil {
		p := *pr
		p.NotBack, p.Refused = map[string]int64{}, map[string]int64{}
		tr.Probe = &p
	}
	for _, w := range results {
		t := w.Topic
		if t == nil {
			problems = append(problems, fmt.Sprintf("worker %d sent no topic figures", w.Index))
			continue
		}
		tr.Counts.add(t.Counts)
		tr.Subscribed += t.Subscribed
		tr.Foreign += t.Foreign
		tr.Misrouted += t.Misrouted
		tr.RoomsFailed += t.RoomsBad
		for k, v := range t.Errors {
			tr.Errors[k] += v
			if code, ok := strings.CutPrefix(k, "probe_refused_"); ok && tr.Probe != nil {
				tr.Probe.Refused[code] += v
			}
		}
		if tr.Probe != nil {
			for k, v := range t.NotBack {
				tr.Probe.NotBack[k] += v
			}
		}
		fan.merge(t.Fan)
	}
	if r.subscribedAt != 0 {
		_, all := r.progress()
		var rampDone int64
		for _, p := range all {
			rampDone = max(rampDone, p.RampDone)
		}
		if rampDone != 0 {
			tr.AllSubscribedSeconds = max(float64(r.subscribedAt-rampDone)/1e9, 0)
		}
	}
	if secs := c.Duration.Seconds(); secs > 0 {
		tr.Rate = float64(tr.Acked) / secs
	}
	if lp := r.lp; lp != nil {
		tr.PubErrors = lp.errors()
		tr.Skipped = lp.behind.Load()
		f := &FanoutResult{}
		first, last := newHist(), newHist()
		for i, rec := range lp.log {
			if rec.state != pubAcked {
				continue
			}
			var n int64
			if i < len(fan.N) {
				n = int64(fan.N[i])
			}
			if f.Messages == 0 || n < f.MinReceivers {
				f.MinReceivers = n
			}
			f.MaxReceivers = max(f.MaxReceivers, n)
			f.Messages++
			if n > 0 {
				recordMicros(first, fan.First[i]-rec.t)
				recordMicros(last, fan.Last[i]-rec.t)
			}
		}
		f.First, f.Last, f.Histogram = statsOf(first), statsOf(last), orEmpty(logBuckets(last))
		hs["fanout"] = last
		tr.Fanout = f
	}
	return tr, problems
}

// topicRows writes a live or rooms run's section of the report.
func topicRows(w io.Writer, t *TopicResult, res *Result) {
	switch {
	case t.RoomSize > 0:
		fmt.Fprintf(w, "rooms (%s rooms of %s members, publish %s, target %s/s)\n", th(t.Topics), th(int64(t.RoomSize)), t.Via, th(int64(t.RateTarget)))
		last := t.Topic
		if i := strings.LastIndexByte(last, '.'); i >= 0 && t.Topics > 1 {
			last = last[:i+1] + strconv.FormatInt(t.Topics-1, 10)
		}
		if last != t.Topic {
			fmt.Fprintf(w, "  topics\t%s … %s\n", t.Topic, last)
		} else {
			fmt.Fprintf(w, "  topics\t%s\n", t.Topic)
		}
	default:
		fmt.Fprintf(w, "topic %s (via %s, target %s/s)\n", t.Topic, t.Via, th(int64(t.RateTarget)))
	}
	all := "not all subscribed"
	if t.AllSubscribedSeconds >= 0 {
		all = fmt.Sprintf("all %.2f s after the ramp", t.AllSubscribedSeconds)
	}
	fmt.Fprintf(w, "  subscribed\t%s of %s connections\t%s\n", th(t.Subscribed), th(int64(res.Connections.Target)), all)
	latRow(w, "subscribe (sent → subscribed)", t.SubscribeLatency)
	if p := t.Probe; p != nil {
		fmt.Fprintf(w, "  client publish check\t%s of %s test messages back\tin %.2f s\n", th(p.Back), th(p.Sent), p.WaitSeconds)
	}
	fmt.Fprintf(w, "  published\t%s\tacknowledged %s\tfailed %s\tskipped (behind) %s\n", th(t.Published), th(t.Acked), th(t.Failed), th(t.Skipped))
	for _, k := range sortedKeys(t.PubErrors) {
		fmt.Fprintf(w, "  publish error %s\t%s\n", k, th(t.PubErrors[k]))
	}
	seqRows(w, t.Counts)
	if t.Counts.Pending > 0 {
		fmt.Fprintf(w, "  lost but pending\t%s\tnothing later received: the connections were behind at the end (drain ended %s)\n", th(t.Counts.Pending), t.DrainEnd)
	}
	for _, k := range sortedKeys(t.Errors) {
		fmt.Fprintf(w, "  topic error %s\t%s\n", k, th(t.Errors[k]))
	}
	if t.Foreign+t.Misrouted > 0 {
		fmt.Fprintf(w, "  foreign\t%s\tmisrouted %s\n", th(t.Foreign), th(t.Misrouted))
	}
	latRow(w, "end-to-end latency", t.Latency)
	if f := t.Fanout; f != nil {
		latRow(w, "fan-out (publish → last receipt)", f.Last)
		latRow(w, "publish → first receipt", f.First)
		fmt.Fprintf(w, "  receivers per message\tmin %s\tmax %s\t(%s messages)\n", th(f.MinReceivers), th(f.MaxReceivers), th(f.Messages))
	}
	if t.RoomSize > 0 {
		fmt.Fprintf(w, "  rooms failed\t%s of %s\tout of order counted per %s\n", th(t.RoomsFailed), th(t.Topics), t.Order)
	}
	fmt.Fprintf(w, "  drain ended\t%s\n", t.DrainEnd)
}

// topicFailures are a topic run's reasons to fail, besides its counts'.
func topicFailures(res *Result, add func(delivery bool, format string, args ...any)) {
	t := res.Topics
	if t == nil {
		return
	}
	if p := t.Probe; p != nil && p.Failed {
		add(false, "%s", probeFailure(p))
	}
	subErrs := map[string]int64{}
	var refused, unsub int64
	pubErrs := map[string]int64{}
	for k, v := range t.Errors {
		switch {
		case strings.HasPrefix(k, "subscribe_refused_"):
			subErrs[strings.TrimPrefix(k, "subscribe_refused_")] += v
		case strings.HasPrefix(k, "publish_refused_"):
			refused += v
			pubErrs[strings.TrimPrefix(k, "publish_refused_")] += v
		case k == "unsubscribed_by_gateway":
			unsub += v
		}
	}
	if n := res.Connections.EverWelcomed - t.Subscribed; n > 0 {
		add(false, "%s of %s welcomed connections were never subscribed to their topic%s", th(n), th(res.Connections.EverWelcomed), reasons(subErrs, n))
	}
	if unsub > 0 {
		add(false, "the gateway ended %s subscriptions (unsubscribed)", th(unsub))
	}
	if t.Failed > 0 {
		add(false, "%s of %s topic publishes failed%s", th(t.Failed), th(t.Published), reasons(t.PubErrors, t.Failed))
	}
	if refused > 0 {
		add(false, "the gateways refused %s publish frames to a room%s", th(refused), reasons(pubErrs, refused))
	}
}

// probeFailure says why a client publish check failed.
func probeFailure(p *ProbeResult) string {
	var refused int64
	for _, v := range p.Refused {
		refused += v
	}
	head := fmt.Sprintf("--room-publish client: %s of %s test messages the members published to their rooms did not come back within %.1f s", th(p.Sent-p.Back), th(p.Sent), p.WaitSeconds)
	if p.Back == 0 {
		head = fmt.Sprintf("--room-publish client: none of the %s test messages the members published to their rooms came back within %.1f s", th(p.Sent), p.WaitSeconds)
	}
	var via string
	if len(p.NotBack) > 0 && p.Back > 0 {
		via = " (sent through " + strings.Join(sortedKeys(p.NotBack), ", ") + ")"
	}
	if refused > 0 {
		return head + via + fmt.Sprintf(": the gateways refused %s of them%s: the tokens list the room in their publish claim (--jwt-publish-claim), which must be the gateways' --jwt-publish-claim, and the gateways must run with --client-topic-publish direct",
			th(refused), reasons(p.Refused, refused))
	}
	return head + via + ": the gateways hand client publish frames to a service (on <prefix>.in.topic.<topic>: --client-topic-publish service, their default), so nothing reaches the room; start them with --client-topic-publish direct, or publish with --room-publish router or nats"
}

func topicCounts(r *Result) *SeqCounts {
	if r.Topics == nil {
		return nil
	}
	return &r.Topics.Counts
}

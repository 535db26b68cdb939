package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/protocol"
)

// PublishConfig says how messages reach the fleet.
type PublishConfig struct {
	Via           string        `json:"via"` // "router" or "nats"
	RouterURL     string        `json:"router_url,omitempty"`
	APIKey        string        `json:"api_key,omitempty"`
	NATSURL       string        `json:"nats_url,omitempty"`
	SubjectPrefix string        `json:"subject_prefix"`
	MsgBytes      int           `json:"msg_bytes"`   // size of the data JSON, padded
	Concurrency   int           `json:"concurrency"` // router requests in flight per process
	Timeout       time.Duration `json:"timeout"`     // per request or flush
	// JetStream publishes through JetStream (--resume with --via nats):
	// acknowledged by the history stream's ack, which carries the
	// message's id (its stream sequence).
	JetStream bool `json:"jetstream,omitempty"`
}

// sink publishes one message body, to a user or to everyone, and says
// whether the fleet acknowledged it.
type sink struct {
	cfg    PublishConfig
	subj   protocol.Subjects
	client *http.Client
	nc     *nats.Conn
	js     jetstream.JetStream // cfg.JetStream
}

func newSink(cfg PublishConfig) (*sink, error) {
	s := &sink{cfg: cfg}
	var err error
	if s.subj, err = protocol.NewSubjects(cfg.SubjectPrefix); err != nil {
		return nil, fmt.Errorf("--subject-prefix: %v", err)
	}
	switch cfg.Via {
	case "router":
		if cfg.RouterURL == "" {
			return nil, errors.New("--via router needs --router-url")
		}
		if cfg.APIKey == "" {
			return nil, errors.New("--via router needs --api-key (or LOADTEST_API_KEY)")
		}
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			MaxIdleConnsPerHost: cfg.Concurrency + 4,
			MaxConnsPerHost:     cfg.Concurrency + 4,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}
		s.client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	case "nats":
		s.nc, err = nats.Connect(cfg.NATSURL, nats.Name("wsfleet-loadtest"), nats.Timeout(cfg.Timeout),
			nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("--nats-url %s: %v", cfg.NATSURL, err)
		}
		if cfg.JetStream {
			s.js, err = jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(cfg.Timeout), jetstream.WithPublishAsyncMaxPending(1<<16))
			if err != nil {
				s.nc.Close()
				return nil, fmt.Errorf("--nats-url %s: JetStream: %v", cfg.NATSURL, err)
			}
		}
	default:
		return nil, fmt.Errorf("--via %q: want router or nats", cfg.Via)
	}
	return s, nil
}

func (s *sink) close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
}

// post sends one router request; "" means 202. id is the message's
// stream sequence when the router's answer gives one (a router with
// --resume answers it as its "id"), else 0.
func (s *sink) post(path string, body []byte) (reason string, id uint64) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.cfg.RouterURL+path, bytes.NewReader(body))
	if err != nil {
		return "bad_request", 0
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return httpReason(err, s.cfg.RouterURL), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusAccepted {
		var a struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &a)
		return "", streamSeq(a.ID)
	}
	return statusReason(resp.StatusCode, b), 0
}

// jsReason names a failed JetStream publish.
func jsReason(err error) string {
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "jetstream_no_stream"
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "jetstream_ack_timeout"
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return "jetstream_stalled"
	}
	return "jetstream_publish"
}

// jsAck waits for a JetStream publish's ack, at most the publish timeout
// from now.
func (s *sink) jsAck(f jetstream.PubAckFuture, timer *time.Timer) (string, uint64) {
	timer.Reset(s.cfg.Timeout)
	select {
	case a := <-f.Ok():
		return "", a.Sequence
	case err := <-f.Err():
		return jsReason(err), 0
	case <-timer.C:
		return "jetstream_ack_timeout", 0
	}
}

// statusReason names a router answer: "http_<status>_<code>", the code
// from the router's error body ({"code","reason"}).
func statusReason(status int, body []byte) string {
	var e struct {
		Code string `json:"code"` // the router's error body: {"code","reason"}
	}
	_ = json.Unmarshal(body, &e)
	r := "http_" + strconv.Itoa(status)
	if e.Code != "" {
		r += "_" + e.Code
	}
	return r
}

// httpReason names a router request that got no answer, saying where to:
// "connection refused to http://127.0.0.1:8090", "http_timeout", …
func httpReason(err error, base string) string {
	base = strings.TrimRight(base, "/")
	var ne net.Error
	var dns *net.DNSError
	var errno syscall.Errno
	switch {
	case errors.As(err, &dns):
		return "cannot resolve " + dns.Name + " (" + base + ")"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused to " + base
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset by " + base
	case errors.As(err, &ne) && ne.Timeout():
		return "http_timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by " + base + " without an answer"
	case errors.As(err, &errno):
		return "http error to " + base + ": " + errName(errno)
	}
	return "http error to " + base
}

// checkRouter makes one authenticated request to the router (GET
// /v1/stats, which needs the API key and changes nothing) before the run
// starts its connections: a wrong key or a URL that is not the router's API
// is a *UsageError; a router that does not answer is an error. A router
// that refuses the connection is tried again for up to wait (it may be
// starting beside the load tester). Any other answer means the key was
// accepted: the router checks credentials before anything but the route.
func checkRouter(ctx context.Context, cfg PublishConfig, wait time.Duration) error {
	base := strings.TrimRight(cfg.RouterURL, "/")
	client := &http.Client{Timeout: cfg.Timeout}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(wait)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/stats", nil)
		if err != nil {
			return usagef("--router-url %q: %v", cfg.RouterURL, err)
		}
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
		resp, err := client.Do(req)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
				continue
			}
			return fmt.Errorf("--router-url %s: %s (is the router running there?)", base, httpReason(err, base))
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		var e struct {
			Reason string `json:"reason"` // the router's error body: {"code","reason"}
		}
		_ = json.Unmarshal(b, &e)
		why := statusReason(resp.StatusCode, b)
		if e.Reason != "" {
			why += ": " + e.Reason
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return usagef("--api-key: the router at %s refused it (GET /v1/stats: %s); give it one of the router's API keys (its --api-key, WSFLEET_ROUTER_API_KEY)",
				base, why)
		case http.StatusNotFound:
			return usagef("--router-url %s: GET /v1/stats answered 404: not a wsfleet router's API address", base)
		}
		return nil
	}
}

// broadcast publishes one broadcast and waits for the acknowledgement;
// seq is its stream sequence when the answer gives it (else 0).
func (s *sink) broadcast(body []byte, id string) (reason string, seq uint64) {
	if s.client != nil {
		return s.post("/v1/broadcast", body)
	}
	m := nats.NewMsg(s.subj.Broadcast())
	m.Header.Set(protocol.HeaderMsgID, id)
	m.Data = body
	if s.js != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		defer cancel()
		a, err := s.js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		if err != nil {
			return jsReason(err), 0
		}
		return "", a.Sequence
	}
	if err := s.nc.PublishMsg(m); err != nil {
		return "nats_publish", 0
	}
	if err := s.nc.FlushTimeout(s.cfg.Timeout); err != nil {
		return "nats_flush", 0
	}
	return "", 0
}

// checkHistory makes sure, before a --resume --via nats run starts its
// connections, that NATS answers and holds the history stream the
// publishes go to (the gateways create it when they start with --resume):
// a NATS that refuses the connection, or a stream not there yet, is tried
// again for up to wait (the fleet may be starting beside the load tester).
func checkHistory(ctx context.Context, cfg PublishConfig, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	pause := func() bool {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
		return true
	}
	var nc *nats.Conn
	for {
		var err error
		nc, err = nats.Connect(cfg.NATSURL, nats.Name("wsfleet-loadtest-check"), nats.Timeout(cfg.Timeout))
		if err == nil {
			break
		}
		if !pause() {
			return fmt.Errorf("--nats-url %s: %v (is NATS running there?)", cfg.NATSURL, err)
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("--nats-url %s: JetStream: %v", cfg.NATSURL, err)
	}
	name := history.StreamName(cfg.SubjectPrefix)
	for {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		_, err := js.Stream(cctx, name)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("--resume --via nats: NATS at %s has no JetStream, so no history stream: is it the fleet's NATS, and does the fleet run with --resume?", cfg.NATSURL)
		}
		if !pause() {
			return fmt.Errorf("--resume --via nats: NATS at %s has no history stream %s (%v): is the gateway running with --resume (and --subject-prefix %s)?",
				cfg.NATSURL, name, err, cfg.SubjectPrefix)
		}
	}
}

// appendBody appends a message's data JSON, padded to size bytes:
//
//	{"lt":"<run>","u":<user>,"s":<seq>,"t":<mono ns>,"p":"xxx"}   to a user
//	{"lt":"<run>","b":<seq>,"t":<mono ns>,"p":"xxx"}               broadcast
func appendBody(dst []byte, run string, user int, bcast bool, seq uint32, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"lt":"`...)
	dst = append(dst, run...)
	if bcast {
		dst = append(dst, `","b":`...)
	} else {
		dst = append(dst, `","u":`...)
		dst = strconv.AppendInt(dst, int64(user), 10)
		dst = append(dst, `,"s":`...)
	}
	dst = strconv.AppendUint(dst, uint64(seq), 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	if pad := size - (len(dst) - start) - len(`,"p":""}`); pad > 0 {
		dst = append(dst, `,"p":"`...)
		for i := 0; i < pad; i++ {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// pubUser is one user as the publisher sees it.
type pubUser struct {
	num  int    // the n of <prefix><n>
	path string // router path
	subj string // NATS subject
	log  []pubRec
	busy bool // a router request for this user is in flight
}

// publisher publishes to random users of its process at a steady rate. One
// goroutine (run) owns the users and their logs; with the router, requests
// run on Concurrency goroutines and at most one per user is in flight, so
// each user's messages reach NATS in their numbering order.
type publisher struct {
	s     *sink
	run   string
	users []*pubUser
	// stamp takes the publish time of a message to user u and the number of
	// the user's sessions open then (under the lock their welcomes take).
	stamp func(u int) (int64, int32)
	// eligible adds to the deliveries the fleet owes (acknowledged
	// messages times the sessions open at their publish).
	eligible *atomic.Int64

	published, acked, failed, behind atomic.Int64
	errMu                            sync.Mutex
	errs                             map[string]int64

	// logMu guards the users' logs (appended to and completed by the
	// publishing goroutine, read by writeOff from the event loops) and
	// off: per message still unanswered, the sessions open at its publish
	// that closed without it.
	logMu sync.Mutex
	off   map[[2]int]int32

	stop chan struct{}
	done chan struct{}

	size int // each message's data JSON, padded (--msg-bytes)
	// rooms: the users are the process's rooms (num: the global room
	// number), members their sizes; each message is from a random member.
	// send, with --room-publish client, has the member publish it (its
	// own publish frame, on its loop) and calls done once it is written.
	rooms   bool
	members []int
	send    func(u, member int, body []byte, done func(reason string))
}

func newPublisher(s *sink, run string, userNums []int, names []string, stamp func(int) (int64, int32), eligible *atomic.Int64) *publisher {
	p := &publisher{s: s, run: run, stamp: stamp, eligible: eligible, errs: map[string]int64{}, off: map[[2]int]int32{}, size: s.cfg.MsgBytes}
	for i, n := range userNums {
		u := &pubUser{num: n, path: "/v1/users/" + url.PathEscape(names[i]) + "/messages"}
		u.subj, _ = s.subj.UserID(names[i])
		p.users = append(p.users, u)
	}
	return p
}

// newRoomPublisher publishes to the process's rooms (topics.go): through
// s (--room-publish router or nats) or, with s nil (client), as the
// members themselves through send.
func newRoomPublisher(s *sink, plan *workerPlan, tp *topicSet, send func(u, member int, body []byte, done func(string))) *publisher {
	p := &publisher{s: s, run: plan.RunID, stamp: tp.stamp, eligible: &tp.elig, errs: map[string]int64{}, off: map[[2]int]int32{},
		size: plan.Publish.MsgBytes, rooms: true}
	if s == nil {
		p.send = send
	}
	for _, r := range tp.rooms {
		u := &pubUser{num: r.num, path: "/v1/topics/" + url.PathEscape(r.topic) + "/messages"}
		if s != nil {
			u.subj = s.subj.Topic(r.topic)
		}
		p.users = append(p.users, u)
		p.members = append(p.members, len(r.members))
	}
	return p
}

type pubJob struct {
	u    int
	seq  uint32
	body []byte
}

type pubResult struct {
	u      int
	seq    uint32
	live   int32
	reason string
	id     uint64 // the stream sequence, when the answer gave it
	ack    jetstream.PubAckFuture
}

// start publishes rate messages a second until stopAndWait.
func (p *publisher) start(rate float64, seed uint64) {
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.loop(rate, seed)
}

// stopAndWait stops publishing and waits for requests in flight.
func (p *publisher) stopAndWait() {
	if p.stop == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *publisher) errorf(reason string) {
	p.errMu.Lock()
	p.errs[reason]++
	p.errMu.Unlock()
}

func (p *publisher) errors() map[string]int64 {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	m := make(map[string]int64, len(p.errs))
	for k, v := range p.errs {
		m[k] = v
	}
	return m
}

func (p *publisher) loop(rate float64, seed uint64) {
	defer close(p.done)
	if len(p.users) == 0 || rate <= 0 {
		<-p.stop
		return
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	conc := 1
	var jobs chan pubJob
	// a client publish's answer comes from an event loop, which must not
	// wait: room for one per room (at most one in flight per room)
	results := make(chan pubResult, max(1024, len(p.users)))
	live := make(map[[2]int]int32) // (u, seq) -> sessions open at publish, for the router's results
	var wg sync.WaitGroup
	if p.send == nil && p.s.client != nil {
		conc = max(1, p.s.cfg.Concurrency)
		jobs = make(chan pubJob)
		for i := 0; i < conc; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					r, id := p.s.post(p.users[j.u].path, j.body)
					results <- pubResult{u: j.u, seq: j.seq, reason: r, id: id}
				}
			}()
		}
	}
	inflight := 0
	complete := func(r pubResult) {
		u := p.users[r.u]
		u.busy = false
		inflight--
		k := [2]int{r.u, int(r.seq)}
		p.logMu.Lock()
		rec := &u.log[r.seq-1]
		if r.reason == "" {
			rec.state = pubAcked
			rec.id = r.id
			p.acked.Add(1)
			// owed to the sessions open at the publish, but those that
			// closed since without it owe nothing more
			p.eligible.Add(int64(live[k] - p.off[k]))
		} else {
			rec.state = pubFailed
			p.failed.Add(1)
			p.errorf(r.reason)
		}
		delete(p.off, k)
		p.logMu.Unlock()
		delete(live, k)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	t0 := time.Now()
	var issued int64
	maxBacklog := int64(max(rate/10, 1)) // 100 ms of messages
	body := make([]byte, 0, 256)
	var batch []pubResult // NATS: published, waiting for the flush (JetStream: for the acks)
	ackTimer := time.NewTimer(time.Hour)
	defer ackTimer.Stop()
	stopped := false
	for !stopped {
		select {
		case <-p.stop:
			stopped = true
			continue
		case r := <-results:
			complete(r)
			continue
		case <-tick.C:
		}
		due := int64(rate*time.Since(t0).Seconds()) - issued
		if due > maxBacklog { // fell behind: drop the backlog instead of bursting
			p.behind.Add(due - maxBacklog)
			issued += due - maxBacklog
			due = maxBacklog
		}
		for ; due > 0; due-- {
			if jobs != nil && inflight >= conc {
				break // every request goroutine is busy
			}
			ui := p.pick(rng)
			if ui < 0 {
				break
			}
			u := p.users[ui]
			seq := uint32(len(u.log) + 1)
			from := 0
			if p.rooms {
				from = rng.IntN(p.members[ui])
			}
			t, nlive := p.stamp(ui)
			p.logMu.Lock()
			u.log = append(u.log, pubRec{t: t})
			p.logMu.Unlock()
			if p.rooms {
				body = appendRoomBody(body[:0], p.run, u.num, seq, from, t, p.size)
			} else {
				body = appendBody(body[:0], p.run, u.num, false, seq, t, p.size)
			}
			issued++
			p.published.Add(1)
			if p.send != nil {
				u.busy = true
				inflight++
				live[[2]int{ui, int(seq)}] = nlive
				ui, seq := ui, seq
				p.send(ui, from, append([]byte(nil), body...), func(reason string) {
					results <- pubResult{u: ui, seq: seq, reason: reason}
				})
				continue
			}
			if jobs != nil {
				u.busy = true
				inflight++
				live[[2]int{ui, int(seq)}] = nlive
				jobs <- pubJob{u: ui, seq: seq, body: append([]byte(nil), body...)}
				continue
			}
			m := nats.NewMsg(u.subj)
			msgID := "lt." + p.run + "." + strconv.Itoa(u.num) + "." + strconv.Itoa(int(seq))
			m.Header.Set(protocol.HeaderMsgID, msgID)
			m.Data = body
			r := pubResult{u: ui, seq: seq}
			if p.s.js != nil {
				// the body is copied: the future keeps the message
				m.Data = append([]byte(nil), body...)
				f, err := p.s.js.PublishMsgAsync(m, jetstream.WithMsgID(msgID))
				if err != nil {
					r.reason = jsReason(err)
				}
				r.ack = f
			} else if err := p.s.nc.PublishMsg(m); err != nil {
				r.reason = "nats_publish"
			}
			inflight++
			live[[2]int{ui, int(seq)}] = nlive
			batch = append(batch, r)
		}
		if len(batch) > 0 {
			if p.s.js != nil {
				// each message's ack, in publish order
				for i := range batch {
					if batch[i].reason == "" && batch[i].ack != nil {
						batch[i].reason, batch[i].id = p.s.jsAck(batch[i].ack, ackTimer)
					}
					batch[i].ack = nil
				}
			} else if err := p.s.nc.FlushTimeout(p.s.cfg.Timeout); err != nil {
				for i := range batch {
					if batch[i].reason == "" {
						batch[i].reason = "nats_flush"
					}
				}
			}
			for _, r := range batch {
				complete(r)
			}
			batch = batch[:0]
		}
	}
	if jobs != nil {
		close(jobs)
	}
	if jobs != nil || p.send != nil {
		for inflight > 0 {
			complete(<-results)
		}
		wg.Wait()
	}
}

// writeOff takes the deliveries a session owed and never got off the
// outstanding count when it closes: seqs are the numbers of user u's
// messages published while it was open that it did not receive. An
// acknowledged one is taken off now; one still unanswered when its answer
// comes (a failed one was never counted).
func (p *publisher) writeOff(u int, seqs []uint32) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	log := p.users[u].log
	var n int64
	for _, seq := range seqs {
		switch {
		case int(seq) > len(log) || log[seq-1].state == pubPending:
			p.off[[2]int{u, int(seq)}]++
		case log[seq-1].state == pubAcked:
			n++
		}
	}
	p.eligible.Add(-n)
}

// pick returns a random user with no request in flight, or -1.
func (p *publisher) pick(rng *rand.Rand) int {
	n := len(p.users)
	i := rng.IntN(n)
	for k := 0; k < n && k < 64; k++ {
		j := (i + k) % n
		if !p.users[j].busy {
			return j
		}
	}
	return -1
}

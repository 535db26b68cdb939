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
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

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
}

// sink publishes one message body, to a user or to everyone, and says
// whether the fleet acknowledged it.
type sink struct {
	cfg    PublishConfig
	subj   protocol.Subjects
	client *http.Client
	nc     *nats.Conn
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

// post sends one router request; "" means 202.
func (s *sink) post(path string, body []byte) string {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.cfg.RouterURL+path, bytes.NewReader(body))
	if err != nil {
		return "bad_request"
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "http_timeout"
		}
		return "http_error"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusAccepted {
		return ""
	}
	var e struct {
		Code string `json:"code"` // the router's error body: {"code","message"}
	}
	_ = json.Unmarshal(b, &e)
	r := "http_" + strconv.Itoa(resp.StatusCode)
	if e.Code != "" {
		r += "_" + e.Code
	}
	return r
}

// broadcast publishes one broadcast and waits for the acknowledgement.
func (s *sink) broadcast(body []byte, id string) string {
	if s.client != nil {
		return s.post("/v1/broadcast", body)
	}
	m := nats.NewMsg(s.subj.Broadcast())
	m.Header.Set(protocol.HeaderMsgID, id)
	m.Data = body
	if err := s.nc.PublishMsg(m); err != nil {
		return "nats_publish"
	}
	if err := s.nc.FlushTimeout(s.cfg.Timeout); err != nil {
		return "nats_flush"
	}
	return ""
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

	stop chan struct{}
	done chan struct{}
}

func newPublisher(s *sink, run string, userNums []int, names []string, stamp func(int) (int64, int32), eligible *atomic.Int64) *publisher {
	p := &publisher{s: s, run: run, stamp: stamp, eligible: eligible, errs: map[string]int64{}}
	for i, n := range userNums {
		u := &pubUser{num: n, path: "/v1/users/" + url.PathEscape(names[i]) + "/messages"}
		u.subj, _ = s.subj.UserID(names[i])
		p.users = append(p.users, u)
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
	results := make(chan pubResult, 1024)
	live := make(map[[2]int]int32) // (u, seq) -> sessions open at publish, for the router's results
	var wg sync.WaitGroup
	if p.s.client != nil {
		conc = max(1, p.s.cfg.Concurrency)
		jobs = make(chan pubJob)
		for i := 0; i < conc; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					r := p.s.post(p.users[j.u].path, j.body)
					results <- pubResult{u: j.u, seq: j.seq, reason: r}
				}
			}()
		}
	}
	inflight := 0
	complete := func(r pubResult) {
		u := p.users[r.u]
		u.busy = false
		inflight--
		rec := &u.log[r.seq-1]
		if r.reason == "" {
			rec.state = pubAcked
			p.acked.Add(1)
			p.eligible.Add(int64(live[[2]int{r.u, int(r.seq)}]))
		} else {
			rec.state = pubFailed
			p.failed.Add(1)
			p.errorf(r.reason)
		}
		delete(live, [2]int{r.u, int(r.seq)})
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	t0 := time.Now()
	var issued int64
	maxBacklog := int64(max(rate/10, 1)) // 100 ms of messages
	body := make([]byte, 0, 256)
	var batch []pubResult // NATS: published, waiting for the flush
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
			t, nlive := p.stamp(ui)
			u.log = append(u.log, pubRec{t: t})
			body = appendBody(body[:0], p.run, u.num, false, seq, t, p.s.cfg.MsgBytes)
			issued++
			p.published.Add(1)
			if jobs != nil {
				u.busy = true
				inflight++
				live[[2]int{ui, int(seq)}] = nlive
				jobs <- pubJob{u: ui, seq: seq, body: append([]byte(nil), body...)}
				continue
			}
			m := nats.NewMsg(u.subj)
			m.Header.Set(protocol.HeaderMsgID, "lt."+p.run+"."+strconv.Itoa(u.num)+"."+strconv.Itoa(int(seq)))
			m.Data = body
			reason := ""
			if err := p.s.nc.PublishMsg(m); err != nil {
				reason = "nats_publish"
			}
			inflight++
			live[[2]int{ui, int(seq)}] = nlive
			batch = append(batch, pubResult{u: ui, seq: seq, reason: reason})
		}
		if len(batch) > 0 {
			if err := p.s.nc.FlushTimeout(p.s.cfg.Timeout); err != nil {
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
		for inflight > 0 {
			complete(<-results)
		}
		wg.Wait()
	}
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

package router

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// The NATS request API: the HTTP API's operations for services on NATS,
// as request/reply on <prefix>.router.<op>, in the queue group
// "wsfleet-router" so one router replica answers each request. Request
// bodies mirror the HTTP ones with the user and the options inside;
// answers are the HTTP bodies, errors the HTTP error body plus the HTTP
// status: {"code","reason","status"}. NATS authenticates the caller:
// whoever may publish on <prefix>.router.* may use the API (restrict it
// with NATS permissions). Idempotency keys are scoped to "nats", one scope
// for every NATS caller.

// NATSQueueGroup is the queue group of the NATS request API.
const NATSQueueGroup = "wsfleet-router"

// natsScope is the idempotency scope of NATS requests.
const natsScope = "nats"

// natsRequestTimeout bounds one NATS request's work.
const natsRequestTimeout = 30 * time.Second

// maxNATSInFlight bounds the NATS requests handled at once; more wait in
// the subscriptions (NATS's slow-consumer limits apply).
const maxNATSInFlight = 256

// natsOp is one operation of the NATS request API.
type natsOp struct {
	name   string // the subject's last tokens, after <prefix>.router.
	handle func(s *Server, ctx context.Context, data []byte) (opResult, *apiError)
}

// NATSOperations lists the operations of the NATS request API, each
// answered on <prefix>.router.<operation>.
func NATSOperations() []string {
	out := make([]string, len(natsOps))
	for i, op := range natsOps {
		out[i] = op.name
	}
	return out
}

var natsOps = []natsOp{
	{"publish", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req publishRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opPublish(ctx, natsScope, &req)
	}},
	{"batch", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req batchRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opBatch(ctx, natsScope, &req)
	}},
	{"broadcast", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req broadcastRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opBroadcast(ctx, natsScope, &req)
	}},
	{"topic.publish", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req topicRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opTopic(ctx, natsScope, &req)
	}},
	{"topic.subscribe", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req userTopicRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opUserTopic(ctx, &req, true)
	}},
	{"topic.unsubscribe", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req userTopicRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opUserTopic(ctx, &req, false)
	}},
	{"topic.presence", func(s *Server, _ context.Context, data []byte) (opResult, *apiError) {
		var req struct {
			Topic string `json:"topic"`
		}
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opTopicPresence(&topicRequest{Topic: req.Topic})
	}},
	{"presence", func(s *Server, _ context.Context, data []byte) (opResult, *apiError) {
		var req userRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opPresence(&req)
	}},
	{"presence.query", func(s *Server, _ context.Context, data []byte) (opResult, *apiError) {
		var req usersRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opPresenceQuery(&req)
	}},
	{"stats", func(s *Server, _ context.Context, data []byte) (opResult, *apiError) {
		if aerr := decodeStrict(data, &struct{}{}); aerr != nil {
			return opResult{}, aerr
		}
		return s.opStats()
	}},
	{"kick", func(s *Server, ctx context.Context, data []byte) (opResult, *apiError) {
		var req userRequest
		if aerr := decodeStrict(data, &req); aerr != nil {
			return opResult{}, aerr
		}
		return s.opKick(ctx, &req)
	}},
}

// natsAPI serves the NATS request API.
type natsAPI struct {
	s      *Server
	subs   []*nats.Subscription
	sem    chan struct{}
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func startNATSAPI(s *Server, nc *nats.Conn) (*natsAPI, error) {
	a := &natsAPI{s: s, sem: make(chan struct{}, maxNATSInFlight)}
	base := s.subjects.Prefix() + ".router."
	for _, op := range natsOps {
		op := op
		sub, err := nc.QueueSubscribe(base+op.name, NATSQueueGroup, func(m *nats.Msg) { a.serve(op, m) })
		if err != nil {
			a.stop()
			return nil, err
		}
		a.subs = append(a.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

// serve handles one request on its own goroutine (a kick waits for the
// nodes), at most maxNATSInFlight at once.
func (a *natsAPI) serve(op natsOp, m *nats.Msg) {
	if m.Reply == "" {
		return // nobody to answer
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.wg.Add(1)
	a.mu.Unlock()
	a.sem <- struct{}{}
	go func() {
		defer func() { <-a.sem; a.wg.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), natsRequestTimeout)
		defer cancel()
		data := m.Data
		if len(data) == 0 {
			data = []byte("{}")
		}
		res, aerr := op.handle(a.s, ctx, data)
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set("Content-Type", "application/json")
		status := res.status
		if aerr != nil {
			status = aerr.status
			if aerr.retryAfter > 0 {
				reply.Header.Set("Retry-After", strconv.Itoa(aerr.retryAfter))
			}
			reply.Data = encodeJSON(errorBody{Code: aerr.code, Reason: aerr.msg, Status: aerr.status})
		} else {
			reply.Data = res.body
			if res.replayed {
				reply.Header.Set("Idempotent-Replayed", "true")
			}
		}
		a.s.m.natsRequests.WithLabelValues(op.name, strconv.Itoa(status)).Inc()
		if err := a.s.nc.Load().PublishMsg(reply); err != nil {
			a.s.logRateLimited("answering a NATS request failed", zap.String("op", op.name), zap.Error(err))
		}
	}()
}

// stop unsubscribes and waits for the requests in flight.
func (a *natsAPI) stop() {
	for _, sub := range a.subs {
		_ = sub.Unsubscribe()
	}
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.wg.Wait()
}

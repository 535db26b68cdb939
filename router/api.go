package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/protocol"
)

// The API's operations, shared by the HTTP API (handlers_http.go) and the
// NATS request API (handlers_nats.go): each takes a decoded request and
// returns the answer's status and JSON body, or an *apiError.

// Error codes of the API: the "code" member of every error body. They are
// stable; the "reason" member is for humans and may change.
const (
	CodeBadJSON                = "bad_json"
	CodeBadRequest             = "bad_request"
	CodeBadUser                = "bad_user"
	CodeBadTopic               = "bad_topic"
	CodeBadIdempotencyKey      = "bad_idempotency_key"
	CodeUnauthorized           = "unauthorized"
	CodeForbidden              = "forbidden"
	CodeNotFound               = "not_found"
	CodeUserOffline            = "user_offline"
	CodeMethodNotAllowed       = "method_not_allowed"
	CodeIdempotencyInProgress  = "idempotency_in_progress"
	CodeTooLarge               = "too_large"
	CodeIdempotencyKeyReused   = "idempotency_key_reused"
	CodeTooManyUsers           = "too_many_users"
	CodeRateLimited            = "rate_limited"
	CodeNATSUnavailable        = "nats_unavailable"
	CodeIdempotencyUnavailable = "idempotency_unavailable"
	CodeInternal               = "internal"
)

// apiError is a refused request.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter int // seconds; 0: no Retry-After
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

// opResult is a successful answer: the status and the JSON body.
type opResult struct {
	status   int
	body     []byte
	replayed bool // the stored answer of an earlier request with the same idempotency key
}

// errorBody is the JSON body of every error the API answers,
// {"code","reason"}, the shape of the gateway's HTTP errors and of the
// protocol's error frame; over NATS the HTTP status the same request would
// get is added as "status".
type errorBody struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
	Status int    `json:"status,omitempty"`
}

// Request bodies. Over HTTP the user is in the path and options are query
// parameters or headers; over NATS everything is in the JSON.
type publishRequest struct {
	User           string          `json:"user"`
	Data           json.RawMessage `json:"data"`
	RequireOnline  bool            `json:"require_online,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type batchRequest struct {
	Users          []string        `json:"users"`
	Topics         []string        `json:"topics,omitempty"`
	Data           json.RawMessage `json:"data"`
	RequireOnline  bool            `json:"require_online,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type topicRequest struct {
	Topic          string          `json:"topic"`
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type broadcastRequest struct {
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type userRequest struct {
	User string `json:"user"`
}

type userTopicRequest struct {
	User  string `json:"user"`
	Topic string `json:"topic"`
}

type usersRequest struct {
	Users []string `json:"users"`
}

// Answers.
type publishAnswer struct {
	ID      string `json:"id"`
	Online  bool   `json:"online"`
	Devices int    `json:"devices"`
}

type broadcastAnswer struct {
	ID string `json:"id"`
}

type topicAnswer struct {
	Topic string `json:"topic"`
	ID    string `json:"id"`
	// Nodes is how many gateway nodes have subscribers of the topic, as
	// the presence view has it (each node tells with its presence
	// batches).
	Nodes int `json:"nodes"`
}

// userResult is one user's entry in a batch or presence-query answer:
// either the outcome or an error code.
type userResult struct {
	User    string `json:"user"`
	ID      string `json:"id,omitempty"`
	Online  *bool  `json:"online,omitempty"`
	Devices *int   `json:"devices,omitempty"`
	Error   string `json:"error,omitempty"`
}

type resultsAnswer struct {
	Results []userResult  `json:"results"`
	Topics  []topicResult `json:"topics,omitempty"` // a batch's topics, when it named some
}

// topicResult is one topic's entry in a batch answer.
type topicResult struct {
	Topic string `json:"topic"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error,omitempty"`
}

type presenceAnswer struct {
	User    string        `json:"user"`
	Online  bool          `json:"online"`
	Devices int           `json:"devices"`
	Nodes   []nodeDevices `json:"nodes"`
}

type topicPresenceAnswer struct {
	Topic     string        `json:"topic"`
	Users     int           `json:"users"`   // users with a device in the topic
	Devices   int           `json:"devices"` // their devices in it
	Nodes     int           `json:"nodes"`   // nodes with subscribers of it (any topic)
	Members   []topicMember `json:"members"` // sorted by user id, at most maxTopicMembers
	Truncated bool          `json:"truncated,omitempty"`
}

type statsAnswer struct {
	Nodes       int         `json:"nodes"`
	Connections int         `json:"connections"`
	Users       int         `json:"users"`
	NodeList    []nodeStats `json:"node_list"`
}

type nodeStats struct {
	Node               string `json:"node"`
	Connections        int    `json:"connections"`
	Users              int    `json:"users"`
	LastHeartbeatMSAgo int64  `json:"last_heartbeat_ms_ago"`
	Draining           bool   `json:"draining"`
	Synced             bool   `json:"synced"`
}

type userTopicAnswer struct {
	User    string `json:"user"`
	Topic   string `json:"topic"`
	Devices int    `json:"devices"` // the user's connections that hold (PUT) or left (DELETE) the topic
	Nodes   int    `json:"nodes"`   // the nodes that answered
}

type kickAnswer struct {
	Closed int `json:"closed"`
	Nodes  int `json:"nodes"`
}

func result(status int, v any) (opResult, *apiError) {
	b, err := json.Marshal(v)
	if err != nil {
		return opResult{}, &apiError{status: http.StatusInternalServerError, code: CodeInternal, msg: "encoding the answer failed"}
	}
	return opResult{status: status, body: b}, nil
}

func badUser(err error) *apiError {
	return &apiError{status: http.StatusBadRequest, code: CodeBadUser, msg: "bad user id: " + err.Error()}
}

// checkUser validates a user id and returns its subject.
func (s *Server) checkUser(user string) (string, *apiError) {
	if err := protocol.ValidateUserID(user); err != nil {
		return "", badUser(err)
	}
	subj, err := s.subjects.UserID(user)
	if err != nil {
		return "", badUser(err)
	}
	return subj, nil
}

// checkData validates message data: one JSON value in UTF-8.
func checkData(data []byte) *apiError {
	if len(data) == 0 {
		return &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the message data is missing; send it as one JSON value"}
	}
	if !protocol.PayloadIsJSON(data) {
		return &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the message data is not one JSON value in UTF-8"}
	}
	return nil
}

// checkUsers de-duplicates a user list (first occurrence kept) and checks
// its size.
// checkBatch dedups a batch's users and topics (in order); together they
// count against MaxBatchUsers. Each is checked when published (a bad one
// gets its error in the results).
func (s *Server) checkBatch(users, topics []string) ([]string, []string, *apiError) {
	dedup := func(in []string) []string {
		seen := make(map[string]struct{}, len(in))
		out := make([]string, 0, len(in))
		for _, v := range in {
			if _, dup := seen[v]; !dup {
				seen[v] = struct{}{}
				out = append(out, v)
			}
		}
		return out
	}
	u, t := dedup(users), dedup(topics)
	if len(u)+len(t) > s.opts.MaxBatchUsers {
		return nil, nil, &apiError{status: http.StatusBadRequest, code: CodeTooManyUsers,
			msg: fmt.Sprintf("more than %d distinct users and topics (--max-batch-users); split the request", s.opts.MaxBatchUsers)}
	}
	return u, t, nil
}

func (s *Server) checkUsers(users []string) ([]string, *apiError) {
	if len(users) == 0 {
		return nil, &apiError{status: http.StatusBadRequest, code: CodeBadRequest, msg: `"users" must list at least one user id`}
	}
	seen := make(map[string]struct{}, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		out = append(out, u)
		if len(out) > s.opts.MaxBatchUsers {
			return nil, &apiError{status: http.StatusBadRequest, code: CodeTooManyUsers,
				msg: fmt.Sprintf("more than %d distinct users (--max-batch-users); split the request", s.opts.MaxBatchUsers)}
		}
	}
	return out, nil
}

// opPublish publishes to one user.
func (s *Server) opPublish(ctx context.Context, scope string, req *publishRequest) (opResult, *apiError) {
	subj, aerr := s.checkUser(req.User)
	if aerr != nil {
		return opResult{}, aerr
	}
	if aerr := checkData(req.Data); aerr != nil {
		return opResult{}, aerr
	}
	fp := fingerprint([]byte("publish"), []byte(req.User), req.Data, boolBytes(req.RequireOnline))
	dedup := s.dedupID(scope, req.IdempotencyKey, fp, req.User)
	w := s.newNATSWait(ctx)
	defer w.stop()
	return s.idempotent(ctx, w, scope, req.IdempotencyKey, fp, func() (opResult, *apiError) {
		s.t.v.mu.RLock()
		devices, _ := s.t.v.lookup(req.User, false)
		s.t.v.mu.RUnlock()
		if req.RequireOnline && devices == 0 {
			return opResult{}, &apiError{status: http.StatusNotFound, code: CodeUserOffline,
				msg: "the user has no device connected (require_online); nothing was published"}
		}
		var id string
		var start time.Time
		if aerr := s.publishing(w, func(nc *nats.Conn) error {
			start = time.Now()
			var err error
			id, err = s.publishOne(ctx, nc, targetUser, subj, req.Data, dedup)
			return err
		}); aerr != nil {
			return opResult{}, aerr
		}
		s.m.publish.WithLabelValues(targetUser).Observe(time.Since(start).Seconds())
		return result(http.StatusAccepted, publishAnswer{ID: id, Online: devices > 0, Devices: devices})
	})
}

// opBatch publishes the same data to several users, then flushes once
// (with Resume: every message written, then every acknowledgement of the
// history stream awaited).
func (s *Server) opBatch(ctx context.Context, scope string, req *batchRequest) (opResult, *apiError) {
	var users, topics []string
	var aerr *apiError
	if len(req.Topics) == 0 {
		users, aerr = s.checkUsers(req.Users)
	} else {
		users, topics, aerr = s.checkBatch(req.Users, req.Topics)
	}
	if aerr != nil {
		return opResult{}, aerr
	}
	if aerr := checkData(req.Data); aerr != nil {
		return opResult{}, aerr
	}
	fp := fingerprint([]byte("batch"), []byte(strings.Join(users, "\x00")), req.Data, boolBytes(req.RequireOnline))
	if len(topics) > 0 {
		fp = fingerprint([]byte("batch"), []byte(strings.Join(users, "\x00")), []byte(strings.Join(topics, "\x00")), req.Data, boolBytes(req.RequireOnline))
	}
	var dedup []string
	if s.opts.Resume && req.IdempotencyKey != "" {
		dedup = make([]string, len(users), len(users)+len(topics))
		for i, u := range users {
			dedup[i] = s.dedupID(scope, req.IdempotencyKey, fp, u)
		}
		for _, tp := range topics {
			dedup = append(dedup, s.dedupID(scope, req.IdempotencyKey, fp, "topic\x00"+tp))
		}
	}
	w := s.newNATSWait(ctx)
	defer w.stop()
	return s.idempotent(ctx, w, scope, req.IdempotencyKey, fp, func() (opResult, *apiError) {
		results := make([]userResult, len(users))
		subjects := make([]string, len(users))
		s.t.v.mu.RLock()
		for i, u := range users {
			results[i].User = u
			subj, aerr := s.checkUser(u)
			if aerr != nil {
				results[i].Error = aerr.code
				continue
			}
			devices, _ := s.t.v.lookup(u, false)
			if req.RequireOnline && devices == 0 {
				results[i].Error = CodeUserOffline
				continue
			}
			online := devices > 0
			results[i].Online, results[i].Devices = &online, &devices
			subjects[i] = subj
		}
		s.t.v.mu.RUnlock()
		var tresults []topicResult
		var tsubjects []string
		for _, tp := range topics {
			subj, aerr := s.checkTopic(tp)
			if aerr != nil {
				tresults = append(tresults, topicResult{Topic: tp, Error: aerr.code})
			} else {
				tresults = append(tresults, topicResult{Topic: tp})
			}
			tsubjects = append(tsubjects, subj)
		}
		// pubTopics publishes to the topics without Resume, sent messages
		// having gone out before.
		pubTopics := func(nc *nats.Conn, sent int) (int, error) {
			for i := range tresults {
				if tsubjects[i] == "" {
					continue
				}
				id, err := s.pub(nc, targetTopic, tsubjects[i], req.Data)
				switch {
				case err != nil && sent == 0:
					return sent, unsent(err)
				case err != nil:
					if natsDown(err) {
						s.m.publishErrors.WithLabelValues("publish").Inc()
					}
					return sent, err
				}
				tresults[i].ID = id
				sent++
			}
			return sent, nil
		}
		var start time.Time
		if aerr := s.publishing(w, func(nc *nats.Conn) error {
			start = time.Now()
			if s.opts.Resume {
				// Pipelined: every message (the users', then the
				// topics') written, then every acknowledgement awaited.
				all := append(slices.Clip(subjects), tsubjects...)
				if slices.ContainsFunc(all, func(subj string) bool { return subj != "" }) {
					seqs, err := s.histPublish(ctx, nc, targetBatch, all, req.Data, dedup)
					if err != nil {
						return err
					}
					for i, seq := range seqs {
						switch {
						case all[i] == "":
						case i < len(subjects):
							results[i].ID = seqID(seq)
						default:
							tresults[i-len(subjects)].ID = seqID(seq)
						}
					}
				}
				return nil
			}
			sent := 0
			for i := range results {
				if subjects[i] == "" {
					continue
				}
				id, err := s.pub(nc, targetUser, subjects[i], req.Data)
				switch {
				case err != nil && sent == 0:
					return unsent(err)
				case err != nil:
					if natsDown(err) { // pub counts the other errors
						s.m.publishErrors.WithLabelValues("publish").Inc()
					}
					return err // the messages before it may have gone out
				}
				results[i].ID = id
				sent++
			}
			if _, err := pubTopics(nc, sent); err != nil {
				return err
			}
			return s.flush(ctx, nc)
		}); aerr != nil {
			return opResult{}, aerr
		}
		s.m.publish.WithLabelValues(targetBatch).Observe(time.Since(start).Seconds())
		return result(http.StatusAccepted, resultsAnswer{Results: results, Topics: tresults})
	})
}

// opBroadcast publishes to every connection of the fleet.
func (s *Server) opBroadcast(ctx context.Context, scope string, req *broadcastRequest) (opResult, *apiError) {
	if aerr := checkData(req.Data); aerr != nil {
		return opResult{}, aerr
	}
	fp := fingerprint([]byte("broadcast"), req.Data)
	dedup := s.dedupID(scope, req.IdempotencyKey, fp, "")
	w := s.newNATSWait(ctx)
	defer w.stop()
	return s.idempotent(ctx, w, scope, req.IdempotencyKey, fp, func() (opResult, *apiError) {
		var id string
		var start time.Time
		if aerr := s.publishing(w, func(nc *nats.Conn) error {
			start = time.Now()
			var err error
			id, err = s.publishOne(ctx, nc, targetBroadcast, s.subjects.Broadcast(), req.Data, dedup)
			return err
		}); aerr != nil {
			return opResult{}, aerr
		}
		s.m.publish.WithLabelValues(targetBroadcast).Observe(time.Since(start).Seconds())
		return result(http.StatusAccepted, broadcastAnswer{ID: id})
	})
}

// checkTopic validates a topic name and returns its subject.
func (s *Server) checkTopic(topic string) (string, *apiError) {
	if err := protocol.ValidateTopic(topic); err != nil {
		return "", &apiError{status: http.StatusBadRequest, code: CodeBadTopic, msg: err.Error()}
	}
	return s.subjects.Topic(topic), nil
}

// opTopic publishes to every subscriber of a topic, across the fleet: as
// a message to a user, on plain NATS confirmed by a flush, or with Resume
// acknowledged by the history stream, its id the stream sequence.
func (s *Server) opTopic(ctx context.Context, scope string, req *topicRequest) (opResult, *apiError) {
	subj, aerr := s.checkTopic(req.Topic)
	if aerr != nil {
		return opResult{}, aerr
	}
	if aerr := checkData(req.Data); aerr != nil {
		return opResult{}, aerr
	}
	fp := fingerprint([]byte("topic"), []byte(req.Topic), req.Data)
	dedup := s.dedupID(scope, req.IdempotencyKey, fp, "")
	w := s.newNATSWait(ctx)
	defer w.stop()
	return s.idempotent(ctx, w, scope, req.IdempotencyKey, fp, func() (opResult, *apiError) {
		var id string
		var start time.Time
		if aerr := s.publishing(w, func(nc *nats.Conn) error {
			start = time.Now()
			var err error
			id, err = s.publishOne(ctx, nc, targetTopic, subj, req.Data, dedup)
			return err
		}); aerr != nil {
			return opResult{}, aerr
		}
		s.m.publish.WithLabelValues(targetTopic).Observe(time.Since(start).Seconds())
		s.t.v.mu.RLock()
		nodes := s.t.v.topicNodes(req.Topic)
		s.t.v.mu.RUnlock()
		return result(http.StatusAccepted, topicAnswer{Topic: req.Topic, ID: id, Nodes: nodes})
	})
}

// publishOne publishes one message (to a user, or a broadcast) and has it
// confirmed: without Resume a plain publish with a new message id, then a
// flush; with Resume a publish the history stream acknowledges, its id the
// stream sequence, dedup (when not "") its Nats-Msg-Id. An unsent error
// means nothing was written (publishing waits for NATS when it was down).
func (s *Server) publishOne(ctx context.Context, nc *nats.Conn, target, subject string, data []byte, dedup string) (string, error) {
	if !s.opts.Resume {
		id, err := s.pub(nc, target, subject, data)
		if err != nil {
			return "", unsent(err)
		}
		return id, s.flush(ctx, nc)
	}
	seqs, err := s.histPublish(ctx, nc, target, []string{subject}, data, []string{dedup})
	if err != nil {
		return "", err
	}
	return seqID(seqs[0]), nil
}

// opPresence answers where a user is connected.
func (s *Server) opPresence(req *userRequest) (opResult, *apiError) {
	if _, aerr := s.checkUser(req.User); aerr != nil {
		return opResult{}, aerr
	}
	if aerr := s.viewFresh(); aerr != nil {
		return opResult{}, aerr
	}
	s.t.v.mu.RLock()
	devices, nodes := s.t.v.lookup(req.User, true)
	s.t.v.mu.RUnlock()
	if nodes == nil {
		nodes = []nodeDevices{}
	}
	return result(http.StatusOK, presenceAnswer{User: req.User, Online: devices > 0, Devices: devices, Nodes: nodes})
}

// maxTopicMembers bounds the members a topic presence answer lists.
const maxTopicMembers = 1000

// opTopicPresence answers who is in a topic (the gateways' presence
// batches for topics matching their --topic-presence).
func (s *Server) opTopicPresence(req *topicRequest) (opResult, *apiError) {
	if _, aerr := s.checkTopic(req.Topic); aerr != nil {
		return opResult{}, aerr
	}
	if aerr := s.viewFresh(); aerr != nil {
		return opResult{}, aerr
	}
	s.t.v.mu.RLock()
	users, devices, members := s.t.v.lookupTopic(req.Topic, maxTopicMembers)
	nodes := s.t.v.topicNodes(req.Topic)
	s.t.v.mu.RUnlock()
	if members == nil {
		members = []topicMember{}
	}
	return result(http.StatusOK, topicPresenceAnswer{Topic: req.Topic, Users: users, Devices: devices, Nodes: nodes, Members: members, Truncated: users > len(members)})
}

// opPresenceQuery answers whether each of several users is online.
func (s *Server) opPresenceQuery(req *usersRequest) (opResult, *apiError) {
	users, aerr := s.checkUsers(req.Users)
	if aerr != nil {
		return opResult{}, aerr
	}
	if aerr := s.viewFresh(); aerr != nil {
		return opResult{}, aerr
	}
	results := make([]userResult, len(users))
	s.t.v.mu.RLock()
	for i, u := range users {
		results[i].User = u
		if err := protocol.ValidateUserID(u); err != nil {
			results[i].Error = CodeBadUser
			continue
		}
		devices, _ := s.t.v.lookup(u, false)
		online := devices > 0
		results[i].Online, results[i].Devices = &online, &devices
	}
	s.t.v.mu.RUnlock()
	return result(http.StatusOK, resultsAnswer{Results: results})
}

// opStats answers the fleet's figures: nodes, connections and users per
// node from their heartbeats, distinct users fleet-wide from the view.
func (s *Server) opStats() (opResult, *apiError) {
	if aerr := s.viewFresh(); aerr != nil {
		return opResult{}, aerr
	}
	now := time.Now()
	v := s.t.v
	v.mu.RLock()
	a := statsAnswer{Users: len(v.users), NodeList: []nodeStats{}}
	for _, n := range v.nodes {
		if n == nil {
			continue
		}
		last := n.lastHeartbeat
		if last.IsZero() {
			last = n.lastSeen
		}
		a.Nodes++
		a.Connections += n.hbConnections
		a.NodeList = append(a.NodeList, nodeStats{Node: n.id, Connections: n.hbConnections, Users: n.hbUsers,
			LastHeartbeatMSAgo: now.Sub(last).Milliseconds(), Draining: n.draining, Synced: n.synced})
	}
	v.mu.RUnlock()
	slices.SortFunc(a.NodeList, func(x, y nodeStats) int { return strings.Compare(x.Node, y.Node) })
	return result(http.StatusOK, a)
}

// opKick closes every connection of a user on every node: a kick control
// message on the user's subject (controlUser), answered by each node
// holding the user with the connections it closed.
func (s *Server) opKick(ctx context.Context, req *userRequest) (opResult, *apiError) {
	subj, aerr := s.checkUser(req.User)
	if aerr != nil {
		return opResult{}, aerr
	}
	total, nodes, aerr := s.controlUser(ctx, req.User, subj, protocol.ControlKick, "")
	if aerr != nil {
		return opResult{}, aerr
	}
	s.m.kicks.Inc()
	s.log.Info("user kicked", zap.Int("closed", total), zap.Int("nodes", nodes))
	return result(http.StatusOK, kickAnswer{Closed: total, Nodes: nodes})
}

// opUserTopic subscribes (sub) or unsubscribes every connected device of a
// user to a topic, on every node: a control message on the user's
// subject, answered by each node holding the user once its devices'
// subscriptions are live.
func (s *Server) opUserTopic(ctx context.Context, req *userTopicRequest, sub bool) (opResult, *apiError) {
	subj, aerr := s.checkUser(req.User)
	if aerr != nil {
		return opResult{}, aerr
	}
	if _, aerr := s.checkTopic(req.Topic); aerr != nil {
		return opResult{}, aerr
	}
	control := protocol.ControlUnsubscribe
	if sub {
		control = protocol.ControlSubscribe
	}
	devices, nodes, aerr := s.controlUser(ctx, req.User, subj, control, req.Topic)
	if aerr != nil {
		return opResult{}, aerr
	}
	return result(http.StatusOK, userTopicAnswer{User: req.User, Topic: req.Topic, Devices: devices, Nodes: nodes})
}

// topicControlWait is the longest a topic control waits for the nodes
// (KickTimeout when longer).
const topicControlWait = 10 * time.Second

// controlReply is a node's answer to a control message: protocol.KickReply
// or protocol.TopicReply.
type controlReply struct {
	Node    string `json:"node"`
	Closed  int    `json:"closed"`
	Devices int    `json:"devices"`
}

// controlUser sends a control message (topic: its HeaderTopic, "" for
// none) on the user's subject and sums the nodes' answers (closed or
// devices) and counts the nodes. It waits until every node the view lists
// for the user has answered (or NATS reports no responders), else for
// KickTimeout (a topic control: at least topicControlWait).
//
// With Resume a kick is stored by the history stream (the nodes get it
// from the stream, in order with the user's messages) and acknowledged on
// the reply subject; the nodes answer on the one HeaderReplyTo names, the
// stream dropping reply subjects. "No responders" then means no stream
// took it, so no node got it: 503. The wait ends once the stream has
// acknowledged and every node the view lists has answered. A topic
// control needs no order with the user's messages and must not take
// their room in history (the per-user limit): it goes to the nodes' live
// subject of the user, not stored, answered like a control without
// Resume.
func (s *Server) controlUser(ctx context.Context, user, subj, control, topic string) (total, nodes int, _ *apiError) {
	stored := s.opts.Resume && control == protocol.ControlKick
	if s.opts.Resume && !stored {
		subj = history.LivePrefix(s.opts.History.Prefix) + subj[len(s.opts.History.Prefix)+1:]
	}
	nc, aerr := s.connected()
	if aerr != nil {
		return 0, 0, aerr
	}
	s.t.v.mu.RLock()
	expected := s.t.v.userNodes(user)
	s.t.v.mu.RUnlock()
	waiting := make(map[string]bool, len(expected))
	for _, n := range expected {
		waiting[n] = true
	}
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return 0, 0, publishError(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	msg := nats.NewMsg(subj)
	msg.Header.Set(protocol.HeaderControl, control)
	if topic != "" {
		msg.Header.Set(protocol.HeaderTopic, topic)
	}
	msg.Reply = inbox
	if stored {
		msg.Header.Set(HeaderReplyTo, inbox)
	}
	if err := nc.PublishMsg(msg); err != nil {
		return 0, 0, publishError(err)
	}
	wait := s.opts.KickTimeout
	if control != protocol.ControlKick {
		// A node answers once its devices' subscriptions are live: up to
		// its --auth-timeout (5s) while NATS is slow to confirm.
		wait = max(wait, topicControlWait)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	answered := map[string]bool{}
	acked := !stored // only the history stream acknowledges
	var failed *ackError
	done := func() bool {
		if !stored {
			return len(expected) > 0 && len(waiting) == 0
		}
		return acked && len(waiting) == 0
	}
wait:
	for {
		select {
		case m := <-replies:
			if len(m.Data) == 0 && m.Header.Get("Status") == noRespondersStatus {
				if stored {
					failed = &ackError{reason: reasonNoStream, err: nats.ErrNoResponders}
				}
				break wait // no node holds the user (a stored one: no stream took the message)
			}
			var r struct {
				controlReply
				ackBody
			}
			if json.Unmarshal(m.Data, &r) != nil {
				continue
			}
			if r.Stream != "" || r.Error != nil { // the history stream's answer
				if r.Error != nil {
					failed = &ackError{reason: reasonRefused, err: r.Error}
					break wait
				}
				acked = true
			} else if !answered[r.Node] {
				answered[r.Node] = true
				total += max(r.Closed, 0) + max(r.Devices, 0)
				nodes++
				delete(waiting, r.Node)
			}
			if done() {
				break wait
			}
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if stored && nodes == 0 && (failed != nil || !acked) {
		if failed == nil {
			failed = &ackError{reason: reasonNoAck, err: context.DeadlineExceeded, within: s.opts.KickTimeout}
		}
		s.m.publishErrors.WithLabelValues(failed.reason).Inc()
		s.logRateLimited("the history stream did not store a control message", zap.String("control", control), zap.Error(failed))
		if failed.reason == reasonNoAck {
			return 0, 0, publishError(failed)
		}
		return 0, 0, publishError(unsent(failed))
	}
	return total, nodes, nil
}

// connected returns the NATS connection, or 503 when it is down (a kick
// does not wait for it).
func (s *Server) connected() (*nats.Conn, *apiError) {
	nc := s.nc.Load()
	if !s.natsConnected() {
		s.m.publishErrors.WithLabelValues("disconnected").Inc()
		return nil, publishError(errDisconnected)
	}
	return nc, nil
}

// viewFresh refuses presence answers while the router is disconnected from
// NATS: it then misses the nodes' changes and cannot tell a dead node from
// its own silence, so its view may be stale.
func (s *Server) viewFresh() *apiError {
	if !s.natsConnected() {
		return &apiError{status: http.StatusServiceUnavailable, code: CodeNATSUnavailable,
			msg: "presence is unknown while the router is disconnected from NATS, retry later", retryAfter: 1}
	}
	return nil
}

// publishError turns a NATS failure into the API's answer.
func publishError(err error) *apiError {
	if errors.Is(err, nats.ErrMaxPayload) {
		return &apiError{status: http.StatusRequestEntityTooLarge, code: CodeTooLarge, msg: "the message is larger than the NATS server's max_payload"}
	}
	var ae *ackError
	if errors.As(err, &ae) {
		if ae.tooLarge && ae.stored == 0 {
			return &apiError{status: http.StatusRequestEntityTooLarge, code: CodeTooLarge,
				msg: "the message is larger than the history stream's max_msg_size; nothing was published"}
		}
		return &apiError{status: http.StatusServiceUnavailable, code: CodeNATSUnavailable, msg: ae.Error(), retryAfter: 1}
	}
	msg := "NATS is disconnected; nothing was published, retry later"
	var u *unsentError
	switch {
	case errors.As(err, &u):
		msg = "publishing to NATS failed; nothing was published, retry later: " + err.Error()
	case !errors.Is(err, errDisconnected):
		// The server may have received the message before the failure.
		msg = "publishing to NATS failed, retry later (the message may have gone out): " + err.Error()
	}
	return &apiError{status: http.StatusServiceUnavailable, code: CodeNATSUnavailable, msg: msg, retryAfter: 1}
}

func boolBytes(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}

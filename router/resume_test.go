package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

// Resumable delivery (Options.Resume): the router publishes to the
// JetStream history stream, answers once it acknowledged, with the stream
// sequence as the message id.

const historyStream = "wsfleet_history"

// resumeOpts turns Resume on.
func resumeOpts(o *router.Options) { o.Resume = true }

// startResumeRouter starts a router with Resume on ns (which must run
// JetStream), mod applied after.
func startResumeRouter(t testing.TB, ns *server.Server, mod func(*router.Options)) *router.Server {
	t.Helper()
	return startRouter(t, ns, func(o *router.Options) {
		resumeOpts(o)
		if mod != nil {
			mod(o)
		}
	})
}

// stream returns the history stream of ns, read over a connection of its
// own.
func stream(t testing.TB, ns *server.Server) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(natsConnect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(testCtx(t), historyStream)
	if err != nil {
		t.Fatalf("the history stream: %v", err)
	}
	return st
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// liveSubject is where the history stream republishes a message stored on
// subject: "<prefix>.live." and the subject after the prefix.
func liveSubject(subject string) string {
	return history.LivePrefix(protocol.DefaultSubjectPrefix) + strings.TrimPrefix(subject, protocol.DefaultSubjectPrefix+".")
}

// storedCount returns how many messages the history stream holds.
func storedCount(t testing.TB, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// seqOf checks that a message id is a stream sequence and returns it.
func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 10) != id {
		t.Fatalf("id %q is not a stream sequence", id)
	}
	return seq
}

// acceptedSeq checks a 202 answer whose id is a stream sequence, and
// returns it.
func (r response) acceptedSeq(t testing.TB) uint64 {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202 (body %q)", r.status, r.body)
	}
	id, _ := r.jsonBody(t)["id"].(string)
	return seqOf(t, id)
}

// expectStored checks that the stream holds data on subject at seq, with
// the Nats-Msg-Id msgID ("" for none) and no Wsfleet-Msg-Id (the id is
// the sequence).
func expectStored(t testing.TB, st jetstream.Stream, seq uint64, subject, data string, msgID bool) {
	t.Helper()
	m, err := st.GetMsg(testCtx(t), seq)
	if err != nil {
		t.Fatalf("stream message %d: %v", seq, err)
	}
	if m.Subject != subject || string(m.Data) != data {
		t.Fatalf("stream message %d is %q on %q, want %q on %q", seq, m.Data, m.Subject, data, subject)
	}
	if got := m.Header.Get(protocol.HeaderMsgID); got != "" {
		t.Fatalf("stream message %d has %s %q: with --resume the id is the sequence", seq, protocol.HeaderMsgID, got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); (got != "") != msgID {
		t.Fatalf("stream message %d has Nats-Msg-Id %q, want one: %v", seq, got, msgID)
	}
}

// TestResumeStartRefused: with Resume the router refuses to start, with
// one line naming what to change, without JetStream or when the history
// stream exists with another configuration; a matching stream is used as
// it is, and without Resume the stream is not looked at.
func TestResumeStartRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		js     bool
		stream func(c *history.Config) // creates the stream first with c changed, when not nil
		mod    func(o *router.Options)
		is     error    // nil: it starts
		want   []string // in the error
	}{
		{name: "no JetStream", mod: resumeOpts, is: history.ErrNoJetStream,
			want: []string{"invalid setting: --resume needs JetStream", "-js"}},
		{name: "stream with another ttl", js: true, stream: func(c *history.Config) { c.TTL = time.Hour }, mod: resumeOpts,
			is: history.ErrIncompatible, want: []string{"invalid setting --resume", "max_age 1h0m0s, --history-ttl says 24h0m0s", "nats stream edit wsfleet_history"}},
		{name: "stream with another per-user limit", js: true, stream: func(c *history.Config) { c.MaxPerUser = 5 }, mod: resumeOpts,
			is: history.ErrIncompatible, want: []string{"max_msgs_per_subject 5, --history-max-per-user says 100"}},
		{name: "the same settings as the stream", js: true, stream: func(c *history.Config) { c.TTL = time.Hour },
			mod: func(o *router.Options) { o.Resume = true; o.History.TTL = time.Hour }},
		{name: "stream created when missing", js: true, mod: resumeOpts},
		{name: "without resume the stream is not checked", js: true, stream: func(c *history.Config) { c.TTL = time.Hour }},
		{name: "without resume JetStream is not needed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ns *server.Server
			if tc.js {
				ns = jetStreamNATS(t)
			} else {
				ns = startNATS(t, -1, nil)
			}
			if tc.stream != nil {
				c := history.Config{Prefix: protocol.DefaultSubjectPrefix}
				tc.stream(&c)
				c.SetDefaults()
				if _, err := history.Ensure(testCtx(t), natsConnect(t, ns), c); err != nil {
					t.Fatal(err)
				}
			}
			o := testOptions(t, ns.ClientURL())
			if tc.mod != nil {
				tc.mod(&o)
			}
			srv, err := router.New(o)
			if err != nil {
				t.Fatal(err)
			}
			err = srv.Start()
			if tc.is == nil {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				_ = srv.Close()
				if o.Resume {
					stream(t, ns) // created or kept
				}
				return
			}
			if err == nil {
				_ = srv.Close()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tc.is) || !errors.Is(err, router.ErrBadOption) {
				t.Fatalf("Start: %v, want %v and ErrBadOption (exit status 2)", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			if srv.NATSConn() != nil && !srv.NATSConn().IsClosed() {
				t.Error("the NATS connection is still open after a failed Start")
			}
		})
	}
}

// resumeCases are the publishes, each with its request, and the subjects
// and data of the messages stored for it (the ids in the answer's order).
var resumeCases = []struct {
	name, path, body string
	nats             string // the NATS request API's operation, when sent over NATS
	subjects         []string
	data             string
}{
	{name: "user", path: "/v1/users/bob/messages", body: `{"n":1}`, subjects: []string{"wsfleet.user.bob"}, data: `{"n":1}`},
	{name: "batch", path: "/v1/messages", body: `{"users":["bob","eve","a\nb","bob"],"data":{"n":2}}`,
		subjects: []string{"wsfleet.user.bob", "wsfleet.user.eve"}, data: `{"n":2}`},
	{name: "broadcast", path: "/v1/broadcast", body: `{"n":3}`, subjects: []string{"wsfleet.broadcast"}, data: `{"n":3}`},
	{name: "user over NATS", nats: "publish", body: `{"user":"bob","data":{"n":4}}`, subjects: []string{"wsfleet.user.bob"}, data: `{"n":4}`},
	{name: "batch over NATS", nats: "batch", body: `{"users":["eve","bob"],"data":{"n":5}}`,
		subjects: []string{"wsfleet.user.eve", "wsfleet.user.bob"}, data: `{"n":5}`},
	{name: "broadcast over NATS", nats: "broadcast", body: `{"data":{"n":6}}`, subjects: []string{"wsfleet.broadcast"}, data: `{"n":6}`},
}

// sendResume sends one of resumeCases with testKey (over HTTP) and the
// given Idempotency-Key ("": none), and returns the status, the body and
// whether it was a replayed answer.
func sendResume(t testing.TB, ns *server.Server, srv *router.Server, path, natsOp, body, key string) response {
	t.Helper()
	if natsOp == "" {
		var h []string
		if key != "" {
			h = []string{"Idempotency-Key", key}
		}
		return request(t, http.MethodPost, apiURL(srv)+path, testKey, body, h...)
	}
	if key != "" {
		body = strings.TrimSuffix(body, "}") + `,"idempotency_key":"` + key + `"}`
	}
	m, err := natsConnect(t, ns).Request("wsfleet.router."+natsOp, []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("NATS request %s: %v", natsOp, err)
	}
	var b map[string]any
	if err := json.Unmarshal(m.Data, &b); err != nil {
		t.Fatalf("NATS answer %q: %v", m.Data, err)
	}
	status := http.StatusAccepted
	if s, ok := b["status"].(float64); ok {
		status = int(s)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if m.Header.Get("Idempotent-Replayed") != "" {
		h.Set("Idempotent-Replayed", m.Header.Get("Idempotent-Replayed"))
	}
	return response{status: status, header: h, body: m.Data}
}

// answerIDs returns the message ids of a publish's 202 answer, in order:
// the id, or those of a batch's results that got a message.
func answerIDs(t testing.TB, r response) []string {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202 (body %q)", r.status, r.body)
	}
	b := r.jsonBody(t)
	if id, ok := b["id"].(string); ok {
		return []string{id}
	}
	var ids []string
	for _, u := range resultsOf(t, r, http.StatusAccepted) {
		if u.ID != "" {
			ids = append(ids, u.ID)
		} else if u.Error == "" {
			t.Fatalf("batch result %v has neither an id nor an error", u)
		}
	}
	return ids
}

// TestResumePublish: every publish (user, batch, broadcast, over HTTP and
// NATS) is stored in the history stream before it is answered, with the
// stream sequence as its id; the stream republishes it to the live
// subject with that sequence, which is what the gateways deliver.
func TestResumePublish(t *testing.T) {
	t.Parallel()
	ns := jetStreamNATS(t)
	srv := startResumeRouter(t, ns, nil)
	st := stream(t, ns)
	live, err := natsConnect(t, ns).SubscribeSync(history.LivePrefix(protocol.DefaultSubjectPrefix) + ">")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, tc := range resumeCases {
		t.Run(tc.name, func(t *testing.T) {
			ids := answerIDs(t, sendResume(t, ns, srv, tc.path, tc.nats, tc.body, ""))
			if len(ids) != len(tc.subjects) {
				t.Fatalf("ids %v, want one per message on %v", ids, tc.subjects)
			}
			for i, id := range ids {
				seq := seqOf(t, id)
				if seq <= last {
					t.Fatalf("id %d after %d: sequences ascend", seq, last)
				}
				last = seq
				// Answered after the stream stored it: it is there now.
				expectStored(t, st, seq, tc.subjects[i], tc.data, false)
				m, err := live.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatalf("no live message: %v", err)
				}
				if want := liveSubject(tc.subjects[i]); m.Subject != want || m.Header.Get(nats.JSSequence) != id {
					t.Fatalf("live message on %q with Nats-Sequence %q, want %q with the answer's id %s", m.Subject, m.Header.Get(nats.JSSequence), want, id)
				}
			}
		})
	}
	if got := storedCount(t, st); got != last {
		t.Fatalf("the stream holds %d messages, want %d: one per message published", got, last)
	}
	for _, series := range []string{
		`wsfleet_router_publish_ack_seconds_count{target="user"} 2`,
		`wsfleet_router_publish_ack_seconds_count{target="batch"} 4`,
		`wsfleet_router_publish_ack_seconds_count{target="broadcast"} 2`,
		`wsfleet_router_publish_duplicates_total 0`,
		`wsfleet_router_publish_errors_total{reason="no_ack"} 0`,
	} {
		if !strings.Contains(metricsText(t, srv), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

// TestResumeIdempotency: an Idempotency-Key is the messages' Nats-Msg-Id,
// so a retry the idempotency store cannot answer (here another replica,
// each keeping its keys in memory) is stored once and answered with the
// first ids; the store still answers what it knows (replayed, reused
// key). The same key with another request, and a publish without a key,
// are new messages.
func TestResumeIdempotency(t *testing.T) {
	t.Parallel()
	ns := jetStreamNATS(t)
	mem := func(o *router.Options) { o.IdempotencyStore = "memory" }
	for _, tc := range resumeCases {
		if tc.nats != "" {
			continue // one replica of the queue group answers: the replica cannot be chosen
		}
		t.Run(tc.name, func(t *testing.T) {
			// Three replicas, each with its idempotency keys in memory.
			r1, r2, r3 := startResumeRouter(t, ns, mem), startResumeRouter(t, ns, mem), startResumeRouter(t, ns, mem)
			st := stream(t, ns)
			key := "order-" + strings.ReplaceAll(tc.name, " ", "-")
			before := storedCount(t, st)
			first := sendResume(t, ns, r1, tc.path, tc.nats, tc.body, key)
			ids := answerIDs(t, first)
			for i, id := range ids {
				expectStored(t, st, seqOf(t, id), tc.subjects[i], tc.data, true)
			}
			stored := storedCount(t, st)
			if stored != before+uint64(len(ids)) {
				t.Fatalf("the stream holds %d messages after the first request, want %d", stored, before+uint64(len(ids)))
			}

			// Another replica, which does not know the key: published
			// again, stored once, the same ids.
			again := sendResume(t, ns, r2, tc.path, tc.nats, tc.body, key)
			if got := answerIDs(t, again); strings.Join(got, ",") != strings.Join(ids, ",") {
				t.Fatalf("retry on another replica: ids %v, want the first ones %v", got, ids)
			}
			if again.header.Get("Idempotent-Replayed") != "" {
				t.Fatal("the other replica's answer is marked replayed: it published")
			}
			if got := storedCount(t, st); got != stored {
				t.Fatalf("the stream holds %d messages after the retry, want %d: the retry is stored once", got, stored)
			}
			if got := metricValue(t, r2, "wsfleet_router_publish_duplicates_total"); got != float64(len(ids)) {
				t.Fatalf("wsfleet_router_publish_duplicates_total %g on the retrying replica, want %d", got, len(ids))
			}

			// The first replica answers from its store.
			replay := sendResume(t, ns, r1, tc.path, tc.nats, tc.body, key)
			if replay.header.Get("Idempotent-Replayed") != "true" || string(replay.body) != string(first.body) {
				t.Fatalf("retry on the first replica: %s (replayed %q), want the stored answer %s", replay.body, replay.header.Get("Idempotent-Replayed"), first.body)
			}
			// ... and refuses the key for another request.
			other := strings.Replace(tc.body, `"n":`, `"n":1`, 1)
			if r := sendResume(t, ns, r1, tc.path, tc.nats, other, key); r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "idempotency_key_reused") {
				t.Fatalf("the key reused on the first replica: %d %s, want 422 idempotency_key_reused", r.status, r.body)
			}
			// A replica that does not know the key: another request is
			// another message, never taken for the first.
			otherIDs := answerIDs(t, sendResume(t, ns, r3, tc.path, tc.nats, other, key))
			for i, id := range otherIDs {
				if id == ids[i] {
					t.Fatalf("another request with the same key got the first one's id %s", id)
				}
			}
			if got := storedCount(t, st); got != stored+uint64(len(otherIDs)) {
				t.Fatalf("the stream holds %d messages, want %d", got, stored+uint64(len(otherIDs)))
			}
			// Without a key every publish is a new message.
			a := answerIDs(t, sendResume(t, ns, r1, tc.path, tc.nats, tc.body, ""))
			b := answerIDs(t, sendResume(t, ns, r2, tc.path, tc.nats, tc.body, ""))
			if a[0] == b[0] || a[0] == ids[0] {
				t.Fatalf("publishes without a key got ids %v and %v (first %v)", a, b, ids)
			}
		})
	}
}

// TestResumeNotStored: a publish the history stream does not store is
// answered as such: 503 nats_unavailable (Retry-After) saying whether
// anything went out, or 413 when the stream refuses the message's size.
func TestResumeNotStored(t *testing.T) {
	t.Parallel()
	// deleteStream deletes the history stream: NATS answers no responders.
	deleteStream := func(t *testing.T, ns *server.Server) {
		t.Helper()
		if err := stream(t, ns).Purge(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(natsConnect(t, ns))
		if err := js.DeleteStream(testCtx(t), historyStream); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		fault   func(t *testing.T, ns *server.Server)
		path    string
		body    string
		status  int
		code    string
		reason  string // in the error's reason
		metric  string // publish_errors_total reason counted
		minTook time.Duration
	}{
		{name: "stream deleted: user", fault: deleteStream, path: "/v1/users/bob/messages", body: `1`,
			status: 503, code: "nats_unavailable", reason: "no history stream took the message", metric: "no_stream", minTook: 500 * time.Millisecond},
		{name: "stream deleted: batch", fault: deleteStream, path: "/v1/messages", body: `{"users":["bob","eve"],"data":1}`,
			status: 503, code: "nats_unavailable", reason: "nothing was published", metric: "no_stream"},
		{name: "stream deleted: broadcast", fault: deleteStream, path: "/v1/broadcast", body: `1`,
			status: 503, code: "nats_unavailable", reason: "no history stream took the message", metric: "no_stream"},
		{name: "message over the stream's size limit", fault: func(t *testing.T, ns *server.Server) {
			t.Helper()
			st := stream(t, ns)
			cfg := st.CachedInfo().Config
			cfg.MaxMsgSize = 64 // a setting history does not check
			js, _ := jetstream.New(natsConnect(t, ns))
			if _, err := js.UpdateStream(testCtx(t), cfg); err != nil {
				t.Fatal(err)
			}
		}, path: "/v1/messages", body: `{"users":["bob"],"data":"` + strings.Repeat("x", 100) + `"}`,
			status: 413, code: "too_large", reason: "max_msg_size", metric: "refused"},
		{name: "no acknowledgement", fault: func(t *testing.T, ns *server.Server) {
			t.Helper()
			deleteStream(t, ns)
			// A subscriber on the subject: NATS no longer answers "no
			// responders", and nothing acknowledges.
			nc := natsConnect(t, ns)
			if _, err := nc.SubscribeSync("wsfleet.user.*"); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}, path: "/v1/users/bob/messages", body: `1`,
			status: 503, code: "nats_unavailable", reason: "did not acknowledge the message within 5s", metric: "no_ack", minTook: 5 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := jetStreamNATS(t)
			srv := startResumeRouter(t, ns, nil)
			post(t, srv, "bob", `"before"`).acceptedSeq(t)
			tc.fault(t, ns)
			start := time.Now()
			r := request(t, http.MethodPost, apiURL(srv)+tc.path, testKey, tc.body)
			took := time.Since(start)
			r.refused(t, tc.status, tc.code)
			if reason, _ := r.jsonBody(t)["reason"].(string); !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q does not say %q", reason, tc.reason)
			}
			if tc.status == http.StatusServiceUnavailable && r.header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After %q, want 1", r.header.Get("Retry-After"))
			}
			if took < tc.minTook {
				t.Fatalf("answered after %s, want at least %s (no-responders retries, or the acknowledgement's timeout)", took, tc.minTook)
			}
			expectMetric(t, srv, `wsfleet_router_publish_errors_total{reason="`+tc.metric+`"}`, 1)
		})
	}
}

// TestResumeWaitsForNATS: with Resume a publish made while NATS is down
// still waits for it (--publish-wait), then is stored and answered with
// its sequence.
func TestResumeWaitsForNATS(t *testing.T) {
	t.Parallel()
	for _, tc := range publishCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := jetStreamNATS(t)
			proxy := newNATSProxy(t, ns)
			srv := startResumeRouter(t, ns, func(o *router.Options) {
				o.NATSURL = proxy.url()
				o.PublishWait = 20 * time.Second
			})
			st := stream(t, ns)
			waitDisconnected(t, srv, proxy)
			answer := make(chan response, 1)
			go func() { answer <- sendAsync(apiURL(srv)+tc.path, tc.body, tc.idemKey) }()
			checkFor(t, 10*time.Second, func() error {
				if v := metricValue(t, srv, "wsfleet_router_publish_waiting"); v != 1 {
					return fmt.Errorf("%g publishes waiting, want 1", v)
				}
				return nil
			})
			proxy.restore()
			var r response
			select {
			case r = <-answer:
			case <-time.After(15 * time.Second):
				t.Fatal("no answer after NATS came back")
			}
			ids := answerIDs(t, r)
			if len(ids) != 1 {
				t.Fatalf("ids %v, want one", ids)
			}
			expectStored(t, st, seqOf(t, ids[0]), tc.subject, tc.data, tc.idemKey != "")
			if got := storedCount(t, st); got != 1 {
				t.Fatalf("the stream holds %d messages, want 1", got)
			}
			expectMetric(t, srv, `wsfleet_router_publish_waits_total{result="published"}`, 1)
		})
	}
}

// liveKickNode answers kicks for user the way a gateway with --resume
// gets them: republished by the history stream on the live subject,
// without a reply subject, answering on the one HeaderReplyTo names. It
// stands for node (whose presence is published by a simNode).
func liveKickNode(t testing.TB, ns *server.Server, node, user string, closed int) {
	t.Helper()
	subjects, _ := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	subj, err := subjects.UserID(user)
	if err != nil {
		t.Fatal(err)
	}
	nc := natsConnect(t, ns)
	if _, err := nc.Subscribe(liveSubject(subj), func(m *nats.Msg) {
		if m.Header.Get(protocol.HeaderControl) != protocol.ControlKick || m.Reply != "" {
			return
		}
		b, _ := json.Marshal(protocol.KickReply{Node: node, Closed: closed})
		_ = nc.Publish(m.Header.Get(router.HeaderReplyTo), b)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestResumeKick: with Resume a kick is stored in the history stream (the
// nodes get it from there, in order with the user's messages), its
// acknowledgement is not taken for a node's answer, and the nodes answer
// on the subject HeaderReplyTo names.
func TestResumeKick(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		user    string
		online  bool // alice's node holds her
		deleted bool // the history stream is deleted first
		status  int
		answer  string
		fast    bool // answered well before --kick-timeout
	}{
		{name: "a node holds the user", user: "alice", online: true, status: 200, answer: `{"closed":2,"nodes":1}`, fast: true},
		{name: "nobody holds the user", user: "dave", status: 200, answer: `{"closed":0,"nodes":0}`, fast: true},
		{name: "no stream", user: "alice", online: true, deleted: true, status: 503, answer: "no history stream took the message", fast: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := jetStreamNATS(t)
			srv := startResumeRouter(t, ns, func(o *router.Options) { o.KickTimeout = 5 * time.Second })
			st := stream(t, ns)
			if tc.online {
				n := newSimNode(t, ns, "gw-a")
				n.set("alice", 2)
				// The node gets the kick from the stream only.
				n.mu.Lock()
				_ = n.subs["alice"].Unsubscribe()
				n.mu.Unlock()
				liveKickNode(t, ns, "gw-a", "alice", 2)
				waitWhere(t, srv, "alice", "gw-a=2")
			}
			if tc.deleted {
				js, _ := jetstream.New(natsConnect(t, ns))
				if err := js.DeleteStream(testCtx(t), historyStream); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			r := do(t, http.MethodDelete, apiURL(srv)+"/v1/users/"+tc.user+"/connections", testKey, nil)
			took := time.Since(start)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.answer) {
				t.Fatalf("kick: %d %s, want %d %s", r.status, r.body, tc.status, tc.answer)
			}
			if tc.fast && took > 2*time.Second {
				t.Fatalf("kick took %s; it should end once the stream and the nodes answered", took)
			}
			if tc.deleted {
				return
			}
			if got := storedCount(t, st); got != 1 {
				t.Fatalf("the stream holds %d messages, want the kick", got)
			}
			m, err := st.GetMsg(testCtx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			if m.Subject != "wsfleet.user."+tc.user || m.Header.Get(protocol.HeaderControl) != protocol.ControlKick || m.Header.Get(router.HeaderReplyTo) == "" {
				t.Fatalf("stored %q with headers %v, want the kick naming its reply subject", m.Subject, m.Header)
			}
		})
	}
}

// connectSince opens a connection to addr as user that resumes from since
// ("since" in its auth frame), and returns it with its welcome.
func connectSince(t testing.TB, addr, user, since string) (*wsClient, map[string]any) {
	t.Helper()
	ws, _, err := wstest.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { ws.Close() })
	tok, err := jwtmint.Mint("HS256", []byte(gatewaySecret), jwtmint.Claims{Subject: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteJSON(map[string]string{"type": protocol.TypeAuth, "token": tok, "since": since}); err != nil {
		t.Fatal(err)
	}
	c := &wsClient{ws: ws, frames: make(chan map[string]any, 64), closed: make(chan int, 1)}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				c.closed <- wstest.CloseAbnormalClosure
				close(c.frames)
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				c.frames <- m
			}
		}
	}()
	return c, c.next(t, protocol.TypeWelcome)
}

// TestFleetResume: real gateway nodes and routers with --resume. Devices
// receive every message with the id the router answered (user, batch,
// broadcast), so a client resumes from an id the service got; a retry
// with the same Idempotency-Key on another router replica is delivered
// once, with the same id.
func TestFleetResume(t *testing.T) {
	t.Parallel()
	ns := jetStreamNATS(t)
	nodes := make([]*gateway.Server, 2)
	for i, id := range []string{"gw-1", "gw-2"} {
		gw, err := gateway.New(gateway.Options{
			NATSURL: ns.ClientURL(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
			JWT: jwtverify.Config{HS256Secret: gatewaySecret}, NodeID: id,
			PresenceInterval: 100 * time.Millisecond, PresenceBatchInterval: 10 * time.Millisecond, Pollers: 1,
			Resume: true, Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = gw.Close() })
		nodes[i] = gw
	}
	mem := func(o *router.Options) { o.IdempotencyStore = "memory" }
	r1, r2 := startResumeRouter(t, ns, mem), startResumeRouter(t, ns, mem)
	alice := []*wsClient{connect(t, gwAddr(nodes[0]), "alice"), connect(t, gwAddr(nodes[1]), "alice")}
	bob := connect(t, gwAddr(nodes[1]), "bob")
	waitWhere(t, r1, "alice", "gw-1=1,gw-2=1")
	waitWhere(t, r1, "bob", "gw-2=1")

	// expect checks that each client gets the next message with id and data.
	expect := func(t *testing.T, clients []*wsClient, id, data string) {
		t.Helper()
		for i, c := range clients {
			m := c.next(t, protocol.TypeMessage)
			if m["id"] != id {
				t.Fatalf("client %d got %v, want id %s", i, m, id)
			}
			if b, _ := json.Marshal(m["data"]); string(b) != data {
				t.Fatalf("client %d got data %s, want %s", i, b, data)
			}
		}
	}
	var ids []string
	t.Run("user", func(t *testing.T) {
		id := answerIDs(t, post(t, r1, "alice", `{"n":1}`))[0]
		expect(t, alice, id, `{"n":1}`)
		ids = append(ids, id)
	})
	t.Run("batch", func(t *testing.T) {
		got := answerIDs(t, do(t, http.MethodPost, apiURL(r1)+"/v1/messages", testKey, `{"users":["alice","bob"],"data":{"n":2}}`))
		expect(t, alice, got[0], `{"n":2}`)
		expect(t, []*wsClient{bob}, got[1], `{"n":2}`)
		ids = append(ids, got[0])
	})
	t.Run("broadcast", func(t *testing.T) {
		id := answerIDs(t, do(t, http.MethodPost, apiURL(r1)+"/v1/broadcast", testKey, `{"n":3}`))[0]
		expect(t, append([]*wsClient{bob}, alice...), id, `{"n":3}`)
		ids = append(ids, id)
	})
	t.Run("retry on another replica", func(t *testing.T) {
		first := answerIDs(t, request(t, http.MethodPost, apiURL(r1)+"/v1/users/alice/messages", testKey, `{"n":4}`, "Idempotency-Key", "n-4"))[0]
		again := answerIDs(t, request(t, http.MethodPost, apiURL(r2)+"/v1/users/alice/messages", testKey, `{"n":4}`, "Idempotency-Key", "n-4"))[0]
		if again != first {
			t.Fatalf("retry answered id %s, want the first one's %s", again, first)
		}
		expect(t, alice, first, `{"n":4}`)
		// The retry was not delivered: the next message is the next publish.
		next := answerIDs(t, post(t, r2, "alice", `{"n":5}`))[0]
		expect(t, alice, next, `{"n":5}`)
		ids = append(ids, first, next)
	})
	t.Run("kick", func(t *testing.T) {
		// The nodes get the kick from the history stream; every device
		// of the user is closed. (How many nodes answered depends on the
		// nodes answering on HeaderReplyTo.)
		if r := do(t, http.MethodDelete, apiURL(r1)+"/v1/users/bob/connections", testKey, nil); r.status != http.StatusOK {
			t.Fatalf("kick: %d %s", r.status, r.body)
		}
		if code := bob.closeCode(t); code != int(protocol.CloseKicked) {
			t.Fatalf("bob closed with %d, want 4403", code)
		}
	})
	t.Run("a device resumes from an id the router answered", func(t *testing.T) {
		if len(ids) != 5 {
			t.Skip("an earlier step failed")
		}
		c, welcome := connectSince(t, gwAddr(nodes[0]), "alice", ids[0])
		if welcome["recovered"] != true {
			t.Fatalf("welcome %v, want recovered", welcome)
		}
		for _, id := range ids[1:] {
			if m := c.next(t, protocol.TypeMessage); m["id"] != id {
				t.Fatalf("replayed %v, want id %s", m, id)
			}
		}
	})
}

// TestResumeTopics: with Resume, topics are published on plain NATS (the
// history stream does not hold them): a topic publish and a batch's
// topics are answered with message ids, not stream sequences, and the
// batch's users still get theirs.
func TestResumeTopics(t *testing.T) {
	t.Parallel()
	ns := jetStreamNATS(t)
	srv := startResumeRouter(t, ns, nil)
	st := stream(t, ns)
	sub, err := natsConnect(t, ns).SubscribeSync(protocol.DefaultSubjectPrefix + ".topic.>")
	if err != nil {
		t.Fatal(err)
	}
	publish := func() string {
		t.Helper()
		r := request(t, http.MethodPost, apiURL(srv)+"/v1/topics/room.1/messages", testKey, `1`, "Idempotency-Key", "k-topic-1")
		var one struct{ ID string }
		if r.status != http.StatusAccepted || json.Unmarshal(r.body, &one) != nil || !isDigits(one.ID) {
			t.Fatalf("topic publish: %d %s", r.status, r.body)
		}
		return one.ID
	}
	first := publish()
	if again := publish(); again != first {
		t.Fatalf("a retry with the same Idempotency-Key got id %s, the first %s", again, first)
	}
	r := do(t, http.MethodPost, apiURL(srv)+"/v1/messages", testKey, `{"users":["alice"],"topics":["room.2"],"data":2}`)
	var b struct {
		Results []struct{ ID string }
		Topics  []struct{ ID string }
	}
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &b) != nil || len(b.Results) != 1 || len(b.Topics) != 1 ||
		!isDigits(b.Results[0].ID) || !isDigits(b.Topics[0].ID) || b.Topics[0].ID == b.Results[0].ID {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	for _, subj := range []string{"room.1", "room.2"} {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil || m.Subject != protocol.DefaultSubjectPrefix+".topic."+subj {
			t.Fatalf("topic message %v, %v; want one on %s", m, err, subj)
		}
	}
	// The topics' messages are stored like the user's, the retried one once.
	if got := storedCount(t, st); got != 3 {
		t.Fatalf("the stream holds %d messages, want 3", got)
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// TestResumeUserTopics: with Resume, PUT /v1/users/{user}/topics/{topic}
// reaches the user's node on its live subject and is not stored: the
// user's history keeps its room for messages.
func TestResumeUserTopics(t *testing.T) {
	ns := jetStreamNATS(t)
	srv := startResumeRouter(t, ns, fleetOpts)
	gw := startGatewayNodeWith(t, ns, "gw-1", func(o *gateway.Options) {
		o.Resume = true // the router's history settings: its defaults
	})
	st := stream(t, ns)
	c := connect(t, gwAddr(gw), "alice")
	waitWhere(t, srv, "alice", "gw-1=1")
	before := storedCount(t, st)
	r := do(t, http.MethodPut, apiURL(srv)+"/v1/users/alice/topics/room.1", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"user":"alice","topic":"room.1","devices":1,"nodes":1}`+"\n" {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	c.next(t, protocol.TypeSubscribed)
	if after := storedCount(t, st); after != before {
		t.Fatalf("the stream holds %d messages, %d before: the control was stored", after, before)
	}
	if r := do(t, http.MethodPut, apiURL(srv)+"/v1/users/nobody/topics/room.1", testKey, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"nodes":0`) {
		t.Fatalf("PUT for a user nobody holds: %d %s", r.status, r.body)
	}
}

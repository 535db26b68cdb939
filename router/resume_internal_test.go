package router

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDedupID: the Nats-Msg-Id of an idempotent publish is a fixed-length
// hash, the same for a retry, different for any other credential, key,
// request or user, and absent without Resume or without a key.
func TestDedupID(t *testing.T) {
	on := &Server{opts: Options{Resume: true}}
	base := on.dedupID("api:1", "order-7", "fp", "alice")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(base) {
		t.Fatalf("dedupID %q, want 32 hex digits", base)
	}
	cases := []struct {
		name                 string
		s                    *Server
		scope, key, fp, user string
		want                 string // "same", "other" or "none"
	}{
		{name: "a retry", s: on, scope: "api:1", key: "order-7", fp: "fp", user: "alice", want: "same"},
		{name: "another credential", s: on, scope: "api:2", key: "order-7", fp: "fp", user: "alice", want: "other"},
		{name: "another key", s: on, scope: "api:1", key: "order-8", fp: "fp", user: "alice", want: "other"},
		{name: "another request", s: on, scope: "api:1", key: "order-7", fp: "fp2", user: "alice", want: "other"},
		{name: "another user of the batch", s: on, scope: "api:1", key: "order-7", fp: "fp", user: "bob", want: "other"},
		{name: "parts not run together", s: on, scope: "api:1o", key: "rder-7", fp: "fp", user: "alice", want: "other"},
		{name: "no key", s: on, scope: "api:1", fp: "fp", user: "alice", want: "none"},
		{name: "without resume", s: &Server{}, scope: "api:1", key: "order-7", fp: "fp", user: "alice", want: "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.s.dedupID(tc.scope, tc.key, tc.fp, tc.user)
			switch {
			case tc.want == "same" && got != base,
				tc.want == "other" && (got == base || len(got) != len(base)),
				tc.want == "none" && got != "":
				t.Fatalf("dedupID %q (first %q), want %s", got, base, tc.want)
			}
		})
	}
}

// TestAckErrorAnswers: what a publish the history stream did not store
// is answered, and whether its reason says something went out.
func TestAckErrorAnswers(t *testing.T) {
	refusal := &jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}
	cases := []struct {
		name   string
		err    error
		status int
		code   string
		says   string
	}{
		{name: "no stream", err: unsent(&ackError{reason: reasonNoStream, err: nats.ErrNoResponders}),
			status: 503, code: CodeNATSUnavailable, says: "nothing was published"},
		{name: "refused", err: unsent(&ackError{reason: reasonRefused, err: &jetstream.APIError{Code: 503, Description: "resource limits exceeded"}}),
			status: 503, code: CodeNATSUnavailable, says: "refused the message: nats: API error: code=503 err_code=0 description=resource limits exceeded; nothing was published"},
		{name: "too large", err: unsent(&ackError{reason: reasonRefused, err: refusal, tooLarge: true}),
			status: 413, code: CodeTooLarge, says: "max_msg_size"},
		{name: "no acknowledgement", err: &ackError{reason: reasonNoAck, err: errDisconnected},
			status: 503, code: CodeNATSUnavailable, says: "within 5s (or the request's deadline): not connected to NATS; it may have been stored"},
		{name: "a kick's acknowledgement", err: &ackError{reason: reasonNoAck, err: errDisconnected, within: 2 * time.Second},
			status: 503, code: CodeNATSUnavailable, says: "within 2s"},
		{name: "part of a batch stored", err: &ackError{reason: reasonNoStream, err: nats.ErrNoResponders, stored: 2, total: 3},
			status: 503, code: CodeNATSUnavailable, says: "2 of the 3 messages were stored and delivered: retry with the same Idempotency-Key"},
		{name: "part of a batch too large", err: &ackError{reason: reasonRefused, err: refusal, tooLarge: true, stored: 1, total: 2},
			status: 503, code: CodeNATSUnavailable, says: "1 of the 2 messages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := publishError(tc.err)
			if a.status != tc.status || a.code != tc.code || !strings.Contains(a.msg, tc.says) {
				t.Fatalf("answer %d %s %q, want %d %s saying %q", a.status, a.code, a.msg, tc.status, tc.code, tc.says)
			}
			if tc.status == 503 && a.retryAfter != 1 {
				t.Fatalf("Retry-After %d, want 1", a.retryAfter)
			}
		})
	}
}

// TestAcksRouting: an answer goes to the waiter of its number once; what
// is not the stream's answer, and answers nobody waits for, are dropped.
func TestAcksRouting(t *testing.T) {
	a := &acks{prefix: "_INBOX.x.", waiting: map[uint64]ackWaiter{}}
	ch := make(chan ack, 3)
	first := a.register([]int{4, 7, 9}, ch)
	msg := func(n uint64, data string, status string) *nats.Msg {
		m := nats.NewMsg(a.reply(n))
		m.Data = []byte(data)
		if status != "" {
			m.Header.Set("Status", status)
		}
		return m
	}
	a.deliver(msg(first, `{"node":"gw-1","closed":1}`, "")) // not the stream's
	a.deliver(msg(first, `{"stream":"wsfleet_history","seq":12,"duplicate":true}`, ""))
	a.deliver(msg(first, `{"stream":"wsfleet_history","seq":13}`, "")) // a second answer for the same number
	a.deliver(msg(first+1, "", noRespondersStatus))
	a.deliver(msg(first+2, `{"error":{"code":503,"err_code":10077,"description":"no space"}}`, ""))
	a.deliver(msg(first+3, `{"stream":"wsfleet_history","seq":14}`, "")) // nobody waits
	var got []string
	for range 3 {
		r := <-ch
		switch {
		case r.noStream:
			got = append(got, "no stream")
		case r.err != nil:
			got = append(got, r.err.Description)
		default:
			got = append(got, r.pub.Stream)
		}
		if want := []int{4, 7, 9}[len(got)-1]; r.i != want {
			t.Fatalf("answer %d for message %d, want %d", len(got), r.i, want)
		}
		if len(got) == 1 && (r.pub.Sequence != 12 || !r.pub.Duplicate) {
			t.Fatalf("first answer %+v, want seq 12, duplicate", r.pub)
		}
	}
	if want := []string{"wsfleet_history", "no stream", "no space"}; !slices.Equal(got, want) {
		t.Fatalf("answers %v, want %v", got, want)
	}
	if len(ch) != 0 || len(a.waiting) != 0 {
		t.Fatalf("%d answers left over, %d numbers still waiting", len(ch), len(a.waiting))
	}
	first = a.register([]int{0, 1}, ch)
	a.forget(first, 2)
	a.deliver(msg(first, `{"stream":"wsfleet_history","seq":15}`, ""))
	if len(ch) != 0 {
		t.Fatal("an answer for a forgotten number was delivered")
	}
}

// TestOpenAPIAnswerSchemas: the OpenAPI schemas of the publish answers
// list exactly the members the router writes, and describe the id under
// --resume.
func TestOpenAPIAnswerSchemas(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Description string `json:"description"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	members := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
		sort.Strings(out)
		return out
	}
	for schema, answer := range map[string]any{"PublishResult": publishAnswer{}, "BroadcastResult": broadcastAnswer{}, "UserResult": userResult{}} {
		props := doc.Components.Schemas[schema].Properties
		var documented []string
		for p := range props {
			documented = append(documented, p)
		}
		sort.Strings(documented)
		if want := members(answer); !slices.Equal(documented, want) {
			t.Errorf("%s lists %v, the router writes %v", schema, documented, want)
		}
		if d := props["id"].Description; !strings.Contains(d, "--resume") || !strings.Contains(d, "stream sequence") {
			t.Errorf("%s.id is described as %q: it does not say that with --resume the id is the stream sequence", schema, d)
		}
	}
}

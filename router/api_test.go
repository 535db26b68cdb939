package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wsfleet/wsfleet/router"
)

const testJWTSecret = "router-test-secret-0123456789abcdefghij"

// mintJWT signs an HS256 token for sub with the given claims added.
func mintJWT(t testing.TB, sub string, ttl time.Duration, claims map[string]any) string {
	t.Helper()
	now := time.Now()
	b := jwt.NewBuilder().Subject(sub).IssuedAt(now).Expiration(now.Add(ttl))
	for k, v := range claims {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, []byte(testJWTSecret)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// jetStreamNATS starts a nats-server with JetStream (its store in a temporary
// directory).
func jetStreamNATS(t testing.TB) *server.Server {
	t.Helper()
	dir := t.TempDir()
	return startNATS(t, -1, func(o *server.Options) { o.JetStream = true; o.StoreDir = dir })
}

// request sends a request with headers (name, value pairs) and a body.
func request(t testing.TB, method, url, key string, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return send(t, req)
}

type userResult struct {
	User    string `json:"user"`
	ID      string `json:"id"`
	Online  *bool  `json:"online"`
	Devices *int   `json:"devices"`
	Error   string `json:"error"`
}

func (u userResult) String() string {
	s := u.User
	if u.Error != "" {
		return s + ":" + u.Error
	}
	if u.Online != nil {
		s += fmt.Sprintf(":online=%v:devices=%d", *u.Online, *u.Devices)
	}
	if u.ID != "" {
		s += ":id"
	}
	return s
}

func resultsOf(t testing.TB, r response, status int) []userResult {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %q)", r.status, status, r.body)
	}
	var b struct{ Results []userResult }
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	return b.Results
}

func summary(rs []userResult) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, " ")
}

// onlineFixture: a router and a simulated node holding alice (2 devices)
// and, on a second node, carol (1 device).
func onlineFixture(t *testing.T, nsMod func(*server.Options), mod func(*router.Options)) (*server.Server, *router.Server, *simNode, *simNode) {
	t.Helper()
	ns := startNATS(t, -1, nsMod)
	srv := startRouter(t, ns, mod)
	a, b := newSimNode(t, ns, "gw-a"), newSimNode(t, ns, "gw-b")
	a.set("alice", 2)
	b.set("carol", 1, "alice", 1)
	a.heartbeat()
	b.heartbeat()
	waitWhere(t, srv, "alice", "gw-a=2,gw-b=1")
	waitWhere(t, srv, "carol", "gw-b=1")
	return ns, srv, a, b
}

func TestPublishReportsPresence(t *testing.T) {
	ns, srv, _, _ := onlineFixture(t, nil, nil)
	sub := watch(t, ns)
	r := post(t, srv, "alice", `{"n":1}`)
	id := r.accepted(t)
	if m := r.jsonBody(t); m["online"] != true || m["devices"] != float64(3) {
		t.Fatalf("answer %s, want online with 3 devices", r.body)
	}
	expectDelivered(t, sub, "wsfleet.user.alice", `{"n":1}`, id)

	r = post(t, srv, "dave", `{"n":2}`)
	id = r.accepted(t)
	if m := r.jsonBody(t); m["online"] != false || m["devices"] != float64(0) {
		t.Fatalf("answer %s, want offline", r.body)
	}
	expectDelivered(t, sub, "wsfleet.user.dave", `{"n":2}`, id)

	r = do(t, http.MethodPost, apiURL(srv)+"/v1/users/dave/messages?require_online=true", testKey, `{"n":3}`)
	r.refused(t, http.StatusNotFound, "user_offline")
	expectNothingPublished(t, srv, sub)
	r = do(t, http.MethodPost, apiURL(srv)+"/v1/users/alice/messages?require_online=true", testKey, `{"n":4}`)
	expectDelivered(t, sub, "wsfleet.user.alice", `{"n":4}`, r.accepted(t))
}

func TestBatchPublish(t *testing.T) {
	ns, srv, _, _ := onlineFixture(t, nil, nil)
	sub := watch(t, ns)
	body := `{"users":["alice","dave","alice","a\u0001b","carol"],"data":{"text":"shipped"}}`
	rs := resultsOf(t, do(t, http.MethodPost, apiURL(srv)+"/v1/messages", testKey, body), http.StatusAccepted)
	if got, want := summary(rs), "alice:online=true:devices=3:id dave:online=false:devices=0:id a\x01b:bad_user carol:online=true:devices=1:id"; got != want {
		t.Fatalf("results %q\nwant    %q", got, want)
	}
	for _, i := range []int{0, 1, 3} {
		expectDelivered(t, sub, "wsfleet.user."+rs[i].User, `{"text":"shipped"}`, rs[i].ID)
	}
	rs = resultsOf(t, do(t, http.MethodPost, apiURL(srv)+"/v1/messages?require_online=true", testKey,
		`{"users":["dave","carol"],"data":1}`), http.StatusAccepted)
	if got, want := summary(rs), "dave:user_offline carol:online=true:devices=1:id"; got != want {
		t.Fatalf("results %q, want %q", got, want)
	}
	expectDelivered(t, sub, "wsfleet.user.carol", `1`, rs[1].ID)
	expectNothingPublished(t, srv, sub)
}

func TestPresenceQuery(t *testing.T) {
	_, srv, _, _ := onlineFixture(t, nil, nil)
	rs := resultsOf(t, do(t, http.MethodPost, apiURL(srv)+"/v1/presence/query", testKey,
		`{"users":["carol","dave","alice","carol",""]}`), http.StatusOK)
	if got, want := summary(rs), "carol:online=true:devices=1 dave:online=false:devices=0 alice:online=true:devices=3 :bad_user"; got != want {
		t.Fatalf("results %q, want %q", got, want)
	}
	p := presenceOf(t, srv, "alice")
	if p.where() != "gw-a=2,gw-b=1" || !p.Online || p.Devices != 3 {
		t.Fatalf("presence %+v", p)
	}
	if r := do(t, http.MethodGet, apiURL(srv)+"/v1/users/dave/presence", testKey, nil); !strings.Contains(string(r.body), `"nodes":[]`) {
		t.Fatalf("offline user's nodes: %s, want []", r.body)
	}
}

func TestKickSimulatedNodes(t *testing.T) {
	_, srv, a, b := onlineFixture(t, nil, func(o *router.Options) { o.KickTimeout = 5 * time.Second })
	start := time.Now()
	r := do(t, http.MethodDelete, apiURL(srv)+"/v1/users/alice/connections", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"closed":3,"nodes":2}`+"\n" {
		t.Fatalf("kick: %d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("kick took %s: it should end once both listed nodes answered", d)
	}
	if !a.kicked("alice") || !b.kicked("alice") {
		t.Fatal("a node was not asked")
	}
	waitWhere(t, srv, "alice", "")
	// Nobody holds dave: NATS answers "no responders" at once.
	start = time.Now()
	r = do(t, http.MethodDelete, apiURL(srv)+"/v1/users/dave/connections", testKey, nil)
	if r.status != http.StatusOK || string(r.body) != `{"closed":0,"nodes":0}`+"\n" {
		t.Fatalf("kick of an offline user: %d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("kick of an offline user took %s", d)
	}
}

// TestIdempotencyShared: two router replicas on a NATS server with
// JetStream share the keys: a retry on the other replica gets the first
// answer and nothing is published twice.
func TestIdempotencyShared(t *testing.T) {
	ns := jetStreamNATS(t)
	both := func(o *router.Options) { o.APIKeys = []string{testKey, testKey2}; o.IdempotencyStore = "jetstream" }
	r1, r2 := startRouter(t, ns, both), startRouter(t, ns, both)
	sub := watch(t, ns)
	cases := []struct{ name, path, body string }{
		{"user", "/v1/users/bob/messages", `{"order":1}`},
		{"batch", "/v1/messages", `{"users":["bob","eve"],"data":{"order":2}}`},
		{"broadcast", "/v1/broadcast", `{"order":3}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "order-" + tc.name
			first := request(t, http.MethodPost, apiURL(r1)+tc.path, testKey, tc.body, "Idempotency-Key", key)
			if first.status != http.StatusAccepted || first.header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("first: %d %s", first.status, first.body)
			}
			n := 1
			if tc.name == "batch" {
				n = 2
			}
			for i := 0; i < n; i++ {
				nextMsg(t, sub)
			}
			for _, srv := range []*router.Server{r1, r2} {
				again := request(t, http.MethodPost, apiURL(srv)+tc.path, testKey, tc.body, "Idempotency-Key", key)
				if again.status != http.StatusAccepted || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
					t.Fatalf("retry: %d %s, want the first answer %s", again.status, again.body, first.body)
				}
			}
			expectNothingPublished(t, r1, sub)
			// The same key with another request: refused.
			request(t, http.MethodPost, apiURL(r2)+tc.path, testKey, strings.Replace(tc.body, "order", "other", 1),
				"Idempotency-Key", key).refused(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
			// Another credential has its own keys.
			other := request(t, http.MethodPost, apiURL(r2)+tc.path, testKey2, tc.body, "Idempotency-Key", key)
			if other.status != http.StatusAccepted || bytes.Equal(other.body, first.body) {
				t.Fatalf("other credential: %d %s", other.status, other.body)
			}
			for i := 0; i < n; i++ {
				nextMsg(t, sub)
			}
		})
	}
	// A refused request does not hold its key: after the user comes
	// online, the same key publishes.
	r := request(t, http.MethodPost, apiURL(r1)+"/v1/users/zed/messages?require_online=true", testKey, `1`, "Idempotency-Key", "zed-1")
	r.refused(t, http.StatusNotFound, "user_offline")
	node := newSimNode(t, ns, "gw-z")
	node.set("zed", 1)
	node.heartbeat()
	waitWhere(t, r1, "zed", "gw-z=1")
	request(t, http.MethodPost, apiURL(r1)+"/v1/users/zed/messages?require_online=true", testKey, `1`, "Idempotency-Key", "zed-1").accepted(t)
}

// TestIdempotencyMemoryFallback: without JetStream the keys are kept per
// replica, with a warning at start.
func TestIdempotencyMemoryFallback(t *testing.T) {
	ns := startNATS(t, -1, nil)
	core, logs := observer.New(zapcore.WarnLevel)
	r1 := startRouter(t, ns, func(o *router.Options) { o.Logger = zap.New(core) })
	r2 := startRouter(t, ns, nil)
	if logs.FilterMessageSnippet("per router replica").Len() != 1 {
		t.Fatalf("no warning that idempotency is per replica: %v", logs.All())
	}
	sub := watch(t, ns)
	first := request(t, http.MethodPost, apiURL(r1)+"/v1/users/bob/messages", testKey, `1`, "Idempotency-Key", "k1")
	id := first.accepted(t)
	expectDelivered(t, sub, "wsfleet.user.bob", `1`, id)
	again := request(t, http.MethodPost, apiURL(r1)+"/v1/users/bob/messages", testKey, `1`, "Idempotency-Key", "k1")
	if again.accepted(t) != id || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry on the same replica: %s", again.body)
	}
	expectNothingPublished(t, r1, sub)
	// Another replica does not know the key (documented).
	other := request(t, http.MethodPost, apiURL(r2)+"/v1/users/bob/messages", testKey, `1`, "Idempotency-Key", "k1")
	expectDelivered(t, sub, "wsfleet.user.bob", `1`, other.accepted(t))

	// --idempotency-store jetstream refuses to start without JetStream.
	o := testOptions(t, ns.ClientURL())
	o.IdempotencyStore = "jetstream"
	srv, err := router.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "--idempotency-store") {
		t.Fatalf("Start with --idempotency-store jetstream and no JetStream: %v", err)
	}
}

func TestJWTAuth(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) { o.JWT.HS256Secret = testJWTSecret })
	pub := func(tok string) response {
		return do(t, http.MethodPost, apiURL(srv)+"/v1/users/bob/messages", tok, `1`)
	}
	pub(mintJWT(t, "billing", time.Minute, map[string]any{"scope": "read publish"})).accepted(t)
	pub(mintJWT(t, "billing", time.Minute, map[string]any{"scp": []string{"publish"}})).accepted(t)
	pub(testKey).accepted(t) // API keys still work
	r := pub(mintJWT(t, "billing", time.Minute, map[string]any{"scope": "read"}))
	r.refused(t, http.StatusForbidden, "forbidden")
	r = pub(mintJWT(t, "billing", -time.Minute, map[string]any{"scope": "publish"}))
	r.refused(t, http.StatusUnauthorized, "unauthorized")
	if !strings.Contains(string(r.body), "expired") {
		t.Fatalf("expired token: %s", r.body)
	}
	tok := mintJWT(t, "billing", time.Minute, map[string]any{"scope": "publish"})
	pub(tok[:len(tok)-2]+"xx").refused(t, http.StatusUnauthorized, "unauthorized")
	// A JWT-only router (no API key) is valid.
	jwtOnly := startRouter(t, ns, func(o *router.Options) { o.APIKeys = nil; o.JWT.HS256Secret = testJWTSecret; o.JWTScope = "notify" })
	do(t, http.MethodPost, apiURL(jwtOnly)+"/v1/broadcast", mintJWT(t, "svc", time.Minute, map[string]any{"scope": "notify"}), `1`).accepted(t)
	do(t, http.MethodPost, apiURL(jwtOnly)+"/v1/broadcast", testKey, `1`).refused(t, http.StatusUnauthorized, "unauthorized")
}

func TestRateLimit(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.APIKeys = []string{testKey, testKey2}
		o.RateLimit = 0.5 // one token every 2 s: none comes back during the test
		o.RateLimitBurst = 3
	})
	for i := 0; i < 3; i++ {
		getJSON(t, srv, "/v1/stats", &statsBody{})
	}
	r := do(t, http.MethodGet, apiURL(srv)+"/v1/stats", testKey, nil)
	r.refused(t, http.StatusTooManyRequests, "rate_limited")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q, want 1 or 2 seconds", r.header.Get("Retry-After"))
	}
	// Another credential has its own bucket.
	if r := do(t, http.MethodGet, apiURL(srv)+"/v1/stats", testKey2, nil); r.status != http.StatusOK {
		t.Fatalf("other key: %d", r.status)
	}
}

// TestErrorCodes: every error code of the v1 API, with its status.
func TestErrorCodes(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.MaxBatchUsers = 3
		o.JWT.HS256Secret = testJWTSecret
	})
	sub := watch(t, ns)
	u := apiURL(srv)
	noScope := mintJWT(t, "svc", time.Minute, nil)
	cases := []struct {
		name, method, path, key, body string
		headers                       []string
		status                        int
		code                          string
	}{
		{"bad_json batch", "POST", "/v1/messages", testKey, `{"users":["a"],"data":}`, nil, 400, "bad_json"},
		{"bad_json unknown member", "POST", "/v1/messages", testKey, `{"user":["a"],"data":1}`, nil, 400, "bad_json"},
		{"bad_json no data", "POST", "/v1/messages", testKey, `{"users":["a"]}`, nil, 400, "bad_json"},
		{"bad_json query", "POST", "/v1/presence/query", testKey, `[]`, nil, 400, "bad_json"},
		{"bad_request no users", "POST", "/v1/messages", testKey, `{"users":[],"data":1}`, nil, 400, "bad_request"},
		{"bad_request query no users", "POST", "/v1/presence/query", testKey, `{}`, nil, 400, "bad_request"},
		{"bad_request require_online", "POST", "/v1/users/a/messages?require_online=maybe", testKey, `1`, nil, 400, "bad_request"},
		{"bad_user presence", "GET", "/v1/users/%FF/presence", testKey, ``, nil, 400, "bad_user"},
		{"bad_user kick", "DELETE", "/v1/users/a%0Ab/connections", testKey, ``, nil, 400, "bad_user"},
		{"bad_idempotency_key long", "POST", "/v1/broadcast", testKey, `1`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "bad_idempotency_key"},
		{"bad_idempotency_key space", "POST", "/v1/users/a/messages", testKey, `1`, []string{"Idempotency-Key", "a b"}, 400, "bad_idempotency_key"},
		{"bad_idempotency_key twice", "POST", "/v1/messages", testKey, `{"users":["a"],"data":1}`, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, "bad_idempotency_key"},
		{"unauthorized", "GET", "/v1/stats", "", ``, nil, 401, "unauthorized"},
		{"unauthorized bad key", "DELETE", "/v1/users/a/connections", "not-a-key-0123456789", ``, nil, 401, "unauthorized"},
		{"forbidden", "POST", "/v1/messages", noScope, `{"users":["a"],"data":1}`, nil, 403, "forbidden"},
		{"not_found", "GET", "/v1/users/a", testKey, ``, nil, 404, "not_found"},
		{"not_found v2", "GET", "/v2/stats", testKey, ``, nil, 404, "not_found"},
		{"user_offline", "POST", "/v1/users/nobody/messages?require_online=1", testKey, `1`, nil, 404, "user_offline"},
		{"method_not_allowed stats", "POST", "/v1/stats", testKey, ``, nil, 405, "method_not_allowed"},
		{"method_not_allowed presence", "DELETE", "/v1/users/a/presence", testKey, ``, nil, 405, "method_not_allowed"},
		{"too_large", "POST", "/v1/messages", testKey, `{"users":["a"],"data":"` + strings.Repeat("x", testMaxBody) + `"}`, nil, 413, "too_large"},
		{"too_many_users", "POST", "/v1/messages", testKey, `{"users":["a","b","c","d"],"data":1}`, nil, 400, "too_many_users"},
		{"too_many_users query", "POST", "/v1/presence/query", testKey, `{"users":["a","b","c","d","a"]}`, nil, 400, "too_many_users"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			request(t, tc.method, u+tc.path, tc.key, tc.body, tc.headers...).refused(t, tc.status, tc.code)
		})
	}
	// Duplicates count once against --max-batch-users.
	resultsOf(t, do(t, http.MethodPost, u+"/v1/presence/query", testKey, `{"users":["a","b","c","a","b"]}`), http.StatusOK)
	if r := do(t, http.MethodPost, u+"/v1/stats", testKey, ``); r.header.Get("Allow") != "GET" {
		t.Fatalf("Allow %q, want GET", r.header.Get("Allow"))
	}
	expectNothingPublished(t, srv, sub)
}

// natsReq sends a NATS request API request and returns the reply.
func natsReq(t testing.TB, nc *nats.Conn, op string, body any) *nats.Msg {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nc.Request("wsfleet.router."+op, b, 5*time.Second)
	if err != nil {
		t.Fatalf("NATS request %s: %v", op, err)
	}
	return m
}

// normalize drops message ids (each publish has its own) from an answer.
func normalize(t testing.TB, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "id" {
					x[k] = "<id>"
				} else if k == "last_heartbeat_ms_ago" {
					x[k] = "<ms>"
				} else {
					x[k] = walk(e)
				}
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		}
		return v
	}
	return walk(v)
}

// TestNATSParity: each operation gives the same answer over HTTP and over
// the NATS request API; errors carry the HTTP status over NATS.
func TestNATSParity(t *testing.T) {
	ns, srv, _, _ := onlineFixture(t, nil, nil)
	nc := natsConnect(t, ns)
	u := apiURL(srv)
	cases := []struct {
		name               string
		method, path, body string
		op                 string
		req                any
		status             int
	}{
		{"publish", "POST", "/v1/users/alice/messages", `{"x":1}`, "publish", map[string]any{"user": "alice", "data": map[string]int{"x": 1}}, 202},
		{"publish offline", "POST", "/v1/users/dave/messages?require_online=true", `1`, "publish", map[string]any{"user": "dave", "data": 1, "require_online": true}, 404},
		{"publish bad user", "POST", "/v1/users/%0A/messages", `1`, "publish", map[string]any{"user": "\n", "data": 1}, 400},
		{"publish no data", "POST", "/v1/users/alice/messages", ``, "publish", map[string]any{"user": "alice"}, 400},
		{"batch", "POST", "/v1/messages", `{"users":["alice","dave","carol"],"data":2}`, "batch", map[string]any{"users": []string{"alice", "dave", "carol"}, "data": 2}, 202},
		{"batch require online", "POST", "/v1/messages?require_online=true", `{"users":["alice","dave"],"data":2}`, "batch", map[string]any{"users": []string{"alice", "dave"}, "data": 2, "require_online": true}, 202},
		{"batch empty", "POST", "/v1/messages", `{"users":[],"data":2}`, "batch", map[string]any{"users": []string{}, "data": 2}, 400},
		{"broadcast", "POST", "/v1/broadcast", `"all"`, "broadcast", map[string]any{"data": "all"}, 202},
		{"topic", "POST", "/v1/topics/room.1/messages", `{"t":1}`, "topic.publish", map[string]any{"topic": "room.1", "data": map[string]int{"t": 1}}, 202},
		{"topic bad", "POST", "/v1/topics/room.*/messages", `1`, "topic.publish", map[string]any{"topic": "room.*", "data": 1}, 400},
		{"topic presence", "GET", "/v1/topics/room.1/presence", ``, "topic.presence", map[string]any{"topic": "room.1"}, 200},
		{"topic presence bad", "GET", "/v1/topics/room.*/presence", ``, "topic.presence", map[string]any{"topic": "room.*"}, 400},
		{"subscribe user", "PUT", "/v1/users/alice/topics/room.1", ``, "topic.subscribe", map[string]any{"user": "alice", "topic": "room.1"}, 200},
		{"unsubscribe user", "DELETE", "/v1/users/alice/topics/room.1", ``, "topic.unsubscribe", map[string]any{"user": "alice", "topic": "room.1"}, 200},
		{"subscribe bad topic", "PUT", "/v1/users/alice/topics/a..b", ``, "topic.subscribe", map[string]any{"user": "alice", "topic": "a..b"}, 400},
		{"presence", "GET", "/v1/users/alice/presence", ``, "presence", map[string]any{"user": "alice"}, 200},
		{"presence offline", "GET", "/v1/users/dave/presence", ``, "presence", map[string]any{"user": "dave"}, 200},
		{"presence query", "POST", "/v1/presence/query", `{"users":["carol","dave"]}`, "presence.query", map[string]any{"users": []string{"carol", "dave"}}, 200},
		{"stats", "GET", "/v1/stats", ``, "stats", map[string]any{}, 200},
		{"kick nobody", "DELETE", "/v1/users/dave/connections", ``, "kick", map[string]any{"user": "dave"}, 200},
		{"bad idempotency key", "POST", "/v1/broadcast", `1`, "broadcast", map[string]any{"data": 1, "idempotency_key": "a b"}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.name == "bad idempotency key" {
				headers = []string{"Idempotency-Key", "a b"}
			}
			hr := request(t, tc.method, u+tc.path, testKey, tc.body, headers...)
			if hr.status != tc.status {
				t.Fatalf("HTTP status %d, want %d (%s)", hr.status, tc.status, hr.body)
			}
			m := natsReq(t, nc, tc.op, tc.req)
			want, got := normalize(t, hr.body), normalize(t, m.Data)
			if tc.status >= 400 {
				// The same body, {"code","reason"}, plus the status over
				// NATS; messages are for humans.
				hr.refused(t, tc.status, fmt.Sprint(want.(map[string]any)["code"]))
				want.(map[string]any)["status"] = float64(tc.status)
				want.(map[string]any)["reason"] = "<reason>"
				got.(map[string]any)["reason"] = "<reason>"
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("NATS answer %s\nHTTP answer %s", m.Data, hr.body)
			}
		})
	}
	// Idempotency over NATS: a retry gets the same answer and header.
	req := map[string]any{"user": "alice", "data": 5, "idempotency_key": "n-1"}
	first, again := natsReq(t, nc, "publish", req), natsReq(t, nc, "publish", req)
	if !bytes.Equal(first.Data, again.Data) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("NATS retry: %s then %s", first.Data, again.Data)
	}
	// Unknown members and garbage are bad_json.
	if m := natsReq(t, nc, "stats", map[string]any{"nope": 1}); !strings.Contains(string(m.Data), `"code":"bad_json"`) {
		t.Fatalf("unknown member: %s", m.Data)
	}
	if m, err := nc.Request("wsfleet.router.presence", []byte("{"), 5*time.Second); err != nil || !strings.Contains(string(m.Data), `"status":400`) {
		t.Fatalf("garbage: %v %v", m, err)
	}
}

// TestIdempotencyStoreUnavailable: when the KV bucket does not answer, a
// publish with a key is refused (503, nothing published) rather than risk a
// duplicate; one without a key goes out.
func TestIdempotencyStoreUnavailable(t *testing.T) {
	ns := jetStreamNATS(t)
	srv := startRouter(t, ns, func(o *router.Options) { o.IdempotencyStore = "jetstream" })
	sub := watch(t, ns)
	js, err := jetstream.New(natsConnect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(context.Background(), "wsfleet_idempotency"); err != nil {
		t.Fatal(err)
	}
	r := request(t, http.MethodPost, apiURL(srv)+"/v1/users/bob/messages", testKey, `1`, "Idempotency-Key", "k")
	r.refused(t, http.StatusServiceUnavailable, "idempotency_unavailable")
	if r.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	expectNothingPublished(t, srv, sub)
	expectDelivered(t, sub, "wsfleet.user.bob", `2`, post(t, srv, "bob", `2`).accepted(t))
}

// TestNATSQueueGroup: with two routers, each NATS request is answered by
// one of them.
func TestNATSQueueGroup(t *testing.T) {
	ns := startNATS(t, -1, nil)
	r1, r2 := startRouter(t, ns, nil), startRouter(t, ns, nil)
	nc := natsConnect(t, ns)
	const n = 20
	for i := 0; i < n; i++ {
		natsReq(t, nc, "stats", map[string]any{})
	}
	total := 0
	for _, srv := range []*router.Server{r1, r2} {
		for _, line := range strings.Split(metricsText(t, srv), "\n") {
			if strings.HasPrefix(line, `wsfleet_router_nats_requests_total{code="200",op="stats"} `) {
				v, _ := strconv.Atoi(strings.Fields(line)[1])
				total += v
			}
		}
	}
	if total != n {
		t.Fatalf("%d answers counted by the routers for %d requests", total, n)
	}
}

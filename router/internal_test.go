package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

func viewString(v *view) string {
	var out []string
	for u := range v.users {
		total, nodes := v.lookup(u, true)
		var parts []string
		for _, n := range nodes {
			parts = append(parts, fmt.Sprintf("%s=%d", n.Node, n.Devices))
		}
		out = append(out, fmt.Sprintf("%s:%d[%s]", u, total, strings.Join(parts, ",")))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func nodeCounts(v *view) string {
	var out []string
	for _, n := range v.nodes {
		if n != nil {
			out = append(out, fmt.Sprintf("%s:%d/%d", n.id, n.users, n.devices))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestViewSetAndClear(t *testing.T) {
	v := newView()
	now := time.Now()
	a, _ := v.node("a", now)
	b, _ := v.node("b", now)
	c, _ := v.node("c", now)
	steps := []struct {
		n       *nodeInfo
		user    string
		devices uint32
		view    string
		counts  string
	}{
		{a, "u", 1, "u:1[a=1]", "a:1/1 b:0/0 c:0/0"},
		{a, "u", 3, "u:3[a=3]", "a:1/3 b:0/0 c:0/0"},
		{b, "u", 2, "u:5[a=3,b=2]", "a:1/3 b:1/2 c:0/0"},
		{c, "u", 1, "u:6[a=3,b=2,c=1]", "a:1/3 b:1/2 c:1/1"},
		{b, "u", 4, "u:8[a=3,b=4,c=1]", "a:1/3 b:1/4 c:1/1"},
		{a, "u", 0, "u:5[b=4,c=1]", "a:0/0 b:1/4 c:1/1"},
		{a, "u", 0, "u:5[b=4,c=1]", "a:0/0 b:1/4 c:1/1"},
		{c, "u", 0, "u:4[b=4]", "a:0/0 b:1/4 c:0/0"},
		{c, "w", 2, "u:4[b=4] w:2[c=2]", "a:0/0 b:1/4 c:1/2"},
		{a, "x", 0, "u:4[b=4] w:2[c=2]", "a:0/0 b:1/4 c:1/2"},
		{b, "u", 0, "w:2[c=2]", "a:0/0 b:0/0 c:1/2"},
	}
	for i, st := range steps {
		v.set(st.n, st.user, st.devices)
		if got := viewString(v); got != st.view {
			t.Fatalf("step %d: view %q, want %q", i, got, st.view)
		}
		if got := nodeCounts(v); got != st.counts {
			t.Fatalf("step %d: counts %q, want %q", i, got, st.counts)
		}
	}
	if len(v.multi) != 0 {
		t.Fatalf("multi map holds %d users after they left all but one node", len(v.multi))
	}
	v.set(a, "w", 1)
	v.set(b, "w", 1)
	v.set(a, "y", 1)
	v.set(b, "z", 1)
	v.removeNode(c)
	if got := viewString(v); got != "w:2[a=1,b=1] y:1[a=1] z:1[b=1]" {
		t.Fatalf("after removing c: %q", got)
	}
	v.clearNode(a)
	if got := viewString(v); got != "w:1[b=1] z:1[b=1]" || len(v.multi) != 0 {
		t.Fatalf("after clearing a: %q (multi %d)", got, len(v.multi))
	}
	// c's index is reused.
	d, added := v.node("d", now)
	if !added || d.idx != c.idx {
		t.Fatalf("index %d for a new node, want %d (freed)", d.idx, c.idx)
	}
	v.set(d, "w", 7)
	if got := viewString(v); got != "w:8[b=1,d=7] z:1[b=1]" {
		t.Fatalf("after d: %q", got)
	}
}

// TestOpenAPICoversRoutes: the OpenAPI file lists exactly the routes the
// API serves, and every listed operation is served (not 404/405).
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range routes {
		served[r.method+" "+r.pattern] = true
		if !documented[r.method+" "+r.pattern] {
			t.Errorf("%s %s is served but not in openapi.json", r.method, r.pattern)
		}
	}
	for op := range documented {
		if !served[op] {
			t.Errorf("%s is in openapi.json but not served", op)
		}
	}
	// Through the real handler: every documented operation reaches its
	// handler (a request without credentials gets 401, not 404 or 405).
	s, err := New(Options{APIKeys: []string{"0123456789abcdef0123"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	for op := range documented {
		method, path, _ := strings.Cut(op, " ")
		req := httptest.NewRequest(method, strings.ReplaceAll(path, "{user}", "bob"), nil)
		w := httptest.NewRecorder()
		s.serveAPI(w, req)
		want := http.StatusUnauthorized
		if path == routeOpenAPI {
			want = http.StatusOK
		}
		if w.Code != want {
			t.Errorf("%s: status %d, want %d", op, w.Code, want)
		}
	}
}

// TestOpenAPIErrorSchema: the OpenAPI file's Error schema is the body the
// router writes, {"code","reason"}, its code enum is exactly the Code*
// constants of api.go, and every error response of every operation is
// that schema.
func TestOpenAPIErrorSchema(t *testing.T) {
	type schemaRef struct {
		Ref string `json:"$ref"`
	}
	type response struct {
		Ref     string `json:"$ref"`
		Content map[string]struct {
			Schema schemaRef `json:"schema"`
		} `json:"content"`
	}
	var doc struct {
		Paths      map[string]map[string]struct{ Responses map[string]response }
		Components struct {
			Responses map[string]response
			Schemas   map[string]struct {
				Required   []string
				Properties map[string]struct{ Enum []string }
			}
		}
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(openAPI, []byte(`\"message\"`)) {
		t.Error(`the OpenAPI description speaks of a "message" member: errors are {"code","reason"}`)
	}
	schema := doc.Components.Schemas["Error"]
	var props []string
	for p := range schema.Properties {
		props = append(props, p)
	}
	sort.Strings(props)
	if got := strings.Join(props, ","); got != "code,reason" {
		t.Errorf("Error schema properties %s, want code,reason", got)
	}
	if got := strings.Join(schema.Required, ","); got != "code,reason" {
		t.Errorf("Error schema requires %s, want code,reason", got)
	}
	// The body written is the schema's.
	b, err := json.Marshal(errorBody{Code: CodeInternal, Reason: "m"})
	if err != nil || string(b) != `{"code":"internal","reason":"m"}` {
		t.Errorf("error body %s (%v)", b, err)
	}

	// The Code* constants, read from api.go.
	f, err := parser.ParseFile(token.NewFileSet(), "api.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				codes = append(codes, v)
			}
		}
	}
	enum := append([]string(nil), schema.Properties["code"].Enum...)
	sort.Strings(codes)
	sort.Strings(enum)
	if len(codes) == 0 || !slices.Equal(codes, enum) {
		t.Errorf("Error code enum %v, want the api.go codes %v", enum, codes)
	}

	// Every 4xx and 5xx response is an Error.
	isError := func(r response) bool {
		if name, ok := strings.CutPrefix(r.Ref, "#/components/responses/"); ok {
			r = doc.Components.Responses[name]
		}
		c, ok := r.Content["application/json"]
		return ok && len(r.Content) == 1 && c.Schema.Ref == "#/components/schemas/Error"
	}
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			for status, r := range op.Responses {
				if status < "400" {
					continue
				}
				n++
				if !isError(r) {
					t.Errorf("%s %s: the %s response is not an application/json Error", method, path, status)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no error responses found in the OpenAPI file")
	}
}

func TestMemStore(t *testing.T) {
	ctx := context.Background()
	m := newMemStore(2, time.Minute)
	now := time.Now()
	c, _ := m.claim(ctx, "a", "fp", now)
	if !c.owned {
		t.Fatal("first claim not owned")
	}
	if c2, _ := m.claim(ctx, "a", "fp", now); c2.owned || c2.rec.State != "pending" {
		t.Fatalf("second claim: %+v", c2)
	}
	_ = m.complete(ctx, "a", c.rev, &idemRecord{State: "done", FP: "fp", Status: 202, Body: []byte(`{}`)})
	if c2, _ := m.claim(ctx, "a", "fp", now); c2.owned || c2.rec.State != "done" || c2.rec.Status != 202 {
		t.Fatalf("after complete: %+v", c2)
	}
	// A stale pending claim is taken over.
	cb, _ := m.claim(ctx, "b", "fp", now)
	if c3, _ := m.claim(ctx, "b", "fp", now.Add(pendingTTL+time.Second)); !c3.owned || c3.rev == cb.rev {
		t.Fatalf("stale claim not taken over: %+v", c3)
	}
	// Bounded: a third key evicts the oldest.
	m.claim(ctx, "c", "fp", now)
	if len(m.m) != 2 {
		t.Fatalf("%d keys held, max 2", len(m.m))
	}
}

// TestMemStoreWindow: a completed key is replayed for the idempotency
// window counted from its answer, then free for a new claim. The store's
// clock is set, so the window is crossed without waiting; a window shorter
// than the 30 s claim timeout shows the expiry is the window's, not a
// stale claim's takeover.
func TestMemStoreWindow(t *testing.T) {
	const answerAfter = 5 * time.Second // between the claim and the answer
	for _, tc := range []struct {
		name   string
		window time.Duration
	}{
		{"one hour", time.Hour},
		{"shorter than the claim timeout", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			claimed := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			answered := claimed.Add(answerAfter)
			m := newMemStore(10, tc.window)
			m.now = func() time.Time { return answered }
			c, _ := m.claim(ctx, "k", "fp", claimed)
			if !c.owned {
				t.Fatal("first claim not owned")
			}
			if err := m.complete(ctx, "k", c.rev, &idemRecord{State: "done", FP: "fp", Status: 202, Body: []byte(`{"id":"first"}`)}); err != nil {
				t.Fatal(err)
			}
			steps := []struct {
				name   string
				at     time.Time
				replay bool // the stored answer, else a new claim
			}{
				{"just answered", answered, true},
				{"window from the claim passed", claimed.Add(tc.window), true},
				{"last moment of the window", answered.Add(tc.window - time.Millisecond), true},
				{"window passed", answered.Add(tc.window), false},
			}
			for _, st := range steps {
				got, err := m.claim(ctx, "k", "fp", st.at)
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				switch {
				case st.replay && (got.owned || got.rec.State != "done" || got.rec.Status != 202 || string(got.rec.Body) != `{"id":"first"}`):
					t.Fatalf("%s: %+v, want the stored answer replayed", st.name, got)
				case !st.replay && (!got.owned || got.rev == c.rev):
					t.Fatalf("%s: %+v, want the expired key claimed anew", st.name, got)
				}
			}
		})
	}
}

// checkFor polls f until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// claimState is the state of the record under the store key sk ("" when
// there is none).
func claimState(t testing.TB, s *Server, sk string) string {
	t.Helper()
	switch st := s.idem.(type) {
	case *memStore:
		st.mu.Lock()
		defer st.mu.Unlock()
		if el, ok := st.m[sk]; ok {
			return el.Value.(*memEntry).rec.State
		}
	case *kvStore:
		e, err := st.kv.Get(context.Background(), sk)
		if err != nil {
			return ""
		}
		var rec idemRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		return rec.State
	default:
		t.Fatalf("store %T", s.idem)
	}
	return ""
}

// idemAnswer is what a publish got, over HTTP or NATS.
type idemAnswer struct {
	status     int
	code       string // of an error
	id         string // of a 202
	retryAfter string
	replayed   bool
}

// TestIdempotencyInProgress: over HTTP and over NATS, with both stores, a
// publish repeating the idempotency key of one still in flight gets 409
// idempotency_in_progress (Retry-After: 1) and publishes nothing; once the
// first is answered, a retry gets its stored answer. The first request is
// held in flight after its claim, without sleeping, by holding the
// presence view's lock, which a publish takes (after claiming the key) to
// read the user's device count.
func TestIdempotencyInProgress(t *testing.T) {
	const apiKey = "0123456789abcdef0123"
	cases := []struct{ name, store, transport string }{
		{"memory over HTTP", "memory", "http"},
		{"memory over NATS", "memory", "nats"},
		{"jetstream over HTTP", "jetstream", "http"},
		{"jetstream over NATS", "jetstream", "nats"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			go ns.Start()
			if !ns.ReadyForConnections(5 * time.Second) {
				t.Fatal("nats-server did not start")
			}
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
			s, err := New(Options{Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: ns.ClientURL(),
				APIKeys: []string{apiKey}, IdempotencyStore: tc.store, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if s.idem.kind() != tc.store {
				t.Fatalf("store %s, want %s", s.idem.kind(), tc.store)
			}
			nc, err := nats.Connect(ns.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			delivered, err := nc.SubscribeSync("wsfleet.user.bob")
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			// send publishes {"n":1} to bob with key (none when "").
			var send func(key string) (idemAnswer, error)
			scope := natsScope
			switch tc.transport {
			case "http":
				scope = s.keys[0].id
				hc := &http.Client{Timeout: 10 * time.Second}
				send = func(key string) (idemAnswer, error) {
					req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr().String()+"/v1/users/bob/messages", strings.NewReader(`{"n":1}`))
					if err != nil {
						return idemAnswer{}, err
					}
					req.Header.Set("Authorization", "Bearer "+apiKey)
					if key != "" {
						req.Header.Set("Idempotency-Key", key)
					}
					resp, err := hc.Do(req)
					if err != nil {
						return idemAnswer{}, err
					}
					defer resp.Body.Close()
					var b struct{ ID, Code string }
					if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
						return idemAnswer{}, err
					}
					return idemAnswer{status: resp.StatusCode, code: b.Code, id: b.ID, retryAfter: resp.Header.Get("Retry-After"),
						replayed: resp.Header.Get("Idempotent-Replayed") == "true"}, nil
				}
			case "nats":
				send = func(key string) (idemAnswer, error) {
					req, _ := json.Marshal(map[string]any{"user": "bob", "data": map[string]int{"n": 1}, "idempotency_key": key})
					m, err := nc.Request("wsfleet.router.publish", req, 10*time.Second)
					if err != nil {
						return idemAnswer{}, err
					}
					var b struct {
						ID, Code string
						Status   int
					}
					if err := json.Unmarshal(m.Data, &b); err != nil {
						return idemAnswer{}, err
					}
					a := idemAnswer{status: http.StatusAccepted, code: b.Code, id: b.ID, retryAfter: m.Header.Get("Retry-After"),
						replayed: m.Header.Get("Idempotent-Replayed") == "true"}
					if b.Code != "" {
						a.status = b.Status
					}
					return a, nil
				}
			}

			var unlock sync.Once
			release := func() { unlock.Do(s.t.v.mu.Unlock) }
			s.t.v.mu.Lock()
			t.Cleanup(release) // before the router closes
			type result struct {
				a   idemAnswer
				err error
			}
			firstDone := make(chan result, 1)
			go func() {
				a, err := send("order-1")
				firstDone <- result{a, err}
			}()
			sk := storeKey(scope, "order-1")
			checkFor(t, 5*time.Second, func() error {
				if st := claimState(t, s, sk); st != "pending" {
					return fmt.Errorf("the first request's claim: %q", st)
				}
				return nil
			})

			second, err := send("order-1")
			if err != nil {
				t.Fatalf("the duplicate in flight: %v", err)
			}
			if second.status != http.StatusConflict || second.code != CodeIdempotencyInProgress || second.retryAfter != "1" {
				t.Fatalf("the duplicate in flight: %+v, want 409 %s with Retry-After: 1", second, CodeIdempotencyInProgress)
			}

			release()
			var first result
			select {
			case first = <-firstDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the first request was not answered")
			}
			if first.err != nil || first.a.status != http.StatusAccepted || first.a.id == "" || first.a.replayed {
				t.Fatalf("the first request: %+v, %v", first.a, first.err)
			}
			retry, err := send("order-1")
			if err != nil || retry.status != http.StatusAccepted || retry.id != first.a.id || !retry.replayed {
				t.Fatalf("the retry after the answer: %+v, %v; want the first answer (id %s) replayed", retry, err, first.a.id)
			}
			// Published once: the next message after the first's is one
			// sent without a key.
			other, err := send("")
			if err != nil || other.status != http.StatusAccepted {
				t.Fatalf("a publish without a key: %+v, %v", other, err)
			}
			for _, want := range []string{first.a.id, other.id} {
				m, err := delivered.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got := m.Header.Get(protocol.HeaderMsgID); got != want {
					t.Fatalf("delivered message id %q, want %q: the duplicate or the retry was published", got, want)
				}
			}
		})
	}
}

func TestLimiters(t *testing.T) {
	l := newLimiters(1, 2)
	now := time.Now()
	for i := 0; i < 2; i++ {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("over the burst: %v, wait %s", ok, wait)
	}
	if retryAfterSeconds(wait) != 1 {
		t.Fatalf("Retry-After %d", retryAfterSeconds(wait))
	}
	if ok, _ := l.allow("a", now.Add(time.Second)); !ok {
		t.Fatal("no token a second later")
	}
	if newLimiters(-1, 0) != nil {
		t.Fatal("a negative rate should mean no limit")
	}
	var none *limiters
	if ok, _ := none.allow("x", now); !ok {
		t.Fatal("no limiter refused")
	}
}

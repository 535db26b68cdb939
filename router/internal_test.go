package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
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
	// Expiry after the window.
	if c4, _ := m.claim(ctx, "c", "fp", now.Add(2*time.Minute)); !c4.owned {
		t.Fatal("an expired key is still held")
	}
}

// TestIdempotencyInProgress: a duplicate while the first request is in
// flight gets 409 idempotency_in_progress, with both stores.
func TestIdempotencyInProgress(t *testing.T) {
	for _, store := range []string{"memory", "jetstream"} {
		t.Run(store, func(t *testing.T) {
			o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()}
			ns, err := server.NewServer(o)
			if err != nil {
				t.Fatal(err)
			}
			go ns.Start()
			if !ns.ReadyForConnections(5 * time.Second) {
				t.Fatal("nats-server did not start")
			}
			defer ns.Shutdown()
			s, err := New(Options{Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: ns.ClientURL(),
				APIKeys: []string{"0123456789abcdef0123"}, IdempotencyStore: store, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.idem.kind() != store {
				t.Fatalf("store %s, want %s", s.idem.kind(), store)
			}
			inside, release := make(chan struct{}), make(chan struct{})
			done := make(chan *apiError, 1)
			go func() {
				_, aerr := s.idempotent(context.Background(), "key:x", "k", "fp", func() (opResult, *apiError) {
					close(inside)
					<-release
					return opResult{status: 202, body: []byte(`{"id":"first"}`)}, nil
				})
				done <- aerr
			}()
			<-inside
			_, aerr := s.idempotent(context.Background(), "key:x", "k", "fp", func() (opResult, *apiError) {
				t.Error("ran twice")
				return opResult{}, nil
			})
			if aerr == nil || aerr.status != http.StatusConflict || aerr.code != CodeIdempotencyInProgress {
				t.Fatalf("duplicate in flight: %v", aerr)
			}
			close(release)
			if aerr := <-done; aerr != nil {
				t.Fatal(aerr)
			}
			res, aerr := s.idempotent(context.Background(), "key:x", "k", "fp", nil)
			if aerr != nil || string(res.body) != `{"id":"first"}` || !res.replayed {
				t.Fatalf("after the first finished: %+v %v", res, aerr)
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

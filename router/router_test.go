package router_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

func TestPublishToUser(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	cases := []struct {
		name    string
		escaped string // the user id as sent in the path
		body    string
		subject string
	}{
		{name: "dot", escaped: "bob.smith", body: `{"text":"hi"}`, subject: "wsfleet.user.bob_2Esmith"},
		{name: "plain", escaped: "alice", body: `{"a": 1,  "b":[true,null] }`, subject: "wsfleet.user.alice"},
		{name: "escaped slash", escaped: "a%2Fb", body: `"string"`, subject: "wsfleet.user.a_2Fb"},
		{name: "wildcards", escaped: "*.%3E", body: `42`, subject: "wsfleet.user._2A_2E_3E"},
		{name: "dot dot", escaped: "%2E%2E", body: `null`, subject: "wsfleet.user._2E_2E"},
		{name: "space", escaped: "bob%20smith", body: `[1,2]`, subject: "wsfleet.user.bob_20smith"},
		{name: "non-ASCII", escaped: "%C3%A9", body: `{"é":"ü"}`, subject: "wsfleet.user._C3_A9"},
		{name: "percent and plus", escaped: "a%25b+c", body: `true`, subject: "wsfleet.user.a_25b_2Bc"},
		{name: "underscore", escaped: "_", body: `{}`, subject: "wsfleet.user._5F"},
		{name: "longest id", escaped: strings.Repeat("x", protocol.MaxUserIDBytes), body: `1`,
			subject: "wsfleet.user." + strings.Repeat("x", protocol.MaxUserIDBytes)},
		{name: "body at the limit", escaped: "big", body: `"` + strings.Repeat("z", testMaxBody-2) + `"`, subject: "wsfleet.user.big"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := post(t, srv, tc.escaped, tc.body).accepted(t)
			expectDelivered(t, sub, tc.subject, tc.body, id)
		})
	}
}

func TestBroadcast(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	body := `{"type":"notice","text":"maintenance at 10:00"}`
	id := do(t, http.MethodPost, apiURL(srv)+"/v1/broadcast", testKey, body).accepted(t)
	expectDelivered(t, sub, "wsfleet.broadcast", body, id)
}

func TestSubjectPrefix(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) { o.SubjectPrefix = "acme.ws" })
	nc := natsConnect(t, ns)
	sub, err := nc.SubscribeSync("acme.ws.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := post(t, srv, "bob", `1`).accepted(t)
	expectDelivered(t, sub, "acme.ws.user.bob", `1`, id)
	id = do(t, http.MethodPost, apiURL(srv)+"/v1/broadcast", testKey, `2`).accepted(t)
	expectDelivered(t, sub, "acme.ws.broadcast", `2`, id)
}

func TestKeyRotation(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) { o.APIKeys = []string{testKey, testKey2} })
	sub := watch(t, ns)
	for _, tc := range []struct{ name, key string }{{"old key", testKey}, {"new key", testKey2}} {
		t.Run(tc.name, func(t *testing.T) {
			id := do(t, http.MethodPost, apiURL(srv)+"/v1/users/carol/messages", tc.key, `"x"`).accepted(t)
			expectDelivered(t, sub, "wsfleet.user.carol", `"x"`, id)
		})
	}
	t.Run("retired key", func(t *testing.T) {
		do(t, http.MethodPost, apiURL(srv)+"/v1/users/carol/messages", "retired-key-0123456789", `"x"`).refused(t, http.StatusUnauthorized, "unauthorized")
		expectNothingPublished(t, srv, sub)
	})
}

// chunked returns s as a reader of unknown length, so it is sent without
// a Content-Length.
func chunked(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }

func TestErrors(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	user := "/v1/users/bob/messages"
	tooBig := `"` + strings.Repeat("z", testMaxBody-1) + `"`
	cases := []struct {
		name   string
		method string
		path   string
		auth   string // the whole Authorization header; "-" for none
		body   any
		status int
		code   string
		header map[string]string // response headers expected
		reason string            // in the error's reason, when set
	}{
		{name: "no auth", path: user, auth: "-", body: `1`, status: 401, code: "unauthorized", header: map[string]string{"WWW-Authenticate": "Bearer"}, reason: "no credentials: send Authorization: Bearer"},
		{name: "wrong key", path: user, auth: "Bearer wrong-key-0123456789abc", body: `1`, status: 401, code: "unauthorized", header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "key prefix", path: user, auth: "Bearer " + testKey[:len(testKey)-1], body: `1`, status: 401, code: "unauthorized"},
		{name: "key with suffix", path: user, auth: "Bearer " + testKey + "x", body: `1`, status: 401, code: "unauthorized"},
		{name: "basic scheme", path: user, auth: "Basic " + testKey, body: `1`, status: 401, code: "unauthorized", reason: `the Authorization scheme is "Basic"`},
		{name: "bare key", path: user, auth: testKey, body: `1`, status: 401, code: "unauthorized", reason: "has no scheme"},
		{name: "empty bearer", path: user, auth: "Bearer ", body: `1`, status: 401, code: "unauthorized", reason: "Bearer scheme but no credential"},
		{name: "wrong JSON type", path: "/v1/messages", body: `{"users":"bob","data":1}`, status: 400, code: "bad_json", reason: `member "users" must be an array of strings, not a string`},
		{name: "unknown member", path: "/v1/messages", body: `{"user":["bob"],"data":1}`, status: 400, code: "bad_json", reason: `unknown member "user"`},
		{name: "wrong element type", path: "/v1/messages", body: `{"users":["bob",1],"data":1}`, status: 400, code: "bad_json", reason: `each element of member "users" must be a string, not a number`},
		{name: "scheme alone", path: user, auth: "Basic", body: `1`, status: 401, code: "unauthorized", reason: `the Authorization scheme is "Basic", with no credential`},
		{name: "not an object", path: "/v1/messages", body: `[1]`, status: 400, code: "bad_json", reason: "the body must be an object, not an array"},
		{name: "broadcast no auth", path: "/v1/broadcast", auth: "-", body: `1`, status: 401, code: "unauthorized"},
		{name: "unauthorized before bad json", path: user, auth: "-", body: `{`, status: 401, code: "unauthorized"},
		{name: "bad json", path: user, body: `{"a":`, status: 400, code: "bad_json"},
		{name: "empty body", path: user, body: ``, status: 400, code: "bad_json"},
		{name: "whitespace body", path: user, body: "  \n", status: 400, code: "bad_json"},
		{name: "two values", path: user, body: `1 2`, status: 400, code: "bad_json"},
		{name: "plain text", path: user, body: `hello`, status: 400, code: "bad_json"},
		{name: "invalid UTF-8", path: user, body: "\"\xff\"", status: 400, code: "bad_json"},
		{name: "broadcast bad json", path: "/v1/broadcast", body: `nope`, status: 400, code: "bad_json"},
		{name: "control character id", path: "/v1/users/a%0Ab/messages", body: `1`, status: 400, code: "bad_user"},
		{name: "invalid UTF-8 id", path: "/v1/users/%FF/messages", body: `1`, status: 400, code: "bad_user"},
		{name: "empty id", path: "/v1/users//messages", body: `1`, status: 400, code: "bad_user"},
		{name: "id too long", path: "/v1/users/" + strings.Repeat("x", protocol.MaxUserIDBytes+1) + "/messages", body: `1`, status: 400, code: "bad_user"},
		{name: "too large", path: user, body: tooBig, status: 413, code: "too_large"},
		{name: "too large chunked", path: user, body: chunked(tooBig), status: 413, code: "too_large"},
		{name: "broadcast too large", path: "/v1/broadcast", body: tooBig, status: 413, code: "too_large"},
		{name: "unknown path", path: "/v1/nope", body: `1`, status: 404, code: "not_found"},
		{name: "root", method: http.MethodGet, path: "/", status: 404, code: "not_found"},
		{name: "user without messages", path: "/v1/users/bob", body: `1`, status: 404, code: "not_found"},
		{name: "trailing slash", path: "/v1/broadcast/", body: `1`, status: 404, code: "not_found"},
		{name: "id with a raw slash", path: "/v1/users/a/b/messages", body: `1`, status: 404, code: "not_found"},
		{name: "not found without auth", path: "/v2/broadcast", auth: "-", body: `1`, status: 404, code: "not_found"},
		{name: "GET user", method: http.MethodGet, path: user, status: 405, code: "method_not_allowed", header: map[string]string{"Allow": "POST"}},
		{name: "PUT broadcast", method: http.MethodPut, path: "/v1/broadcast", body: `1`, status: 405, code: "method_not_allowed", header: map[string]string{"Allow": "POST"}},
		{name: "DELETE without auth", method: http.MethodDelete, path: user, auth: "-", status: 405, code: "method_not_allowed", header: map[string]string{"Allow": "POST"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader
			switch b := tc.body.(type) {
			case string:
				body = strings.NewReader(b)
			case io.Reader:
				body = b
			}
			req, err := http.NewRequest(method, apiURL(srv)+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.auth {
			case "":
				req.Header.Set("Authorization", "Bearer "+testKey)
			case "-":
			default:
				req.Header.Set("Authorization", tc.auth)
			}
			r := send(t, req)
			r.refused(t, tc.status, tc.code)
			reason, _ := r.jsonBody(t)["reason"].(string)
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.reason)
			}
			if strings.Contains(reason, "Go ") || strings.Contains(reason, "struct") || strings.Contains(reason, "[]string") {
				t.Errorf("reason %q speaks of Go, not of the API", reason)
			}
			for k, v := range tc.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			expectNothingPublished(t, srv, sub)
		})
	}
	m := metricsText(t, srv)
	for _, want := range []string{
		`wsfleet_router_http_requests_total{code="401",route="/v1/users/{user}/messages"} 9`,
		`wsfleet_router_http_requests_total{code="404",route="other"} 6`,
		`wsfleet_router_http_requests_total{code="413",route="/v1/broadcast"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestNATSDown(t *testing.T) {
	ns := startNATS(t, -1, nil)
	port := natsPort(t, ns)
	srv := startRouter(t, ns, func(o *router.Options) { o.PublishWait = router.NoPublishWait })
	post(t, srv, "bob", `"before"`).accepted(t)

	ns.Shutdown()
	ns.WaitForShutdown()
	checkFor(t, 5*time.Second, func() error {
		if r := post(t, srv, "bob", `"during"`); r.status != http.StatusServiceUnavailable {
			return errorf("status %d, want 503", r.status)
		}
		return nil
	})
	cases := []struct{ name, method, path, body string }{
		{"user", http.MethodPost, "/v1/users/bob/messages", `"during"`},
		{"broadcast", http.MethodPost, "/v1/broadcast", `"during"`},
		// Presence may be stale: the router misses changes meanwhile.
		{"presence", http.MethodGet, "/v1/users/bob/presence", ""},
		{"presence query", http.MethodPost, "/v1/presence/query", `{"users":["bob"]}`},
		{"stats", http.MethodGet, "/v1/stats", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := do(t, tc.method, apiURL(srv)+tc.path, testKey, body)
			r.refused(t, http.StatusServiceUnavailable, "nats_unavailable")
			if got := r.header.Get("Retry-After"); got != "1" {
				t.Fatalf("Retry-After %q, want 1", got)
			}
		})
	}
	if r := do(t, http.MethodGet, adminURL(srv)+"/readyz", "", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while NATS is down: %d, want 503", r.status)
	}
	if m := metricsText(t, srv); !strings.Contains(m, "wsfleet_router_nats_connected 0") {
		t.Fatal("wsfleet_router_nats_connected is not 0 while NATS is down")
	}

	// A new server on the same port: the router reconnects, and none of the
	// refused messages shows up there.
	ns2 := startNATS(t, port, nil)
	sub := watch(t, ns2)
	var id string
	checkFor(t, 10*time.Second, func() error {
		r := post(t, srv, "bob", `"after"`)
		if r.status != http.StatusAccepted {
			return errorf("status %d, want 202", r.status)
		}
		id = r.accepted(t)
		return nil
	})
	expectDelivered(t, sub, "wsfleet.user.bob", `"after"`, id)
	if r := do(t, http.MethodGet, adminURL(srv)+"/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("/readyz after reconnecting: %d, want 200", r.status)
	}
}

func TestAdmin(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	post(t, srv, "bob", `1`).accepted(t)
	for _, tc := range []struct {
		name, path string
		status     int
		contains   []string
	}{
		{name: "healthz", path: "/healthz", status: 200, contains: []string{`"ok"`}},
		{name: "readyz", path: "/readyz", status: 200, contains: []string{`"ready"`}},
		{name: "metrics", path: "/metrics", status: 200, contains: []string{
			`wsfleet_router_http_requests_total{code="202",route="/v1/users/{user}/messages"} 1`,
			`wsfleet_router_publish_seconds_count{target="user"} 1`,
			`wsfleet_router_nats_connected 1`,
			`go_goroutines`, `process_open_fds`,
		}},
		{name: "no pprof unless asked for", path: "/debug/pprof/", status: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodGet, adminURL(srv)+tc.path, "", nil)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d", r.status, tc.status)
			}
			for _, want := range tc.contains {
				if !strings.Contains(string(r.body), want) {
					t.Errorf("%s lacks %q", tc.path, want)
				}
			}
		})
	}
}

func TestAdminPprof(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) { o.AdminPprof = true })
	r := do(t, http.MethodGet, adminURL(srv)+"/debug/pprof/", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "goroutine") {
		t.Fatalf("pprof with AdminPprof: %d", r.status)
	}
}

func TestAdminOff(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, func(o *router.Options) { o.AdminListen = "off" })
	if srv.AdminAddr() != nil {
		t.Fatalf("admin listener at %v with --admin-listen off", srv.AdminAddr())
	}
	post(t, srv, "bob", `1`).accepted(t)
}

func TestConcurrentPublishes(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	const workers, each = 8, 25
	var mu sync.Mutex
	ids := map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id, err := postAsync(srv, "many", `{"n":1}`)
				if err != nil {
					t.Error(err) // not Fatal: this is not the test goroutine
					return
				}
				mu.Lock()
				ids[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(ids) != workers*each {
		t.Fatalf("%d distinct ids for %d messages", len(ids), workers*each)
	}
	for i := 0; i < workers*each; i++ {
		m := nextMsg(t, sub)
		id := m.Header.Get(protocol.HeaderMsgID)
		if !ids[id] {
			t.Fatalf("message %d has id %q: unknown or repeated", i, id)
		}
		delete(ids, id)
	}
}

func TestShutdown(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	post(t, srv, "bob", `1`).accepted(t)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !srv.NATSConn().IsClosed() {
		t.Fatal("the NATS connection is still open after Shutdown")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the API still accepts connections after Shutdown")
	}
	if err := srv.Shutdown(ctx); !errors.Is(err, router.ErrServerClosed) {
		t.Fatalf("second Shutdown: %v, want ErrServerClosed", err)
	}
	if err := srv.Start(); !errors.Is(err, router.ErrServerClosed) {
		t.Fatalf("Start after Shutdown: %v, want ErrServerClosed", err)
	}
}

func TestStartErrors(t *testing.T) {
	small := startNATS(t, -1, func(o *server.Options) { o.MaxPayload = 4096 })
	// A port nothing listens on: a server started and stopped.
	gone := startNATS(t, -1, nil)
	gonePort := natsPort(t, gone)
	gone.Shutdown()
	gone.WaitForShutdown()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cases := []struct {
		name     string
		mod      func(*router.Options)
		sentinel error
		contains []string
		hidden   string // must not appear in the error
	}{
		{name: "body over max_payload", sentinel: router.ErrBadOption, contains: []string{"--max-body-bytes", "4096"},
			mod: func(o *router.Options) { o.NATSURL = small.ClientURL(); o.MaxBodyBytes = 4096 }},
		{name: "NATS unreachable", sentinel: router.ErrNATSUnavailable, contains: []string{"--nats-url", "127.0.0.1"}, hidden: "s3cret",
			mod: func(o *router.Options) {
				o.NATSURL = "nats://bob:s3cret@127.0.0.1:" + itoa(gonePort)
				o.NATSConnectTimeout = 300 * time.Millisecond
			}},
		{name: "listen busy", sentinel: router.ErrBadOption, contains: []string{"--listen"},
			mod: func(o *router.Options) { o.Listen = busy.Addr().String() }},
		{name: "admin busy", sentinel: router.ErrBadOption, contains: []string{"--admin-listen"},
			mod: func(o *router.Options) { o.AdminListen = busy.Addr().String() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t, small.ClientURL())
			o.MaxBodyBytes = 1024
			tc.mod(&o)
			srv, err := router.New(o)
			if err != nil {
				t.Fatal(err)
			}
			err = srv.Start()
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("Start: %v, want %v", err, tc.sentinel)
			}
			for _, want := range tc.contains {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
				t.Errorf("error %q shows %q", err, tc.hidden)
			}
		})
	}
}

// TestShutdownFinishesRequestsInFlight starts a request whose body is still
// to come, shuts the router down, and checks the request is still published
// and answered before Shutdown returns.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	addr := srv.Addr().String()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"part":2}`
	// With Expect: 100-continue the server answers "100 Continue" when the
	// handler starts reading the body: then the request is in flight.
	if _, err := io.WriteString(c, "POST /v1/users/late/messages HTTP/1.1\r\nHost: router\r\n"+
		"Authorization: Bearer "+testKey+"\r\nContent-Length: "+itoa(len(body))+"\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("got %q, %v; want 100 Continue", line, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "\r\n" {
		t.Fatalf("got %q, %v after 100 Continue", line, err)
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(ctx)
	}()
	checkFor(t, 5*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return errorf("the listener still accepts connections")
		}
		return nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	if _, err := io.WriteString(c, body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := response{status: resp.StatusCode, header: resp.Header, body: b}.accepted(t)
	expectDelivered(t, sub, "wsfleet.user.late", body, id)
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// postAsync publishes body to user with testKey and returns the message id;
// unlike post it may run outside the test goroutine.
func postAsync(srv *router.Server, user, body string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, apiURL(srv)+"/v1/users/"+user+"/messages", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || resp.StatusCode != http.StatusAccepted || !protocol.ValidMsgID(b.ID) {
		return "", errorf("status %d, id %q, %v; want 202 and a valid id", resp.StatusCode, b.ID, err)
	}
	return b.ID, nil
}

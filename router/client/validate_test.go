package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/router/client"
)

// fakeRouter answers every HTTP request and every NATS request on
// <prefix>.router.> with answer, and records what it got.
type fakeRouter struct {
	url string
	nc  *nats.Conn

	mu       sync.Mutex
	requests []string // "GET /v1/stats", or the NATS subject
	bodies   []string
	headers  []http.Header
}

const fakePrefix = "fake"

func startFakeRouter(t *testing.T, status int, answer string) *fakeRouter {
	t.Helper()
	f := &fakeRouter{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.bodies = append(f.bodies, string(b))
		f.headers = append(f.headers, r.Header.Clone())
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	responder, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(responder.Close)
	if _, err := responder.Subscribe(fakePrefix+".router.>", func(m *nats.Msg) {
		f.mu.Lock()
		f.requests = append(f.requests, m.Subject)
		f.bodies = append(f.bodies, string(m.Data))
		f.headers = append(f.headers, nil)
		f.mu.Unlock()
		_ = m.Respond([]byte(answer))
	}); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	f.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.nc.Close)
	return f
}

// clients are an HTTP and a NATS client of the fake router.
func (f *fakeRouter) clients(t *testing.T) map[string]client.Client {
	return map[string]client.Client{
		"http": newHTTP(t, f.url, apiKey),
		"nats": newNATS(t, f.nc, fakePrefix),
	}
}

// got returns the requests received so far, after a NATS round trip so
// that any request sent over NATS has been answered.
func (f *fakeRouter) got(t *testing.T) []string {
	t.Helper()
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeRouter) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests, f.bodies, f.headers = nil, nil, nil
}

// checkConfigError fails unless err is a *client.ConfigError for field
// whose message contains want, and is neither an outage nor retryable.
func checkConfigError(t *testing.T, err error, field, want string) {
	t.Helper()
	var ce *client.ConfigError
	switch {
	case err == nil:
		t.Fatal("no error")
	case !errors.As(err, &ce) || !errors.Is(err, client.ErrInvalidConfig):
		t.Fatalf("%v (%T): not a *client.ConfigError matching ErrInvalidConfig", err, err)
	case ce.Field != field:
		t.Fatalf("%v: field %q, want %q", err, ce.Field, field)
	case !strings.Contains(err.Error(), want):
		t.Fatalf("%q lacks %q", err, want)
	case errors.Is(err, client.ErrRouterUnavailable):
		t.Fatalf("%v matches ErrRouterUnavailable", err)
	case client.IsRetryable(err):
		t.Fatalf("%v is retryable", err)
	}
}

// TestNewHTTPRefuses: NewHTTP refuses a base URL or token nothing could be
// sent with, naming the argument, and the error is not an outage.
func TestNewHTTPRefuses(t *testing.T) {
	cases := []struct {
		name    string
		baseURL string
		token   string
		opts    []client.HTTPOption
		field   string
		want    string // in the error
		hidden  string // never in the error
	}{
		{name: "empty URL", baseURL: "", field: "baseURL", want: `empty: want the router's URL, such as "http://router:8090"`},
		{name: "bare IP and port", baseURL: "127.0.0.1:8090", field: "baseURL", want: `no scheme: use "http://127.0.0.1:8090"`},
		{name: "bare name and port", baseURL: "router:8090", field: "baseURL", want: `no scheme: use "http://router:8090"`},
		{name: "bare localhost and port", baseURL: "localhost:8090", field: "baseURL", want: `no scheme: use "http://localhost:8090"`},
		{name: "bare host", baseURL: "router", field: "baseURL", want: `no scheme: use "http://router"`},
		{name: "bare IPv6 and port", baseURL: "[::1]:8090", field: "baseURL", want: `no scheme: use "http://[::1]:8090"`},
		{name: "scheme-relative", baseURL: "//router:8090", field: "baseURL", want: `no scheme: use "http://router:8090"`},
		{name: "WebSocket scheme", baseURL: "ws://router:8090", field: "baseURL", want: `scheme "ws": want http or https`},
		{name: "NATS URL", baseURL: "nats://127.0.0.1:4222", field: "baseURL", want: `scheme "nats": want http or https`},
		{name: "no host", baseURL: "http://", field: "baseURL", want: "no host"},
		{name: "no host with a path", baseURL: "http:///v1", field: "baseURL", want: "no host"},
		{name: "opaque", baseURL: "http:router:8090", field: "baseURL", want: "no host"},
		{name: "bad port", baseURL: "http://router:http", field: "baseURL", want: `invalid port ":http"`},
		{name: "query", baseURL: "http://router:8090/?debug=1", field: "baseURL", want: "a query"},
		{name: "empty query", baseURL: "http://router:8090?", field: "baseURL", want: "a query"},
		{name: "fragment", baseURL: "http://router:8090#top", field: "baseURL", want: "a fragment"},
		{name: "empty fragment", baseURL: "http://router:8090#", field: "baseURL", want: "a fragment"},
		{name: "user info", baseURL: "http://svc:s3cret@router:8090", field: "baseURL", want: "user info", hidden: "s3cret"},
		{name: "user info without a scheme", baseURL: "svc:s3cret@router:8090", field: "baseURL", want: "no scheme: want http:// or https://", hidden: "s3cret"},
		{name: "user info and a bad port", baseURL: "http://svc:s3cret@router:http", field: "baseURL", want: `invalid port ":http"`, hidden: "s3cret"},
		{name: "leading space", baseURL: " http://router:8090", field: "baseURL", want: "white space"},
		{name: "trailing newline", baseURL: "http://router:8090\n", field: "baseURL", want: "white space"},
		{name: "control character", baseURL: "http://rou\x7fter:8090", field: "baseURL", want: "invalid control character"},
		{name: "empty token", baseURL: "http://router:8090", token: "", field: "token", want: "empty"},
		{name: "token with a trailing newline", baseURL: "http://router:8090", token: "key-0123456789\n", field: "token",
			want: "byte 14 of 15 is the control character 0x0a (a line end read with it?)", hidden: "key-0123456789"},
		{name: "token with a NUL", baseURL: "http://router:8090", token: "key\x000123456789", field: "token", want: "byte 3 of 14 is the control character 0x00", hidden: "key"},
		{name: "token with spaces around", baseURL: "http://router:8090", token: " key-0123456789 ", field: "token", want: "white space", hidden: "key-0123456789"},
		{name: "nil http.Client", baseURL: "http://router:8090", opts: []client.HTTPOption{client.WithHTTPClient(nil)}, field: "WithHTTPClient", want: "nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token
			if token == "" && tc.field != "token" {
				token = apiKey
			}
			c, err := client.NewHTTP(tc.baseURL, token, tc.opts...)
			if c != nil {
				t.Errorf("a client along with %v", err)
			}
			checkConfigError(t, err, tc.field, tc.want)
			if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
				t.Fatalf("%q shows %q", err, tc.hidden)
			}
		})
	}
}

// TestNewHTTPBaseURL: the base URLs NewHTTP takes lead to the API's paths.
func TestNewHTTPBaseURL(t *testing.T) {
	f := startFakeRouter(t, http.StatusOK, `{"nodes":1}`)
	host := strings.TrimPrefix(f.url, "http://")
	cases := []struct {
		name    string
		baseURL string
		want    string
	}{
		{"plain", f.url, "GET /v1/stats"},
		{"trailing slash", f.url + "/", "GET /v1/stats"},
		{"trailing slashes", f.url + "//", "GET /v1/stats"},
		{"path prefix", f.url + "/router", "GET /router/v1/stats"},
		{"path prefix with a slash", f.url + "/router/", "GET /router/v1/stats"},
		{"upper-case scheme", "HTTP://" + host, "GET /v1/stats"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.reset()
			c := newHTTP(t, tc.baseURL, apiKey)
			if st, err := c.Stats(ctx(t)); err != nil || st.Nodes != 1 {
				t.Fatalf("Stats: %+v, %v", st, err)
			}
			if got := f.got(t); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("requests %q, want [%q]", got, tc.want)
			}
		})
	}
	// The token is sent as given.
	f.reset()
	if _, err := newHTTP(t, f.url, "a.jwt.token").Stats(ctx(t)); err != nil {
		t.Fatal(err)
	}
	f.got(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.headers[0].Get("Authorization"); h != "Bearer a.jwt.token" {
		t.Fatalf("Authorization %q", h)
	}
}

// TestNewNATSRefuses: NewNATS refuses a nil connection and a prefix no
// router can have.
func TestNewNATSRefuses(t *testing.T) {
	f := startFakeRouter(t, http.StatusOK, `{}`)
	cases := []struct {
		name   string
		nc     *nats.Conn
		prefix string
		field  string
		want   string
	}{
		{name: "nil connection", nc: nil, prefix: "wsfleet", field: "nc", want: "nil *nats.Conn"},
		{name: "trailing dot", nc: f.nc, prefix: "wsfleet.", field: "prefix", want: `"wsfleet.": subject prefix must be`},
		{name: "leading dot", nc: f.nc, prefix: ".wsfleet", field: "prefix", want: "subject prefix must be"},
		{name: "empty token", nc: f.nc, prefix: "a..b", field: "prefix", want: "subject prefix must be"},
		{name: "wildcard", nc: f.nc, prefix: "wsfleet.*", field: "prefix", want: "subject prefix must be"},
		{name: "full wildcard", nc: f.nc, prefix: ">", field: "prefix", want: "subject prefix must be"},
		{name: "space", nc: f.nc, prefix: "ws fleet", field: "prefix", want: "subject prefix must be"},
		{name: "too long", nc: f.nc, prefix: strings.Repeat("a", 65), field: "prefix", want: "subject prefix must be"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.NewNATS(tc.nc, tc.prefix)
			if c != nil {
				t.Errorf("a client along with %v", err)
			}
			checkConfigError(t, err, tc.field, tc.want)
		})
	}
}

// TestNewNATSPrefix: the prefixes NewNATS takes are the subjects'.
func TestNewNATSPrefix(t *testing.T) {
	f := startFakeRouter(t, http.StatusOK, `{"nodes":1}`)
	got := make(chan string, 1)
	sub, err := f.nc.Subscribe(">", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, ".router.stats") {
			got <- m.Subject
			_ = m.Respond([]byte(`{"nodes":2}`))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, tc := range []struct{ name, prefix, want string }{
		{"default", "", "wsfleet.router.stats"},
		{"named", "wsfleet", "wsfleet.router.stats"},
		{"dotted", "team-a.ws_fleet", "team-a.ws_fleet.router.stats"},
		{"64 bytes", strings.Repeat("a", 64), strings.Repeat("a", 64) + ".router.stats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newNATS(t, f.nc, tc.prefix).Stats(ctx(t)); err != nil {
				t.Fatal(err)
			}
			if s := <-got; s != tc.want {
				t.Fatalf("subject %q, want %q", s, tc.want)
			}
		})
	}
}

// unencodable has a MarshalJSON that returns something that is not JSON.
type unencodable struct{}

func (unencodable) MarshalJSON() ([]byte, error) { return []byte("{oops"), nil }

// TestInvalidData: data that is not one JSON value in UTF-8 is a
// *client.DataError saying what is wrong, over both transports, for every
// publish, and nothing is sent.
func TestInvalidData(t *testing.T) {
	f := startFakeRouter(t, http.StatusAccepted, `{"id":"m1","results":[]}`)
	cases := []struct {
		name string
		data any
		want string
	}{
		{"nil json.RawMessage", json.RawMessage(nil), "json.RawMessage is empty"},
		{"empty []byte", []byte{}, "[]byte is empty"},
		{"white space only", json.RawMessage(" \n\t"), "json.RawMessage is empty"},
		{"not JSON", json.RawMessage("hello"), "json.RawMessage is not one JSON value: invalid character 'h' looking for beginning of value (at byte offset 0)"},
		{"trailing comma", []byte(`{"a":1,}`), "[]byte is not one JSON value: invalid character '}' looking for beginning of object key string (at byte offset 7)"},
		{"two values", json.RawMessage(`{"a":1} {"b":2}`), "invalid character '{' after top-level value (at byte offset 8)"},
		{"two numbers", json.RawMessage(`1 2`), "invalid character '2' after top-level value (at byte offset 2)"},
		{"truncated", json.RawMessage(`{"a":`), "json.RawMessage is not one JSON value: unexpected end of JSON input"},
		{"single quotes", json.RawMessage(`{'a':1}`), "invalid character '\\'' looking for beginning of object key string (at byte offset 1)"},
		{"not UTF-8", json.RawMessage("\"caf\xe9\""), "json.RawMessage is not UTF-8: byte offset 4"},
		{"a func", func() {}, "encoding it as JSON: json: unsupported type: func()"},
		{"a channel", map[string]any{"c": make(chan int)}, "json: unsupported type: chan int"},
		{"NaN", math.NaN(), "json: unsupported value: NaN"},
		{"a MarshalJSON returning non-JSON", unencodable{}, "encoding it as JSON: json: error calling MarshalJSON for type client_test.unencodable"},
	}
	for name, c := range f.clients(t) {
		publishes := map[string]func(any) error{
			"Publish": func(d any) error {
				r, err := c.Publish(ctx(t), "alice", d)
				return resultAndError(r, err)
			},
			"PublishBatch": func(d any) error {
				r, err := c.PublishBatch(ctx(t), []string{"alice"}, d)
				return resultAndError(r, err)
			},
			"Broadcast": func(d any) error {
				r, err := c.Broadcast(ctx(t), d)
				return resultAndError(r, err)
			},
			"PublishTopic": func(d any) error {
				r, err := c.PublishTopic(ctx(t), "room.1", d)
				return resultAndError(r, err)
			},
		}
		for op, publish := range publishes {
			for _, tc := range cases {
				t.Run(name+"/"+op+"/"+tc.name, func(t *testing.T) {
					f.reset()
					err := publish(tc.data)
					var de *client.DataError
					if !errors.As(err, &de) || !errors.Is(err, client.ErrInvalidData) {
						t.Fatalf("%v (%T): not a *client.DataError matching ErrInvalidData", err, err)
					}
					if !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("%q lacks %q", err, tc.want)
					}
					if errors.Is(err, client.ErrRouterUnavailable) || errors.Is(err, client.ErrBadJSON) || client.IsRetryable(err) {
						t.Fatalf("%v: an outage, the router's bad_json, or retryable", err)
					}
					if got := f.got(t); len(got) != 0 {
						t.Fatalf("sent %q", got)
					}
				})
			}
		}
	}
	// The cause stays reachable.
	_, err := newHTTP(t, f.url, apiKey).Publish(ctx(t), "alice", json.RawMessage("{"))
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("%v: no *json.SyntaxError", err)
	}
	_, err = newHTTP(t, f.url, apiKey).Publish(ctx(t), "alice", func() {})
	var ue *json.UnsupportedTypeError
	if !errors.As(err, &ue) {
		t.Fatalf("%v: no *json.UnsupportedTypeError", err)
	}
}

func resultAndError[T any](r T, err error) error {
	if err != nil && !isNil(r) {
		return fmt.Errorf("a result %v along with %w", r, err)
	}
	return err
}

func isNil(v any) bool {
	switch r := v.(type) {
	case *client.PublishResult:
		return r == nil
	case *client.BroadcastResult:
		return r == nil
	case []client.UserResult:
		return r == nil
	}
	return false
}

// TestValidData: raw data that is one JSON value goes out as is, white
// space and all, over both transports.
func TestValidData(t *testing.T) {
	f := startFakeRouter(t, http.StatusAccepted, `{"id":"m1","results":[]}`)
	for name, c := range f.clients(t) {
		for _, tc := range []struct {
			name string
			data any
			want string // in the request body
		}{
			{"object with white space", json.RawMessage(" {\"a\": [1, 2]}\n"), `{"a": [1, 2]}`},
			{"null", json.RawMessage("null"), "null"},
			{"string with UTF-8", []byte(`"café ✓"`), `"café ✓"`},
			{"number", []byte("-1.5e3"), "-1.5e3"},
			{"a value", map[string]int{"n": 1}, `{"n":1}`},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				f.reset()
				if _, err := c.Publish(ctx(t), "alice", tc.data); err != nil {
					t.Fatal(err)
				}
				got := f.got(t)
				f.mu.Lock()
				defer f.mu.Unlock()
				want := tc.want // sent as is over HTTP; inside the request's JSON, compacted, over NATS
				if name == "nats" {
					var b bytes.Buffer
					if err := json.Compact(&b, []byte(want)); err != nil {
						t.Fatal(err)
					}
					want = `"data":` + b.String()
				}
				if len(got) != 1 || !strings.Contains(f.bodies[0], want) {
					t.Fatalf("sent %q with %q, want one request holding %q", got, f.bodies, want)
				}
			})
		}
	}
}

// TestIdempotencyKeyChecked: a key the router would refuse is refused
// before anything is sent, as ErrBadIdempotencyKey (never an outage: over
// HTTP such a key cannot even go in a header).
func TestIdempotencyKeyChecked(t *testing.T) {
	f := startFakeRouter(t, http.StatusAccepted, `{"id":"m1","results":[]}`)
	for name, c := range f.clients(t) {
		for _, tc := range []struct {
			name string
			key  string
			want string // "" when the key is fine
		}{
			{"newline", "order-1\n", "byte 7 is 0x0a, not printable ASCII"},
			{"carriage return", "order\r1", "byte 5 is 0x0d"},
			{"tab", "order\t1", "byte 5 is 0x09"},
			{"DEL", "order\x7f", "byte 5 is 0x7f"},
			{"non-ASCII", "commande-é", "byte 9 is 0xc3"},
			{"256 bytes", strings.Repeat("k", 256), "256 bytes, over 255"},
			{"255 bytes", strings.Repeat("k", 255), ""},
			{"printable ASCII", "order 1234/shipped~!", ""},
			{"empty: no key", "", ""},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				f.reset()
				_, err := c.Publish(ctx(t), "alice", 1, client.WithIdempotencyKey(tc.key))
				sent := f.got(t)
				if tc.want == "" {
					if err != nil || len(sent) != 1 {
						t.Fatalf("%v, sent %q", err, sent)
					}
					return
				}
				var ce *client.Error
				if !errors.Is(err, client.ErrBadIdempotencyKey) || !errors.As(err, &ce) || ce.Status != 0 ||
					!strings.Contains(ce.Message, tc.want) {
					t.Fatalf("%v (%+v), want ErrBadIdempotencyKey with %q", err, ce, tc.want)
				}
				if errors.Is(err, client.ErrRouterUnavailable) || client.IsRetryable(err) {
					t.Fatalf("%v: an outage or retryable", err)
				}
				if len(sent) != 0 {
					t.Fatalf("sent %q", sent)
				}
				if _, err := c.Broadcast(ctx(t), 1, client.WithIdempotencyKey(tc.key)); !errors.Is(err, client.ErrBadIdempotencyKey) {
					t.Fatalf("Broadcast: %v", err)
				}
				if _, err := c.PublishBatch(ctx(t), []string{"a"}, 1, client.WithIdempotencyKey(tc.key)); !errors.Is(err, client.ErrBadIdempotencyKey) {
					t.Fatalf("PublishBatch: %v", err)
				}
			})
		}
	}
}

// TestErrorBodyText: the router's error text is its body's "reason", or
// "message" where a router answers that, over both transports.
func TestErrorBodyText(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"reason", `{"code":"user_offline","reason":"nobody online","status":404}`, "nobody online"},
		{"message", `{"code":"user_offline","message":"nobody online","status":404}`, "nobody online"},
		{"both: reason first", `{"code":"user_offline","reason":"the reason","message":"the message","status":404}`, "the reason"},
		{"neither", `{"code":"user_offline","status":404}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeRouter(t, http.StatusNotFound, tc.body)
			for name, c := range f.clients(t) {
				_, err := c.Publish(ctx(t), "alice", 1, client.RequireOnline())
				var ce *client.Error
				if !errors.Is(err, client.ErrUserOffline) || !errors.As(err, &ce) || ce.Status != http.StatusNotFound || ce.Message != tc.want {
					t.Fatalf("%s: %v (%+v), want user_offline (404) with message %q", name, err, ce, tc.want)
				}
			}
		})
	}
}

// TestIsRetryable: which errors are worth retrying.
func TestIsRetryable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"no answer", &client.Error{Code: "router_unavailable", Err: context.DeadlineExceeded}, true},
		{"NATS no responders", &client.Error{Code: "router_unavailable", Status: 503}, true},
		{"a proxy's 502", &client.Error{Code: "router_unavailable", Status: 502}, true},
		{"a proxy's 504", &client.Error{Code: "router_unavailable", Status: 504}, true},
		{"net/http's 431", &client.Error{Code: "router_unavailable", Status: 431}, false},
		{"net/http's 400", &client.Error{Code: "router_unavailable", Status: 400}, false},
		{"a 500 without a router body", &client.Error{Code: "router_unavailable", Status: 500}, false},
		{"rate limited", &client.Error{Code: "rate_limited", Status: 429, RetryAfter: time.Second}, true},
		{"NATS unavailable", &client.Error{Code: "nats_unavailable", Status: 503}, true},
		{"idempotency store unavailable", &client.Error{Code: "idempotency_unavailable", Status: 503}, true},
		{"idempotency in progress", &client.Error{Code: "idempotency_in_progress", Status: 409}, true},
		{"wrapped", fmt.Errorf("notify: %w", &client.Error{Code: "rate_limited", Status: 429}), true},
		{"user offline", client.ErrUserOffline, false},
		{"unauthorized", &client.Error{Code: "unauthorized", Status: 401}, false},
		{"bad JSON", &client.Error{Code: "bad_json", Status: 400}, false},
		{"key reused", &client.Error{Code: "idempotency_key_reused", Status: 422}, false},
		{"internal", &client.Error{Code: "internal", Status: 500}, false},
		{"config", &client.ConfigError{Field: "baseURL", Reason: "empty"}, false},
		{"data", &client.DataError{Reason: "empty"}, false},
		{"cancelled", fmt.Errorf("router client: %w", context.Canceled), false},
		{"a plain deadline", context.DeadlineExceeded, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.IsRetryable(tc.err); got != tc.want {
				t.Fatalf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	// The real thing: a connection refused is retryable, an empty URL is
	// not even a client.
	if _, err := client.NewHTTP("", apiKey); client.IsRetryable(err) || errors.Is(err, client.ErrRouterUnavailable) {
		t.Fatalf("empty URL: %v", err)
	}
}

// TestSequence: a result's Sequence is its id read as a stream sequence
// (a router with --resume), and nothing for any other id.
func TestSequence(t *testing.T) {
	cases := []struct {
		name string
		id   string
		seq  uint64 // 0: not a sequence
	}{
		{name: "sequence", id: "1041", seq: 1041},
		{name: "first", id: "1", seq: 1},
		{name: "largest", id: "18446744073709551615", seq: math.MaxUint64},
		{name: "over 64 bits", id: "18446744073709551616"},
		{name: "zero", id: "0"},
		{name: "leading sign", id: "+5"},
		{name: "NUID", id: "Kx2bT9rLmQp8vW3nZc0sYd"},
		{name: "empty", id: ""},
		{name: "too long", id: "000000000000000000001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for what, f := range map[string]func() (uint64, bool){
				"PublishResult":   client.PublishResult{ID: tc.id}.Sequence,
				"BroadcastResult": client.BroadcastResult{ID: tc.id}.Sequence,
				"UserResult":      client.UserResult{ID: tc.id}.Sequence,
			} {
				seq, ok := f()
				if ok != (tc.seq != 0) || seq != tc.seq {
					t.Errorf("%s{ID: %q}.Sequence() = %d, %v; want %d, %v", what, tc.id, seq, ok, tc.seq, tc.seq != 0)
				}
			}
		})
	}
}

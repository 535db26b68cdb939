package router_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRouting sends each route its method and others, and paths that are
// no route, to a running router: every answer is the route's, or a JSON
// 404 or 405 (with Allow), never a redirect.
func TestRouting(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	noRedirect := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	cases := []struct {
		name   string
		method string
		path   string // as sent
		body   string
		noAuth bool
		status int
		code   string // the error code, for 4xx
		allow  string // the Allow header of a 405
		user   string // the "user" member of a presence answer
	}{
		// Each route with its method.
		{name: "publish", method: "POST", path: "/v1/users/bob/messages", body: `1`, status: 202},
		{name: "batch", method: "POST", path: "/v1/messages", body: `{"users":["bob"],"data":1}`, status: 202},
		{name: "broadcast", method: "POST", path: "/v1/broadcast", body: `1`, status: 202},
		{name: "presence", method: "GET", path: "/v1/users/bob/presence", status: 200, user: "bob"},
		{name: "presence query", method: "POST", path: "/v1/presence/query", body: `{"users":["bob"]}`, status: 200},
		{name: "stats", method: "GET", path: "/v1/stats", status: 200},
		{name: "kick", method: "DELETE", path: "/v1/users/bob/connections", status: 200},
		{name: "topic publish", method: "POST", path: "/v1/topics/room.1/messages", body: `1`, status: 202},
		{name: "topic presence", method: "GET", path: "/v1/topics/room.1/presence", status: 200},
		{name: "subscribe user", method: "PUT", path: "/v1/users/bob/topics/room.1", status: 200},
		{name: "unsubscribe user", method: "DELETE", path: "/v1/users/bob/topics/room.1", status: 200},
		{name: "openapi", method: "GET", path: "/v1/openapi.json", noAuth: true, status: 200},
		{name: "query string", method: "GET", path: "/v1/stats?x=1", status: 200},
		{name: "absolute-form target", method: "GET", path: "/v1/users/bob/presence", status: 200, user: "bob"},

		// User ids, decoded from one segment.
		{name: "escaped slash id", method: "GET", path: "/v1/users/a%2Fb/presence", status: 200, user: "a/b"},
		{name: "slash id", method: "GET", path: "/v1/users/%2F/presence", status: 200, user: "/"},
		{name: "slash id lower case", method: "GET", path: "/v1/users/%2f/presence", status: 200, user: "/"},
		{name: "two slashes id", method: "GET", path: "/v1/users/%2F%2F/presence", status: 200, user: "//"},
		{name: "dot dot id", method: "GET", path: "/v1/users/../presence", status: 200, user: ".."},
		{name: "dot id", method: "GET", path: "/v1/users/./presence", status: 200, user: "."},
		{name: "escaped dot dot id", method: "GET", path: "/v1/users/%2E%2E/presence", status: 200, user: ".."},
		{name: "three dots id", method: "GET", path: "/v1/users/.../presence", status: 200, user: "..."},
		{name: "escaped percent id", method: "GET", path: "/v1/users/%25zz/presence", status: 200, user: "%zz"},
		{name: "plus id", method: "GET", path: "/v1/users/a+b/presence", status: 200, user: "a+b"},
		{name: "publish to dot dot", method: "POST", path: "/v1/users/../messages", body: `1`, status: 202},
		{name: "publish to slash", method: "POST", path: "/v1/users/%2F/messages", body: `1`, status: 202},
		{name: "subscribe dot dot", method: "PUT", path: "/v1/users/../topics/room.1", status: 200},
		{name: "subscribe slash", method: "PUT", path: "/v1/users/%2F/topics/room.1", status: 200},
		{name: "subscribe slash, escaped topic", method: "PUT", path: "/v1/users/%2F/topics/room%2E1", status: 200},
		{name: "subscribe, escaped topic", method: "PUT", path: "/v1/users/bob/topics/room%2E1", status: 200},
		{name: "subscribe empty id", method: "PUT", path: "/v1/users//topics/room.1", status: 400, code: "bad_user"},
		{name: "subscribe empty topic", method: "PUT", path: "/v1/users/bob/topics/", status: 404, code: "not_found"},
		{name: "topic with a slash", method: "PUT", path: "/v1/users/bob/topics/a/b", status: 404, code: "not_found"},
		{name: "publish to an escaped topic", method: "POST", path: "/v1/topics/room%2E1/messages", body: `1`, status: 202},
		{name: "empty id", method: "POST", path: "/v1/users//messages", body: `1`, status: 400, code: "bad_user"},
		{name: "empty id presence", method: "GET", path: "/v1/users//presence", status: 400, code: "bad_user"},
		{name: "empty id without auth", method: "POST", path: "/v1/users//messages", body: `1`, noAuth: true, status: 401, code: "unauthorized"},
		{name: "slash id without auth", method: "GET", path: "/v1/users/%2F/presence", noAuth: true, status: 401, code: "unauthorized"},

		// Each route with another method: 405 before credentials.
		{name: "GET publish", method: "GET", path: "/v1/users/bob/messages", status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "PUT batch", method: "PUT", path: "/v1/messages", body: `1`, status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "GET broadcast", method: "GET", path: "/v1/broadcast", status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "POST presence", method: "POST", path: "/v1/users/bob/presence", body: `1`, status: 405, code: "method_not_allowed", allow: "GET"},
		{name: "GET presence query", method: "GET", path: "/v1/presence/query", status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "POST stats", method: "POST", path: "/v1/stats", body: `1`, status: 405, code: "method_not_allowed", allow: "GET"},
		{name: "GET kick", method: "GET", path: "/v1/users/bob/connections", status: 405, code: "method_not_allowed", allow: "DELETE"},
		{name: "POST user topic", method: "POST", path: "/v1/users/bob/topics/room.1", status: 405, code: "method_not_allowed", allow: "PUT, DELETE"},
		{name: "GET topic publish", method: "GET", path: "/v1/topics/room.1/messages", status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "DELETE openapi", method: "DELETE", path: "/v1/openapi.json", noAuth: true, status: 405, code: "method_not_allowed", allow: "GET"},
		{name: "OPTIONS stats", method: "OPTIONS", path: "/v1/stats", status: 405, code: "method_not_allowed", allow: "GET"},
		{name: "PATCH without auth", method: "PATCH", path: "/v1/users/bob/messages", body: `1`, noAuth: true, status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "unknown method", method: "BREW", path: "/v1/broadcast", status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "lower-case method", method: "post", path: "/v1/broadcast", body: `1`, status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "PUT slash id", method: "PUT", path: "/v1/users/%2F/messages", body: `1`, status: 405, code: "method_not_allowed", allow: "POST"},
		{name: "DELETE dot dot id", method: "DELETE", path: "/v1/users/../presence", status: 405, code: "method_not_allowed", allow: "GET"},
		{name: "GET empty id", method: "GET", path: "/v1/users//connections", status: 405, code: "method_not_allowed", allow: "DELETE"},

		// HEAD is not served: GET routes refuse it as any other method.
		{name: "HEAD stats", method: "HEAD", path: "/v1/stats", status: 405, allow: "GET"},
		{name: "HEAD presence", method: "HEAD", path: "/v1/users/bob/presence", status: 405, allow: "GET"},
		{name: "HEAD openapi", method: "HEAD", path: "/v1/openapi.json", noAuth: true, status: 405, allow: "GET"},
		{name: "HEAD dot id presence", method: "HEAD", path: "/v1/users/./presence", status: 405, allow: "GET"},
		{name: "HEAD broadcast", method: "HEAD", path: "/v1/broadcast", status: 405, allow: "POST"},
		{name: "HEAD unknown", method: "HEAD", path: "/v1/nope", status: 404},

		// Paths that are no route, whatever the method, before credentials.
		{name: "root", method: "GET", path: "/", status: 404, code: "not_found"},
		{name: "v1", method: "GET", path: "/v1", status: 404, code: "not_found"},
		{name: "unknown", method: "POST", path: "/v1/nope", body: `1`, status: 404, code: "not_found"},
		{name: "unknown without auth", method: "GET", path: "/v2/stats", noAuth: true, status: 404, code: "not_found"},
		{name: "user without route", method: "GET", path: "/v1/users/bob", status: 404, code: "not_found"},
		{name: "unknown user route", method: "GET", path: "/v1/users/bob/devices", status: 404, code: "not_found"},
		{name: "users without id", method: "POST", path: "/v1/users/messages", body: `1`, status: 404, code: "not_found"},
		{name: "id with a raw slash", method: "POST", path: "/v1/users/a/b/messages", body: `1`, status: 404, code: "not_found"},
		{name: "escaped literal", method: "GET", path: "/v1/%73tats", status: 404, code: "not_found"},
		{name: "escaped user literal", method: "POST", path: "/v1/users/bob/%6Dessages", body: `1`, status: 404, code: "not_found"},
		{name: "escaped users literal", method: "GET", path: "/v1/%75sers/bob/presence", status: 404, code: "not_found"},
		{name: "escaped slash between literals", method: "POST", path: "/v1/presence%2Fquery", body: `1`, status: 404, code: "not_found"},
		{name: "upper case", method: "GET", path: "/V1/stats", status: 404, code: "not_found"},

		// Trailing slashes: another path.
		{name: "stats trailing slash", method: "GET", path: "/v1/stats/", status: 404, code: "not_found"},
		{name: "broadcast trailing slash", method: "POST", path: "/v1/broadcast/", body: `1`, status: 404, code: "not_found"},
		{name: "user trailing slash", method: "POST", path: "/v1/users/bob/messages/", body: `1`, status: 404, code: "not_found"},
		{name: "users trailing slash", method: "GET", path: "/v1/users/", status: 404, code: "not_found"},

		// Empty and dot segments: matched as sent, never cleaned or redirected.
		{name: "leading double slash", method: "GET", path: "//v1/stats", status: 404, code: "not_found"},
		{name: "inner double slash", method: "GET", path: "/v1//stats", status: 404, code: "not_found"},
		{name: "double trailing slash", method: "GET", path: "/v1/stats//", status: 404, code: "not_found"},
		{name: "double slash before the id", method: "POST", path: "/v1/users///messages", body: `1`, status: 404, code: "not_found"},
		{name: "double slash after the id", method: "POST", path: "/v1/users/bob//messages", body: `1`, status: 404, code: "not_found"},
		{name: "dot segment", method: "GET", path: "/v1/./stats", status: 404, code: "not_found"},
		{name: "dot dot segment", method: "GET", path: "/v1/../v1/stats", status: 404, code: "not_found"},
		{name: "dot dot after the id", method: "GET", path: "/v1/users/bob/../bob/presence", status: 404, code: "not_found"},
		{name: "dot dot without auth", method: "POST", path: "/v1/users/x/../../broadcast", body: `1`, noAuth: true, status: 404, code: "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, apiURL(srv)+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if req.URL.RequestURI() != tc.path {
				t.Fatalf("the client would send %q, not %q", req.URL.RequestURI(), tc.path)
			}
			if tc.name == "absolute-form target" {
				req.URL.Opaque = apiURL(srv) + tc.path
			}
			if !tc.noAuth {
				req.Header.Set("Authorization", "Bearer "+testKey)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			r := response{status: resp.StatusCode, header: resp.Header, body: b}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			switch {
			case tc.method == http.MethodHead:
				// No body; the headers are those of the JSON error.
				if r.status != tc.status || r.header.Get("Content-Type") != "application/json" || len(b) != 0 {
					t.Fatalf("status %d, Content-Type %q, body %q; want %d, application/json, none",
						r.status, r.header.Get("Content-Type"), b, tc.status)
				}
			case tc.code != "":
				r.refused(t, tc.status, tc.code)
			default:
				if r.status != tc.status {
					t.Fatalf("status %d, want %d (body %q)", r.status, tc.status, b)
				}
				m := r.jsonBody(t)
				if tc.user != "" && m["user"] != tc.user {
					t.Fatalf("user %v, want %q", m["user"], tc.user)
				}
			}
		})
	}

	// The route label is a pattern or "other", never a path as sent.
	patterns := map[string]bool{"other": true}
	for _, p := range []string{"/v1/users/{user}/messages", "/v1/users/{user}/presence", "/v1/users/{user}/connections",
		"/v1/messages", "/v1/broadcast", "/v1/presence/query", "/v1/stats", "/v1/openapi.json",
		"/v1/topics/{topic}/messages", "/v1/topics/{topic}/presence", "/v1/users/{user}/topics/{topic}"} {
		patterns[p] = true
	}
	m := metricsText(t, srv)
	labels := regexp.MustCompile(`(?m)^wsfleet_router_http_requests_total\{code="(\d+)",route="([^"]*)"\} `).FindAllStringSubmatch(m, -1)
	if len(labels) == 0 {
		t.Fatal("no wsfleet_router_http_requests_total series")
	}
	for _, l := range labels {
		if !patterns[l[2]] {
			t.Errorf("route label %q (code %s) is not a pattern", l[2], l[1])
		}
	}
	for _, want := range []string{
		`wsfleet_router_http_requests_total{code="405",route="/v1/stats"} 3`,
		`wsfleet_router_http_requests_total{code="404",route="other"} 29`,
		`wsfleet_router_http_requests_total{code="405",route="/v1/users/{user}/presence"} 4`,
		`wsfleet_router_http_requests_total{code="200",route="/v1/users/{user}/presence"} 12`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

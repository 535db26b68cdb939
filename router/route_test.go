package router

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// routingServer is a router that is not started: enough to route, refuse
// and authenticate (requests without credentials never reach NATS).
func routingServer(t testing.TB) *Server {
	t.Helper()
	s, err := New(Options{APIKeys: []string{"0123456789abcdef0123"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveLine parses the request line "method target HTTP/1.1" (with a Host
// header and nothing else) as net/http does, and serves it without
// credentials. ok is false when net/http would refuse the request itself.
func serveLine(s *Server, method, target string) (r *http.Request, w *httptest.ResponseRecorder, ok bool) {
	if strings.ContainsAny(method+target, " \r\n") {
		return nil, nil, false
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: router\r\n\r\n")))
	if err != nil {
		return nil, nil, false
	}
	w = httptest.NewRecorder()
	s.serveAPI(w, r)
	return r, w, true
}

// matchAsSent is the routing the API had before it moved onto ServeMux,
// kept as the model the routing must follow: the escaped path is matched
// literally, with no cleaning; a user id is one segment, anything but '/'.
func matchAsSent(escaped string) (pattern, userSeg string) {
	for _, rt := range routes {
		if rt.pattern == escaped {
			return escaped, ""
		}
	}
	if rest, ok := strings.CutPrefix(escaped, "/v1/users/"); ok {
		if i := strings.LastIndexByte(rest, '/'); i >= 0 && !strings.Contains(rest[:i], "/") {
			if p, ok := userRoutes[rest[i+1:]]; ok {
				return p, rest[:i]
			}
		}
	}
	return routeOther, ""
}

// FuzzRoute sends any request line through the API handler, without
// credentials, and checks the answer against matchAsSent: a JSON body
// always; 404 not_found for a path that is no route; 405
// method_not_allowed with Allow for a method the route does not serve; else
// the route's handler ran (401, or 200 for the OpenAPI document), with the
// user id decoded from its segment.
func FuzzRoute(f *testing.F) {
	for _, seed := range [][2]string{
		{"POST", "/v1/users/bob/messages"},
		{"POST", "/v1/users/a%2Fb/messages?require_online=1"},
		{"GET", "/v1/users/%2E%2E/presence"},
		{"GET", "/v1/users/../presence"},
		{"DELETE", "/v1/users//connections"},
		{"POST", "/v1/users/./messages"},
		{"GET", "/v1/users/bob/messages"},
		{"HEAD", "/v1/stats"},
		{"HEAD", "/v1/openapi.json"},
		{"GET", "/v1/openapi.json"},
		{"GET", "/v1/%73tats"},
		{"POST", "/v1/users/bob/%6Dessages"},
		{"GET", "//v1/stats"},
		{"GET", "/v1/stats/"},
		{"GET", "/v1/../v1/stats"},
		{"OPTIONS", "*"},
		{"GET", "http://elsewhere/v1/stats"},
		{"CONNECT", "router:443"},
		{"CONNECT", "/v1/stats"},
		{"BREW", "/v1/broadcast"},
		{"POST", "/v1/presence/query"},
		{"GET", "/"},
	} {
		f.Add(seed[0], seed[1])
	}
	s := routingServer(f)
	f.Fuzz(func(t *testing.T, method, target string) {
		r, w, ok := serveLine(s, method, target)
		if !ok {
			t.Skip("net/http refuses the request line")
		}
		escaped := r.URL.EscapedPath()
		var body errorBody
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: Content-Type %q", method, target, ct)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: body %q is not JSON", method, target, w.Body)
		}
		pattern, seg := matchAsSent(escaped)
		allow := allowedMethods(pattern)
		want, code := http.StatusUnauthorized, CodeUnauthorized
		switch {
		case pattern == routeOther:
			want, code = http.StatusNotFound, CodeNotFound
		case !slices.Contains(allow, r.Method):
			want, code = http.StatusMethodNotAllowed, CodeMethodNotAllowed
		case pattern == routeOpenAPI:
			want, code = http.StatusOK, ""
		}
		if w.Code != want {
			t.Fatalf("%s %s (path %q): status %d, want %d; body %s", method, target, escaped, w.Code, want, w.Body)
		}
		if code == "" {
			return
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Code != code || body.Reason == "" {
			t.Fatalf("%s %s: body %s, want code %q (%v)", method, target, w.Body, code, err)
		}
		if got := w.Header().Get("Allow"); want == http.StatusMethodNotAllowed && got != strings.Join(allow, ", ") {
			t.Fatalf("%s %s: Allow %q, want %q", method, target, got, strings.Join(allow, ", "))
		}
		if want == http.StatusUnauthorized && strings.Contains(pattern, "{user}") {
			id, err := url.PathUnescape(seg)
			if err != nil {
				t.Fatalf("%s %s: the user segment %q does not decode: %v", method, target, seg, err)
			}
			if got := r.PathValue("user"); got != id {
				t.Fatalf("%s %s: user %q, want %q", method, target, got, id)
			}
		}
	})
}

// FuzzUserIDPath checks that any user id, escaped as one path segment the
// way a client library does (url.PathEscape), reaches each user route as
// that id, and that another method on the path is 405.
func FuzzUserIDPath(f *testing.F) {
	for _, id := range []string{"bob", "bob.smith", "a/b", "..", ".", "", "*", ">", "a b", "é", "%", "+", "a//b", "?x=1#y", "/", "../.."} {
		f.Add(id)
	}
	s := routingServer(f)
	f.Fuzz(func(t *testing.T, id string) {
		for last, pattern := range userRoutes {
			target := "/v1/users/" + url.PathEscape(id) + "/" + last
			method := allowedMethods(pattern)[0]
			r, w, ok := serveLine(s, method, target)
			if !ok {
				t.Fatalf("id %q: %s %s does not parse", id, method, target)
			}
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("id %q: %s %s: status %d, want 401 (routed); body %s", id, method, target, w.Code, w.Body)
			}
			if got := r.PathValue("user"); got != id {
				t.Fatalf("id %q: %s %s: user %q", id, method, target, got)
			}
			if _, w, _ = serveLine(s, http.MethodPut, target); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != method {
				t.Fatalf("id %q: PUT %s: status %d, Allow %q; want 405, %s", id, target, w.Code, w.Header().Get("Allow"), method)
			}
		}
	})
}

func TestLiteralsAsSent(t *testing.T) {
	cases := []struct {
		pattern, path string
		want          bool
	}{
		{routeStats, "/v1/stats", true},
		{routeStats, "/v1/%73tats", false},
		{routeStats, "/v1/stats/", false},
		{routeStats, "/v1", false},
		{routeUser, "/v1/users/a%2Fb/messages", true},
		{routeUser, "/v1/users/bob/%6Dessages", false},
		{routeUser, "/v1/%75sers/bob/messages", false},
		{routeUser, "/v1/users/bob/messages/x", false},
	}
	for _, tc := range cases {
		if got := literalsAsSent(tc.pattern, tc.path); got != tc.want {
			t.Errorf("literalsAsSent(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}

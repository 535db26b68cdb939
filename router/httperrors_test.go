package router_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawRequest writes req as is on a new connection to addr (so that request
// lines no HTTP client would send can be tried) and reads the answer.
func rawRequest(t testing.TB, addr, req string) response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Written on its own goroutine: a server that answers before reading
	// everything (431) must not leave the write blocked.
	go func() { _, _ = io.WriteString(c, req) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.80q: %v", req, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestHTTPErrorsAreJSON sends malformed or unroutable requests over real
// connections. Every answer from the router is a JSON error body with a
// code; the byNetHTTP cases are the ones Go's HTTP server answers itself,
// in plain text, before any handler runs (a request line or header it
// cannot parse, headers over MaxHeaderBytes plus its 4 KiB allowance, an
// Expect it does not support): docs/router.md lists them, and these cases
// keep that list true.
func TestHTTPErrorsAreJSON(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, nil)
	sub := watch(t, ns)
	addr := srv.Addr().String()
	auth := "Authorization: Bearer " + testKey + "\r\n"
	// req builds a request; head holds extra header lines, each ending in CRLF.
	req := func(line, head, body string) string {
		if body != "" {
			head += "Content-Length: " + itoa(len(body)) + "\r\n"
		}
		return line + "\r\nHost: router\r\n" + head + "\r\n" + body
	}
	pad := func(n int) string { return "X-Pad: " + strings.Repeat("a", n) + "\r\n" }
	cases := []struct {
		name      string
		req       string
		status    int
		code      string // the JSON error code
		byNetHTTP bool   // answered by net/http in plain text instead
	}{
		{name: "unknown path", req: req("GET /v1/nope HTTP/1.1", auth, ""), status: 404, code: "not_found"},
		{name: "dot segments are not cleaned", req: req("GET /v1/../v1/stats HTTP/1.1", auth, ""), status: 404, code: "not_found"},
		{name: "asterisk target", req: req("GET * HTTP/1.1", auth, ""), status: 404, code: "not_found"},
		{name: "absolute-form target", req: req("GET http://elsewhere/v2/stats HTTP/1.1", auth, ""), status: 404, code: "not_found"},
		{name: "method not allowed", req: req("PUT /v1/stats HTTP/1.1", auth, "1"), status: 405, code: "method_not_allowed"},
		{name: "unknown method", req: req("BREW /v1/users/bob/messages HTTP/1.1", auth, "1"), status: 405, code: "method_not_allowed"},
		{name: "escaped percent in the user id", req: req("GET /v1/users/%25zz/presence HTTP/1.1", "", ""), status: 401, code: "unauthorized"},
		{name: "bad escape in the query", req: req("POST /v1/users/bob/messages?require_online=%zz HTTP/1.1", auth, "1"), status: 400, code: "bad_request"},
		{name: "bad escape in a batch query", req: req("POST /v1/messages?require_online=%zz HTTP/1.1", auth, `{"users":["bob"],"data":1}`), status: 400, code: "bad_request"},
		{name: "invalid UTF-8 user id", req: req("POST /v1/users/%C3%28/messages HTTP/1.1", auth, "1"), status: 400, code: "bad_user"},
		{name: "headers under the limit", req: req("GET /v1/stats HTTP/1.1", pad(35<<10), ""), status: 401, code: "unauthorized"},
		{name: "HTTP/1.0", req: "GET /v1/nope HTTP/1.0\r\n\r\n", status: 404, code: "not_found"},

		{name: "bad escape in the path", req: req("POST /v1/users/%zz/messages HTTP/1.1", auth, "1"), status: 400, byNetHTTP: true},
		{name: "headers over the limit", req: req("POST /v1/users/bob/messages HTTP/1.1", auth+pad(40<<10), "1"), status: 431, byNetHTTP: true},
		{name: "malformed header line", req: req("GET /v1/stats HTTP/1.1", auth+"no colon here\r\n", ""), status: 400, byNetHTTP: true},
		{name: "missing Host", req: "GET /v1/stats HTTP/1.1\r\n" + auth + "\r\n", status: 400, byNetHTTP: true},
		{name: "unknown transfer encoding", req: req("POST /v1/broadcast HTTP/1.1", auth+"Transfer-Encoding: gzip\r\n", ""), status: 501, byNetHTTP: true},
		{name: "unsupported HTTP version", req: req("GET /v1/stats HTTP/2.0", auth, ""), status: 505, byNetHTTP: true},
		{name: "unsupported Expect", req: req("POST /v1/broadcast HTTP/1.1", auth+"Expect: later\r\n", "1"), status: 417, byNetHTTP: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawRequest(t, addr, tc.req)
			if !tc.byNetHTTP {
				r.refused(t, tc.status, tc.code)
				expectNothingPublished(t, srv, sub)
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", r.status, tc.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct == "application/json" || json.Valid(r.body) {
				t.Fatalf("Content-Type %q, body %q: net/http's plain-text answer expected; if the router now answers JSON here, update docs/router.md", ct, r.body)
			}
			expectNothingPublished(t, srv, sub)
		})
	}
}

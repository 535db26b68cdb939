package router

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// route is one endpoint of the HTTP API. The OpenAPI file
// (router/openapi.json, served at GET /v1/openapi.json) lists exactly these.
type route struct {
	method  string
	pattern string // as in the OpenAPI file; also the metrics label
	public  bool   // served without credentials
	handle  func(s *Server, w http.ResponseWriter, r *http.Request, user, cred string) (opResult, *apiError)
}

// Patterns of the HTTP API.
const (
	routeUser        = "/v1/users/{user}/messages"
	routePresence    = "/v1/users/{user}/presence"
	routeConnections = "/v1/users/{user}/connections"
	routeUserTopic   = "/v1/users/{user}/topics/{topic}"
	routeBatch       = "/v1/messages"
	routeBroadcast   = "/v1/broadcast"
	routeTopic       = "/v1/topics/{topic}/messages"
	routeTopicPres   = "/v1/topics/{topic}/presence"
	routeQuery       = "/v1/presence/query"
	routeStats       = "/v1/stats"
	routeOpenAPI     = "/v1/openapi.json"
	routeOther       = "other" // no route matched (404)
)

var routes = []route{
	{method: http.MethodPost, pattern: routeUser, handle: (*Server).httpPublish},
	{method: http.MethodGet, pattern: routePresence, handle: (*Server).httpPresence},
	{method: http.MethodDelete, pattern: routeConnections, handle: (*Server).httpKick},
	{method: http.MethodPut, pattern: routeUserTopic, handle: (*Server).httpUserTopic},
	{method: http.MethodDelete, pattern: routeUserTopic, handle: (*Server).httpUserTopic},
	{method: http.MethodPost, pattern: routeBatch, handle: (*Server).httpBatch},
	{method: http.MethodPost, pattern: routeBroadcast, handle: (*Server).httpBroadcast},
	{method: http.MethodPost, pattern: routeTopic, handle: (*Server).httpTopicPublish},
	{method: http.MethodGet, pattern: routeTopicPres, handle: (*Server).httpTopicPresence},
	{method: http.MethodPost, pattern: routeQuery, handle: (*Server).httpPresenceQuery},
	{method: http.MethodGet, pattern: routeStats, handle: (*Server).httpStats},
	{method: http.MethodGet, pattern: routeOpenAPI, public: true},
}

// userRoutes maps the last segment of a /v1/users/{user}/... path to its
// pattern.
var userRoutes = map[string]string{
	"messages":    routeUser,
	"presence":    routePresence,
	"connections": routeConnections,
}

// allowedMethods lists the methods served on pattern, in the order of
// routes.
func allowedMethods(pattern string) []string {
	var allow []string
	for i := range routes {
		if routes[i].pattern == pattern {
			allow = append(allow, routes[i].method)
		}
	}
	return allow
}

// newMux puts the routes on a ServeMux. Each path is registered as
//
//   - "METHOD /path" for each method it serves: the route;
//   - "HEAD /path" when it serves GET: ServeMux would hand HEAD to the GET
//     route, and the API serves exactly the methods openapi.json lists;
//   - "/path" without a method, for every other method: a pattern with a
//     method is more specific than the same path without one, so this
//     answers only the methods not served, with 405, Allow and the router's
//     JSON error body.
//
// and "/" answers every other path with a JSON 404. ServeMux's own 404 and
// 405 answers, plain text, are thereby never reached; a catch-all pattern
// per path keeps that visible in the route table, where a ResponseWriter
// rewriting ServeMux's answers would hide it (and lose the route's metrics
// label on a 405).
func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	for i := range routes {
		rt := &routes[i]
		mux.HandleFunc(rt.method+" "+rt.pattern, s.asSent(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			s.serveRoute(w, r, rt)
		}))
	}
	done := map[string]bool{}
	for _, rt := range routes {
		if done[rt.pattern] {
			continue
		}
		done[rt.pattern] = true
		p := rt.pattern
		refuse := s.asSent(p, func(w http.ResponseWriter, r *http.Request) { s.methodNotAllowed(w, r, p) })
		mux.HandleFunc(p, refuse)
		if slices.Contains(allowedMethods(p), http.MethodGet) {
			mux.HandleFunc(http.MethodHead+" "+p, refuse)
		}
	}
	mux.HandleFunc("/", s.notFound)
	return mux
}

// serveAPI is the API listener's handler. Checks go from the cheapest to the
// costliest: route, method, credentials, rate limit, request, NATS.
//
// Routing is s.mux's, for the paths it matches as sent. Two kinds of path
// are answered before it: the user routes for the ids it cannot match
// (outsideMux), and every other path ServeMux would clean. ServeMux
// redirects a path with an empty, "." or ".." segment to the cleaned one
// (and answers a "*" target with a bare 400); the API answers 404 and never
// redirects, so no resource has two paths.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	if pattern, id, topic, ok := outsideMux(p); ok {
		r.SetPathValue("user", id)
		if pattern == routeUserTopic {
			r.SetPathValue("topic", topic)
		}
		s.serveMethod(w, r, pattern)
		return
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		s.notFound(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// outsideMux matches the user routes for the ids no ServeMux pattern can
// match, and returns the pattern and the id:
//
//   - "", "." and "..": ServeMux cleans the path first
//     (/v1/users/../messages is /v1/messages to it);
//   - "/", sent as %2F: ServeMux decodes the segment before matching it,
//     then takes the "/" for a trailing slash, which no wildcard matches.
//
// url.PathEscape, as the SDK uses it, leaves "." and ".." as they are. The
// ids are valid (bar ""), and go into the same route, with the same checks,
// as any other.
func outsideMux(escaped string) (pattern, id, topic string, ok bool) {
	rest, ok := strings.CutPrefix(escaped, "/v1/users/")
	if !ok {
		return "", "", "", false
	}
	seg, last, _ := strings.Cut(rest, "/")
	if t, isTopic := strings.CutPrefix(last, "topics/"); isTopic && t != "" && !strings.Contains(t, "/") {
		// Decoded as ServeMux decodes {topic} on the other paths, then
		// checked by the route.
		if d, err := url.PathUnescape(t); err == nil {
			t = d
		}
		pattern, topic = routeUserTopic, t
	} else if pattern, ok = userRoutes[last]; !ok {
		return "", "", "", false
	}
	switch seg {
	case "", ".", "..":
		return pattern, seg, topic, true
	case "%2F", "%2f":
		return pattern, "/", topic, true
	}
	return "", "", "", false
}

// asSent guards a handler of pattern: ServeMux compares a path segment with
// a pattern's literal after percent-decoding it, so it takes "/v1/%73tats"
// for /v1/stats. The API serves each resource under the one path
// openapi.json spells (a proxy's rule on /v1/broadcast cannot be
// sidestepped with /v1/%62roadcast); any other spelling is 404. Only the
// {user} segment is decoded.
func (s *Server) asSent(pattern string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !literalsAsSent(pattern, r.URL.EscapedPath()) {
			s.notFound(w, r)
			return
		}
		h(w, r)
	}
}

// literalsAsSent reports whether the escaped path has every literal segment
// of pattern byte for byte (wildcard segments match anything) and as many
// segments.
func literalsAsSent(pattern, escaped string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, "/")
		e, erest, emore := strings.Cut(escaped, "/")
		if p != e && !strings.HasPrefix(p, "{") {
			return false
		}
		if !pmore || !emore {
			return pmore == emore
		}
		pattern, escaped = prest, erest
	}
}

// serveMethod serves r on the route of pattern for r.Method, or answers 405.
func (s *Server) serveMethod(w http.ResponseWriter, r *http.Request, pattern string) {
	for i := range routes {
		if routes[i].pattern == pattern && routes[i].method == r.Method {
			s.serveRoute(w, r, &routes[i])
			return
		}
	}
	s.methodNotAllowed(w, r, pattern)
}

// serveRoute serves a request routed to rt; the {user} path value, if any,
// is the decoded id.
func (s *Server) serveRoute(w http.ResponseWriter, r *http.Request, rt *route) {
	if rt.public {
		s.m.request(rt.pattern, http.StatusOK)
		writeBody(w, http.StatusOK, openAPI)
		return
	}
	cred, aerr := s.authenticate(r)
	if aerr != nil {
		if aerr.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", "Bearer")
		}
		s.fail(w, rt.pattern, aerr)
		return
	}
	if ok, wait := s.limits.allow(cred, time.Now()); !ok {
		s.fail(w, rt.pattern, &apiError{status: http.StatusTooManyRequests, code: CodeRateLimited, retryAfter: retryAfterSeconds(wait),
			msg: fmt.Sprintf("over the rate limit of %g requests per second for this credential (--rate-limit)", s.opts.RateLimit)})
		return
	}
	res, aerr := rt.handle(s, w, r, r.PathValue("user"), cred)
	if aerr != nil {
		s.fail(w, rt.pattern, aerr)
		return
	}
	if res.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	s.m.request(rt.pattern, res.status)
	writeBody(w, res.status, res.body)
}

// methodNotAllowed answers a method pattern does not serve: 405, with the
// methods it serves in Allow.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request, pattern string) {
	allow := allowedMethods(pattern)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	s.fail(w, pattern, &apiError{status: http.StatusMethodNotAllowed, code: CodeMethodNotAllowed,
		msg: fmt.Sprintf("%s is not allowed here; use %s", r.Method, strings.Join(allow, " or "))})
}

// notFound answers a path that is no route.
func (s *Server) notFound(w http.ResponseWriter, _ *http.Request) {
	s.fail(w, routeOther, &apiError{status: http.StatusNotFound, code: CodeNotFound,
		msg: "no such endpoint: see GET /v1/openapi.json"})
}

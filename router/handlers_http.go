package router

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

// Error codes of the API: the "error" member of every error body. They are
// stable; the "message" member is for humans and may change.
const (
	CodeBadJSON          = "bad_json"
	CodeBadUser          = "bad_user"
	CodeUnauthorized     = "unauthorized"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeTooLarge         = "too_large"
	CodeNATSUnavailable  = "nats_unavailable"
)

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// acceptedBody is the JSON body of a 202 response.
type acceptedBody struct {
	ID string `json:"id"`
}

// matchRoute maps the escaped request path to its route and, for the user
// route, the still-escaped user segment. Matching is on the escaped path so
// that an id holding '/' ("a%2Fb"), '.' or ".." is one segment and is never
// cleaned or split.
func matchRoute(escaped string) (route, userSeg string) {
	if escaped == routeBroadcast {
		return routeBroadcast, ""
	}
	const pre, post = "/v1/users/", "/messages"
	if rest, ok := strings.CutPrefix(escaped, pre); ok {
		if seg, ok := strings.CutSuffix(rest, post); ok && !strings.Contains(seg, "/") {
			return routeUser, seg
		}
	}
	return routeOther, ""
}

// serveAPI is the API listener's handler. Checks go from the cheapest to the
// costliest: route, method, API key, user id, body, NATS.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	route, userSeg := matchRoute(r.URL.EscapedPath())
	if route == routeOther {
		s.fail(w, route, http.StatusNotFound, CodeNotFound, "no such endpoint: the API is POST /v1/users/{user}/messages and POST /v1/broadcast")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, route, http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed here; use POST", r.Method))
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		s.fail(w, route, http.StatusUnauthorized, CodeUnauthorized, "missing or unknown API key: send Authorization: Bearer <api key>")
		return
	}
	var subject, target string
	if route == routeUser {
		user, err := url.PathUnescape(userSeg)
		if err == nil {
			err = protocol.ValidateUserID(user)
		}
		if err == nil {
			subject, err = s.subjects.UserID(user)
		}
		if err != nil {
			s.fail(w, route, http.StatusBadRequest, CodeBadUser, "bad user id in the path: "+err.Error())
			return
		}
		target = targetUser
	} else {
		subject, target = s.subjects.Broadcast(), targetBroadcast
	}
	body, ok := s.readBody(w, r, route)
	if !ok {
		return
	}
	id, err := s.publish(r.Context(), target, subject, body)
	if err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			s.fail(w, route, http.StatusRequestEntityTooLarge, CodeTooLarge, "the message is larger than the NATS server's max_payload")
			return
		}
		msg := "NATS is disconnected; nothing was published, retry later"
		if !errors.Is(err, errDisconnected) {
			// The server may have received the message before the failure.
			msg = "publishing to NATS failed, retry later (the message may have gone out): " + err.Error()
		}
		w.Header().Set("Retry-After", "1")
		s.fail(w, route, http.StatusServiceUnavailable, CodeNATSUnavailable, msg)
		return
	}
	s.reply(w, route, http.StatusAccepted, acceptedBody{ID: id})
}

// authorized reports whether the request carries one of the API keys as a
// bearer token. The token's SHA-256 is compared with every key's in
// constant time, so neither the match nor the key lengths show in timing.
func (s *Server) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for i := range s.keys {
		match |= subtle.ConstantTimeCompare(sum[:], s.keys[i][:])
	}
	return match == 1
}

// readBody reads the message data: at most MaxBodyBytes of one JSON value
// in UTF-8 (what a gateway delivers unchanged). It answers the request
// itself and returns false when the body is refused.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, route string) ([]byte, bool) {
	limit := int64(s.opts.MaxBodyBytes)
	if r.ContentLength > limit {
		s.fail(w, route, http.StatusRequestEntityTooLarge, CodeTooLarge, tooLargeMsg(limit))
		return nil, false
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			s.fail(w, route, http.StatusRequestEntityTooLarge, CodeTooLarge, tooLargeMsg(limit))
			return nil, false
		}
		s.fail(w, route, http.StatusBadRequest, CodeBadJSON, "reading the body: "+err.Error())
		return nil, false
	}
	body := buf.Bytes()
	switch {
	case len(body) == 0:
		s.fail(w, route, http.StatusBadRequest, CodeBadJSON, "the body is empty; send the message data as one JSON value")
		return nil, false
	case !protocol.PayloadIsJSON(body):
		s.fail(w, route, http.StatusBadRequest, CodeBadJSON, "the body is not one JSON value in UTF-8")
		return nil, false
	}
	return body, true
}

func tooLargeMsg(limit int64) string {
	return "the body is larger than " + strconv.FormatInt(limit, 10) + " bytes (--max-body-bytes)"
}

// publish sends body to subject with a new message id and waits until the
// NATS server has it (a flush round trip), so a 202 means NATS took the
// message, and a failure means the caller may retry.
func (s *Server) publish(ctx context.Context, target, subject string, body []byte) (string, error) {
	nc := s.nc.Load()
	if !nc.IsConnected() {
		s.m.publishErrors.WithLabelValues("disconnected").Inc()
		return "", errDisconnected
	}
	id := newMsgID()
	msg := nats.NewMsg(subject)
	msg.Header.Set(protocol.HeaderMsgID, id)
	msg.Data = body
	start := time.Now()
	if err := nc.PublishMsg(msg); err != nil {
		reason := "publish"
		if errors.Is(err, nats.ErrMaxPayload) {
			reason = "too_large"
		}
		s.m.publishErrors.WithLabelValues(reason).Inc()
		s.logRateLimited("NATS publish failed", zap.String("subject", subject), zap.Error(err))
		return "", err
	}
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		s.m.publishErrors.WithLabelValues("flush").Inc()
		s.logRateLimited("NATS did not confirm a publish", zap.String("subject", subject), zap.Error(err))
		return "", fmt.Errorf("NATS did not confirm the publish: %w", err)
	}
	s.m.publish.WithLabelValues(target).Observe(time.Since(start).Seconds())
	s.m.bodyBytes.Observe(float64(len(body)))
	if ce := s.log.Check(zap.DebugLevel, "published"); ce != nil {
		ce.Write(zap.String("subject", subject), zap.String("id", id), zap.Int("bytes", len(body)))
	}
	return id, nil
}

// newMsgID returns a new message id: a NUID, which protocol.ValidMsgID
// accepts unless it happens to be all digits (reserved for stream
// sequences); such an id is drawn again.
func newMsgID() string {
	for {
		if id := nuid.Next(); protocol.ValidMsgID(id) {
			return id
		}
	}
}

// fail answers with an error body.
func (s *Server) fail(w http.ResponseWriter, route string, status int, code, msg string) {
	s.reply(w, route, status, errorBody{Error: code, Message: msg})
}

// reply writes v as the JSON body and counts the request.
func (s *Server) reply(w http.ResponseWriter, route string, status int, v any) {
	writeJSON(w, status, v)
	s.m.request(route, status)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Messages are for humans reading JSON, not HTML: "<api key>" stays as is.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only plain structs and maps of strings are written; this is not reached.
		buf.Reset()
		buf.WriteString(`{"error":"internal","message":"encoding the response failed"}` + "\n")
		status = http.StatusInternalServerError
	}
	b := buf.Bytes()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

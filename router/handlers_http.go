package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/protocol"
)

func (s *Server) httpPublish(w http.ResponseWriter, r *http.Request, user, cred string) (opResult, *apiError) {
	if _, aerr := s.checkUser(user); aerr != nil {
		return opResult{}, aerr
	}
	req := publishRequest{User: user}
	var aerr *apiError
	if req.RequireOnline, aerr = boolParam(r, "require_online"); aerr != nil {
		return opResult{}, aerr
	}
	if req.IdempotencyKey, aerr = idempotencyHeader(r); aerr != nil {
		return opResult{}, aerr
	}
	if req.Data, aerr = s.readBody(w, r); aerr != nil {
		return opResult{}, aerr
	}
	return s.opPublish(r.Context(), cred, &req)
}

func (s *Server) httpBatch(w http.ResponseWriter, r *http.Request, _, cred string) (opResult, *apiError) {
	var body struct {
		Users  []string        `json:"users"`
		Topics []string        `json:"topics"`
		Data   json.RawMessage `json:"data"`
	}
	req := batchRequest{}
	var aerr *apiError
	if req.RequireOnline, aerr = boolParam(r, "require_online"); aerr != nil {
		return opResult{}, aerr
	}
	if req.IdempotencyKey, aerr = idempotencyHeader(r); aerr != nil {
		return opResult{}, aerr
	}
	if aerr := s.readJSON(w, r, &body); aerr != nil {
		return opResult{}, aerr
	}
	req.Users, req.Topics, req.Data = body.Users, body.Topics, body.Data
	return s.opBatch(r.Context(), cred, &req)
}

func (s *Server) httpBroadcast(w http.ResponseWriter, r *http.Request, _, cred string) (opResult, *apiError) {
	var req broadcastRequest
	var aerr *apiError
	if req.IdempotencyKey, aerr = idempotencyHeader(r); aerr != nil {
		return opResult{}, aerr
	}
	if req.Data, aerr = s.readBody(w, r); aerr != nil {
		return opResult{}, aerr
	}
	return s.opBroadcast(r.Context(), cred, &req)
}

func (s *Server) httpTopicPublish(w http.ResponseWriter, r *http.Request, _, cred string) (opResult, *apiError) {
	req := topicRequest{Topic: r.PathValue("topic")}
	if _, aerr := s.checkTopic(req.Topic); aerr != nil {
		return opResult{}, aerr
	}
	var aerr *apiError
	if req.IdempotencyKey, aerr = idempotencyHeader(r); aerr != nil {
		return opResult{}, aerr
	}
	if req.Data, aerr = s.readBody(w, r); aerr != nil {
		return opResult{}, aerr
	}
	return s.opTopic(r.Context(), cred, &req)
}

func (s *Server) httpTopicPresence(_ http.ResponseWriter, r *http.Request, _, _ string) (opResult, *apiError) {
	return s.opTopicPresence(&topicRequest{Topic: r.PathValue("topic")})
}

func (s *Server) httpPresence(_ http.ResponseWriter, _ *http.Request, user, _ string) (opResult, *apiError) {
	return s.opPresence(&userRequest{User: user})
}

func (s *Server) httpPresenceQuery(w http.ResponseWriter, r *http.Request, _, _ string) (opResult, *apiError) {
	var req usersRequest
	if aerr := s.readJSON(w, r, &req); aerr != nil {
		return opResult{}, aerr
	}
	return s.opPresenceQuery(&req)
}

func (s *Server) httpStats(_ http.ResponseWriter, _ *http.Request, _, _ string) (opResult, *apiError) {
	return s.opStats()
}

func (s *Server) httpUserTopic(_ http.ResponseWriter, r *http.Request, user, _ string) (opResult, *apiError) {
	return s.opUserTopic(r.Context(), &userTopicRequest{User: user, Topic: r.PathValue("topic")}, r.Method == http.MethodPut)
}

func (s *Server) httpKick(_ http.ResponseWriter, r *http.Request, user, _ string) (opResult, *apiError) {
	return s.opKick(r.Context(), &userRequest{User: user})
}

// boolParam reads a boolean query parameter ("true", "false", "1", "0").
// A query string that does not parse (a bad %-escape) is refused rather
// than read without the parameter: "?require_online=%zz" must not publish
// to an offline user.
func boolParam(r *http.Request, name string) (bool, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return false, &apiError{status: http.StatusBadRequest, code: CodeBadRequest, msg: "the query string is malformed: " + err.Error()}
	}
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &apiError{status: http.StatusBadRequest, code: CodeBadRequest, msg: fmt.Sprintf("?%s= must be true or false", name)}
	}
	return b, nil
}

// idempotencyHeader reads the Idempotency-Key header: absent, or one
// non-empty value.
func idempotencyHeader(r *http.Request) (string, *apiError) {
	vals := r.Header.Values("Idempotency-Key")
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1 || vals[0] == "":
		return "", &apiError{status: http.StatusBadRequest, code: CodeBadIdempotencyKey, msg: "send one non-empty Idempotency-Key header"}
	}
	return vals[0], checkIdempotencyKey(vals[0])
}

// readJSON reads a JSON object request body into v; unknown members are
// refused (a misspelt "users" must not pass silently).
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		return aerr
	}
	return decodeStrict(body, v)
}

func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the body is not the JSON object expected: " + describeJSONError(err, reflect.TypeOf(v))}
	}
	if dec.More() {
		return &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the body holds more than one JSON value"}
	}
	return nil
}

// readBody reads a request body: at most MaxBodyBytes of one JSON value in
// UTF-8 (for a message, what a gateway delivers unchanged).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	limit := int64(s.opts.MaxBodyBytes)
	tooLarge := &apiError{status: http.StatusRequestEntityTooLarge, code: CodeTooLarge, msg: tooLargeMsg(limit)}
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "reading the body: " + err.Error()}
	}
	body := buf.Bytes()
	switch {
	case len(body) == 0:
		return nil, &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the body is empty; send one JSON value"}
	case !protocol.PayloadIsJSON(body):
		return nil, &apiError{status: http.StatusBadRequest, code: CodeBadJSON, msg: "the body is not one JSON value in UTF-8"}
	}
	return body, nil
}

func tooLargeMsg(limit int64) string {
	return "the body is larger than " + strconv.FormatInt(limit, 10) + " bytes (--max-body-bytes)"
}

// pub publishes body to subject with a new message id, without waiting.
// It counts and logs its failures, but for those of NATS being down
// (natsDown), which the caller handles.
func (s *Server) pub(nc *nats.Conn, target, subject string, body []byte) (string, error) {
	id := newMsgID()
	msg := nats.NewMsg(subject)
	msg.Header.Set(protocol.HeaderMsgID, id)
	msg.Data = body
	if err := nc.PublishMsg(msg); err != nil {
		if natsDown(err) {
			return "", err // the caller waits for NATS, or counts its answer
		}
		reason := "publish"
		if errors.Is(err, nats.ErrMaxPayload) {
			reason = "too_large"
		}
		s.m.publishErrors.WithLabelValues(reason).Inc()
		s.logRateLimited("NATS publish failed", zap.String("target", target), zap.Error(err))
		return "", err
	}
	s.m.bodyBytes.Observe(float64(len(body)))
	if ce := s.log.Check(zap.DebugLevel, "published"); ce != nil {
		ce.Write(zap.String("target", target), zap.String("id", id), zap.Int("bytes", len(body)))
	}
	return id, nil
}

// flush waits until the NATS server has every message published so far (a
// round trip), so a 202 means NATS took them, and a failure means the
// caller may retry.
func (s *Server) flush(ctx context.Context, nc *nats.Conn) error {
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		s.m.publishErrors.WithLabelValues("flush").Inc()
		s.logRateLimited("NATS did not confirm a publish", zap.Error(err))
		return fmt.Errorf("NATS did not confirm the publish: %w", err)
	}
	return nil
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
func (s *Server) fail(w http.ResponseWriter, route string, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	s.m.request(route, e.status)
	writeJSON(w, e.status, errorBody{Code: e.code, Reason: e.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, encodeJSON(v))
}

// encodeJSON encodes v without HTML escaping: messages are for humans
// reading JSON, "<api key>" stays as is.
func encodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only plain structs and maps of strings are written; this is not reached.
		return []byte(`{"code":"internal","reason":"encoding the response failed"}`)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// writeBody writes a JSON body and a newline.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

// describeJSONError says what encoding/json refused in the API's terms
// (members and JSON types), never Go's (struct fields and types). target
// is the type decoded into, to tell an array's element from the member.
func describeJSONError(err error, target reflect.Type) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		what := "the body"
		if te.Field != "" {
			what = fmt.Sprintf("member %q", te.Field)
			if mt := memberType(target, te.Field); mt != nil && (mt.Kind() == reflect.Slice || mt.Kind() == reflect.Array) && mt.Elem() == te.Type {
				what = fmt.Sprintf("each element of member %q", te.Field)
			}
		}
		return fmt.Sprintf("%s must be %s, not %s", what, jsonKind(te.Type), article(te.Value))
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown member " + name
	}
	return msg
}

// jsonKind names the JSON type a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another JSON type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + plural(jsonKind(t.Elem()))
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another JSON type"
}

// plural turns jsonKind's singular into the plural ("a string": "strings").
func plural(kind string) string {
	switch {
	case kind == "true or false":
		return "true or false values"
	case strings.HasPrefix(kind, "an array of "):
		return "arrays of " + strings.TrimPrefix(kind, "an array of ")
	case strings.HasPrefix(kind, "a "):
		return strings.TrimPrefix(kind, "a ") + "s"
	case strings.HasPrefix(kind, "an "):
		return strings.TrimPrefix(kind, "an ") + "s"
	}
	return "values of " + kind
}

// memberType returns the type of the member at path (dotted JSON names)
// within t, or nil.
func memberType(t reflect.Type, path string) reflect.Type {
	for _, name := range strings.Split(path, ".") {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == nil || t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == name || (tag == "" && strings.EqualFold(f.Name, name)) {
				next = f.Type
				break
			}
		}
		t = next
	}
	return t
}

// article puts "a"/"an" before encoding/json's name of a JSON value kind
// ("string", "number", "object", "array", "bool").
func article(kind string) string {
	switch kind {
	case "object", "array":
		return "an " + kind
	case "bool":
		return "true or false"
	}
	if strings.HasPrefix(kind, "number") {
		return "a number"
	}
	return "a " + kind
}

// truncate shortens s to n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

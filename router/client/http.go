package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// HTTPClient talks to the router's HTTP API.
type HTTPClient struct {
	base  string
	token string
	hc    *http.Client
}

var _ Client = (*HTTPClient)(nil)

// HTTPOption configures an HTTPClient.
type HTTPOption func(*HTTPClient)

// WithHTTPClient sets the *http.Client used (default http.DefaultClient;
// deadlines come from each call's context). nil is a *ConfigError.
func WithHTTPClient(hc *http.Client) HTTPOption {
	return func(c *HTTPClient) { c.hc = hc }
}

// NewHTTP returns a client of the router at baseURL authenticating with
// token: an API key, or a JWT granting the router's --jwt-scope.
//
// baseURL is the router's address with its scheme, "http://router:8090"
// or "https://router.example.com", optionally with a path prefix the
// router is served under (a trailing "/" is dropped); it has no query,
// fragment or user info. Anything else, and an empty token or one that
// cannot go in an HTTP header (a trailing newline read from a file), is a
// *ConfigError matching ErrInvalidConfig: nothing is ever sent with it.
func NewHTTP(baseURL, token string, opts ...HTTPOption) (*HTTPClient, error) {
	base, err := checkBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if err := checkToken(token); err != nil {
		return nil, err
	}
	c := &HTTPClient{base: base, token: token, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		return nil, &ConfigError{Field: "WithHTTPClient", Reason: "a nil *http.Client"}
	}
	return c, nil
}

// checkBaseURL returns raw without its trailing slashes, or why it is not
// a router's base URL.
func checkBaseURL(raw string) (string, error) {
	bad := func(value, reason string) error { return &ConfigError{Field: "baseURL", Value: value, Reason: reason} }
	if raw == "" {
		return "", bad("", `empty: want the router's URL, such as "http://router:8090"`)
	}
	if strings.TrimSpace(raw) != raw {
		return "", bad(raw, "leading or trailing white space")
	}
	// Until it parses, raw is not quoted if it may hold a password.
	quoted := raw
	if strings.Contains(raw, "@") {
		quoted = ""
	}
	u, err := url.Parse(raw)
	if !strings.Contains(raw, "://") && (err != nil || u.Scheme != "http" && u.Scheme != "https") {
		// A bare host:port ("127.0.0.1:8090", "router:8090"), a host, or
		// a scheme-relative "//router:8090".
		if quoted == "" {
			return "", bad("", "no scheme: want http:// or https:// in front")
		}
		return "", bad(raw, fmt.Sprintf(`no scheme: use "http://%s" (or https://)`, strings.TrimPrefix(raw, "//")))
	}
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", bad(quoted, err.Error())
	}
	shown := u.Redacted()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", bad(shown, fmt.Sprintf("scheme %q: want http or https", u.Scheme))
	case u.Host == "":
		return "", bad(shown, `no host: want "http://host:port"`)
	case u.User != nil:
		return "", bad(shown, "user info in the URL: the API key or JWT is the token argument")
	case u.RawQuery != "" || u.ForceQuery || strings.Contains(raw, "?"):
		return "", bad(shown, "a query: the SDK appends the API's paths and queries to the base URL")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", bad(shown, "a fragment: the SDK appends the API's paths to the base URL")
	}
	return strings.TrimRight(raw, "/"), nil
}

// checkToken reports why token cannot authenticate a request: empty, or
// not sendable as an HTTP header value (the transport would fail every
// call, which would look like an outage). The token itself is never
// quoted.
func checkToken(token string) error {
	if token == "" {
		return &ConfigError{Field: "token", Reason: "empty: want an API key or a JWT"}
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x20 || c == 0x7f {
			hint := ""
			if c == '\n' || c == '\r' {
				hint = " (a line end read with it?)"
			}
			return &ConfigError{Field: "token", Reason: fmt.Sprintf("byte %d of %d is the control character 0x%02x%s", i, len(token), c, hint)}
		}
	}
	if strings.TrimSpace(token) != token {
		return &ConfigError{Field: "token", Reason: "leading or trailing white space"}
	}
	return nil
}

// maxAnswerBytes bounds an answer read (a batch of 100,000 results fits).
const maxAnswerBytes = 32 << 20

// do sends a request and decodes a 2xx answer into out; it returns whether
// the answer was replayed (idempotency).
func (c *HTTPClient) do(ctx context.Context, method, path string, query url.Values, idemKey string, body []byte, out any) (bool, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return false, fmt.Errorf("router client: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// No answer: connection refused, DNS, TLS, a timeout (the error
		// names the method and URL).
		return false, noAnswer(ctx, err.Error(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return false, noAnswer(ctx, fmt.Sprintf("%s %s: reading the answer: %v", method, path, err), err)
	}
	if resp.StatusCode/100 != 2 {
		eb, code := parseErrorBody(b)
		if code == "" {
			return false, unavailable(resp.StatusCode, fmt.Sprintf("%s %s: HTTP %d without a router error body: %q",
				method, path, resp.StatusCode, snippet(b)))
		}
		return false, &Error{Status: resp.StatusCode, Code: code, Message: eb.text(), RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return false, fmt.Errorf("router client: decoding the answer: %w", err)
	}
	return resp.Header.Get("Idempotent-Replayed") == "true", nil
}

// snippet is the start of a body that is not the router's, for the error
// message.
func snippet(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

func userPath(user, what string) string {
	return "/v1/users/" + url.PathEscape(user) + "/" + what
}

func onlineQuery(o publishOptions) url.Values {
	if o.requireOnline {
		return url.Values{"require_online": {"true"}}
	}
	return nil
}

// Publish implements Client.
func (c *HTTPClient) Publish(ctx context.Context, user string, data any, opts ...PublishOption) (*PublishResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	b, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var r PublishResult
	r.Replayed, err = c.do(ctx, http.MethodPost, userPath(user, "messages"), onlineQuery(o), o.idempotencyKey, b, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// PublishBatch implements Client.
func (c *HTTPClient) PublishBatch(ctx context.Context, users []string, data any, opts ...PublishOption) ([]UserResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(struct {
		Users []string        `json:"users"`
		Data  json.RawMessage `json:"data"`
	}{users, d})
	if err != nil {
		return nil, fmt.Errorf("router client: %w", err)
	}
	var r struct{ Results []UserResult }
	replayed, err := c.do(ctx, http.MethodPost, "/v1/messages", onlineQuery(o), o.idempotencyKey, body, &r)
	if err != nil {
		return nil, err
	}
	return markReplayed(r.Results, replayed), nil
}

// Broadcast implements Client.
func (c *HTTPClient) Broadcast(ctx context.Context, data any, opts ...PublishOption) (*BroadcastResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	b, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var r BroadcastResult
	if r.Replayed, err = c.do(ctx, http.MethodPost, "/v1/broadcast", nil, o.idempotencyKey, b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// PublishTopic implements Client.
func (c *HTTPClient) PublishTopic(ctx context.Context, topic string, data any, opts ...PublishOption) (*TopicResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	b, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var r TopicResult
	if r.Replayed, err = c.do(ctx, http.MethodPost, "/v1/topics/"+url.PathEscape(topic)+"/messages", nil, o.idempotencyKey, b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TopicPresence implements Client.
func (c *HTTPClient) TopicPresence(ctx context.Context, topic string) (*TopicPresence, error) {
	var r TopicPresence
	if _, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/presence", nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Presence implements Client.
func (c *HTTPClient) Presence(ctx context.Context, user string) (*Presence, error) {
	var r Presence
	if _, err := c.do(ctx, http.MethodGet, userPath(user, "presence"), nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// QueryPresence implements Client.
func (c *HTTPClient) QueryPresence(ctx context.Context, users []string) ([]UserResult, error) {
	body, err := json.Marshal(struct {
		Users []string `json:"users"`
	}{users})
	if err != nil {
		return nil, fmt.Errorf("router client: %w", err)
	}
	var r struct{ Results []UserResult }
	if _, err := c.do(ctx, http.MethodPost, "/v1/presence/query", nil, "", body, &r); err != nil {
		return nil, err
	}
	return r.Results, nil
}

// Stats implements Client.
func (c *HTTPClient) Stats(ctx context.Context) (*Stats, error) {
	var r Stats
	if _, err := c.do(ctx, http.MethodGet, "/v1/stats", nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Subscribe implements Client.
func (c *HTTPClient) Subscribe(ctx context.Context, user, topic string) (*SubscribeResult, error) {
	return c.userTopic(ctx, http.MethodPut, user, topic)
}

// Unsubscribe implements Client.
func (c *HTTPClient) Unsubscribe(ctx context.Context, user, topic string) (*SubscribeResult, error) {
	return c.userTopic(ctx, http.MethodDelete, user, topic)
}

func (c *HTTPClient) userTopic(ctx context.Context, method, user, topic string) (*SubscribeResult, error) {
	var r SubscribeResult
	if _, err := c.do(ctx, method, userPath(user, "topics/"+url.PathEscape(topic)), nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Kick implements Client.
func (c *HTTPClient) Kick(ctx context.Context, user string) (*KickResult, error) {
	var r KickResult
	if _, err := c.do(ctx, http.MethodDelete, userPath(user, "connections"), nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

package client

import (
	"bytes"
	"context"
	"encoding/json"
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
// deadlines come from each call's context).
func WithHTTPClient(hc *http.Client) HTTPOption {
	return func(c *HTTPClient) { c.hc = hc }
}

// NewHTTP returns a client of the router at baseURL ("http://router:8090")
// authenticating with token: an API key, or a JWT granting the router's
// --jwt-scope.
func NewHTTP(baseURL, token string, opts ...HTTPOption) *HTTPClient {
	c := &HTTPClient{base: strings.TrimRight(baseURL, "/"), token: token, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c
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
		return false, &Error{Status: resp.StatusCode, Code: code, Message: eb.Message, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
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
	o := applyOptions(opts)
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
	o := applyOptions(opts)
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
	o := applyOptions(opts)
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

// Kick implements Client.
func (c *HTTPClient) Kick(ctx context.Context, user string) (*KickResult, error) {
	var r KickResult
	if _, err := c.do(ctx, http.MethodDelete, userPath(user, "connections"), nil, "", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/protocol"
)

// NATSClient talks to the router's NATS request API on
// <prefix>.router.<operation>.
type NATSClient struct {
	nc     *nats.Conn
	prefix string
}

var _ Client = (*NATSClient)(nil)

// DefaultTimeout bounds a NATS request whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// NewNATS returns a client of the routers reachable on nc, with the
// fleet's subject prefix ("" for "wsfleet"; else the routers'
// --subject-prefix: dot-separated tokens of [A-Za-z0-9_-], 1-64 bytes). A
// nil nc or another prefix is a *ConfigError matching ErrInvalidConfig.
// nc's connection state is not checked: a call on a closed connection is
// ErrRouterUnavailable, as when it closes later.
func NewNATS(nc *nats.Conn, prefix string) (*NATSClient, error) {
	if nc == nil {
		return nil, &ConfigError{Field: "nc", Reason: "a nil *nats.Conn: connect with nats.Connect first"}
	}
	if prefix == "" {
		prefix = protocol.DefaultSubjectPrefix
	}
	if err := protocol.ValidatePrefix(prefix); err != nil {
		return nil, &ConfigError{Field: "prefix", Value: prefix, Reason: err.Error()}
	}
	return &NATSClient{nc: nc, prefix: prefix}, nil
}

// request sends req to <prefix>.router.<op> and decodes the answer into
// out; it returns whether the answer was replayed (idempotency).
func (c *NATSClient) request(ctx context.Context, op string, req, out any) (bool, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return false, fmt.Errorf("router client: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	subj := c.prefix + ".router." + op
	m, err := c.nc.RequestWithContext(ctx, subj, b)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			e := unavailable(503, "no router answers on "+subj)
			e.Err = err
			return false, e
		}
		// No answer: a timeout, the connection closed or draining.
		return false, noAnswer(ctx, subj+": "+err.Error(), err)
	}
	if eb, code := parseErrorBody(m.Data); code != "" {
		e := &Error{Status: eb.Status, Code: code, Message: eb.text()}
		if m.Header != nil {
			e.RetryAfter = retryAfter(m.Header.Get("Retry-After"))
		}
		return false, e
	}
	if err := json.Unmarshal(m.Data, out); err != nil {
		return false, fmt.Errorf("router client: decoding the answer: %w", err)
	}
	return m.Header != nil && m.Header.Get("Idempotent-Replayed") == "true", nil
}

type natsPublish struct {
	User           string          `json:"user,omitempty"`
	Users          []string        `json:"users,omitempty"`
	Data           json.RawMessage `json:"data"`
	RequireOnline  bool            `json:"require_online,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// Publish implements Client.
func (c *NATSClient) Publish(ctx context.Context, user string, data any, opts ...PublishOption) (*PublishResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var r PublishResult
	r.Replayed, err = c.request(ctx, "publish", natsPublish{User: user, Data: d, RequireOnline: o.requireOnline, IdempotencyKey: o.idempotencyKey}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// PublishBatch implements Client.
func (c *NATSClient) PublishBatch(ctx context.Context, users []string, data any, opts ...PublishOption) ([]UserResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	if users == nil {
		users = []string{}
	}
	req := struct {
		Users          []string        `json:"users"`
		Data           json.RawMessage `json:"data"`
		RequireOnline  bool            `json:"require_online,omitempty"`
		IdempotencyKey string          `json:"idempotency_key,omitempty"`
	}{users, d, o.requireOnline, o.idempotencyKey}
	var r struct{ Results []UserResult }
	replayed, err := c.request(ctx, "batch", req, &r)
	if err != nil {
		return nil, err
	}
	return markReplayed(r.Results, replayed), nil
}

// Broadcast implements Client.
func (c *NATSClient) Broadcast(ctx context.Context, data any, opts ...PublishOption) (*BroadcastResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	var r BroadcastResult
	r.Replayed, err = c.request(ctx, "broadcast", natsPublish{Data: d, IdempotencyKey: o.idempotencyKey}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// PublishTopic implements Client.
func (c *NATSClient) PublishTopic(ctx context.Context, topic string, data any, opts ...PublishOption) (*TopicResult, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	d, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	req := struct {
		Topic          string          `json:"topic"`
		Data           json.RawMessage `json:"data"`
		IdempotencyKey string          `json:"idempotency_key,omitempty"`
	}{topic, d, o.idempotencyKey}
	var r TopicResult
	if r.Replayed, err = c.request(ctx, "topic.publish", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TopicPresence implements Client.
func (c *NATSClient) TopicPresence(ctx context.Context, topic string) (*TopicPresence, error) {
	var r TopicPresence
	req := struct {
		Topic string `json:"topic"`
	}{topic}
	if _, err := c.request(ctx, "topic.presence", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

type natsUser struct {
	User string `json:"user"`
}

// Presence implements Client.
func (c *NATSClient) Presence(ctx context.Context, user string) (*Presence, error) {
	var r Presence
	if _, err := c.request(ctx, "presence", natsUser{user}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// QueryPresence implements Client.
func (c *NATSClient) QueryPresence(ctx context.Context, users []string) ([]UserResult, error) {
	if users == nil {
		users = []string{}
	}
	var r struct{ Results []UserResult }
	if _, err := c.request(ctx, "presence.query", struct {
		Users []string `json:"users"`
	}{users}, &r); err != nil {
		return nil, err
	}
	return r.Results, nil
}

// Stats implements Client.
func (c *NATSClient) Stats(ctx context.Context) (*Stats, error) {
	var r Stats
	if _, err := c.request(ctx, "stats", struct{}{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Subscribe implements Client.
func (c *NATSClient) Subscribe(ctx context.Context, user, topic string) (*SubscribeResult, error) {
	return c.userTopic(ctx, "topic.subscribe", user, topic)
}

// Unsubscribe implements Client.
func (c *NATSClient) Unsubscribe(ctx context.Context, user, topic string) (*SubscribeResult, error) {
	return c.userTopic(ctx, "topic.unsubscribe", user, topic)
}

func (c *NATSClient) userTopic(ctx context.Context, op, user, topic string) (*SubscribeResult, error) {
	req := struct {
		User  string `json:"user"`
		Topic string `json:"topic"`
	}{user, topic}
	var r SubscribeResult
	if _, err := c.request(ctx, op, req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Kick implements Client.
func (c *NATSClient) Kick(ctx context.Context, user string) (*KickResult, error) {
	var r KickResult
	if _, err := c.request(ctx, "kick", natsUser{user}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

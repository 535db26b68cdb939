package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Frame types.
const (
	TypeAuth      = "auth"
	TypePing      = "ping"
	TypePong      = "pong"
	TypePublish   = "publish"
	TypeWelcome   = "welcome"
	TypeRefreshed = "refreshed"
	TypeReconnect = "reconnect"
	TypeMessage   = "message"
	TypeError     = "error"
	// Topics (topic.go).
	TypeSubscribe    = "subscribe"
	TypeUnsubscribe  = "unsubscribe"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
)

// Codes of server error frames. An error frame never closes the connection
// by itself; a close frame with a [CloseCode] does that.
const (
	// ErrCodeBadRequest: the frame is not a protocol message.
	ErrCodeBadRequest = "bad_request"
	// ErrCodeNotAuthenticated: a publish before the welcome frame.
	ErrCodeNotAuthenticated = "not_authenticated"
	// ErrCodePublishFailed: NATS did not take the published message (for
	// instance while the node is disconnected from NATS). Nothing was sent.
	ErrCodePublishFailed = "publish_failed"
	// ErrCodeOverloaded: the node's publish queue is full; retry later.
	ErrCodeOverloaded = "overloaded"
	// ErrCodeRateLimited: the client exceeded its message rate.
	ErrCodeRateLimited = "rate_limited"
	// ErrCodeBadTopic: a subscribe or unsubscribe names no valid topic
	// (see [ValidateTopic]).
	ErrCodeBadTopic = "bad_topic"
	// ErrCodeForbidden: neither the connection's token (its topics claim)
	// nor a subscription token in the frame allows the topic.
	ErrCodeForbidden = "forbidden"
	// ErrCodeTooManyTopics: the connection holds as many topics as the
	// node allows (the gateway's --max-topics-per-connection).
	ErrCodeTooManyTopics = "too_many_topics"
	// ErrCodeSubscribeFailed: the node could not make the topic's NATS
	// subscription live in time (NATS unavailable); subscribe again later.
	ErrCodeSubscribeFailed = "subscribe_failed"
)

// ClientFrame is any frame a client sends. Unknown fields are ignored.
type ClientFrame struct {
	Type  string          `json:"type"`
	Token string          `json:"token,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	// Since, on an auth frame to a node with resumable delivery, is the id
	// of the last message the client received: the node delivers what came
	// after it first (see [ParseSince]). Only the first auth frame of a
	// connection may carry it.
	Since string `json:"since,omitempty"`
	// Topic, on a subscribe or unsubscribe frame, names the topic (on a
	// subscribe, Token may carry a subscription token for it); on a
	// publish, the topic the data is for.
	Topic string `json:"topic,omitempty"`
}

// Welcome is sent once authentication succeeded and the user's subscription
// is live on the node's NATS server: a message published after the client got
// its welcome reaches it.
type Welcome struct {
	Type      string `json:"type"`
	User      string `json:"user"`
	ConnID    string `json:"conn_id"`
	Node      string `json:"node"`
	Heartbeat int    `json:"heartbeat"` // seconds between server pings
	// Position, on a node with resumable delivery, is the id the
	// connection is covered from: it receives every message for its user
	// and every broadcast with a later id, in order. Without "since" it is
	// the newest message stored when the connection was welcomed; with a
	// recovered "since" it is that id. A client that has received nothing
	// yet resumes from it.
	Position string `json:"position,omitempty"`
	// Recovered answers a "since": true when every message after it is
	// still in history and follows the welcome, false when history no
	// longer holds all of it (expired, trimmed, or the stream was
	// recreated): the client must reload its state, and the connection
	// receives what comes after Position. Absent without "since".
	Recovered *bool `json:"recovered,omitempty"`
}

// Refreshed answers an auth frame sent on an open connection: the new token
// is accepted and the connection now lives until its exp (unix seconds;
// 0: no expiry). A refreshed token must name the same user.
type Refreshed struct {
	Type string `json:"type"`
	Exp  int64  `json:"exp"`
}

// Message is a delivery. It is documented here for clients; the gateway
// writes it with [AppendMessage] without decoding the data.
type Message struct {
	Type  string          `json:"type"`
	Topic string          `json:"topic,omitempty"` // set on a topic's messages
	ID    string          `json:"id,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// Subscribed answers a subscribe: the topic's subscription is live on the
// node's NATS server, so a message published to the topic after the
// client got this frame reaches it. Subscribing to a topic the connection
// already holds answers the same, and changes nothing.
//
// On a node with resumable delivery, Position is the id the subscription
// is covered from: the connection receives every message of the topic
// with a later id, in order, and a client that has received none of the
// topic's messages yet subscribes again (after a reconnect) with it as
// "since". With a "since" in the subscribe, Recovered says whether
// history still held every message of the topic after it (they follow
// this frame, before anything newer; Position is then the "since"), or
// not (expired, trimmed, never given: the client must reload the topic's
// state, and Position is where the subscription starts).
type Subscribed struct {
	Type      string `json:"type"`
	Topic     string `json:"topic"`
	Position  string `json:"position,omitempty"`
	Recovered *bool  `json:"recovered,omitempty"`
}

// Unsubscribed answers an unsubscribe (Reason empty), or tells the client
// the node ended a subscription itself (Reason says why: a refreshed
// token no longer allows the topic, say). No message of the topic follows
// it on this connection.
type Unsubscribed struct {
	Type   string `json:"type"`
	Topic  string `json:"topic"`
	Reason string `json:"reason,omitempty"`
}

// Error reports a refused client frame.
type Error struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Topic  string `json:"topic,omitempty"` // the topic of a refused subscribe or unsubscribe
	Reason string `json:"reason"`
}

// Errors returned by [DecodeClientFrame].
var (
	ErrFrameNotJSON     = errors.New("frame is not a JSON object")
	ErrFrameMissingType = errors.New(`frame has no "type"`)
	ErrFrameUnknownType = errors.New("unknown frame type")
	ErrFrameNoToken     = errors.New(`auth frame has no "token"`)
	ErrFrameNoData      = errors.New(`publish frame has no "data"`)
	ErrBadSince         = errors.New(`"since" must be a message id: 1-20 decimal digits`)
	ErrFrameNoTopic     = errors.New(`frame has no "topic"`)
)

// ParseSince parses a resume position ("since" in an auth frame, the
// ?since= query parameter, the Wsfleet-Since header of the upgrade): the
// id of a message, decimal digits of a JetStream stream sequence. An empty
// string is 0 (no resume); "0" asks for everything history holds.
func ParseSince(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > 20 {
		return 0, ErrBadSince
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadSince
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, ErrBadSince
	}
	return n, nil
}

// DecodeClientFrame parses and checks one client frame.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, ErrFrameNotJSON
	}
	switch f.Type {
	case "":
		return f, ErrFrameMissingType
	case TypeAuth:
		if f.Token == "" {
			return f, ErrFrameNoToken
		}
		if _, err := ParseSince(f.Since); err != nil {
			return f, err
		}
	case TypePublish:
		if len(f.Data) == 0 {
			return f, ErrFrameNoData
		}
		if f.Topic != "" {
			if err := ValidateTopic(f.Topic); err != nil {
				return f, err
			}
		}
	case TypeSubscribe, TypeUnsubscribe:
		if f.Topic == "" {
			return f, ErrFrameNoTopic
		}
		if err := ValidateTopic(f.Topic); err != nil {
			return f, err
		}
		if _, err := ParseSince(f.Since); err != nil {
			return f, err
		}
	case TypePing, TypePong:
	default:
		return f, fmt.Errorf("%w %q", ErrFrameUnknownType, f.Type)
	}
	return f, nil
}

// Pre-encoded frames the server sends often.
var (
	PingJSON = []byte(`{"type":"ping"}`)
	PongJSON = []byte(`{"type":"pong"}`)
	// ReconnectJSON asks the client to move to another node: open a new
	// connection now and close this one once the new one got its welcome.
	// Messages may arrive on both meanwhile (drop duplicates by id); the
	// node closes this connection with CloseServiceRestart a few seconds
	// later if the client has not.
	ReconnectJSON = []byte(`{"type":"reconnect","reason":"node draining"}`)
	// ReconnectNATSJSON is the same request from a node that lost NATS for
	// longer than its outage grace (nothing reaches its clients); a client
	// still here a grace later is closed with CloseTryAgainLater.
	ReconnectNATSJSON = []byte(`{"type":"reconnect","reason":"node lost NATS"}`)
)

// AppendTopicError appends the JSON of an error frame about a topic:
//
//	{"type":"error","code":"forbidden","topic":"room.42","reason":"…"}
func AppendTopicError(dst []byte, code, topic, reason string) []byte {
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendJSONString(dst, []byte(code))
	dst = append(dst, `,"topic":`...)
	dst = AppendJSONString(dst, []byte(topic))
	dst = append(dst, `,"reason":`...)
	dst = AppendJSONString(dst, []byte(reason))
	return append(dst, '}')
}

// AppendError appends an error frame's JSON to dst.
func AppendError(dst []byte, code, reason string) []byte {
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendJSONString(dst, []byte(code))
	dst = append(dst, `,"reason":`...)
	dst = AppendJSONString(dst, []byte(reason))
	return append(dst, '}')
}

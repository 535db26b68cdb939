package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
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
)

// ClientFrame is any frame a client sends. Unknown fields are ignored.
type ClientFrame struct {
	Type  string          `json:"type"`
	Token string          `json:"token,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
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
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data"`
}

// Error reports a refused client frame.
type Error struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Errors returned by [DecodeClientFrame].
var (
	ErrFrameNotJSON     = errors.New("frame is not a JSON object")
	ErrFrameMissingType = errors.New(`frame has no "type"`)
	ErrFrameUnknownType = errors.New("unknown frame type")
	ErrFrameNoToken     = errors.New(`auth frame has no "token"`)
	ErrFrameNoData      = errors.New(`publish frame has no "data"`)
)

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
	case TypePublish:
		if len(f.Data) == 0 {
			return f, ErrFrameNoData
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

// AppendError appends an error frame's JSON to dst.
func AppendError(dst []byte, code, reason string) []byte {
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendJSONString(dst, []byte(code))
	dst = append(dst, `,"reason":`...)
	dst = AppendJSONString(dst, []byte(reason))
	return append(dst, '}')
}

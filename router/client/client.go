// Package client is the Go SDK of the wsfleet router, for services that
// publish to the users connected to a gateway fleet: to one user, to a
// batch of users or to everyone, query presence and the fleet's figures,
// and close a user's connections everywhere.
//
// One interface, [Client], has two transports: the router's HTTP API
// ([NewHTTP], with an API key or a JWT) and its NATS request API
// ([NewNATS], for services already on the fleet's NATS). Both honour the
// context's deadline and cancellation and return an *[Error] for every
// refusal, which errors.Is matches against the sentinels ([ErrUserOffline],
// [ErrRateLimited], [ErrUnauthorized], ...) by its code, and for every call
// no router answered ([ErrRouterUnavailable], wrapping the transport
// failure). [IsRetryable] tells which are worth retrying.
//
// What the SDK refuses itself is never sent and never retryable: a
// constructor argument it cannot use is a *[ConfigError] ([ErrInvalidConfig]),
// message data that is not one JSON value a *[DataError] ([ErrInvalidData]).
//
//	c, err := client.NewHTTP("http://router:8090", os.Getenv("ROUTER_API_KEY"))
//	if err != nil {
//		return err // a *client.ConfigError: no scheme, no host, an empty token, ...
//	}
//	res, err := c.Publish(ctx, "alice", map[string]string{"text": "your order shipped"},
//		client.RequireOnline(), client.WithIdempotencyKey("order-1234-shipped"))
//	if errors.Is(err, client.ErrUserOffline) {
//		// send a push notification instead
//	}
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Client is the router's API, over HTTP or NATS.
type Client interface {
	// Publish sends data (any JSON value: a json.RawMessage or []byte is
	// sent as is, anything else is marshalled) to every device of user.
	// Raw data that is not one JSON value in UTF-8, or a value that does
	// not marshal, is a *DataError and nothing is sent (the same for
	// PublishBatch and Broadcast).
	Publish(ctx context.Context, user string, data any, opts ...PublishOption) (*PublishResult, error)
	// PublishBatch sends data to each of users (duplicates once); the
	// results are per distinct user, in order. A user that got nothing has
	// Error set ("bad_user", or "user_offline" with RequireOnline). A
	// retry with the same idempotency key gets the first results, each
	// with Replayed set.
	PublishBatch(ctx context.Context, users []string, data any, opts ...PublishOption) ([]UserResult, error)
	// Broadcast sends data to every connection of the fleet.
	Broadcast(ctx context.Context, data any, opts ...PublishOption) (*BroadcastResult, error)
	// PublishTopic sends data to every connection subscribed to topic,
	// across the fleet. A topic that is not valid is an *Error matching
	// ErrBadTopic.
	PublishTopic(ctx context.Context, topic string, data any, opts ...PublishOption) (*TopicResult, error)
	// TopicPresence tells who is in topic (a topic matching the gateways'
	// --topic-presence): its users and their devices, fleet-wide.
	TopicPresence(ctx context.Context, topic string) (*TopicPresence, error)
	// Presence tells where user is connected.
	Presence(ctx context.Context, user string) (*Presence, error)
	// QueryPresence tells whether each of users is online.
	QueryPresence(ctx context.Context, users []string) ([]UserResult, error)
	// Stats returns the fleet's nodes, connections and users.
	Stats(ctx context.Context) (*Stats, error)
	// Kick closes every connection of user, on every node, with close
	// code 4403.
	Kick(ctx context.Context, user string) (*KickResult, error)
	// Subscribe subscribes every connected device of user to topic, on
	// every node, whatever its token's topics claim; it returns once the
	// subscriptions are live. Devices that connect later are not
	// subscribed.
	Subscribe(ctx context.Context, user, topic string) (*SubscribeResult, error)
	// Unsubscribe ends the subscriptions of user's connected devices to
	// topic, on every node.
	Unsubscribe(ctx context.Context, user, topic string) (*SubscribeResult, error)
}

// PublishOption changes a publish.
type PublishOption func(*publishOptions)

type publishOptions struct {
	idempotencyKey string
	requireOnline  bool
}

// WithIdempotencyKey makes a publish idempotent: a retry with the same key
// (1-255 bytes of printable ASCII) and the same request within the
// router's --idempotency-window is not delivered again and returns the
// first result (same message ids, Replayed set). An empty key is no key.
// The SDK refuses any other key before sending anything, with an *Error
// matching ErrBadIdempotencyKey (Status 0), as the router would. With the
// router's --resume the key also keeps the history stream from storing a
// retry twice within its duplicate window (2 minutes): such a retry gets
// the first message's id even from a router replica that does not know
// the key.
func WithIdempotencyKey(key string) PublishOption {
	return func(o *publishOptions) { o.idempotencyKey = key }
}

// RequireOnline publishes only to users with a device connected: Publish
// fails with ErrUserOffline, PublishBatch marks such users "user_offline".
// Broadcast ignores it.
func RequireOnline() PublishOption {
	return func(o *publishOptions) { o.requireOnline = true }
}

// maxIdempotencyKeyBytes is the router's bound on an idempotency key.
const maxIdempotencyKeyBytes = 255

// applyOptions applies opts and checks the idempotency key as the router
// does: a key that cannot go in an HTTP header would otherwise fail in the
// transport and look like an outage.
func applyOptions(opts []PublishOption) (publishOptions, error) {
	var o publishOptions
	for _, f := range opts {
		f(&o)
	}
	if k := o.idempotencyKey; len(k) > maxIdempotencyKeyBytes {
		return o, badIdempotencyKey(fmt.Sprintf("%d bytes, over %d", len(k), maxIdempotencyKeyBytes))
	}
	for i := 0; i < len(o.idempotencyKey); i++ {
		if c := o.idempotencyKey[i]; c < 0x20 || c > 0x7e {
			return o, badIdempotencyKey(fmt.Sprintf("byte %d is 0x%02x, not printable ASCII", i, c))
		}
	}
	return o, nil
}

func badIdempotencyKey(why string) *Error {
	return &Error{Code: ErrBadIdempotencyKey.Code, Message: "idempotency key not sent: " + why}
}

// PublishResult is the answer to Publish.
type PublishResult struct {
	// ID is the message id clients see: with the router's --resume the
	// message's history stream sequence, in decimal (see Sequence), else
	// an opaque id.
	ID      string `json:"id"`
	Online  bool   `json:"online"`  // the user had a device connected
	Devices int    `json:"devices"` // fleet-wide
	// Replayed is true when this is the stored result of an earlier
	// publish with the same idempotency key: nothing was sent this time.
	Replayed bool `json:"-"`
}

// Sequence returns the message's history stream sequence when the router
// runs with --resume, where the id is that number: the position clients
// resume from (their "since"), ascending with every message stored. ok is
// false for an id that is not one (a router without --resume).
func (r PublishResult) Sequence() (seq uint64, ok bool) { return parseSequence(r.ID) }

// BroadcastResult is the answer to Broadcast.
type BroadcastResult struct {
	ID       string `json:"id"` // as PublishResult.ID
	Replayed bool   `json:"-"`
}

// Sequence returns the broadcast's history stream sequence, as
// PublishResult.Sequence.
func (r BroadcastResult) Sequence() (seq uint64, ok bool) { return parseSequence(r.ID) }

// TopicResult is the answer to PublishTopic.
type TopicResult struct {
	Topic string `json:"topic"`
	// ID is the message id subscribers see: an opaque id, or with the
	// router's --resume the message's stream sequence.
	ID string `json:"id"`
	// Nodes is how many gateway nodes have subscribers of the topic, as
	// the router's presence view has it.
	Nodes    int  `json:"nodes"`
	Replayed bool `json:"-"`
}

// parseSequence reads a stream sequence: 1-20 decimal digits, not 0.
// Other message ids are never all digits (protocol.ValidMsgID).
func parseSequence(id string) (uint64, bool) {
	if id == "" || len(id) > 20 {
		return 0, false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// UserResult is one user's entry in the answer to PublishBatch or
// QueryPresence.
type UserResult struct {
	User    string `json:"user"`
	ID      string `json:"id,omitempty"` // PublishBatch: the message id, as PublishResult.ID
	Online  bool   `json:"online"`
	Devices int    `json:"devices"`
	Error   string `json:"error,omitempty"` // the user got nothing: bad_user, user_offline
	// Replayed (PublishBatch) is true on every entry when the batch's
	// answer is the stored one of an earlier batch with the same
	// idempotency key: nothing was sent this time.
	Replayed bool `json:"-"`
}

// Sequence returns the history stream sequence of the user's message
// (PublishBatch), as PublishResult.Sequence; ok is false for a user that
// got nothing.
func (u UserResult) Sequence() (seq uint64, ok bool) { return parseSequence(u.ID) }

// markReplayed sets Replayed on every entry of a replayed batch answer.
func markReplayed(rs []UserResult, replayed bool) []UserResult {
	if replayed {
		for i := range rs {
			rs[i].Replayed = true
		}
	}
	return rs
}

// Presence is the answer to Presence.
type Presence struct {
	User    string        `json:"user"`
	Online  bool          `json:"online"`
	Devices int           `json:"devices"`
	Nodes   []NodeDevices `json:"nodes"`
}

// NodeDevices is a user's device count on one gateway node.
type NodeDevices struct {
	Node    string `json:"node"`
	Devices int    `json:"devices"`
}

// Stats is the answer to Stats.
type Stats struct {
	Nodes       int         `json:"nodes"`
	Connections int         `json:"connections"`
	Users       int         `json:"users"` // distinct users online fleet-wide
	NodeList    []NodeStats `json:"node_list"`
}

// NodeStats is one gateway node in Stats.
type NodeStats struct {
	Node               string `json:"node"`
	Connections        int    `json:"connections"`
	Users              int    `json:"users"`
	LastHeartbeatMSAgo int64  `json:"last_heartbeat_ms_ago"`
	Draining           bool   `json:"draining"`
	Synced             bool   `json:"synced"`
}

// KickResult is the answer to Kick.
type KickResult struct {
	Closed int `json:"closed"` // connections closed
	Nodes  int `json:"nodes"`  // nodes that answered
}

// TopicPresence is the answer to TopicPresence.
type TopicPresence struct {
	Topic   string `json:"topic"`
	Users   int    `json:"users"`
	Devices int    `json:"devices"`
	// Members lists the users and their devices in the topic, sorted by
	// user id, at most 1000 of them (Truncated: there are more).
	Members []struct {
		User    string `json:"user"`
		Devices int    `json:"devices"`
	} `json:"members"`
	Truncated bool `json:"truncated"`
}

// SubscribeResult is the answer to Subscribe and Unsubscribe.
type SubscribeResult struct {
	User    string `json:"user"`
	Topic   string `json:"topic"`
	Devices int    `json:"devices"` // the user's connections that hold (Subscribe) or left (Unsubscribe) the topic
	Nodes   int    `json:"nodes"`   // nodes that answered
}

// Error is a request the router refused, or one no router answered:
// Status is the HTTP status (over NATS too; 0 when no answer came at all,
// or when the SDK refused an idempotency key itself), Code the router's
// stable error code (the "code" member of its error body), Message text
// for humans (the body's "reason"; "message" where a router answers that).
//
// A call that got no answer (connection refused, DNS, a timeout, the
// context's deadline, a closed NATS connection) is an *Error with Code
// "router_unavailable" whose Err is the failure, so errors.Is(err,
// ErrRouterUnavailable) holds and errors.Is and errors.As still reach the
// cause (context.DeadlineExceeded, *net.OpError, ...). A call whose
// context was cancelled is not: it returns the wrapped context.Canceled.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // from Retry-After, when the router sent one
	Err        error         // the transport failure behind a router_unavailable, else nil
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("router: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("router: %s (%d): %s", e.Code, e.Status, e.Message)
}

// Unwrap returns the transport failure behind the error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is matches an *Error with the same Code, so errors.Is(err,
// client.ErrUserOffline) holds for any user_offline refusal.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code != "" && t.Code == e.Code
}

// Sentinels for errors.Is, by error code (docs/router.md lists them all).
var (
	ErrBadRequest             = &Error{Code: "bad_request"}
	ErrBadJSON                = &Error{Code: "bad_json"}
	ErrBadUser                = &Error{Code: "bad_user"}
	ErrBadTopic               = &Error{Code: "bad_topic"}
	ErrBadIdempotencyKey      = &Error{Code: "bad_idempotency_key"}
	ErrUnauthorized           = &Error{Code: "unauthorized"}
	ErrForbidden              = &Error{Code: "forbidden"}
	ErrUserOffline            = &Error{Code: "user_offline"}
	ErrIdempotencyInProgress  = &Error{Code: "idempotency_in_progress"}
	ErrIdempotencyKeyReused   = &Error{Code: "idempotency_key_reused"}
	ErrTooLarge               = &Error{Code: "too_large"}
	ErrTooManyUsers           = &Error{Code: "too_many_users"}
	ErrRateLimited            = &Error{Code: "rate_limited"}
	ErrNATSUnavailable        = &Error{Code: "nats_unavailable"}
	ErrIdempotencyUnavailable = &Error{Code: "idempotency_unavailable"}
	// ErrRouterUnavailable: no router answered (HTTP: the connection
	// failed or timed out; NATS: no responders on the subject, a timeout,
	// the connection closed), or the HTTP answer was not the router's (a
	// proxy's error, or Go's plain-text answer to a request it could not
	// parse). Status is 0 when there was no answer at all.
	ErrRouterUnavailable = &Error{Code: "router_unavailable"}
)

// IsRetryable reports whether the same call may succeed later (after the
// *Error's RetryAfter when it has one, with a context whose deadline has
// not passed): ErrRouterUnavailable when no answer came at all or the
// answer was a 502, 503 or 504 (a publish may then have gone out: retry it
// with the same idempotency key), ErrRateLimited, ErrNATSUnavailable,
// ErrIdempotencyUnavailable and ErrIdempotencyInProgress. Every other
// error is not: the router's other refusals, ErrRouterUnavailable for
// another answer that is not the router's (net/http's 400 or 431), a
// *ConfigError, a *DataError, a cancelled context, nil.
func IsRetryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case ErrRateLimited.Code, ErrNATSUnavailable.Code, ErrIdempotencyUnavailable.Code, ErrIdempotencyInProgress.Code:
		return true
	case ErrRouterUnavailable.Code:
		switch e.Status {
		case 0, 502, 503, 504:
			return true
		}
	}
	return false
}

// ErrInvalidConfig matches every *ConfigError with errors.Is.
var ErrInvalidConfig = errors.New("router client: invalid configuration")

// ConfigError is a constructor argument the SDK cannot use. Field names
// it ("baseURL", "token", "nc", "prefix", "WithHTTPClient"), Value is what
// was given (never the token; a URL without its password), Reason says
// what is wrong and, where it can, what would do. It is never retryable:
// the same arguments fail the same way.
type ConfigError struct {
	Field  string
	Value  string
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("router client: invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("router client: invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// Is matches ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// ErrInvalidData matches every *DataError with errors.Is.
var ErrInvalidData = errors.New("router client: invalid message data")

// DataError is message data the SDK did not send: a json.RawMessage or
// []byte that is not one JSON value in UTF-8, or a value encoding/json
// cannot encode. Reason says what is wrong (where, for raw data); Err is
// encoding/json's error, when there is one. Nothing was sent, and the same
// data fails the same way: it is never retryable.
type DataError struct {
	Reason string
	Err    error
}

func (e *DataError) Error() string { return "router client: invalid message data: " + e.Reason }

// Unwrap returns encoding/json's error, if any.
func (e *DataError) Unwrap() error { return e.Err }

// Is matches ErrInvalidData.
func (e *DataError) Is(target error) bool { return target == ErrInvalidData }

// errorBody is the router's error answer: {"code","reason"}, plus the
// HTTP status over NATS; routers answering {"code","message"} are read as
// well.
type errorBody struct {
	Code    string `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

// text is the error's text for humans: reason, else message.
func (eb errorBody) text() string {
	if eb.Reason != "" {
		return eb.Reason
	}
	return eb.Message
}

// parseErrorBody decodes b as a router error body and returns its code
// ("" when b is not one).
func parseErrorBody(b []byte) (errorBody, string) {
	var eb errorBody
	if json.Unmarshal(b, &eb) != nil {
		return eb, ""
	}
	return eb, eb.Code
}

// marshalData encodes message data, or checks raw data is one JSON value
// in UTF-8, so that nothing the router would refuse as bad_json is sent.
func marshalData(data any) (json.RawMessage, error) {
	switch d := data.(type) {
	case json.RawMessage:
		return d, checkRaw("json.RawMessage", d)
	case []byte:
		return d, checkRaw("[]byte", d)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, &DataError{Reason: "encoding it as JSON: " + err.Error(), Err: err}
	}
	return b, nil
}

// checkRaw reports why raw data of the named type is not one JSON value in
// UTF-8.
func checkRaw(kind string, d []byte) error {
	if len(bytes.TrimSpace(d)) == 0 {
		return &DataError{Reason: kind + " is empty: it must hold one JSON value (null is `null`)"}
	}
	if !json.Valid(d) {
		var v json.RawMessage
		err := json.Unmarshal(d, &v) // the same check, for the error
		var se *json.SyntaxError
		if errors.As(err, &se) && se.Offset > 0 && !strings.HasPrefix(se.Error(), "unexpected end") {
			// Offset counts the bytes read, the bad one included.
			return &DataError{Reason: fmt.Sprintf("%s is not one JSON value: %v (at byte offset %d)", kind, se, se.Offset-1), Err: err}
		}
		return &DataError{Reason: fmt.Sprintf("%s is not one JSON value: %v", kind, err), Err: err}
	}
	if !utf8.Valid(d) {
		i := 0
		for i < len(d) {
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return &DataError{Reason: fmt.Sprintf("%s is not UTF-8: byte offset %d", kind, i)}
	}
	return nil
}

// retryAfter parses a Retry-After header in seconds.
func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// unavailable is the error for an answer that is not the router's.
func unavailable(status int, msg string) *Error {
	return &Error{Status: status, Code: ErrRouterUnavailable.Code, Message: msg}
}

// noAnswer is the error for a call that got no answer: a router_unavailable
// wrapping err, except when the caller cancelled ctx (then err, wrapped).
func noAnswer(ctx context.Context, msg string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("router client: %s: %w", msg, err)
	}
	return &Error{Code: ErrRouterUnavailable.Code, Message: msg, Err: err}
}

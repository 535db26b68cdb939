package protocol

import "strconv"

// CloseCode is the status code of a WebSocket close frame (RFC 6455 §7.4).
//
// Ranges:
//   - 1000–2999: defined by RFC 6455 §7.4.1 and the IANA registry.
//   - 4400–4499: the client did something the gateway refuses. Reconnecting
//     without changing it (a fresh token, a slower rate) fails again.
//   - 4500–4599: the gateway closed the connection for a condition on its
//     side of the wire (the client fell behind, went silent). Reconnect with
//     back-off.
type CloseCode uint16

// Close codes sent by a gateway node.
const (
	// CloseNormal: the purpose of the connection is fulfilled (RFC 6455 §7.4.1).
	CloseNormal CloseCode = 1000
	// CloseGoingAway: the endpoint is going away.
	CloseGoingAway CloseCode = 1001
	// CloseProtocolError: the peer broke RFC 6455 framing rules.
	CloseProtocolError CloseCode = 1002
	// CloseUnsupportedData: a data type the gateway does not accept (binary
	// frames; the protocol is JSON text).
	CloseUnsupportedData CloseCode = 1003
	// CloseNoStatus is never sent; it stands for a close frame without a body.
	CloseNoStatus CloseCode = 1005
	// CloseInvalidPayload: a text message that is not valid UTF-8 (RFC 6455 §8.1).
	CloseInvalidPayload CloseCode = 1007
	// ClosePolicyViolation: a generic refusal (RFC 6455 §7.4.1).
	ClosePolicyViolation CloseCode = 1008
	// CloseMessageTooBig: a frame or message larger than the node accepts.
	CloseMessageTooBig CloseCode = 1009
	// CloseInternalError: the gateway failed in a way the client did not cause.
	CloseInternalError CloseCode = 1011
	// CloseServiceRestart: the node is draining (SIGTERM); reconnect, another
	// node takes the connection.
	CloseServiceRestart CloseCode = 1012
	// CloseTryAgainLater: the node is overloaded (authentication queue full,
	// NATS unavailable); reconnect with back-off.
	CloseTryAgainLater CloseCode = 1013

	// CloseBadRequest: a frame that is not a valid protocol message.
	CloseBadRequest CloseCode = 4400
	// CloseUnauthorized: the token is missing, invalid or expired; the reason
	// says which. Reconnect with a fresh token.
	CloseUnauthorized CloseCode = 4401
	// CloseKicked: a service closed every connection of the user (logout,
	// ban) through the router. Reconnecting needs a token the service still
	// honours.
	CloseKicked CloseCode = 4403
	// CloseAuthTimeout: no auth frame arrived within the auth timeout.
	CloseAuthTimeout CloseCode = 4408
	// CloseDeviceLimit: the user has more connections on the node than it
	// allows; the reason says whether this one was replaced by a newer one
	// or refused.
	CloseDeviceLimit CloseCode = 4409
	// CloseRateLimited: the client sent more than its message rate allows.
	CloseRateLimited CloseCode = 4429

	// CloseSlowConsumer: the client did not read fast enough and its outbound
	// queue overflowed; messages queued for it were dropped.
	CloseSlowConsumer CloseCode = 4500
	// CloseHeartbeatTimeout: nothing arrived from the client within the idle
	// timeout (it did not answer pings).
	CloseHeartbeatTimeout CloseCode = 4504
)

var closeCodeNames = map[CloseCode]string{
	CloseNormal:           "normal closure",
	CloseGoingAway:        "going away",
	CloseProtocolError:    "protocol error",
	CloseUnsupportedData:  "unsupported data",
	CloseNoStatus:         "no status",
	CloseInvalidPayload:   "invalid payload data",
	ClosePolicyViolation:  "policy violation",
	CloseMessageTooBig:    "message too big",
	CloseInternalError:    "internal error",
	CloseServiceRestart:   "service restart",
	CloseTryAgainLater:    "try again later",
	CloseBadRequest:       "bad request",
	CloseUnauthorized:     "unauthorized",
	CloseKicked:           "kicked",
	CloseAuthTimeout:      "auth timeout",
	CloseDeviceLimit:      "device limit",
	CloseRateLimited:      "rate limited",
	CloseSlowConsumer:     "slow consumer",
	CloseHeartbeatTimeout: "heartbeat timeout",
}

// String returns the code's short name, or its number for codes this package
// does not define.
func (c CloseCode) String() string {
	if s, ok := closeCodeNames[c]; ok {
		return s
	}
	return strconv.Itoa(int(c))
}

// Reconnect reports whether a client should reconnect (with back-off) after
// the gateway closed its connection with c, without changing anything first.
func (c CloseCode) Reconnect() bool {
	switch c {
	case CloseGoingAway, CloseInternalError, CloseServiceRestart, CloseTryAgainLater,
		CloseSlowConsumer, CloseHeartbeatTimeout:
		return true
	}
	return false
}

// CloseCodes lists every code a gateway node sends, in ascending order.
func CloseCodes() []CloseCode {
	return []CloseCode{
		CloseNormal, CloseGoingAway, CloseProtocolError, CloseUnsupportedData,
		CloseInvalidPayload, ClosePolicyViolation, CloseMessageTooBig,
		CloseInternalError, CloseServiceRestart, CloseTryAgainLater,
		CloseBadRequest, CloseUnauthorized, CloseKicked, CloseAuthTimeout, CloseDeviceLimit, CloseRateLimited,
		CloseSlowConsumer, CloseHeartbeatTimeout,
	}
}

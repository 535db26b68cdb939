package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// NATS header names.
const (
	// HeaderMsgID carries a message's id, on deliveries published to a user
	// or broadcast subject. The gateway copies a valid id (see [ValidMsgID])
	// into the "id" of the delivered frame; an invalid one is left out.
	HeaderMsgID = "Wsfleet-Msg-Id"
	// HeaderUser carries the user id (JWT sub) on client publishes.
	HeaderUser = "Wsfleet-User"
	// HeaderConnID carries the gateway connection id on client publishes.
	HeaderConnID = "Wsfleet-Conn-Id"
	// HeaderNode carries the gateway node id on client publishes.
	HeaderNode = "Wsfleet-Node"
)

// MaxMsgIDBytes is the longest message id a gateway copies into a frame.
const MaxMsgIDBytes = 64

// ValidMsgID reports whether id may be a publisher's message id: 1–64 bytes
// of [A-Za-z0-9._:-], not all digits.
//
// Ids made only of decimal digits are reserved: resumable delivery fills the
// id with the stream sequence of the message, and a client resumes from the
// last id it saw. Ids are opaque to clients in every other case.
func ValidMsgID(id string) bool {
	if id == "" || len(id) > MaxMsgIDBytes {
		return false
	}
	digits := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '_', c == ':', c == '-':
			digits = false
		default:
			return false
		}
	}
	return !digits
}

// PayloadIsJSON reports whether a NATS payload is delivered unchanged: it is
// one JSON value in valid UTF-8. Other payloads are delivered as a JSON string.
func PayloadIsJSON(p []byte) bool {
	return len(p) > 0 && utf8.Valid(p) && json.Valid(p)
}

const (
	msgHead  = `{"type":"message"`
	msgTopic = `,"topic":"`
	msgID    = `,"id":"`
	msgData  = `,"data":`
	msgIDEnd = `"`
)

// AppendMessageSeq appends a resumable delivery's frame JSON: like
// [AppendMessage], with the stream sequence as the id.
func AppendMessageSeq(dst []byte, seq uint64, payload []byte) []byte {
	dst = append(dst, msgHead...)
	dst = append(dst, msgID...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, msgIDEnd...)
	return appendData(dst, payload)
}

// AppendMessage appends the delivery frame's JSON for a payload to dst:
//
//	{"type":"message","id":"<id>","data":<payload>}
//
// The id is left out unless [ValidMsgID] accepts it. A payload for which
// [PayloadIsJSON] holds is copied unchanged; an empty payload becomes null;
// any other payload becomes a JSON string of its text, with invalid UTF-8
// replaced by U+FFFD. It allocates only when dst must grow.
func AppendMessage(dst []byte, id string, payload []byte) []byte {
	dst = append(dst, msgHead...)
	if ValidMsgID(id) {
		dst = append(dst, msgID...)
		dst = append(dst, id...)
		dst = append(dst, msgIDEnd...)
	}
	return appendData(dst, payload)
}

// AppendTopicMessage appends a topic delivery's frame JSON:
//
//	{"type":"message","topic":"<topic>","id":"<id>","data":<payload>}
//
// topic must be valid ([ValidateTopic]: nothing in it needs escaping); the
// id and the payload are as for [AppendMessage].
func AppendTopicMessage(dst []byte, topic, id string, payload []byte) []byte {
	dst = append(dst, msgHead...)
	dst = append(dst, msgTopic...)
	dst = append(dst, topic...)
	dst = append(dst, '"')
	if ValidMsgID(id) {
		dst = append(dst, msgID...)
		dst = append(dst, id...)
		dst = append(dst, msgIDEnd...)
	}
	return appendData(dst, payload)
}

// AppendTopicMessageSeq appends a resumable topic delivery's frame JSON,
// its id the message's stream sequence:
//
//	{"type":"message","topic":"<topic>","id":"<seq>","data":<payload>}
func AppendTopicMessageSeq(dst []byte, topic string, seq uint64, payload []byte) []byte {
	dst = append(dst, msgHead...)
	dst = append(dst, msgTopic...)
	dst = append(dst, topic...)
	dst = append(dst, '"')
	dst = append(dst, msgID...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, msgIDEnd...)
	return appendData(dst, payload)
}

// appendData appends the "data" member and the closing brace.
func appendData(dst, payload []byte) []byte {
	dst = append(dst, msgData...)
	switch {
	case len(payload) == 0:
		dst = append(dst, "null"...)
	case PayloadIsJSON(payload):
		dst = append(dst, payload...)
	default:
		dst = AppendJSONString(dst, payload)
	}
	return append(dst, '}')
}

// MessageSizeBound returns an upper bound of the bytes AppendMessage appends
// for a payload of n bytes (a payload turned into a string may grow up to
// six times, "\u001f" for one byte).
func MessageSizeBound(n int) int {
	return len(msgHead) + len(msgID) + MaxMsgIDBytes + len(msgIDEnd) + len(msgData) + 6*n + 2 + 5
}

// AppendJSONString appends s as a JSON string (RFC 8259 §7) to dst. Invalid
// UTF-8 becomes U+FFFD. '<', '>' and '&' are kept as they are.
func AppendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

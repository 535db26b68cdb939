package protocol

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// DefaultSubjectPrefix is the subject prefix used when none is configured.
const DefaultSubjectPrefix = "wsfleet"

// Limits on what subjects are built from. They keep every subject a gateway
// or router builds far below nats-server's default max_control_line (4096
// bytes): a longer SUB or PUB line makes the server drop the whole NATS
// connection, an outage for every user of a node.
const (
	// MaxUserIDBytes is the longest user id (JWT "sub") accepted, in bytes.
	// Its token is at most 3×MaxUserIDBytes bytes.
	MaxUserIDBytes = 256
	// MaxPrefixBytes is the longest subject prefix accepted.
	MaxPrefixBytes = 64
)

// Errors returned by user id and prefix validation.
var (
	ErrEmptyUserID    = errors.New("user id is empty")
	ErrUserIDTooLong  = errors.New("user id is longer than 256 bytes")
	ErrUserIDEncoding = errors.New("user id is not valid UTF-8")
	ErrUserIDControl  = errors.New("user id contains a control character")
	ErrBadUserToken   = errors.New("malformed user token")
	ErrBadPrefix      = errors.New("subject prefix must be 1-64 bytes of dot-separated tokens of [A-Za-z0-9_-]")
)

// ValidateUserID reports whether id may name a user: 1–256 bytes of UTF-8
// without control characters (so it is safe in a NATS header and a log line).
// Anything else passes [EncodeUserToken] safely too, but a gateway refuses it
// at authentication.
func ValidateUserID(id string) error {
	switch {
	case id == "":
		return ErrEmptyUserID
	case len(id) > MaxUserIDBytes:
		return ErrUserIDTooLong
	case !utf8.ValidString(id):
		return ErrUserIDEncoding
	}
	for _, r := range id {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return ErrUserIDControl
		}
	}
	return nil
}

// tokenSafe reports whether b stands for itself in a user token.
func tokenSafe(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-'
}

const hexDigits = "0123456789ABCDEF"

// EncodeUserToken returns the subject-safe token of a user id.
//
// ASCII letters, digits and '-' stand for themselves; every other byte,
// including '_', becomes '_' and two upper-case hex digits ("a.b" → "a_2Eb",
// "é" → "_C3_A9"). The result only ever holds [A-Za-z0-9_-], so it is one
// NATS subject token that can be neither a wildcard nor split by a dot; and
// since '_' only starts an escape, distinct ids give distinct tokens.
//
// It returns an error for an empty id or one over [MaxUserIDBytes], which
// would make a subject too long.
func EncodeUserToken(id string) (string, error) {
	if id == "" {
		return "", ErrEmptyUserID
	}
	if len(id) > MaxUserIDBytes {
		return "", ErrUserIDTooLong
	}
	n := 0
	for i := 0; i < len(id); i++ {
		if tokenSafe(id[i]) {
			n++
		} else {
			n += 3
		}
	}
	if n == len(id) {
		return id, nil
	}
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String(), nil
}

// DecodeUserToken is the inverse of [EncodeUserToken]. It accepts only tokens
// in the canonical form EncodeUserToken produces.
func DecodeUserToken(tok string) (string, error) {
	if tok == "" || len(tok) > 3*MaxUserIDBytes {
		return "", ErrBadUserToken
	}
	if !strings.Contains(tok, "_") {
		if len(tok) > MaxUserIDBytes {
			return "", ErrBadUserToken
		}
		for i := 0; i < len(tok); i++ {
			if !tokenSafe(tok[i]) {
				return "", ErrBadUserToken
			}
		}
		return tok, nil
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if tokenSafe(c) {
			b = append(b, c)
			continue
		}
		if c != '_' || i+2 >= len(tok) {
			return "", ErrBadUserToken
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", ErrBadUserToken
		}
		v := byte(hi<<4 | lo)
		if tokenSafe(v) {
			return "", ErrBadUserToken // not canonical: a safe byte was escaped
		}
		b = append(b, v)
		i += 2
	}
	if len(b) > MaxUserIDBytes {
		return "", ErrBadUserToken
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ValidatePrefix reports whether p can prefix wsfleet subjects: 1–64 bytes of
// dot-separated, non-empty tokens of [A-Za-z0-9_-].
func ValidatePrefix(p string) error {
	if p == "" || len(p) > MaxPrefixBytes {
		return ErrBadPrefix
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return ErrBadPrefix
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !tokenSafe(c) && c != '_' {
				return ErrBadPrefix
			}
		}
	}
	return nil
}

// Subjects builds the NATS subjects of one deployment from its prefix.
// The zero value is not usable; call [NewSubjects].
type Subjects struct {
	prefix    string
	user      string // "<prefix>.user."
	in        string // "<prefix>.in."
	broadcast string // "<prefix>.broadcast"
}

// NewSubjects validates prefix and returns its subject builder.
func NewSubjects(prefix string) (Subjects, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return Subjects{}, err
	}
	return Subjects{
		prefix:    prefix,
		user:      prefix + ".user.",
		in:        prefix + ".in.",
		broadcast: prefix + ".broadcast",
	}, nil
}

// Prefix returns the subject prefix.
func (s Subjects) Prefix() string { return s.prefix }

// User returns the subject that delivers to every device of the user whose
// token is tok: "<prefix>.user.<tok>".
func (s Subjects) User(tok string) string { return s.user + tok }

// UserID encodes id and returns its user subject.
func (s Subjects) UserID(id string) (string, error) {
	tok, err := EncodeUserToken(id)
	if err != nil {
		return "", err
	}
	return s.user + tok, nil
}

// UserTokenOf returns the token of a user subject, and false when subj is not
// one of this prefix's user subjects.
func (s Subjects) UserTokenOf(subj string) (string, bool) {
	if len(subj) <= len(s.user) || subj[:len(s.user)] != s.user {
		return "", false
	}
	return subj[len(s.user):], true
}

// In returns the subject client publish frames of user tok go to:
// "<prefix>.in.<tok>".
func (s Subjects) In(tok string) string { return s.in + tok }

// InWildcard returns the subject that matches every client publish:
// "<prefix>.in.*".
func (s Subjects) InWildcard() string { return s.in + "*" }

// Broadcast returns the subject that reaches every authenticated connection:
// "<prefix>.broadcast".
func (s Subjects) Broadcast() string { return s.broadcast }

package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Topic names and the subjects they map to.
//
// A topic is a name clients subscribe to ("room.42", "prices.EURUSD"):
// 1–[MaxTopicBytes] bytes of dot-separated segments, at most
// [MaxTopicSegments] of them, each a non-empty run of the topic alphabet
// A-Z a-z 0-9 _ - : (no space, no '*', no '>', no other byte). A topic's
// subject is the topic itself under "<prefix>.topic.":
//
//	room.42 → wsfleet.topic.room.42
//
// Every segment is one NATS subject token and the alphabet holds no
// wildcard, so the mapping is injective, no topic names a wildcard
// subject, and a service subscribing to "wsfleet.topic.room.>" gets every
// room. A pattern (a JWT "topics" claim) is a topic whose segments may
// also be '*' (one segment) or, last, '>' (one or more segments), as in
// NATS: "room.42", "prices.*", "team.7.>".
const (
	// MaxTopicBytes is the longest topic name accepted, in bytes.
	MaxTopicBytes = 128
	// MaxTopicSegments is the most dot-separated segments in a topic name.
	MaxTopicSegments = 16
)

// Errors returned by topic and pattern validation; the errors returned
// wrap them with the reason.
var (
	ErrBadTopic        = errors.New("bad topic")
	ErrBadTopicPattern = errors.New("bad topic pattern")
)

// topicByte reports whether c may appear in a topic segment.
func topicByte(c byte) bool {
	return tokenSafe(c) || c == '_' || c == ':'
}

// ValidateTopic reports whether t is a topic name (see the package doc),
// and why not.
func ValidateTopic(t string) error {
	return checkTopic(t, false, ErrBadTopic)
}

// ValidateTopicPattern reports whether p is a topic pattern: a topic name
// whose segments may also be '*', and whose last may be '>'.
func ValidateTopicPattern(p string) error {
	return checkTopic(p, true, ErrBadTopicPattern)
}

func checkTopic(t string, pattern bool, sentinel error) error {
	switch {
	case t == "":
		return fmt.Errorf("%w: empty", sentinel)
	case len(t) > MaxTopicBytes:
		return fmt.Errorf("%w: %d bytes, longer than %d", sentinel, len(t), MaxTopicBytes)
	}
	segs := 0
	for start := 0; start <= len(t); {
		end := strings.IndexByte(t[start:], '.')
		if end < 0 {
			end = len(t)
		} else {
			end += start
		}
		seg := t[start:end]
		segs++
		switch {
		case segs > MaxTopicSegments:
			return fmt.Errorf("%w: more than %d segments", sentinel, MaxTopicSegments)
		case seg == "":
			return fmt.Errorf("%w: an empty segment (a leading, trailing or double dot)", sentinel)
		case pattern && seg == "*":
		case pattern && seg == ">":
			if end != len(t) {
				return fmt.Errorf("%w: '>' is not the last segment", sentinel)
			}
		default:
			for i := 0; i < len(seg); i++ {
				if !topicByte(seg[i]) {
					return fmt.Errorf("%w: byte %q at %d is not one of A-Z a-z 0-9 _ - :", sentinel, seg[i], start+i)
				}
			}
		}
		start = end + 1
	}
	return nil
}

// MatchTopic reports whether topic matches pattern: segment by segment,
// '*' matching any one segment and a last '>' one or more. Both must be
// valid ([ValidateTopic], [ValidateTopicPattern]).
func MatchTopic(pattern, topic string) bool {
	for {
		pi := strings.IndexByte(pattern, '.')
		ti := strings.IndexByte(topic, '.')
		pseg, tseg := pattern, topic
		if pi >= 0 {
			pseg = pattern[:pi]
		}
		if ti >= 0 {
			tseg = topic[:ti]
		}
		if pseg == ">" {
			return true
		}
		if pseg != "*" && pseg != tseg {
			return false
		}
		switch {
		case pi < 0 && ti < 0:
			return true
		case pi < 0 || ti < 0:
			return false // one has segments left, the other none
		}
		pattern, topic = pattern[pi+1:], topic[ti+1:]
	}
}

// Topic returns the subject of a valid topic: "<prefix>.topic.<topic>".
func (s Subjects) Topic(topic string) string { return s.prefix + ".topic." + topic }

// TopicOf returns the topic of a topic subject, and false when subj is not
// one of this prefix's topic subjects.
func (s Subjects) TopicOf(subj string) (string, bool) {
	pre := len(s.prefix) + len(".topic.")
	if len(subj) <= pre || subj[:len(s.prefix)] != s.prefix || subj[len(s.prefix):pre] != ".topic." {
		return "", false
	}
	t := subj[pre:]
	if ValidateTopic(t) != nil {
		return "", false
	}
	return t, true
}

// InTopic returns the subject client publish frames to a valid topic go to:
// "<prefix>.in.topic.<topic>".
func (s Subjects) InTopic(topic string) string { return s.in + "topic." + topic }

package protocol

import (
	"errors"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

func TestValidateTopic(t *testing.T) {
	for _, tc := range []struct {
		name, topic string
		ok          bool
	}{
		{"one segment", "lobby", true},
		{"room", "room.42", true},
		{"the whole alphabet", "A-Z_a-z:0-9.x", true},
		{"longest", strings.Repeat("a", MaxTopicBytes), true},
		{"most segments", strings.Repeat("a.", MaxTopicSegments-1) + "a", true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxTopicBytes+1), false},
		{"too many segments", strings.Repeat("a.", MaxTopicSegments) + "a", false},
		{"leading dot", ".room", false},
		{"trailing dot", "room.", false},
		{"double dot", "room..42", false},
		{"star", "room.*", false},
		{"greater-than", "room.>", false},
		{"star inside a segment", "ro*om", false},
		{"space", "room 42", false},
		{"tab", "room\t42", false},
		{"non-ASCII", "salle.é", false},
		{"slash", "a/b", false},
		{"NUL", "a\x00b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTopic(tc.topic)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateTopic(%q) = %v, want ok %v", tc.topic, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadTopic) {
				t.Fatalf("error %v does not wrap ErrBadTopic", err)
			}
		})
	}
}

func TestValidateTopicPattern(t *testing.T) {
	for _, tc := range []struct {
		name, pattern string
		ok            bool
	}{
		{"a topic", "room.42", true},
		{"star", "prices.*", true},
		{"stars", "*.*", true},
		{"greater-than last", "team.7.>", true},
		{"greater-than alone", ">", true},
		{"star then greater-than", "*.>", true},
		{"greater-than not last", "team.>.x", false},
		{"star inside a segment", "pri*ces", false},
		{"greater-than inside a segment", "a>", false},
		{"empty", "", false},
		{"empty segment", "a..>", false},
		{"space", "a .>", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTopicPattern(tc.pattern)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateTopicPattern(%q) = %v, want ok %v", tc.pattern, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadTopicPattern) {
				t.Fatalf("error %v does not wrap ErrBadTopicPattern", err)
			}
		})
	}
}

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		name, pattern, topic string
		want                 bool
	}{
		{"equal", "room.42", "room.42", true},
		{"other room", "room.42", "room.43", false},
		{"prefix is not a match", "room", "room.42", false},
		{"longer pattern", "room.42.x", "room.42", false},
		{"star one segment", "prices.*", "prices.EURUSD", true},
		{"star not two segments", "prices.*", "prices.EUR.USD", false},
		{"star not zero segments", "prices.*", "prices", false},
		{"greater-than one segment", "team.7.>", "team.7.general", true},
		{"greater-than several", "team.7.>", "team.7.a.b.c", true},
		{"greater-than not zero", "team.7.>", "team.7", false},
		{"greater-than other team", "team.7.>", "team.8.general", false},
		{"everything", ">", "anything.at.all", true},
		{"star then greater-than", "*.>", "a.b", true},
		{"segment prefix is not a match", "room.4", "room.42", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MatchTopic(tc.pattern, tc.topic); got != tc.want {
				t.Fatalf("MatchTopic(%q, %q) = %v, want %v", tc.pattern, tc.topic, got, tc.want)
			}
		})
	}
}

func TestTopicSubjects(t *testing.T) {
	s, err := NewSubjects("wsfleet")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Topic("room.42"); got != "wsfleet.topic.room.42" {
		t.Fatalf("Topic: %q", got)
	}
	if got := s.InTopic("room.42"); got != "wsfleet.in.topic.room.42" {
		t.Fatalf("InTopic: %q", got)
	}
	for _, tc := range []struct {
		name, subj, want string
		ok               bool
	}{
		{"a topic", "wsfleet.topic.room.42", "room.42", true},
		{"a user", "wsfleet.user.alice", "", false},
		{"the bare topic prefix", "wsfleet.topic.", "", false},
		{"another prefix", "other.topic.room", "", false},
		{"a longer prefix", "wsfleetx.topic.room", "", false},
		{"a wildcard", "wsfleet.topic.room.*", "", false},
		{"a live subject", "wsfleet.live.topic.room", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := s.TopicOf(tc.subj)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("TopicOf(%q) = %q, %v; want %q, %v", tc.subj, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzTopic checks, for any string, that a valid topic's subject is a
// literal NATS subject of its segments under the prefix (no wildcard, no
// empty token, nothing outside the alphabet), that TopicOf gives the topic
// back (so no two topics share a subject), and that any subject TopicOf
// accepts is the subject of the topic it returns.
func FuzzTopic(f *testing.F) {
	for _, seed := range []string{"room.42", "a", "*", ">", "a..b", ".a", "a.", "room 42", "é", "a:b-c_d", strings.Repeat("a.", 20)} {
		f.Add(seed)
	}
	s, err := NewSubjects("wsfleet")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if ValidateTopic(in) == nil {
			subj := s.Topic(in)
			toks := strings.Split(subj, ".")
			if len(toks) != 2+strings.Count(in, ".")+1 || len(toks) > 2+MaxTopicSegments {
				t.Fatalf("subject %q of topic %q has %d tokens", subj, in, len(toks))
			}
			for _, tok := range toks {
				if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
					t.Fatalf("subject %q of topic %q has token %q", subj, in, tok)
				}
			}
			if back, ok := s.TopicOf(subj); !ok || back != in {
				t.Fatalf("TopicOf(Topic(%q)) = %q, %v", in, back, ok)
			}
			if !MatchTopic(in, in) {
				t.Fatalf("topic %q does not match itself as a pattern", in)
			}
		}
		// The other way: in as a subject.
		if topic, ok := s.TopicOf(in); ok && s.Topic(topic) != in {
			t.Fatalf("TopicOf(%q) = %q, whose subject is %q", in, topic, s.Topic(topic))
		}
	})
}

// FuzzMatchTopic checks MatchTopic against nats-server's own subject
// matching for every valid pattern and topic: a claim allows exactly the
// topics whose subjects a NATS subscription on the pattern would get.
func FuzzMatchTopic(f *testing.F) {
	for _, seed := range [][2]string{
		{"room.42", "room.42"}, {"prices.*", "prices.EURUSD"}, {"team.7.>", "team.7.a.b"},
		{">", "a"}, {"*.>", "a"}, {"a.*.c", "a.b.c"}, {"a.*", "a.b.c"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		if ValidateTopicPattern(pattern) != nil || ValidateTopic(topic) != nil {
			return
		}
		want := natsserver.SubjectMatchesFilter(topic, pattern)
		if got := MatchTopic(pattern, topic); got != want {
			t.Fatalf("MatchTopic(%q, %q) = %v, nats-server says %v", pattern, topic, got, want)
		}
	})
}

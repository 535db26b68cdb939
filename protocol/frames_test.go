package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeClientFrame(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		typ   string
		err   error
		token string
		data  string
		topic string
	}{
		{name: "auth", in: `{"type":"auth","token":"abc"}`, typ: TypeAuth, token: "abc"},
		{name: "ping", in: `{"type":"ping"}`, typ: TypePing},
		{name: "pong", in: `{"type":"pong"}`, typ: TypePong},
		{name: "publish keeps data bytes", in: `{"type":"publish","data":{"a": [1,2]}}`, typ: TypePublish, data: `{"a": [1,2]}`},
		{name: "unknown fields ignored", in: `{"type":"ping","x":1}`, typ: TypePing},
		{name: "not json", in: `hello`, err: ErrFrameNotJSON},
		{name: "array", in: `[]`, err: ErrFrameNotJSON},
		{name: "type not a string", in: `{"type":1}`, err: ErrFrameNotJSON},
		{name: "no type", in: `{}`, err: ErrFrameMissingType},
		{name: "unknown type", in: `{"type":"subscribed"}`, err: ErrFrameUnknownType},
		{name: "subscribe", in: `{"type":"subscribe","topic":"room.42"}`, typ: TypeSubscribe, topic: "room.42"},
		{name: "subscribe with token", in: `{"type":"subscribe","topic":"a:b-c_d","token":"t"}`, typ: TypeSubscribe, topic: "a:b-c_d", token: "t"},
		{name: "unsubscribe", in: `{"type":"unsubscribe","topic":"room.42"}`, typ: TypeUnsubscribe, topic: "room.42"},
		{name: "subscribe without topic", in: `{"type":"subscribe"}`, err: ErrFrameNoTopic},
		{name: "unsubscribe without topic", in: `{"type":"unsubscribe","topic":""}`, err: ErrFrameNoTopic},
		{name: "subscribe to a wildcard", in: `{"type":"subscribe","topic":"room.*"}`, err: ErrBadTopic},
		{name: "subscribe to a bad topic", in: `{"type":"subscribe","topic":"room..42"}`, err: ErrBadTopic},
		{name: "unsubscribe from a bad topic", in: `{"type":"unsubscribe","topic":"room.>"}`, err: ErrBadTopic},
		{name: "publish to a topic", in: `{"type":"publish","topic":"room.1","data":1}`, typ: TypePublish, topic: "room.1", data: "1"},
		{name: "publish to a bad topic", in: `{"type":"publish","topic":"room.>","data":1}`, err: ErrBadTopic},
		{name: "subscribe with a bad since", in: `{"type":"subscribe","topic":"a","since":"x"}`, err: ErrBadSince},
		{name: "auth without token", in: `{"type":"auth"}`, err: ErrFrameNoToken},
		{name: "publish without data", in: `{"type":"publish"}`, err: ErrFrameNoData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClientFrame([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if f.Type != tc.typ || f.Token != tc.token || string(f.Data) != tc.data || f.Topic != tc.topic {
				t.Fatalf("got %+v (data %s)", f, f.Data)
			}
		})
	}
}

func TestAppendError(t *testing.T) {
	out := AppendError(nil, ErrCodeBadRequest, `bad "frame"`)
	var e Error
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeError || e.Code != ErrCodeBadRequest || e.Reason != `bad "frame"` {
		t.Fatalf("got %+v", e)
	}
}

func TestAppendTopicError(t *testing.T) {
	out := AppendTopicError(nil, ErrCodeBadTopic, "a\"b", "why")
	var e Error
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeError || e.Code != ErrCodeBadTopic || e.Topic != `a"b` || e.Reason != "why" {
		t.Fatalf("got %+v", e)
	}
}

func TestCloseCodes(t *testing.T) {
	seen := map[CloseCode]bool{}
	for _, c := range CloseCodes() {
		if seen[c] {
			t.Fatalf("code %d listed twice", c)
		}
		seen[c] = true
		if c.String() == "" || c.String()[0] >= '0' && c.String()[0] <= '9' {
			t.Errorf("code %d has no name", c)
		}
		custom := c >= 4000
		if custom && (c < 4400 || c > 4599) {
			t.Errorf("custom code %d outside the documented ranges", c)
		}
		if custom && c < 4500 && c.Reconnect() {
			t.Errorf("4xxx client code %d says reconnect", c)
		}
		if c >= 4500 && !c.Reconnect() {
			t.Errorf("server-side code %d says do not reconnect", c)
		}
	}
	if CloseCode(4999).String() != "4999" {
		t.Errorf("unknown code name = %q", CloseCode(4999).String())
	}
}

// FuzzDecodeClientFrame checks that no input panics and that an accepted frame
// has a known type with the fields that type needs.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{`{"type":"auth","token":"t"}`, `{"type":"publish","data":[1]}`, `{"type":"ping"}`, `{`, `null`, `{"type":"publish","data":null}`, `{"type":"subscribe","topic":"room.1"}`, `{"type":"unsubscribe","topic":"a.b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		if err != nil {
			return
		}
		switch fr.Type {
		case TypeAuth:
			if fr.Token == "" {
				t.Fatal("auth without token accepted")
			}
		case TypePublish:
			if !json.Valid(fr.Data) {
				t.Fatalf("publish data %q is not JSON", fr.Data)
			}
			if fr.Topic != "" && ValidateTopic(fr.Topic) != nil {
				t.Fatalf("publish to topic %q accepted", fr.Topic)
			}
		case TypeSubscribe, TypeUnsubscribe:
			if ValidateTopic(fr.Topic) != nil {
				t.Fatalf("topic %q accepted", fr.Topic)
			}
		case TypePing, TypePong:
		default:
			t.Fatalf("type %q accepted", fr.Type)
		}
	})
}

package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

func TestSSEEncode(t *testing.T) {
	big := `"` + strings.Repeat("y", 70000) + `"`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"user message", string(protocol.AppendMessage(nil, "m-1", []byte(`{"a":1}`))),
			"id: m-1\ndata: {\"type\":\"message\",\"id\":\"m-1\",\"data\":{\"a\":1}}\n\n"},
		{"no id", string(protocol.AppendMessage(nil, "", []byte(`1`))),
			"data: {\"type\":\"message\",\"data\":1}\n\n"},
		{"topic message", string(protocol.AppendTopicMessageSeq(nil, "room.1", 42, []byte(`"x"`))),
			"id: 42\ndata: {\"type\":\"message\",\"topic\":\"room.1\",\"id\":\"42\",\"data\":\"x\"}\n\n"},
		{"line breaks between tokens", string(protocol.AppendMessage(nil, "m-7", []byte("{\"a\":\r\n 1,\n\"b\":2}"))),
			"id: m-7\ndata: {\"type\":\"message\",\"id\":\"m-7\",\"data\":{\"a\":   1, \"b\":2}}\n\n"},
		{"not a message", `{"type":"welcome","user":"u"}`, "data: {\"type\":\"welcome\",\"user\":\"u\"}\n\n"},
		{"16-bit length", string(protocol.AppendMessage(nil, "m", []byte(`"`+strings.Repeat("z", 300)+`"`))), ""},
		{"64-bit length", string(protocol.AppendMessage(nil, "m", []byte(big))), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := wsframe.AppendFrame(nil, ws.OpText, []byte(tc.json))
			sh := sseEncode(frame)
			defer sh.Release()
			got := string(sh.B)
			want := tc.want
			if want == "" {
				want = "id: m\ndata: " + tc.json + "\n\n"
			}
			if got != want {
				t.Fatalf("got %.200q\nwant %.200q", got, want)
			}
		})
	}
}

// FuzzSSEHeaders: any request head parses without panicking, and a field
// the parser took holds no line break.
func FuzzSSEHeaders(f *testing.F) {
	for _, s := range []string{
		"Host: x\r\nAuthorization: Bearer abc\r\nLast-Event-ID: 12\r\n\r\n",
		"Origin: https://a.example\r\nConnection: keep-alive, close\r\n\r\n",
		"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Bad Header: x\r\n\r\n",
		"NoColon\r\n\r\n",
		"\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseSSEHeaders(b)
		if !ok {
			return
		}
		for _, v := range []string{h.auth, h.lastEventID, h.since, h.origin} {
			if strings.ContainsAny(v, "\r\n") {
				t.Fatalf("field value %q holds a line break", v)
			}
		}
	})
}

// FuzzSSETopics: ?topics= parses without panicking; what it accepts is
// valid topics with valid positions, at most max, without duplicates.
func FuzzSSETopics(f *testing.F) {
	for _, s := range []string{"room.1,room.2", "room.1@17,prices.*", "a@,b@x", ",,a,,a@3", "team.7.>", strings.Repeat("a,", 10)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topics, code, reason := parseSSETopics([]string{s}, 4)
		if code != "" {
			if reason == "" || topics != nil {
				t.Fatalf("refusal %q without a reason, or with topics", code)
			}
			return
		}
		if len(topics) > 4 {
			t.Fatalf("%d topics past the bound", len(topics))
		}
		seen := map[string]bool{}
		for _, tp := range topics {
			if err := protocol.ValidateTopic(tp.name); err != nil || seen[tp.name] {
				t.Fatalf("accepted %q: %v (duplicate %v)", tp.name, err, seen[tp.name])
			}
			seen[tp.name] = true
			if tp.since != "" {
				if _, err := protocol.ParseSince(tp.since); err != nil {
					t.Fatalf("accepted position %q", tp.since)
				}
			}
		}
	})
}

// FuzzSSEEncode: any frame the node builds becomes one event whose data is
// one line holding the frame's JSON, line breaks aside.
func FuzzSSEEncode(f *testing.F) {
	f.Add("m-1", []byte(`{"a":1}`), "")
	f.Add("", []byte("\"x\"\n"), "room.1")
	f.Add("9", []byte{0xff, '\n', '\r'}, "t")
	f.Fuzz(func(t *testing.T, id string, payload []byte, topic string) {
		var js []byte
		if protocol.ValidateTopic(topic) == nil {
			js = protocol.AppendTopicMessage(nil, topic, id, payload)
		} else {
			js = protocol.AppendMessage(nil, id, payload)
		}
		sh := sseEncode(wsframe.AppendFrame(nil, ws.OpText, js))
		defer sh.Release()
		ev := sh.B
		if !bytes.HasSuffix(ev, []byte("\n\n")) {
			t.Fatalf("event %q does not end with an empty line", ev)
		}
		lines := bytes.Split(ev[:len(ev)-2], []byte("\n"))
		data := lines[len(lines)-1]
		if !bytes.HasPrefix(data, []byte("data: ")) || bytes.ContainsAny(data, "\r") {
			t.Fatalf("event %q", ev)
		}
		flat := bytes.Map(func(r rune) rune {
			if r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, js)
		if !bytes.Equal(data[len("data: "):], flat) {
			t.Fatalf("data %q, want %q", data, flat)
		}
		if len(lines) == 2 && (!protocol.ValidMsgID(id) || string(lines[0]) != "id: "+id) {
			t.Fatalf("id line %q for id %q", lines[0], id)
		}
	})
}

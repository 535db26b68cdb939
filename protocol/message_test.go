package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendMessage(t *testing.T) {
	cases := []struct {
		name    string
		id      string
		payload string
		want    string
	}{
		{"object", "m1", `{"order":42}`, `{"type":"message","id":"m1","data":{"order":42}}`},
		{"array kept byte for byte", "m1", `[1, 2 ,3]`, `{"type":"message","id":"m1","data":[1, 2 ,3]}`},
		{"string", "m1", `"hi"`, `{"type":"message","id":"m1","data":"hi"}`},
		{"number", "m1", `7`, `{"type":"message","id":"m1","data":7}`},
		{"no id", "", `true`, `{"type":"message","data":true}`},
		{"invalid id left out", `bad"id`, `1`, `{"type":"message","data":1}`},
		{"digit-only id is reserved", `12345`, `1`, `{"type":"message","data":1}`},
		{"empty payload is null", "m1", ``, `{"type":"message","id":"m1","data":null}`},
		{"plain text becomes a string", "m1", `hello world`, `{"type":"message","id":"m1","data":"hello world"}`},
		{"two values become a string", "m1", `{} {}`, `{"type":"message","id":"m1","data":"{} {}"}`},
		{"truncated json becomes a string", "m1", `{"a":`, `{"type":"message","id":"m1","data":"{\"a\":"}`},
		{"control characters escaped", "m1", "a\nb\x01", `{"type":"message","id":"m1","data":"a\nb\u0001"}`},
		{"invalid utf8 replaced", "m1", "a\xffb", `{"type":"message","id":"m1","data":"a\ufffdb"}`},
		{"json string with invalid utf8 becomes a string", "m1", "\"\xff\"", `{"type":"message","id":"m1","data":"\"\ufffd\""}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendMessage(nil, tc.id, []byte(tc.payload)))
			if got != tc.want {
				t.Fatalf("AppendMessage = %s\nwant           %s", got, tc.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("not valid JSON: %s", got)
			}
			if len(got) > MessageSizeBound(len(tc.payload)) {
				t.Fatalf("length %d over the bound %d", len(got), MessageSizeBound(len(tc.payload)))
			}
		})
	}
}

func TestAllocsAppendMessage(t *testing.T) {
	buf := make([]byte, 0, 4096)
	payload := []byte(`{"text":"your order shipped","order":1234}`)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendMessage(buf[:0], "msg-1", payload)
	})
	if allocs != 0 {
		t.Fatalf("AppendMessage allocates %.1f times per call", allocs)
	}
}

func TestValidMsgID(t *testing.T) {
	for _, ok := range []string{"a", "m-1", "Abc.def:ghi_j", strings.Repeat("a", MaxMsgIDBytes), "1a"} {
		if !ValidMsgID(ok) {
			t.Errorf("ValidMsgID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "123", "a b", `a"b`, "a\\b", "é", strings.Repeat("a", MaxMsgIDBytes+1)} {
		if ValidMsgID(bad) {
			t.Errorf("ValidMsgID(%q) = true", bad)
		}
	}
}

// FuzzAppendMessage checks that any payload and id give one valid JSON object
// whose data is the payload itself when it is JSON, or its text otherwise.
func FuzzAppendMessage(f *testing.F) {
	f.Add("m1", []byte(`{"a":1}`))
	f.Add("", []byte("plain"))
	f.Add("x", []byte("\xff\xfe"))
	f.Add("id", []byte(`"\u00e9"`))
	f.Add("id", []byte{})
	f.Fuzz(func(t *testing.T, id string, payload []byte) {
		out := AppendMessage(nil, id, payload)
		if len(out) > MessageSizeBound(len(payload)) {
			t.Fatalf("length %d over the bound %d", len(out), MessageSizeBound(len(payload)))
		}
		if !utf8.Valid(out) {
			t.Fatalf("not UTF-8: %q", out)
		}
		var m Message
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("not valid JSON: %q: %v", out, err)
		}
		if m.Type != TypeMessage {
			t.Fatalf("type %q", m.Type)
		}
		if want := map[bool]string{true: id, false: ""}[ValidMsgID(id)]; m.ID != want {
			t.Fatalf("id %q delivered as %q", id, m.ID)
		}
		switch {
		case len(payload) == 0:
			if string(m.Data) != "null" {
				t.Fatalf("empty payload gave %s", m.Data)
			}
		case PayloadIsJSON(payload):
			if string(m.Data) != string(bytes.Trim(payload, " \t\r\n")) {
				t.Fatalf("JSON payload changed: %q -> %q", payload, m.Data)
			}
		default:
			var s string
			if err := json.Unmarshal(m.Data, &s); err != nil {
				t.Fatalf("non-JSON payload is not a string: %s", m.Data)
			}
			if utf8.Valid(payload) && s != string(payload) {
				t.Fatalf("text changed: %q -> %q", payload, s)
			}
		}
	})
}

func FuzzAppendTopicMessage(f *testing.F) {
	f.Add("room.42", "m1", []byte(`{"a":1}`))
	f.Add("a:b-c_d.e", "", []byte("plain"))
	f.Add("x", "12", []byte{})
	f.Fuzz(func(t *testing.T, topic, id string, payload []byte) {
		if ValidateTopic(topic) != nil {
			return // the gateway writes valid topics only
		}
		out := AppendTopicMessage(nil, topic, id, payload)
		var m Message
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("not valid JSON: %q: %v", out, err)
		}
		if m.Type != TypeMessage || m.Topic != topic {
			t.Fatalf("type %q topic %q", m.Type, m.Topic)
		}
		if want := map[bool]string{true: id, false: ""}[ValidMsgID(id)]; m.ID != want {
			t.Fatalf("id %q delivered as %q", id, m.ID)
		}
		// The same data as a user delivery: only the topic member differs.
		var u Message
		if err := json.Unmarshal(AppendMessage(nil, id, payload), &u); err != nil || string(u.Data) != string(m.Data) {
			t.Fatalf("data %s, user delivery %s (%v)", m.Data, u.Data, err)
		}
		// With a stream sequence for the id (resumable delivery): the
		// same frame with the sequence for its id.
		seq := uint64(len(payload))*7919 + uint64(len(id)) + 1
		var q Message
		if err := json.Unmarshal(AppendTopicMessageSeq(nil, topic, seq, payload), &q); err != nil ||
			q.Type != TypeMessage || q.Topic != topic || q.ID != strconv.FormatUint(seq, 10) || !bytes.Equal(q.Data, m.Data) {
			t.Fatalf("seq %d: %+v (%v), want the data %s", seq, q, err, m.Data)
		}
	})
}

package protocol

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeUserToken(t *testing.T) {
	cases := []struct {
		name, id, want string
		err            error
	}{
		{name: "plain", id: "alice", want: "alice"},
		{name: "digits and dash", id: "user-42", want: "user-42"},
		{name: "dot cannot split the subject", id: "a.b", want: "a_2Eb"},
		{name: "star wildcard", id: "*", want: "_2A"},
		{name: "gt wildcard", id: ">", want: "_3E"},
		{name: "wildcard suffix", id: "alice.>", want: "alice_2E_3E"},
		{name: "underscore is escaped", id: "a_b", want: "a_5Fb"},
		{name: "escape lookalike", id: "a_2Eb", want: "a_5F2Eb"},
		{name: "space", id: "a b", want: "a_20b"},
		{name: "control characters", id: "a\r\nb\x00", want: "a_0D_0Ab_00"},
		{name: "non-ascii", id: "é", want: "_C3_A9"},
		{name: "email", id: "bob@example.com", want: "bob_40example_2Ecom"},
		{name: "empty", id: "", err: ErrEmptyUserID},
		{name: "longest accepted", id: strings.Repeat("x", MaxUserIDBytes), want: strings.Repeat("x", MaxUserIDBytes)},
		{name: "one byte too long", id: strings.Repeat("x", MaxUserIDBytes+1), err: ErrUserIDTooLong},
		{name: "thousands of bytes", id: strings.Repeat(".", 5000), err: ErrUserIDTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeUserToken(tc.id)
			if err != tc.err {
				t.Fatalf("EncodeUserToken(%q) error = %v, want %v", tc.id, err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("EncodeUserToken(%q) = %q, want %q", tc.id, got, tc.want)
			}
			if err != nil {
				return
			}
			back, err := DecodeUserToken(got)
			if err != nil || back != tc.id {
				t.Fatalf("DecodeUserToken(%q) = %q, %v; want %q", got, back, err, tc.id)
			}
		})
	}
}

func TestDecodeUserTokenRejectsNonCanonical(t *testing.T) {
	for _, tok := range []string{
		"", "a.b", "a*", ">", "a b", "_", "_4", "_zz", "_2e", // lower-case hex is not canonical
		"_61",                                   // 'a' escaped: not canonical
		"_2D",                                   // '-' escaped: not canonical
		strings.Repeat("_2E", MaxUserIDBytes+1), // decodes past the limit
	} {
		if id, err := DecodeUserToken(tok); err == nil {
			t.Errorf("DecodeUserToken(%q) = %q, want an error", tok, id)
		}
	}
}

func TestValidateUserID(t *testing.T) {
	cases := []struct {
		name, id string
		err      error
	}{
		{"plain", "alice", nil},
		{"unicode", "Zoë 🙂", nil},
		{"empty", "", ErrEmptyUserID},
		{"too long", strings.Repeat("a", MaxUserIDBytes+1), ErrUserIDTooLong},
		{"bad utf8", "a\xffb", ErrUserIDEncoding},
		{"newline", "a\nb", ErrUserIDControl},
		{"nul", "a\x00", ErrUserIDControl},
		{"del", "a\x7f", ErrUserIDControl},
		{"c1 control", "a\u0085", ErrUserIDControl},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateUserID(tc.id); err != tc.err {
				t.Fatalf("ValidateUserID(%q) = %v, want %v", tc.id, err, tc.err)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	s, err := NewSubjects("acme.ws")
	if err != nil {
		t.Fatal(err)
	}
	subj, err := s.UserID("bob.smith")
	if err != nil {
		t.Fatal(err)
	}
	if want := "acme.ws.user.bob_2Esmith"; subj != want {
		t.Fatalf("UserID = %q, want %q", subj, want)
	}
	if tok, ok := s.UserTokenOf(subj); !ok || tok != "bob_2Esmith" {
		t.Fatalf("UserTokenOf(%q) = %q, %v", subj, tok, ok)
	}
	for _, bad := range []string{"acme.ws.user.", "acme.ws.broadcast", "other.user.x"} {
		if _, ok := s.UserTokenOf(bad); ok {
			t.Errorf("UserTokenOf(%q) accepted a non-user subject", bad)
		}
	}
	if got := s.Broadcast(); got != "acme.ws.broadcast" {
		t.Errorf("Broadcast = %q", got)
	}
	if got := s.In("x"); got != "acme.ws.in.x" {
		t.Errorf("In = %q", got)
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, ok := range []string{"wsfleet", "a.b.c", "team_1-x"} {
		if err := ValidatePrefix(ok); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "a*", "a.>", "a b", strings.Repeat("a", MaxPrefixBytes+1), "é"} {
		if err := ValidatePrefix(bad); err == nil {
			t.Errorf("ValidatePrefix(%q) accepted", bad)
		}
	}
}

// FuzzUserToken checks, for any id, that a token is one subject token of
// [A-Za-z0-9_-] (never a wildcard, never split by a dot), bounded in length,
// and that decoding gives the id back (so no two ids share a token).
func FuzzUserToken(f *testing.F) {
	for _, seed := range []string{"alice", "a.b", "*", ">", "a_2Eb", "é", "a b\r\n", strings.Repeat("z", 300)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok, err := EncodeUserToken(id)
		if id == "" || len(id) > MaxUserIDBytes {
			if err == nil {
				t.Fatalf("EncodeUserToken(%q) accepted an id it must refuse", id)
			}
			return
		}
		if err != nil {
			t.Fatalf("EncodeUserToken(%q): %v", id, err)
		}
		if len(tok) > 3*MaxUserIDBytes {
			t.Fatalf("token of %d bytes", len(tok))
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !tokenSafe(c) && c != '_' {
				t.Fatalf("token %q has byte %q", tok, c)
			}
		}
		back, err := DecodeUserToken(tok)
		if err != nil || back != id {
			t.Fatalf("round trip of %q: %q, %v", id, back, err)
		}
		if ValidateUserID(id) == nil && !utf8.ValidString(id) {
			t.Fatalf("ValidateUserID accepted invalid UTF-8 %q", id)
		}
	})
}

// FuzzDecodeUserToken checks that any token DecodeUserToken accepts is
// canonical: encoding the decoded id gives the same token.
func FuzzDecodeUserToken(f *testing.F) {
	for _, seed := range []string{"alice", "a_2Eb", "_C3_A9", "_61", "_", "a.b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := DecodeUserToken(tok)
		if err != nil {
			return
		}
		again, err := EncodeUserToken(id)
		if err != nil || again != tok {
			t.Fatalf("DecodeUserToken(%q) = %q, which encodes to %q, %v", tok, id, again, err)
		}
	})
}

func TestPresenceNode(t *testing.T) {
	s, err := NewSubjects("wsfleet")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, node, want string
		err              bool
	}{
		{name: "plain", node: "gw-1", want: "wsfleet.presence.node.gw-1"},
		{name: "dots and wildcards are encoded", node: "a.*.>", want: "wsfleet.presence.node.a_2E_2A_2E_3E"},
		{name: "empty", node: "", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.PresenceNode(tc.node)
			if tc.err {
				if err == nil {
					t.Fatalf("PresenceNode(%q) = %q, want an error", tc.node, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("PresenceNode(%q) = %q, %v; want %q", tc.node, got, err, tc.want)
			}
		})
	}
}

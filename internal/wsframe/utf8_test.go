package wsframe

import (
	"testing"
	"unicode/utf8"
)

// Cases from the Autobahn test suite's category 6 and RFC 3629.
var utf8Cases = []struct {
	name string
	s    string
}{
	{"empty", ""},
	{"ascii", "Hello-µ@ßöäüàá-UTF-8!!"},
	{"greek kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"},
	{"4-byte", "\xf0\x9f\x98\x80 smile"},
	{"max code point", "\xf4\x8f\xbf\xbf"},
	{"above max", "\xf4\x90\x80\x80"},
	{"overlong slash 2", "\xc0\xaf"},
	{"overlong slash 3", "\xe0\x80\xaf"},
	{"overlong slash 4", "\xf0\x80\x80\xaf"},
	{"surrogate high", "\xed\xa0\x80"},
	{"surrogate low", "\xed\xbf\xbf"},
	{"lone continuation", "a\x80b"},
	{"cut at the end", "abc\xe2\x82"},
	{"0xfe", "\xfe"},
	{"0xff", "x\xff"},
	{"invalid after valid", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"},
}

func streamValid(chunks ...[]byte) bool {
	var u UTF8Stream
	for _, c := range chunks {
		if !u.Write(c) {
			return false
		}
	}
	return u.Complete()
}

func TestUTF8StreamEverySplit(t *testing.T) {
	for _, tc := range utf8Cases {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.s)
			want := utf8.Valid(b)
			for i := 0; i <= len(b); i++ {
				for j := i; j <= len(b); j++ {
					if got := streamValid(b[:i], b[i:j], b[j:]); got != want {
						t.Fatalf("split %d/%d: %v, want %v", i, j, got, want)
					}
				}
			}
		})
	}
}

// An impossible prefix fails before the rest of the message arrives.
func TestUTF8StreamFailsFast(t *testing.T) {
	for _, prefix := range []string{"ok\xed\xa0", "\xe0\x80", "\xf4\x90", "\xc0", "\xf8"} {
		var u UTF8Stream
		if u.Write([]byte(prefix)) {
			t.Errorf("%q accepted as a prefix", prefix)
		}
	}
	var u UTF8Stream
	if !u.Write([]byte("\xe2\x82")) || u.Complete() {
		t.Error("a valid but cut rune must be accepted as a prefix and fail as a whole")
	}
}

func FuzzUTF8Stream(f *testing.F) {
	for _, tc := range utf8Cases {
		f.Add([]byte(tc.s), uint8(1), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, s1, s2 uint8) {
		i, j := int(s1)%(len(b)+1), int(s2)%(len(b)+1)
		if i > j {
			i, j = j, i
		}
		if got, want := streamValid(b[:i], b[i:j], b[j:]), utf8.Valid(b); got != want {
			t.Fatalf("%q split at %d,%d: %v, want %v", b, i, j, got, want)
		}
	})
}

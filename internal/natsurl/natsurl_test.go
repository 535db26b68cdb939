package natsurl

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"password", "nats://bob:s3cret@h:4222", "nats://bob:xxxxx@h:4222"},
		{"token", "nats://tok3n@h:4222", "nats://xxxxx@h:4222"},
		{"list", "nats://a:1, nats://u:p@b:2", "nats://a:1,nats://u:xxxxx@b:2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Redact(tc.in); got != tc.want {
				t.Fatalf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"one", "nats://127.0.0.1:4222", ""},
		{"list with tls and ws", "nats://a:1, tls://b:2,ws://c:3,wss://d:4", ""},
		{"bare host:port", "127.0.0.1:4222", ""},
		{"empty", "", "is required"},
		{"blank list", " , ", "is required"},
		{"http", "http://127.0.0.1:8222", `"http://127.0.0.1:8222" is an HTTP URL: NATS clients speak the NATS protocol, e.g. nats://127.0.0.1:8222`},
		{"https with password redacted", "https://u:secret@h:443/x", `"https://u:xxxxx@h:443/x" is an HTTP URL`},
		{"other scheme", "redis://h:6379", "scheme must be nats, tls, ws or wss"},
		{"no host", "nats://", "has no host"},
		{"only credentials", "nats://u:p@", "has no host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.in)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tc.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check(%q) = %v, want %q", tc.in, err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("Check(%q) shows a password: %v", tc.in, err)
			}
		})
	}
}

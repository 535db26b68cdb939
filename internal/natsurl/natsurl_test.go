package natsurl

import "testing"

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

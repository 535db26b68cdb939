package gateway

import "testing"

func TestOriginAllowed(t *testing.T) {
	cases := []struct {
		name     string
		patterns []string
		origin   string
		want     bool
	}{
		{"no list allows all", nil, "https://evil.example", true},
		{"star", []string{"*"}, "https://anything.test", true},
		{"exact", []string{"https://app.example.com"}, "https://app.example.com", true},
		{"exact ignores case", []string{"https://App.Example.com"}, "HTTPS://app.example.COM", true},
		{"scheme differs", []string{"https://app.example.com"}, "http://app.example.com", false},
		{"port differs", []string{"https://app.example.com"}, "https://app.example.com:8443", false},
		{"port given", []string{"https://app.example.com:8443"}, "https://app.example.com:8443", true},
		{"other host", []string{"https://app.example.com"}, "https://app.example.com.evil.test", false},
		{"wildcard subdomain", []string{"https://*.example.com"}, "https://a.b.example.com", true},
		{"wildcard not the apex", []string{"https://*.example.com"}, "https://example.com", false},
		{"wildcard suffix trick", []string{"https://*.example.com"}, "https://evilexample.com", false},
		{"null origin", []string{"https://app.example.com"}, "null", false},
		{"second pattern", []string{"https://a.test", "https://b.test"}, "https://b.test", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ps []originPattern
			for _, p := range tc.patterns {
				op, err := parseOriginPattern(p)
				if err != nil {
					t.Fatalf("pattern %q: %v", p, err)
				}
				ps = append(ps, op)
			}
			if got := originAllowed(ps, []byte(tc.origin)); got != tc.want {
				t.Fatalf("originAllowed(%v, %q) = %v, want %v", tc.patterns, tc.origin, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"example.com", "https://", "https://a.com/path", "https://*", "https://a.*.com", "ftp://x.com?q"} {
		if _, err := parseOriginPattern(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

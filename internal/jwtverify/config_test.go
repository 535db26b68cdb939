package jwtverify

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

func TestSetDefaults(t *testing.T) {
	cases := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{JWKSRefresh: 5 * time.Minute, Leeway: 5 * time.Second}},
		{"set values kept", Config{JWKSRefresh: time.Minute, Leeway: time.Second, Issuer: "idp"},
			Config{JWKSRefresh: time.Minute, Leeway: time.Second, Issuer: "idp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.in
			c.SetDefaults()
			if !reflect.DeepEqual(c, tc.want) {
				t.Fatalf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		flag string // the flag the error names; "" for a valid setting
		want string // text the error holds
	}{
		{name: "secret"},
		{name: "no key source", mod: func(c *Config) { c.HS256Secret = "" }},
		{name: "short secret", mod: func(c *Config) { c.HS256Secret = "short" }, flag: "jwt-hs256-secret", want: "at least 32 bytes"},
		{name: "https URL", mod: func(c *Config) { c.JWKSURL = "https://idp.example.com/jwks.json" }},
		{name: "http URL", mod: func(c *Config) { c.JWKSURL = "http://idp.example.com/jwks.json" }, flag: "jwt-jwks-url", want: "--jwt-jwks-allow-http"},
		{name: "http URL allowed", mod: func(c *Config) { c.JWKSURL = "http://idp:8080/jwks.json"; c.JWKSAllowHTTP = true }},
		{name: "allow-http does not allow ftp", mod: func(c *Config) { c.JWKSURL = "ftp://idp/jwks.json"; c.JWKSAllowHTTP = true }, flag: "jwt-jwks-url", want: "https://"},
		{name: "URL without host", mod: func(c *Config) { c.JWKSURL = "https:///jwks.json" }, flag: "jwt-jwks-url", want: "https://"},
		{name: "relative URL", mod: func(c *Config) { c.JWKSURL = "/jwks.json" }, flag: "jwt-jwks-url", want: "https://"},
		{name: "refresh tiny", mod: func(c *Config) { c.JWKSRefresh = time.Nanosecond }, flag: "jwt-jwks-refresh", want: "at least 1ms"},
		{name: "algorithm none", mod: func(c *Config) { c.Algorithms = []string{"none"} }, flag: "jwt-algorithms", want: "EdDSA,HS256"},
		{name: "algorithms", mod: func(c *Config) { c.Algorithms = []string{"ES256", "HS512"} }},
		{name: "leeway negative", mod: func(c *Config) { c.Leeway = -time.Second }, flag: "jwt-leeway", want: "between 0 and 5m"},
		{name: "leeway huge", mod: func(c *Config) { c.Leeway = time.Hour }, flag: "jwt-leeway", want: "between 0 and 5m"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{HS256Secret: secret}
			if tc.mod != nil {
				tc.mod(&c)
			}
			c.SetDefaults()
			err := c.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Flag != tc.flag {
				t.Fatalf("Validate: %v, want an *OptionError for %s", err, tc.flag)
			}
			if !strings.HasPrefix(err.Error(), "--"+tc.flag+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one starting --%s: and holding %q", err, tc.flag, tc.want)
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want Config
	}{
		{name: "defaults", want: Config{JWKSRefresh: 5 * time.Minute, Leeway: 5 * time.Second}},
		{name: "every variable", env: map[string]string{
			"WSFLEET_JWT_HS256_SECRET":    secret,
			"WSFLEET_JWT_JWKS_FILE":       "/etc/jwks.json",
			"WSFLEET_JWT_JWKS_URL":        "http://idp/jwks",
			"WSFLEET_JWT_JWKS_ALLOW_HTTP": "true",
			"WSFLEET_JWT_JWKS_REFRESH":    "1m",
			"WSFLEET_JWT_ALGORITHMS":      "ES256,RS256",
			"WSFLEET_JWT_ISSUER":          "idp",
			"WSFLEET_JWT_AUDIENCE":        "aud",
			"WSFLEET_JWT_LEEWAY":          "2s",
			"WSFLEET_JWT_ALLOW_NO_EXP":    "true",
		}, want: Config{HS256Secret: secret, JWKSFile: "/etc/jwks.json", JWKSURL: "http://idp/jwks", JWKSAllowHTTP: true,
			JWKSRefresh: time.Minute, Algorithms: []string{"ES256", "RS256"}, Issuer: "idp", Audience: "aud",
			Leeway: 2 * time.Second, AllowNoExp: true}},
		{name: "flags win", env: map[string]string{"WSFLEET_JWT_ISSUER": "env", "WSFLEET_JWT_JWKS_ALLOW_HTTP": "true"},
			args: []string{"--jwt-issuer", "flag", "--jwt-jwks-allow-http=false", "--jwt-algorithms", "EdDSA"},
			want: Config{JWKSRefresh: 5 * time.Minute, Leeway: 5 * time.Second, Issuer: "flag", Algorithms: []string{"EdDSA"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			fs := flagenv.New("x", "WSFLEET_", "usage")
			c.RegisterFlags(fs, "tokens")
			err := fs.Parse(tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, tc.want) {
				t.Fatalf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}

func TestRegisterFlagsHelp(t *testing.T) {
	var c Config
	fs := flagenv.New("x", "WSFLEET_", "usage")
	c.RegisterFlags(fs, "bearer JWTs")
	var b bytes.Buffer
	fs.PrintUsage(&b)
	out := b.String()
	for _, want := range []string{
		"--jwt-hs256-secret", "WSFLEET_JWT_HS256_SECRET", "--jwt-jwks-file", "--jwt-jwks-url", "bearer JWTs",
		"--jwt-jwks-allow-http", "WSFLEET_JWT_JWKS_ALLOW_HTTP", "--jwt-jwks-refresh", "default 5m0s",
		"--jwt-algorithms", "--jwt-issuer", "--jwt-audience", "--jwt-leeway", "default 5s", "--jwt-allow-no-exp",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Error("help shows a secret")
	}
}

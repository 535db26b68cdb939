package jwtverify

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

const secret = "jwtverify-test-secret-0123456789abcdef"

func sign(t *testing.T, build func(*jwt.Builder) *jwt.Builder) string {
	t.Helper()
	tok, err := build(jwt.NewBuilder().Subject("svc").Expiration(time.Now().Add(time.Hour))).Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, []byte(secret)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestScopes(t *testing.T) {
	v, err := New(Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	cases := []struct {
		name  string
		build func(*jwt.Builder) *jwt.Builder
		want  []string
	}{
		{"none", func(b *jwt.Builder) *jwt.Builder { return b }, nil},
		{"scope string", func(b *jwt.Builder) *jwt.Builder { return b.Claim("scope", "read publish") }, []string{"read", "publish"}},
		{"scp array", func(b *jwt.Builder) *jwt.Builder { return b.Claim("scp", []string{"publish"}) }, []string{"publish"}},
		{"scp string", func(b *jwt.Builder) *jwt.Builder { return b.Claim("scp", "a b") }, []string{"a", "b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := v.Verify(sign(t, tc.build))
			if err != nil {
				t.Fatal(err)
			}
			if len(cl.Scopes) != len(tc.want) {
				t.Fatalf("scopes %v, want %v", cl.Scopes, tc.want)
			}
			for _, s := range tc.want {
				if !cl.HasScope(s) {
					t.Fatalf("scopes %v lack %q", cl.Scopes, s)
				}
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("a verifier without keys")
	}
	if _, err := New(Config{JWKSFile: "/nonexistent"}); err == nil {
		t.Fatal("a missing JWKS file was accepted")
	} else {
		var ce *OptionError
		if !errors.As(err, &ce) || ce.Flag != "jwt-jwks-file" {
			t.Fatalf("error %v does not name the JWKS file", err)
		}
	}
	v, _ := New(Config{HS256Secret: secret})
	defer v.Close()
	expired := sign(t, func(b *jwt.Builder) *jwt.Builder { return b.Expiration(time.Now().Add(-time.Hour)) })
	if _, err := v.Verify(expired); err != ErrExpired {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := v.Verify("x.y.z"); err != ErrMalformed {
		t.Fatalf("garbage: %v", err)
	}
}

// Each refusal maps to its *Error, whose Label metrics count by.
func TestRefusalLabels(t *testing.T) {
	k, stranger := newECKey(t, "k1"), newECKey(t, "k9")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwksOf(t, k), 0o600); err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, Config{HS256Secret: secret, JWKSFile: file, Algorithms: []string{"HS256", "ES256"},
		Issuer: "idp", Audience: "wsfleet", Leeway: time.Second})
	now := time.Now()
	claims := func() *jwt.Builder {
		return jwt.NewBuilder().Subject("svc").Issuer("idp").Audience([]string{"wsfleet"}).Expiration(now.Add(time.Hour))
	}
	hs := func(alg jwa.SignatureAlgorithm, key string, b *jwt.Builder) string {
		t.Helper()
		tok, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		s, err := jwt.Sign(tok, jwt.WithKey(alg, []byte(key)))
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}
	es := func(key ecKey) string {
		t.Helper()
		tok, err := claims().Build()
		if err != nil {
			t.Fatal(err)
		}
		s, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key.priv))
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	payload := b64([]byte(`{"sub":"svc","iss":"idp","aud":"wsfleet","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + `}`))
	cases := []struct {
		name  string
		token string
		want  *Error // nil: accepted
		label string
	}{
		{name: "valid HS256", token: hs(jwa.HS256, secret, claims())},
		{name: "valid ES256", token: es(k)},
		{name: "expired", token: hs(jwa.HS256, secret, claims().Expiration(now.Add(-time.Minute))), want: ErrExpired, label: "expired"},
		{name: "not yet valid", token: hs(jwa.HS256, secret, claims().NotBefore(now.Add(time.Minute))), want: ErrNotYetValid, label: "not_yet_valid"},
		{name: "issued in the future", token: hs(jwa.HS256, secret, claims().IssuedAt(now.Add(time.Minute))), want: ErrNotYetValid, label: "not_yet_valid"},
		{name: "bad issuer", token: hs(jwa.HS256, secret, claims().Issuer("other")), want: ErrBadIssuer, label: "bad_issuer"},
		{name: "bad audience", token: hs(jwa.HS256, secret, claims().Audience([]string{"other"})), want: ErrBadAudience, label: "bad_audience"},
		{name: "no exp", token: hs(jwa.HS256, secret, jwt.NewBuilder().Subject("svc").Issuer("idp").Audience([]string{"wsfleet"})), want: ErrNoExp, label: "no_exp"},
		{name: "bad signature", token: hs(jwa.HS256, "another-secret-0123456789abcdef-0123", claims()), want: ErrBadSignature, label: "bad_signature"},
		{name: "bad ES256 signature", token: func() string {
			// k1's kid on a token signed by another key.
			other := newECKey(t, "k1")
			return es(other)
		}(), want: ErrBadSignature, label: "bad_signature"},
		{name: "alg not allowed", token: hs(jwa.HS384, secret, claims()), want: ErrAlgNotAllowed, label: "alg_not_allowed"},
		{name: "none", token: b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload + ".", want: ErrAlgNotAllowed, label: "alg_not_allowed"},
		{name: "unknown kid", token: es(stranger), want: ErrNoKey, label: "no_key"},
		{name: "malformed", token: "x.y.z", want: ErrMalformed, label: "malformed"},
		{name: "not a JWT", token: "hello", want: ErrMalformed, label: "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e != tc.want || e.Label != tc.label {
				t.Fatalf("Verify: %v (%#v), want %s", err, err, tc.label)
			}
		})
	}
}

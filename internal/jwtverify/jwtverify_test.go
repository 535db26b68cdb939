package jwtverify

import (
	"errors"
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

// Package jwtmint signs JWTs for development and load tests: the gateway's
// `token` command, the local fleet of `make run` and the load tester. It
// signs with jwx; verification is the gateway's.
package jwtmint

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Claims are the claims of a minted token.
type Claims struct {
	Subject  string
	Issuer   string         // optional
	Audience []string       // optional
	TTL      time.Duration  // exp = now + TTL; zero: no exp
	Now      time.Time      // iat; zero: time.Now()
	Extra    map[string]any // private claims, e.g. "topics": []string{"room.*"}
}

// Mint signs the claims with key (an HMAC secret as []byte, a private key,
// or a jwk.Key) using alg, e.g. "HS256", "RS256", "ES256", "EdDSA".
func Mint(alg string, key any, c Claims) (string, error) {
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	b := jwt.NewBuilder().Subject(c.Subject).IssuedAt(now)
	if c.TTL > 0 {
		b = b.Expiration(now.Add(c.TTL))
	}
	if c.Issuer != "" {
		b = b.Issuer(c.Issuer)
	}
	if len(c.Audience) > 0 {
		b = b.Audience(c.Audience)
	}
	for k, v := range c.Extra {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(alg), key))
	if err != nil {
		return "", fmt.Errorf("signing with %s: %w", alg, err)
	}
	return string(signed), nil
}

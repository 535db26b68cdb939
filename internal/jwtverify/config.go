package jwtverify

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

// Config is the JWT verification the gateway and the router share: the key
// sources, the algorithm allowlist and the claims checked. Each field is a
// --jwt-* flag ([Config.RegisterFlags]) and documents its default;
// [Config.SetDefaults] applies the defaults in one place and
// [Config.Validate] checks the settings, naming the flag.
type Config struct {
	// HS256Secret is an HMAC secret (at least 32 bytes) that verifies
	// HS256, HS384 and HS512 tokens. Default "" (none).
	// --jwt-hs256-secret.
	HS256Secret string
	// JWKSFile is a JSON Web Key Set file of public keys, re-read when it
	// changes. Default "" (none). --jwt-jwks-file.
	JWKSFile string
	// JWKSURL is a JWKS endpoint, https:// unless JWKSAllowHTTP. Its keys
	// are fetched at start (a failure is a startup error), then about
	// every JWKSRefresh and on an unknown key id (at most one token every
	// 10 seconds waits for that). Default "" (none). --jwt-jwks-url.
	JWKSURL string
	// JWKSAllowHTTP accepts an http:// JWKSURL: keys fetched without TLS
	// can be replaced by anyone on the way, so only for development.
	// Default false. --jwt-jwks-allow-http.
	JWKSAllowHTTP bool
	// JWKSRefresh is how often the JWKS file is checked and the URL
	// fetched (the URL at most once a second). Default 5m.
	// --jwt-jwks-refresh.
	JWKSRefresh time.Duration
	// Algorithms is the algorithm allowlist, among AllAlgorithms. Default:
	// every algorithm of the configured keys (HMACAlgorithms with
	// HS256Secret, AsymmetricAlgorithms with a JWKS). "none" is never
	// accepted. --jwt-algorithms.
	Algorithms []string
	// Issuer, when set, must equal the token's iss. Default "".
	// --jwt-issuer.
	Issuer string
	// Audience, when set, must be among the token's aud. Default "".
	// --jwt-audience.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat, at most 5m.
	// Default 5s (a zero Leeway is unset and becomes 5s). --jwt-leeway.
	Leeway time.Duration
	// AllowNoExp accepts tokens without an exp claim. Default false: they
	// are refused with ErrNoExp. --jwt-allow-no-exp.
	AllowNoExp bool
}

// MinHS256SecretBytes is the shortest HS256Secret accepted (RFC 7518 §3.2:
// a key as long as the hash).
const MinHS256SecretBytes = 32

// MaxLeeway is the largest Leeway accepted (5m).
const MaxLeeway = 5 * time.Minute

// HMACAlgorithms and AsymmetricAlgorithms are the algorithms a Verifier
// supports; AllAlgorithms is both.
var (
	HMACAlgorithms       = []string{"HS256", "HS384", "HS512"}
	AsymmetricAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	AllAlgorithms        = slices.Concat(AsymmetricAlgorithms, HMACAlgorithms)
)

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = 5 * time.Minute
	}
	if c.Leeway == 0 {
		c.Leeway = 5 * time.Second
	}
}

// Configured reports whether a key source is set: HS256Secret, JWKSFile or
// JWKSURL.
func (c *Config) Configured() bool {
	return c.HS256Secret != "" || c.JWKSFile != "" || c.JWKSURL != ""
}

// OptionError is a setting that cannot be used; Flag is the flag's name
// without its dashes ("jwt-leeway"). Its text starts with the flag:
// "--jwt-leeway: must be between 0 and 5m, got 1h0m0s". Callers wrap it
// with their own sentinel: fmt.Errorf("%w %w", ErrBadOption, err).
type OptionError struct {
	Flag string
	Err  error
}

func (e *OptionError) Error() string { return "--" + e.Flag + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func optionError(flag, format string, args ...any) *OptionError {
	return &OptionError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Validate checks the settings after SetDefaults; an error is an
// *OptionError naming the flag. That a key source is set is the caller's
// to require (see Configured): the router can do without JWTs.
func (c *Config) Validate() error {
	if c.HS256Secret != "" && len(c.HS256Secret) < MinHS256SecretBytes {
		return optionError("jwt-hs256-secret", "must be at least %d bytes (RFC 7518 §3.2), got %d", MinHS256SecretBytes, len(c.HS256Secret))
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL, c.JWKSAllowHTTP); err != nil {
			return &OptionError{Flag: "jwt-jwks-url", Err: err}
		}
	}
	if c.JWKSRefresh < time.Millisecond {
		return optionError("jwt-jwks-refresh", "must be at least 1ms, got %s", c.JWKSRefresh)
	}
	for _, a := range c.Algorithms {
		if !slices.Contains(AllAlgorithms, a) {
			return optionError("jwt-algorithms", "%q is not one of %s", a, strings.Join(AllAlgorithms, ","))
		}
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		return optionError("jwt-leeway", "must be between 0 and 5m, got %s", c.Leeway)
	}
	return nil
}

// checkJWKSURL requires an absolute https URL, or http with allowHTTP.
func checkJWKSURL(raw string, allowHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && u.Host != "":
		if allowHTTP {
			return nil
		}
		return fmt.Errorf("%q is plain http: keys fetched without TLS can be replaced by anyone on the way; use an https URL, or set --jwt-jwks-allow-http for development", raw)
	}
	return fmt.Errorf("%q must be an https:// URL", raw)
}

// RegisterFlags defines the --jwt-* flags on fs, filling c; the defaults
// shown are SetDefaults'. tokens names what the keys verify in the help
// text ("tokens" for the gateway, "bearer JWTs" for the router).
func (c *Config) RegisterFlags(fs *flagenv.Set, tokens string) {
	var def Config
	def.SetDefaults()
	fs.Secret(&c.HS256Secret, "jwt-hs256-secret", fmt.Sprintf("HMAC secret for HS256/384/512 %s (at least %d bytes)", tokens, MinHS256SecretBytes))
	fs.String(&c.JWKSFile, "jwt-jwks-file", "", fmt.Sprintf("JSON Web Key Set file of public keys for %s, re-read when it changes", tokens))
	fs.String(&c.JWKSURL, "jwt-jwks-url", "", fmt.Sprintf("https JWKS URL for %s: fetched at start, refreshed every --jwt-jwks-refresh and on an unknown kid", tokens))
	fs.Bool(&c.JWKSAllowHTTP, "jwt-jwks-allow-http", false, "accept an http:// --jwt-jwks-url (keys fetched without TLS; development only)")
	fs.Duration(&c.JWKSRefresh, "jwt-jwks-refresh", def.JWKSRefresh, "JWKS refresh interval")
	fs.List(&c.Algorithms, "jwt-algorithms", nil, "allowed algorithms, comma-separated (default: those of the configured keys; never none)")
	fs.ShowDefault("jwt-algorithms", "those of the configured keys")
	fs.String(&c.Issuer, "jwt-issuer", "", "required iss claim, when set")
	fs.String(&c.Audience, "jwt-audience", "", "required aud claim, when set")
	fs.Duration(&c.Leeway, "jwt-leeway", def.Leeway, "clock skew allowed on exp, nbf and iat")
	fs.Bool(&c.AllowNoExp, "jwt-allow-no-exp", false, fmt.Sprintf("accept %s without an exp claim", tokens))
}

// errNoKeySource is New's error for a Config without a key source.
var errNoKeySource = errors.New("no JWT key source: set --jwt-hs256-secret, --jwt-jwks-file or --jwt-jwks-url")

// Package jwtverify checks JSON Web Tokens (RFC 7519) for the gateway and
// the router, with jwx: an algorithm allowlist that never holds "none";
// keys whose type must fit the algorithm; keys from an HMAC secret, a JWKS
// file (re-read when it changes) and a JWKS URL (refreshed in the
// background, so token checks never wait on the network but for a short,
// rate-limited refresh on an unknown kid); issuer, audience, and exp, nbf
// and iat with a leeway.
//
// It knows nothing of users, subjects or connections: what a verified
// token means is the caller's.
package jwtverify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.uber.org/zap"
)

// Config configures a Verifier. At least one key source is required.
type Config struct {
	// HMACSecret verifies HS256, HS384 and HS512 tokens.
	HMACSecret string
	// JWKSFile is a JSON Web Key Set file, re-read when it changes.
	JWKSFile string
	// JWKSURL is a JWKS endpoint, fetched at New and then every JWKSRefresh.
	JWKSURL string
	// JWKSRefresh is how often the file is checked and the URL fetched.
	JWKSRefresh time.Duration
	// Algorithms is the allowlist; empty means those of the configured
	// keys. "none" is never allowed.
	Algorithms []string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// AllowNoExp accepts tokens without exp.
	AllowNoExp bool
	// RefreshWait bounds how long a token with an unknown kid waits for a
	// JWKS refresh (at most one such token every 10 seconds waits).
	RefreshWait time.Duration
	// Logger receives refresh failures and reloads.
	Logger *zap.Logger
}

// ConfigError is a key source New could not use; Field is "jwks-file" or
// "jwks-url", so callers can name their setting.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Error is a refused token: Text is a short reason fit for a close frame or
// an HTTP body, Label a stable name for metrics.
type Error struct {
	Label string
	Text  string
}

func (e *Error) Error() string { return e.Text }

// The reasons a token is refused.
var (
	ErrMalformed     = &Error{"malformed", "malformed token"}
	ErrAlgNotAllowed = &Error{"alg_not_allowed", "token algorithm not allowed"}
	ErrNoKey         = &Error{"no_key", "no key for the token (unknown kid or algorithm)"}
	ErrBadSignature  = &Error{"bad_signature", "invalid token signature"}
	ErrExpired       = &Error{"expired", "token expired"}
	ErrNotYetValid   = &Error{"not_yet_valid", "token not valid yet"}
	ErrBadIssuer     = &Error{"bad_issuer", "token issuer not accepted"}
	ErrBadAudience   = &Error{"bad_audience", "token audience not accepted"}
	ErrBadClaims     = &Error{"bad_claims", "token claims invalid"}
	ErrNoExp         = &Error{"no_exp", "token has no exp claim"}
)

// Claims is what callers take from a verified token.
type Claims struct {
	Subject string
	Exp     int64    // unix seconds; 0 when the token has none
	Scopes  []string // from "scope" (space-separated) or "scp" (array or string)
}

// HasScope reports whether the token grants scope s.
func (c Claims) HasScope(s string) bool {
	for _, v := range c.Scopes {
		if v == s {
			return true
		}
	}
	return false
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	log         *zap.Logger
	allowed     map[jwa.SignatureAlgorithm]bool
	secret      []byte
	file        string
	fileKeys    atomic.Pointer[jwk.Set]
	fileMod     time.Time
	remote      *jwksRemote // nil without a JWKS URL
	refresh     time.Duration
	noExpOK     bool
	refreshWait time.Duration
	opts        []jwt.ParseOption

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// HMACAlgorithms and AsymmetricAlgorithms are the algorithms a Verifier
// supports.
var (
	HMACAlgorithms       = []string{"HS256", "HS384", "HS512"}
	AsymmetricAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// New loads the keys (fetching the JWKS URL once) and starts the
// background refreshes. Close stops them.
func New(cfg Config) (*Verifier, error) {
	if cfg.HMACSecret == "" && cfg.JWKSFile == "" && cfg.JWKSURL == "" {
		return nil, errors.New("no key source")
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	refresh := cfg.JWKSRefresh
	if refresh <= 0 {
		refresh = 5 * time.Minute
	}
	wait := cfg.RefreshWait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	v := &Verifier{log: log, allowed: map[jwa.SignatureAlgorithm]bool{}, file: cfg.JWKSFile, refresh: refresh,
		noExpOK: cfg.AllowNoExp, refreshWait: wait}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		if cfg.HMACSecret != "" {
			algs = append(algs, HMACAlgorithms...)
		}
		if cfg.JWKSFile != "" || cfg.JWKSURL != "" {
			algs = append(algs, AsymmetricAlgorithms...)
		}
	}
	for _, a := range algs {
		v.allowed[jwa.SignatureAlgorithm(a)] = true
	}
	if cfg.HMACSecret != "" {
		v.secret = []byte(cfg.HMACSecret)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.stop = cancel
	if v.file != "" {
		if err := v.loadFile(); err != nil {
			cancel()
			return nil, &ConfigError{"jwks-file", err}
		}
	}
	if cfg.JWKSURL != "" {
		v.remote = newJWKSRemote(cfg.JWKSURL, v.refresh, log)
		if err := v.remote.fetch(ctx); err != nil {
			cancel()
			return nil, &ConfigError{"jwks-url", fmt.Errorf("fetching %s: %w", cfg.JWKSURL, err)}
		}
		v.wg.Add(1)
		go func() { defer v.wg.Done(); v.remote.run(ctx) }()
	}
	v.opts = []jwt.ParseOption{
		jwt.WithValidate(true),
		jwt.WithAcceptableSkew(cfg.Leeway),
	}
	if cfg.Issuer != "" {
		v.opts = append(v.opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		v.opts = append(v.opts, jwt.WithAudience(cfg.Audience))
	}
	if v.file != "" {
		v.wg.Add(1)
		go v.watchFile(ctx)
	}
	return v, nil
}

// Close stops the background refreshes.
func (v *Verifier) Close() {
	v.stop()
	v.wg.Wait()
}

func (v *Verifier) loadFile() error {
	st, err := os.Stat(v.file)
	if err != nil {
		return err
	}
	set, err := jwk.ReadFile(v.file)
	if err != nil {
		return err
	}
	if set.Len() == 0 {
		return errors.New("the key set is empty")
	}
	v.fileKeys.Store(&set)
	v.fileMod = st.ModTime()
	return nil
}

// watchFile re-reads the JWKS file when it changes, keeping the old keys if
// the new file does not parse.
func (v *Verifier) watchFile(ctx context.Context) {
	defer v.wg.Done()
	t := time.NewTicker(min(v.refresh, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(v.file)
		if err != nil || st.ModTime().Equal(v.fileMod) {
			continue
		}
		if err := v.loadFile(); err != nil {
			v.log.Error("JWKS file reload failed; keeping the previous keys", zap.String("file", v.file), zap.Error(err))
			continue
		}
		v.log.Info("JWKS file reloaded", zap.String("file", v.file))
	}
}

// keyFits reports whether k may verify alg: same key type, and the key's
// own alg and use, when it states them, agree.
func keyFits(alg jwa.SignatureAlgorithm, k jwk.Key) bool {
	if a := k.Algorithm(); a != nil && a.String() != "" && a.String() != alg.String() {
		return false
	}
	if u := k.KeyUsage(); u != "" && u != "sig" {
		return false
	}
	switch s := alg.String(); {
	case strings.HasPrefix(s, "RS"), strings.HasPrefix(s, "PS"):
		return k.KeyType() == jwa.RSA
	case strings.HasPrefix(s, "ES"):
		return k.KeyType() == jwa.EC
	case s == "EdDSA":
		return k.KeyType() == jwa.OKP
	case strings.HasPrefix(s, "HS"):
		return k.KeyType() == jwa.OctetSeq
	}
	return false
}

// sets returns the key sets in use (file, URL). It never waits.
func (v *Verifier) sets() []jwk.Set {
	var out []jwk.Set
	if p := v.fileKeys.Load(); p != nil {
		out = append(out, *p)
	}
	if v.remote != nil {
		if p := v.remote.keys.Load(); p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// findKeys sends the keys that may verify a signature to sink and returns
// the failure to report when there are none.
func (v *Verifier) findKeys(sink jws.KeySink, sig *jws.Signature) *Error {
	h := sig.ProtectedHeaders()
	alg := h.Algorithm()
	if !v.allowed[alg] || alg == jwa.NoSignature {
		return ErrAlgNotAllowed
	}
	if strings.HasPrefix(alg.String(), "HS") && v.secret != nil {
		sink.Key(alg, v.secret)
		return nil
	}
	kid := h.KeyID()
	send := func(sets []jwk.Set) bool {
		found := false
		for _, set := range sets {
			for i := 0; i < set.Len(); i++ {
				k, _ := set.Key(i)
				if (kid == "" || k.KeyID() == kid) && keyFits(alg, k) {
					sink.Key(alg, k)
					found = true
				}
			}
		}
		return found
	}
	if send(v.sets()) {
		return nil
	}
	// An unknown kid may be a key rotated in since the last fetch. At most
	// one token every 10 seconds waits (briefly) for a refresh; the others
	// fail at once, so a slow or hostile IdP cannot hold the workers.
	if v.remote != nil && kid != "" && v.remote.refreshNow(v.refreshWait) && send(v.sets()) {
		return nil
	}
	return ErrNoKey
}

// Verify checks a token and returns its claims, or an *Error.
func (v *Verifier) Verify(token string) (Claims, error) {
	var keyErr *Error
	provider := jws.KeyProviderFunc(func(_ context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		if keyErr = v.findKeys(sink, sig); keyErr != nil {
			return keyErr
		}
		return nil
	})
	opts := append([]jwt.ParseOption{jwt.WithKeyProvider(provider)}, v.opts...)
	tok, err := jwt.ParseString(token, opts...)
	if err != nil {
		switch {
		case keyErr != nil:
			return Claims{}, keyErr
		case errors.Is(err, jwt.ErrTokenExpired()):
			return Claims{}, ErrExpired
		case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
			return Claims{}, ErrNotYetValid
		case errors.Is(err, jwt.ErrInvalidIssuer()):
			return Claims{}, ErrBadIssuer
		case errors.Is(err, jwt.ErrInvalidAudience()):
			return Claims{}, ErrBadAudience
		case jwt.IsValidationError(err):
			return Claims{}, ErrBadClaims
		case strings.Contains(err.Error(), "verify"):
			return Claims{}, ErrBadSignature
		}
		return Claims{}, ErrMalformed
	}
	var exp int64
	if t := tok.Expiration(); !t.IsZero() {
		exp = t.Unix()
	} else if !v.noExpOK {
		return Claims{}, ErrNoExp
	}
	// Cloned: a JSON decoder (goccy/go-json under the jwx_goccy tag) may return
	// strings that alias its read buffer, which a kept sub would pin.
	return Claims{Subject: strings.Clone(tok.Subject()), Exp: exp, Scopes: scopes(tok)}, nil
}

// scopes reads the "scope" claim (RFC 8693: space-separated) or "scp"
// (an array, or a space-separated string).
func scopes(tok jwt.Token) []string {
	var out []string
	for _, name := range []string{"scope", "scp"} {
		v, ok := tok.Get(name)
		if !ok {
			continue
		}
		switch s := v.(type) {
		case string:
			out = append(out, strings.Fields(s)...)
		case []any:
			for _, e := range s {
				if str, ok := e.(string); ok {
					out = append(out, str)
				}
			}
		case []string:
			out = append(out, s...)
		}
	}
	return out
}

// jwksRemote is the key set behind a JWKS URL. A goroutine of its own
// fetches it every refresh interval (and when asked); token checks only
// read the last fetched set, never waiting on the network.
type jwksRemote struct {
	url     string
	log     *zap.Logger
	client  *http.Client
	every   time.Duration
	keys    atomic.Pointer[jwk.Set]
	kick    chan struct{}
	mu      sync.Mutex
	fetched chan struct{} // closed when the fetch under way (or the next) ends
	last    atomic.Int64  // unix ns of the last forced refresh
}

func newJWKSRemote(url string, every time.Duration, log *zap.Logger) *jwksRemote {
	return &jwksRemote{
		url: url, log: log, every: every,
		client:  &http.Client{Timeout: 10 * time.Second},
		kick:    make(chan struct{}, 1),
		fetched: make(chan struct{}),
	}
}

// fetch gets and parses the key set; on failure the previous set stays.
func (r *jwksRemote) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	set, err := jwk.Fetch(ctx, r.url, jwk.WithHTTPClient(r.client))
	if err == nil && set.Len() == 0 {
		err = errors.New("the key set is empty")
	}
	if err == nil {
		r.keys.Store(&set)
	}
	r.mu.Lock()
	close(r.fetched)
	r.fetched = make(chan struct{})
	r.mu.Unlock()
	return err
}

func (r *jwksRemote) run(ctx context.Context) {
	t := time.NewTimer(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
			t.Stop()
		}
		if err := r.fetch(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("JWKS refresh failed; keeping the previous keys", zap.String("url", r.url), zap.Error(err))
		}
		t.Reset(r.every)
	}
}

// refreshNow asks for a fetch and waits for it up to wait, unless another
// forced refresh happened in the last 10 seconds. It reports whether a
// fetch ended while it waited.
func (r *jwksRemote) refreshNow(wait time.Duration) bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(10*time.Second) || !r.last.CompareAndSwap(last, now) {
		return false
	}
	r.mu.Lock()
	done := r.fetched
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

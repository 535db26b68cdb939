// Package jwtverify checks JSON Web Tokens (RFC 7519) for the gateway and
// the router, with jwx: an algorithm allowlist that never holds "none";
// keys whose type must fit the algorithm; keys from an HMAC secret, a JWKS
// file (re-read when it changes) and an https JWKS URL (kept by a
// jwk.Cache that refreshes it in the background, so token checks never
// wait on the network but for a short, rate-limited refresh on an unknown
// kid); issuer, audience, and exp, nbf and iat with a leeway.
//
// [Config] is the one set of --jwt-* settings both binaries use: its
// defaults, its validation and its flags ([Config.RegisterFlags]) live
// here, so the gateway and the router cannot drift apart.
//
// JWKS requests time out after JWKSTimeout, read at most MaxJWKSBytes and
// follow redirects only on the URL's own host, never down to plain http.
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
	// Extra holds the claims named by WithClaims that the token has, as
	// JSON decoded them (strings, []any, ...); nil when it has none.
	Extra map[string]any
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
	claims      []string // WithClaims

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// Option is a setting of New that is not a flag.
type Option func(*newOptions)

type newOptions struct {
	claims      []string
	log         *zap.Logger
	refreshWait time.Duration
	transport   http.RoundTripper
}

// WithLogger sets the logger of refresh failures and reloads. Default: none.
func WithLogger(l *zap.Logger) Option { return func(o *newOptions) { o.log = l } }

// WithClaims names private claims Verify returns in Claims.Extra.
// Default: none.
func WithClaims(names ...string) Option {
	return func(o *newOptions) { o.claims = append(o.claims, names...) }
}

// WithRefreshWait bounds how long a token with an unknown kid waits for a
// JWKS refresh (at most one such token every 10 seconds waits). Default 2s.
func WithRefreshWait(d time.Duration) Option { return func(o *newOptions) { o.refreshWait = d } }

// WithHTTPTransport sets the transport JWKS requests go through, under the
// timeout, body bound and redirect rules, which still apply. Default: a
// clone of http.DefaultTransport. For tests (the transport of an
// httptest TLS server's client trusts its certificate); the binaries
// leave it.
func WithHTTPTransport(rt http.RoundTripper) Option { return func(o *newOptions) { o.transport = rt } }

// New loads the keys of cfg (fetching the JWKS URL once) and starts the
// background refreshes; Close stops them. cfg is used as given: unset
// fields are not defaulted, so call SetDefaults and Validate first. An
// error about one setting is an *OptionError naming its flag.
func New(cfg Config, opts ...Option) (*Verifier, error) {
	if !cfg.Configured() {
		return nil, errNoKeySource
	}
	o := newOptions{refreshWait: 2 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = zap.NewNop()
	}
	if o.refreshWait <= 0 {
		o.refreshWait = 2 * time.Second
	}
	refresh := cfg.JWKSRefresh
	if refresh <= 0 {
		refresh = 5 * time.Minute
	}
	v := &Verifier{log: o.log, allowed: map[jwa.SignatureAlgorithm]bool{}, file: cfg.JWKSFile, refresh: refresh,
		noExpOK: cfg.AllowNoExp, refreshWait: o.refreshWait, claims: o.claims}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		if cfg.HS256Secret != "" {
			algs = append(algs, HMACAlgorithms...)
		}
		if cfg.JWKSFile != "" || cfg.JWKSURL != "" {
			algs = append(algs, AsymmetricAlgorithms...)
		}
	}
	for _, a := range algs {
		v.allowed[jwa.SignatureAlgorithm(a)] = true
	}
	if cfg.HS256Secret != "" {
		v.secret = []byte(cfg.HS256Secret)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.stop = cancel
	if v.file != "" {
		if err := v.loadFile(); err != nil {
			cancel()
			return nil, &OptionError{Flag: "jwt-jwks-file", Err: err}
		}
	}
	if cfg.JWKSURL != "" {
		if err := checkJWKSURL(cfg.JWKSURL, cfg.JWKSAllowHTTP); err != nil {
			cancel()
			return nil, &OptionError{Flag: "jwt-jwks-url", Err: err}
		}
		r, err := newJWKSRemote(ctx, cfg.JWKSURL, refresh, newJWKSClient(o.transport), o.log)
		if err != nil {
			cancel()
			return nil, &OptionError{Flag: "jwt-jwks-url", Err: fmt.Errorf("fetching %s: %w", cfg.JWKSURL, err)}
		}
		v.remote = r
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

// Close stops the background refreshes and cancels a forced JWKS fetch
// under way; a periodic fetch of the jwk.Cache already under way ends on
// its own, within JWKSTimeout.
func (v *Verifier) Close() {
	v.stop()
	if v.remote != nil {
		v.remote.close()
	}
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
	provider := jws.KeyProviderFunc(func(_ context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		if err := v.findKeys(sink, sig); err != nil {
			return err
		}
		return nil
	})
	opts := append([]jwt.ParseOption{jwt.WithKeyProvider(provider)}, v.opts...)
	tok, err := jwt.ParseString(token, opts...)
	if err != nil {
		return Claims{}, refusal(err)
	}
	var exp int64
	if t := tok.Expiration(); !t.IsZero() {
		exp = t.Unix()
	} else if !v.noExpOK {
		return Claims{}, ErrNoExp
	}
	// Cloned: a JSON decoder (goccy/go-json under the jwx_goccy tag) may return
	// strings that alias its read buffer, which a kept sub would pin.
	cl := Claims{Subject: strings.Clone(tok.Subject()), Exp: exp, Scopes: scopes(tok)}
	for _, name := range v.claims {
		if x, ok := tok.Get(name); ok {
			if cl.Extra == nil {
				cl.Extra = make(map[string]any, len(v.claims))
			}
			cl.Extra[name] = cloneClaim(x)
		}
	}
	return cl, nil
}

// cloneClaim copies the strings of a decoded claim (see Verify).
func cloneClaim(x any) any {
	switch v := x.(type) {
	case string:
		return strings.Clone(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneClaim(e)
		}
		return out
	case []string:
		out := make([]string, len(v))
		for i, e := range v {
			out[i] = strings.Clone(e)
		}
		return out
	}
	return x
}

// refusal maps a jwt.Parse error to its *Error, with jwx's own error
// tests: the key provider's *Error (jwx wraps it), then the claim
// validations, then a signature that did not verify; anything else is a
// token that did not parse.
func refusal(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, jwt.ErrTokenExpired()):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return ErrBadIssuer
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return ErrBadAudience
	case jwt.IsValidationError(err):
		return ErrBadClaims
	case jws.IsVerificationError(err):
		return ErrBadSignature
	}
	return ErrMalformed
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

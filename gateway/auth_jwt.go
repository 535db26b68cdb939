package gateway

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/wsfleet/wsfleet/protocol"
)

// authError is a failed token check: a short reason for the close frame and
// a label for the auth failure metric.
type authError struct {
	label string
	text  string
}

func (e *authError) Error() string { return e.text }

var (
	errTokenMalformed   = &authError{"malformed", "malformed token"}
	errAlgNotAllowed    = &authError{"alg_not_allowed", "token algorithm not allowed"}
	errNoKey            = &authError{"no_key", "no key for the token (unknown kid or algorithm)"}
	errBadSignature     = &authError{"bad_signature", "invalid token signature"}
	errTokenExpired     = &authError{"expired", "token expired"}
	errTokenNotYetValid = &authError{"not_yet_valid", "token not valid yet"}
	errBadIssuer        = &authError{"bad_issuer", "token issuer not accepted"}
	errBadAudience      = &authError{"bad_audience", "token audience not accepted"}
	errBadClaims        = &authError{"bad_claims", "token claims invalid"}
)

func badSub(err error) *authError {
	return &authError{"bad_sub", "invalid sub claim: " + err.Error()}
}

// claims is what the gateway takes from a verified token.
type claims struct {
	sub string
	exp int64 // unix seconds; 0 when the token has none
}

// verifier checks JWTs (RFC 7519) with jwx: an algorithm allowlist that
// never holds "none", keys whose type must fit the algorithm, issuer and
// audience when configured, exp/nbf/iat with a leeway.
type verifier struct {
	log      *zap.Logger
	allowed  map[jwa.SignatureAlgorithm]bool
	secret   []byte
	file     string
	fileKeys atomic.Pointer[jwk.Set]
	fileMod  time.Time
	url      string
	cache    *jwk.Cache
	refresh  time.Duration
	opts     []jwt.ParseOption

	lastForced atomic.Int64 // unix ns of the last refresh forced by an unknown kid
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

var hmacAlgs = []string{"HS256", "HS384", "HS512"}

func newVerifier(o *Options, log *zap.Logger) (*verifier, error) {
	v := &verifier{log: log, allowed: map[jwa.SignatureAlgorithm]bool{}, file: o.JWTJWKSFile, url: o.JWTJWKSURL, refresh: o.JWTJWKSRefresh}
	algs := o.JWTAlgorithms
	if len(algs) == 0 {
		if o.JWTHS256Secret != "" {
			algs = append(algs, hmacAlgs...)
		}
		if o.JWTJWKSFile != "" || o.JWTJWKSURL != "" {
			algs = append(algs, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
		}
	}
	for _, a := range algs {
		v.allowed[jwa.SignatureAlgorithm(a)] = true
	}
	if o.JWTHS256Secret != "" {
		v.secret = []byte(o.JWTHS256Secret)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.stop = cancel
	if v.file != "" {
		if err := v.loadFile(); err != nil {
			cancel()
			return nil, fmt.Errorf("%w --jwt-jwks-file: %v", ErrBadOption, err)
		}
	}
	if v.url != "" {
		v.cache = jwk.NewCache(ctx, jwk.WithRefreshWindow(min(v.refresh/2, 15*time.Minute)))
		if err := v.cache.Register(v.url, jwk.WithMinRefreshInterval(min(v.refresh, 15*time.Minute)), jwk.WithRefreshInterval(v.refresh)); err != nil {
			cancel()
			return nil, fmt.Errorf("%w --jwt-jwks-url: %v", ErrBadOption, err)
		}
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := v.cache.Refresh(fctx, v.url)
		fcancel()
		if err != nil {
			cancel()
			return nil, fmt.Errorf("%w --jwt-jwks-url: fetching %s: %v", ErrBadOption, v.url, err)
		}
	}
	v.opts = []jwt.ParseOption{
		jwt.WithValidate(true),
		jwt.WithAcceptableSkew(o.JWTLeeway),
	}
	if o.JWTIssuer != "" {
		v.opts = append(v.opts, jwt.WithIssuer(o.JWTIssuer))
	}
	if o.JWTAudience != "" {
		v.opts = append(v.opts, jwt.WithAudience(o.JWTAudience))
	}
	if v.file != "" {
		v.wg.Add(1)
		go v.watchFile(ctx)
	}
	return v, nil
}

func (v *verifier) close() {
	v.stop()
	v.wg.Wait()
}

func (v *verifier) loadFile() error {
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
func (v *verifier) watchFile(ctx context.Context) {
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

// sets returns the key sets in use (file, URL).
func (v *verifier) sets(ctx context.Context, forceRefresh bool) []jwk.Set {
	var out []jwk.Set
	if p := v.fileKeys.Load(); p != nil {
		out = append(out, *p)
	}
	if v.cache != nil {
		var set jwk.Set
		var err error
		if forceRefresh {
			set, err = v.cache.Refresh(ctx, v.url)
		} else {
			set, err = v.cache.Get(ctx, v.url)
		}
		if err == nil {
			out = append(out, set)
		} else {
			v.log.Warn("JWKS fetch failed", zap.String("url", v.url), zap.Error(err))
		}
	}
	return out
}

// findKeys sends the keys that may verify a signature to sink and returns
// the failure to report when there are none.
func (v *verifier) findKeys(ctx context.Context, sink jws.KeySink, sig *jws.Signature) *authError {
	h := sig.ProtectedHeaders()
	alg := h.Algorithm()
	if !v.allowed[alg] || alg == jwa.NoSignature {
		return errAlgNotAllowed
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
	if send(v.sets(ctx, false)) {
		return nil
	}
	// An unknown kid may be a key rotated in since the last fetch: refresh
	// the URL at most once every 10 seconds.
	if v.cache != nil && kid != "" {
		now := time.Now().UnixNano()
		last := v.lastForced.Load()
		if now-last > int64(10*time.Second) && v.lastForced.CompareAndSwap(last, now) {
			if send(v.sets(ctx, true)) {
				return nil
			}
		}
	}
	return errNoKey
}

// verify checks a token and returns its claims, or an *authError.
func (v *verifier) verify(token string) (claims, error) {
	var keyErr *authError
	provider := jws.KeyProviderFunc(func(ctx context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		if keyErr = v.findKeys(ctx, sink, sig); keyErr != nil {
			return keyErr
		}
		return nil
	})
	opts := append([]jwt.ParseOption{jwt.WithKeyProvider(provider)}, v.opts...)
	tok, err := jwt.ParseString(token, opts...)
	if err != nil {
		switch {
		case keyErr != nil:
			return claims{}, keyErr
		case errors.Is(err, jwt.ErrTokenExpired()):
			return claims{}, errTokenExpired
		case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
			return claims{}, errTokenNotYetValid
		case errors.Is(err, jwt.ErrInvalidIssuer()):
			return claims{}, errBadIssuer
		case errors.Is(err, jwt.ErrInvalidAudience()):
			return claims{}, errBadAudience
		case jwt.IsValidationError(err):
			return claims{}, errBadClaims
		case strings.Contains(err.Error(), "verify"):
			return claims{}, errBadSignature
		}
		return claims{}, errTokenMalformed
	}
	sub := tok.Subject()
	if err := protocol.ValidateUserID(sub); err != nil {
		return claims{}, badSub(err)
	}
	var exp int64
	if t := tok.Expiration(); !t.IsZero() {
		exp = t.Unix()
	}
	return claims{sub: sub, exp: exp}, nil
}

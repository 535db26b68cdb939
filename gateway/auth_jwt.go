package gateway

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
	errNoExp            = &authError{"no_exp", "token has no exp claim"}
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
	remote   *jwksRemote // nil without --jwt-jwks-url
	refresh  time.Duration
	noExpOK  bool
	// refreshWait bounds how long a token with an unknown kid waits for a
	// JWKS refresh: well inside the auth timeout.
	refreshWait time.Duration
	opts        []jwt.ParseOption

	stop context.CancelFunc
	wg   sync.WaitGroup
}

var hmacAlgs = []string{"HS256", "HS384", "HS512"}

func newVerifier(o *Options, log *zap.Logger) (*verifier, error) {
	v := &verifier{log: log, allowed: map[jwa.SignatureAlgorithm]bool{}, file: o.JWTJWKSFile, refresh: o.JWTJWKSRefresh, noExpOK: o.JWTAllowNoExp,
		refreshWait: min(2*time.Second, o.AuthTimeout/2)}
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
	if o.JWTJWKSURL != "" {
		v.remote = newJWKSRemote(o.JWTJWKSURL, v.refresh, log)
		if err := v.remote.fetch(ctx); err != nil {
			cancel()
			return nil, fmt.Errorf("%w --jwt-jwks-url: fetching %s: %v", ErrBadOption, o.JWTJWKSURL, err)
		}
		v.wg.Add(1)
		go func() { defer v.wg.Done(); v.remote.run(ctx) }()
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

// sets returns the key sets in use (file, URL). It never waits.
func (v *verifier) sets() []jwk.Set {
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
func (v *verifier) findKeys(sink jws.KeySink, sig *jws.Signature) *authError {
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
	if send(v.sets()) {
		return nil
	}
	// An unknown kid may be a key rotated in since the last fetch. At most
	// one token every 10 seconds waits (briefly) for a refresh; the others
	// fail at once, so a slow or hostile IdP cannot hold the workers.
	if v.remote != nil && kid != "" && v.remote.refreshNow(v.refreshWait) && send(v.sets()) {
		return nil
	}
	return errNoKey
}

// verify checks a token and returns its claims, or an *authError.
func (v *verifier) verify(token string) (claims, error) {
	var keyErr *authError
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
	} else if !v.noExpOK {
		return claims{}, errNoExp
	}
	return claims{sub: sub, exp: exp}, nil
}

// jwksRemote is the key set behind --jwt-jwks-url. A goroutine of its own
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

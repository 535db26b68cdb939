package router

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/time/rate"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
)

// apiKey is a configured API key: its SHA-256 and the credential id it
// stands for (rate limits and idempotency keys are scoped by it).
type apiKey struct {
	sum [sha256.Size]byte
	id  string // "key:" and the first 16 hex digits of the SHA-256
}

func newAPIKey(k string) apiKey {
	sum := sha256.Sum256([]byte(k))
	return apiKey{sum: sum, id: "key:" + hex.EncodeToString(sum[:8])}
}

// newJWTVerifier builds the JWT verifier from the options, or returns nil
// when no JWT key source is set.
func newJWTVerifier(o *Options) (*jwtverify.Verifier, error) {
	if !o.JWT.Configured() {
		return nil, nil
	}
	v, err := jwtverify.New(o.JWT, jwtverify.WithLogger(o.Logger.Named("jwt")))
	if err != nil {
		var oe *jwtverify.OptionError
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("%w %w", ErrBadOption, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrBadOption, err)
	}
	return v, nil
}

// authenticate checks the request's bearer credential: one of the API keys
// (compared as SHA-256 digests in constant time, so neither the match nor
// the key lengths show in timing), else a JWT granting JWTScope. It
// returns the credential id: the API key's id, or "jwt:" and the token's
// sub.
func (s *Server) authenticate(r *http.Request) (string, *apiError) {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	switch {
	case h == "":
		return "", errUnauthorized("no credentials: send Authorization: Bearer <api key or JWT>")
	case ok && !strings.EqualFold(scheme, "Bearer"):
		return "", errUnauthorized(fmt.Sprintf("the Authorization scheme is %q: send Authorization: Bearer <api key or JWT>", truncate(scheme, 20)))
	case !ok && strings.EqualFold(h, "Bearer"), tok == "" && ok:
		return "", errUnauthorized("the Authorization header has the Bearer scheme but no credential: send Authorization: Bearer <api key or JWT>")
	case !ok && len(h) <= 16 && strings.IndexFunc(h, func(r rune) bool { return !unicode.IsLetter(r) }) < 0:
		return "", errUnauthorized(fmt.Sprintf("the Authorization scheme is %q, with no credential: send Authorization: Bearer <api key or JWT>", h))
	case !ok:
		return "", errUnauthorized("the Authorization header has no scheme: send Authorization: Bearer <api key or JWT>, with \"Bearer \" before the credential")
	}
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i := range s.keys {
		if subtle.ConstantTimeCompare(sum[:], s.keys[i].sum[:]) == 1 {
			match = i
		}
	}
	if match >= 0 {
		return s.keys[match].id, nil
	}
	if s.jwt == nil || strings.Count(tok, ".") != 2 {
		return "", errUnauthorized("unknown API key: send Authorization: Bearer <api key>")
	}
	cl, err := s.jwt.Verify(tok)
	if err != nil {
		s.m.authFailures.WithLabelValues(jwtLabel(err)).Inc()
		return "", errUnauthorized("JWT refused: " + err.Error())
	}
	if cl.Subject == "" || len(cl.Subject) > 256 {
		s.m.authFailures.WithLabelValues("bad_sub").Inc()
		return "", errUnauthorized("JWT refused: the sub claim must be 1-256 bytes")
	}
	if !cl.HasScope(s.opts.JWTScope) {
		s.m.authFailures.WithLabelValues("no_scope").Inc()
		return "", &apiError{status: http.StatusForbidden, code: CodeForbidden,
			msg: fmt.Sprintf("the token does not grant the %q scope (scope or scp claim)", s.opts.JWTScope)}
	}
	return "jwt:" + cl.Subject, nil
}

func jwtLabel(err error) string {
	var je *jwtverify.Error
	if errors.As(err, &je) {
		return je.Label
	}
	return "other"
}

func errUnauthorized(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, code: CodeUnauthorized, msg: msg}
}

// limiters is the per-credential rate limit: a token bucket each.
type limiters struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

// maxLimiters is how many buckets are kept before full (idle) ones are
// forgotten: a forgotten bucket is the same as a new one.
const maxLimiters = 10000

func newLimiters(perSec float64, burst int) *limiters {
	if perSec <= 0 {
		return nil
	}
	return &limiters{limit: rate.Limit(perSec), burst: burst, m: map[string]*rate.Limiter{}}
}

// allow takes a token from cred's bucket, or returns how long until one is
// there.
func (l *limiters) allow(cred string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[cred]
	if lim == nil {
		if len(l.m) >= maxLimiters {
			for k, v := range l.m {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, k)
				}
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[cred] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	r := lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return false, d
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

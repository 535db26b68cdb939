package gateway

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/protocol"
)

// claims is what the gateway takes from a verified token.
type claims struct {
	sub string
	exp int64 // unix seconds; 0 when the token has none
}

// verifier checks a client's token with internal/jwtverify and the user id
// it names with protocol.ValidateUserID.
type verifier struct{ v *jwtverify.Verifier }

func newVerifier(o *Options, log *zap.Logger) (*verifier, error) {
	v, err := jwtverify.New(jwtverify.Config{
		HMACSecret:  o.JWTHS256Secret,
		JWKSFile:    o.JWTJWKSFile,
		JWKSURL:     o.JWTJWKSURL,
		JWKSRefresh: o.JWTJWKSRefresh,
		Algorithms:  o.JWTAlgorithms,
		Issuer:      o.JWTIssuer,
		Audience:    o.JWTAudience,
		Leeway:      o.JWTLeeway,
		AllowNoExp:  o.JWTAllowNoExp,
		RefreshWait: min(2*time.Second, o.AuthTimeout/2),
		Logger:      log,
	})
	if err != nil {
		var ce *jwtverify.ConfigError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("%w --jwt-%s: %v", ErrBadOption, ce.Field, ce.Err)
		}
		return nil, fmt.Errorf("%w: %w", ErrBadOption, err)
	}
	return &verifier{v: v}, nil
}

func (v *verifier) close() { v.v.Close() }

func badSub(err error) *jwtverify.Error {
	return &jwtverify.Error{Label: "bad_sub", Text: "invalid sub claim: " + err.Error()}
}

// verify checks a token and returns its claims, or a *jwtverify.Error.
func (v *verifier) verify(token string) (claims, error) {
	cl, err := v.v.Verify(token)
	if err != nil {
		return claims{}, err
	}
	if err := protocol.ValidateUserID(cl.Subject); err != nil {
		return claims{}, badSub(err)
	}
	return claims{sub: cl.Subject, exp: cl.Exp}, nil
}

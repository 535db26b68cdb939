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
	v, err := jwtverify.New(o.JWT,
		jwtverify.WithRefreshWait(min(2*time.Second, o.AuthTimeout/2)),
		jwtverify.WithLogger(log))
	if err != nil {
		var oe *jwtverify.OptionError
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("%w %w", ErrBadOption, err)
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

package gateway

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/protocol"
)

// claims is what the gateway takes from a verified token.
type claims struct {
	sub string
	exp int64        // unix seconds; 0 when the token has none
	tc  *topicClaims // the topics and publish claims; nil: neither

	topic string // a subscription token's "topic" claim
}

// topicClaim is the claim of a subscription token naming its topic.
const topicClaim = "topic"

// verifier checks a client's token with internal/jwtverify and the user id
// it names with protocol.ValidateUserID.
type verifier struct {
	v            *jwtverify.Verifier
	topicsClaim  string
	publishClaim string
	// interned topics claims, shared read-only by the connections whose
	// tokens carry the same one: most tokens of an application carry one
	// of a few claims, and a connection then holds no copy of its own.
	mu       sync.Mutex
	interned map[string]*topicClaims
}

// topicClaims are a token's topics claim (Options.TopicsClaim) and
// publish claim (Options.PublishClaim), as patterns; shared read-only.
type topicClaims struct {
	topics, pub []string
}

// maxInterned bounds the distinct topics claims kept shared.
const maxInterned = 4096

// intern returns the shared copy of a token's topic claims.
func (v *verifier) intern(tc *topicClaims) *topicClaims {
	key := strings.Join(tc.topics, " ") + "\x00" + strings.Join(tc.pub, " ")
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.interned[key]; ok {
		return s
	}
	if len(v.interned) < maxInterned {
		if v.interned == nil {
			v.interned = map[string]*topicClaims{}
		}
		v.interned[key] = tc
	}
	return tc
}

func newVerifier(o *Options, log *zap.Logger) (*verifier, error) {
	v, err := jwtverify.New(o.JWT,
		jwtverify.WithRefreshWait(min(2*time.Second, o.AuthTimeout/2)),
		jwtverify.WithLogger(log),
		jwtverify.WithClaims(o.TopicsClaim, o.PublishClaim, topicClaim))
	if err != nil {
		var oe *jwtverify.OptionError
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("%w %w", ErrBadOption, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrBadOption, err)
	}
	return &verifier{v: v, topicsClaim: o.TopicsClaim, publishClaim: o.PublishClaim}, nil
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
	out := claims{sub: cl.Subject, exp: cl.Exp}
	var tc topicClaims
	if x, ok := cl.Extra[v.topicsClaim]; ok {
		if tc.topics, err = topicPatterns(x); err != nil {
			return claims{}, &jwtverify.Error{Label: "bad_topics_claim", Text: "invalid " + v.topicsClaim + " claim: " + err.Error()}
		}
	}
	if x, ok := cl.Extra[v.publishClaim]; ok {
		if tc.pub, err = topicPatterns(x); err != nil {
			return claims{}, &jwtverify.Error{Label: "bad_publish_claim", Text: "invalid " + v.publishClaim + " claim: " + err.Error()}
		}
	}
	if tc.topics != nil || tc.pub != nil {
		out.tc = v.intern(&tc)
	}
	if x, ok := cl.Extra[topicClaim]; ok {
		s, _ := x.(string)
		if err := protocol.ValidateTopic(s); err != nil {
			return claims{}, &jwtverify.Error{Label: "bad_topic_claim", Text: "invalid topic claim: " + err.Error()}
		}
		out.topic = s
	}
	return out, nil
}

// maxTopicPatterns bounds the patterns of a topics claim.
const maxTopicPatterns = 256

// topicPatterns reads a topics claim: an array of topic patterns, or one
// string of patterns separated by spaces (as OAuth's scope). Every pattern
// must be valid (protocol.ValidateTopicPattern).
func topicPatterns(x any) ([]string, error) {
	var ps []string
	switch v := x.(type) {
	case string:
		ps = strings.Fields(v)
	case []any:
		ps = make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %d is not a string", i)
			}
			ps = append(ps, s)
		}
	case []string:
		ps = v
	default:
		return nil, errors.New("not an array of strings")
	}
	if len(ps) > maxTopicPatterns {
		return nil, fmt.Errorf("%d patterns, more than %d", len(ps), maxTopicPatterns)
	}
	for _, p := range ps {
		if err := protocol.ValidateTopicPattern(p); err != nil {
			return nil, fmt.Errorf("%q: %w", p, err)
		}
	}
	if len(ps) == 0 {
		return nil, nil
	}
	return ps, nil
}

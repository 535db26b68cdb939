package loadtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/wsfleet/wsfleet/internal/jwtmint"
)

// AuthConfig says how tokens are minted.
type AuthConfig struct {
	HS256Secret   string        `json:"hs256_secret,omitempty"`
	PrivateKeyPEM string        `json:"private_key_pem,omitempty"` // contents of --jwt-private-key
	Alg           string        `json:"alg,omitempty"`             // default: HS256, or from the key type
	Kid           string        `json:"kid,omitempty"`
	Issuer        string        `json:"issuer,omitempty"`
	Audience      string        `json:"audience,omitempty"`
	TTL           time.Duration `json:"ttl"`
	Refresh       bool          `json:"refresh,omitempty"` // send a fresh auth frame before exp
	// The claims the topic scenarios list a user's topics in: the
	// gateways' --jwt-topics-claim and --jwt-publish-claim.
	TopicsClaim  string `json:"topics_claim,omitempty"`
	PublishClaim string `json:"publish_claim,omitempty"`
}

// signingKey returns the algorithm and key to mint with.
func (a AuthConfig) signingKey() (string, any, error) {
	if a.PrivateKeyPEM == "" {
		if a.HS256Secret == "" {
			return "", nil, errors.New("no signing key: set --jwt-hs256-secret or --jwt-private-key")
		}
		alg := a.Alg
		if alg == "" {
			alg = "HS256"
		}
		switch alg {
		case "HS256", "HS384", "HS512":
		default:
			return "", nil, fmt.Errorf("--jwt-alg %s needs --jwt-private-key; an HMAC secret signs HS256/384/512", alg)
		}
		return alg, []byte(a.HS256Secret), nil
	}
	priv, err := parsePrivateKey([]byte(a.PrivateKeyPEM))
	if err != nil {
		return "", nil, err
	}
	alg := a.Alg
	if alg == "" {
		switch k := priv.(type) {
		case *rsa.PrivateKey:
			alg = "RS256"
		case *ecdsa.PrivateKey:
			switch k.Curve {
			case elliptic.P384():
				alg = "ES384"
			case elliptic.P521():
				alg = "ES512"
			default:
				alg = "ES256"
			}
		case ed25519.PrivateKey:
			alg = "EdDSA"
		}
	}
	key, err := jwk.FromRaw(priv)
	if err != nil {
		return "", nil, fmt.Errorf("--jwt-private-key: %v", err)
	}
	if a.Kid != "" {
		if err := key.Set(jwk.KeyIDKey, a.Kid); err != nil {
			return "", nil, err
		}
	}
	return alg, key, nil
}

// parsePrivateKey reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC 1 (EC).
func parsePrivateKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("--jwt-private-key: no PEM private key found")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("--jwt-private-key: %v", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("--jwt-private-key: unsupported key type %T", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		}
	}
}

// readKeyFile reads --jwt-private-key.
func readKeyFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--jwt-private-key: %v", err)
	}
	if _, err := parsePrivateKey(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// tokenSource mints and caches one token per user. A cached token is used
// while more than half its lifetime is left.
type tokenSource struct {
	alg   string
	key   any
	cfg   AuthConfig
	mu    sync.Mutex
	toks  []string
	exp   []int64 // unix ns; 0: no expiry
	mints int64
	// extra, when set, gives user i's private claims (the topic
	// scenarios' topics and publish claims); nil: none.
	extra func(i int) map[string]any
}

func newTokenSource(cfg AuthConfig, users int) (*tokenSource, error) {
	alg, key, err := cfg.signingKey()
	if err != nil {
		return nil, err
	}
	ts := &tokenSource{alg: alg, key: key, cfg: cfg, toks: make([]string, users), exp: make([]int64, users)}
	// One token first, so a bad key fails at once.
	if _, err := ts.mint(-1, "check"); err != nil {
		return nil, err
	}
	return ts, nil
}

// mint signs user i's token (-1: a user of no topic).
func (ts *tokenSource) mint(i int, sub string) (string, error) {
	c := jwtmint.Claims{Subject: sub, Issuer: ts.cfg.Issuer, TTL: ts.cfg.TTL}
	if ts.extra != nil && i >= 0 {
		c.Extra = ts.extra(i)
	}
	if ts.cfg.Audience != "" {
		c.Audience = []string{ts.cfg.Audience}
	}
	return jwtmint.Mint(ts.alg, ts.key, c)
}

// premint mints every user's token in parallel (asymmetric signing is slow
// enough to stall an event loop for seconds at 19,000 users).
func (ts *tokenSource) premint(names []string) error {
	n := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, n)
	now := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(names); i += n {
				tok, err := ts.mint(i, names[i])
				if err != nil {
					errs[w] = err
					return
				}
				ts.mu.Lock()
				ts.toks[i] = tok
				if ts.cfg.TTL > 0 {
					ts.exp[i] = expOf(now, ts.cfg.TTL)
				}
				ts.mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	ts.mints += int64(len(names))
	return errors.Join(errs...)
}

// expOf is the exp a token minted at now carries (whole seconds, as in
// the JWT), in unix ns.
func expOf(now time.Time, ttl time.Duration) int64 {
	return now.Add(ttl).Truncate(time.Second).UnixNano()
}

// get returns user i's token and its exp (unix ns; 0: none), minting a
// new one when fewer than half its lifetime is left (or force).
func (ts *tokenSource) get(i int, name string, force bool) (string, int64, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := time.Now()
	if !force && ts.toks[i] != "" && (ts.exp[i] == 0 || time.Duration(ts.exp[i]-now.UnixNano()) > ts.cfg.TTL/2) {
		return ts.toks[i], ts.exp[i], nil
	}
	tok, err := ts.mint(i, name)
	if err != nil {
		return "", 0, err
	}
	ts.toks[i] = tok
	if ts.cfg.TTL > 0 {
		ts.exp[i] = expOf(now, ts.cfg.TTL)
	}
	ts.mints++
	return tok, ts.exp[i], nil
}

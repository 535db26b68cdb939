package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// authOutcome is how a connection attempt ends.
type authOutcome struct {
	httpStatus int                // non-zero: the upgrade is refused with this status
	close      protocol.CloseCode // non-zero: closed with this code after the upgrade
	reason     string             // part of the close reason or error body
}

// attempt connects with token placed by mode ("frame", "bearer", "query")
// and checks the outcome (zero outcome: a welcome).
func attempt(t *testing.T, srv *gateway.Server, mode, tok string, want authOutcome) {
	t.Helper()
	url := wsURL(srv)
	h := http.Header{}
	switch mode {
	case "bearer":
		h.Set("Authorization", "Bearer "+tok)
	case "query":
		url += "?token=" + tok
	}
	ws, resp, err := wstest.DefaultDialer.Dial(url, h)
	if want.httpStatus != 0 {
		if err == nil {
			ws.Close()
			t.Fatalf("upgrade succeeded, want HTTP %d", want.httpStatus)
		}
		if resp == nil || resp.StatusCode != want.httpStatus {
			t.Fatalf("upgrade error %v (response %v), want HTTP %d", err, resp, want.httpStatus)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
			t.Fatalf("error body %q (%s) is not JSON", body, resp.Header.Get("Content-Type"))
		}
		if want.reason != "" && !strings.Contains(string(body), want.reason) {
			t.Fatalf("error body %q lacks %q", body, want.reason)
		}
		return
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.Close()
	if mode == "frame" {
		send(t, ws, map[string]any{"type": "auth", "token": tok})
	}
	if want.close != 0 {
		expectClose(t, ws, want.close, want.reason)
		return
	}
	w := readType(t, ws, protocol.TypeWelcome)
	if w["user"] == "" {
		t.Fatalf("welcome %v", w)
	}
}

func TestAuthModes(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.AllowQueryToken = true })
	noQuery := startGateway(t, nil)
	allowNoExp := startGateway(t, func(o *gateway.Options) { o.JWT.AllowNoExp = true })
	good := token(t, "alice")
	expired := mintToken(t, jwtmint.Claims{Subject: "alice", TTL: time.Second, Now: time.Now().Add(-time.Hour)})
	notYet := func() string {
		tok, err := jwt.NewBuilder().Subject("alice").NotBefore(time.Now().Add(time.Hour)).Expiration(time.Now().Add(2 * time.Hour)).Build()
		if err != nil {
			t.Fatal(err)
		}
		b, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, []byte(testSecret)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}()
	wrongSecret, _ := jwtmint.Mint("HS256", []byte("another-secret-0123456789abcdef-xyz"), jwtmint.Claims{Subject: "alice", TTL: time.Hour})
	noSub := mintToken(t, jwtmint.Claims{TTL: time.Hour})
	noExp := mintToken(t, jwtmint.Claims{Subject: "alice"})
	badSub := mintToken(t, jwtmint.Claims{Subject: "line\nbreak", TTL: time.Hour})
	longSub := mintToken(t, jwtmint.Claims{Subject: strings.Repeat("x", 5000), TTL: time.Hour})
	unsigned := func() string {
		tok, _ := jwt.NewBuilder().Subject("alice").Expiration(time.Now().Add(time.Hour)).Build()
		b, err := jwt.Sign(tok, jwt.WithInsecureNoSignature())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}()

	cases := []struct {
		name string
		srv  *gateway.Server
		mode string
		tok  string
		want authOutcome
	}{
		{"frame ok", srv, "frame", good, authOutcome{}},
		{"bearer ok", srv, "bearer", good, authOutcome{}},
		{"query ok when allowed", srv, "query", good, authOutcome{}},
		{"query refused by default", noQuery, "query", good, authOutcome{httpStatus: 400, reason: "query_token_disabled"}},
		{"frame garbage", srv, "frame", "not-a-jwt", authOutcome{close: protocol.CloseUnauthorized, reason: "malformed token"}},
		{"bearer garbage", srv, "bearer", "not-a-jwt", authOutcome{close: protocol.CloseUnauthorized, reason: "malformed token"}},
		{"query garbage", srv, "query", "not-a-jwt", authOutcome{close: protocol.CloseUnauthorized, reason: "malformed token"}},
		{"expired", srv, "frame", expired, authOutcome{close: protocol.CloseUnauthorized, reason: "token expired"}},
		{"expired bearer", srv, "bearer", expired, authOutcome{close: protocol.CloseUnauthorized, reason: "token expired"}},
		{"not yet valid", srv, "frame", notYet, authOutcome{close: protocol.CloseUnauthorized, reason: "not valid yet"}},
		{"wrong secret", srv, "frame", wrongSecret, authOutcome{close: protocol.CloseUnauthorized, reason: "signature"}},
		{"alg none", srv, "frame", unsigned, authOutcome{close: protocol.CloseUnauthorized, reason: "algorithm not allowed"}},
		{"no sub", srv, "frame", noSub, authOutcome{close: protocol.CloseUnauthorized, reason: "sub"}},
		{"control character in sub", srv, "frame", badSub, authOutcome{close: protocol.CloseUnauthorized, reason: "sub"}},
		{"5000-byte sub", srv, "frame", longSub, authOutcome{close: protocol.CloseUnauthorized, reason: "sub"}},
		{"no exp", srv, "frame", noExp, authOutcome{close: protocol.CloseUnauthorized, reason: "no exp"}},
		{"no exp allowed", allowNoExp, "frame", noExp, authOutcome{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { attempt(t, tc.srv, tc.mode, tc.tok, tc.want) })
	}
}

func TestAuthBadAuthorizationHeader(t *testing.T) {
	srv := startGateway(t, nil)
	for _, v := range []string{"Basic dXNlcjpwYXNz", "Bearer", "token abc"} {
		_, resp, err := wstest.DefaultDialer.Dial(wsURL(srv), http.Header{"Authorization": {v}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: %v %v, want HTTP 401", v, err, resp)
		}
	}
}

func TestAuthFirstFrameRules(t *testing.T) {
	srv := startGateway(t, nil)
	cases := []struct {
		name  string
		frame string
		code  protocol.CloseCode
	}{
		{"publish before auth", `{"type":"publish","data":1}`, protocol.CloseUnauthorized},
		{"not json", `hello`, protocol.CloseBadRequest},
		{"auth without token", `{"type":"auth"}`, protocol.CloseBadRequest},
		{"unknown type", `{"type":"subscribe"}`, protocol.CloseBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws := dial(t, wsURL(srv), nil)
			if err := ws.WriteMessage(wstest.TextMessage, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			expectClose(t, ws, tc.code, "")
		})
	}
	t.Run("ping before auth is answered", func(t *testing.T) {
		ws := dial(t, wsURL(srv), nil)
		send(t, ws, map[string]string{"type": "ping"})
		readType(t, ws, protocol.TypePong)
		send(t, ws, map[string]any{"type": "auth", "token": token(t, "p")})
		readType(t, ws, protocol.TypeWelcome)
	})
}

func TestAuthTimeout(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.AuthTimeout = 200 * time.Millisecond })
	ws := dial(t, wsURL(srv), nil)
	start := time.Now()
	expectClose(t, ws, protocol.CloseAuthTimeout, "timed out")
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("closed after %s", el)
	}
}

func TestAuthIssuerAudience(t *testing.T) {
	srv := startGateway(t, func(o *gateway.Options) { o.JWT.Issuer = "https://idp"; o.JWT.Audience = "wsfleet" })
	ok := mintToken(t, jwtmint.Claims{Subject: "a", TTL: time.Hour, Issuer: "https://idp", Audience: []string{"other", "wsfleet"}})
	badIss := mintToken(t, jwtmint.Claims{Subject: "a", TTL: time.Hour, Issuer: "https://evil", Audience: []string{"wsfleet"}})
	badAud := mintToken(t, jwtmint.Claims{Subject: "a", TTL: time.Hour, Issuer: "https://idp", Audience: []string{"other"}})
	noAud := mintToken(t, jwtmint.Claims{Subject: "a", TTL: time.Hour, Issuer: "https://idp"})
	attempt(t, srv, "frame", ok, authOutcome{})
	attempt(t, srv, "frame", badIss, authOutcome{close: protocol.CloseUnauthorized, reason: "issuer"})
	attempt(t, srv, "frame", badAud, authOutcome{close: protocol.CloseUnauthorized, reason: "audience"})
	attempt(t, srv, "frame", noAud, authOutcome{close: protocol.CloseUnauthorized})
}

// keyPair is a private key with a kid and its public JWK.
type keyPair struct {
	priv jwk.Key
	pub  jwk.Key
}

func newKey(t *testing.T, kind, kid string) keyPair {
	t.Helper()
	var raw any
	var err error
	switch kind {
	case "rsa":
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ec":
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	priv.Set(jwk.KeyIDKey, kid)
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv: priv, pub: pub}
}

func jwksJSON(t *testing.T, keys ...keyPair) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		set.AddKey(k.pub)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signWith(t *testing.T, alg string, k keyPair, sub string) string {
	t.Helper()
	tok, err := jwtmint.Mint(alg, k.priv, jwtmint.Claims{Subject: sub, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthJWKSFileRotation(t *testing.T) {
	k1, k2 := newKey(t, "rsa", "k1"), newKey(t, "ec", "k2")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwksJSON(t, k1), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startGateway(t, func(o *gateway.Options) {
		o.JWT.HS256Secret = ""
		o.JWT.JWKSFile = file
		o.JWT.JWKSRefresh = 50 * time.Millisecond
	})
	attempt(t, srv, "frame", signWith(t, "RS256", k1, "u1"), authOutcome{})
	attempt(t, srv, "frame", signWith(t, "ES256", k2, "u1"), authOutcome{close: protocol.CloseUnauthorized, reason: "no key"})
	// An HS256 token must not verify against anything when no secret is set,
	// even signed with the public key's bytes (algorithm confusion).
	hs := mintToken(t, jwtmint.Claims{Subject: "u1", TTL: time.Hour})
	attempt(t, srv, "frame", hs, authOutcome{close: protocol.CloseUnauthorized, reason: "not allowed"})

	// Rotate: k2 in, k1 out, without a restart.
	future := time.Now().Add(2 * time.Second)
	if err := os.WriteFile(file, jwksJSON(t, k2), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(file, future, future)
	checkFor(t, 5*time.Second, func() error {
		ws, _, err := wstest.DefaultDialer.Dial(wsURL(srv), http.Header{"Authorization": {"Bearer " + signWith(t, "ES256", k2, "u2")}})
		if err != nil {
			return err
		}
		defer ws.Close()
		ws.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(b), "welcome") {
			return errorf("not welcomed yet: %s %v", b, err)
		}
		return nil
	})
	attempt(t, srv, "frame", signWith(t, "RS256", k1, "u1"), authOutcome{close: protocol.CloseUnauthorized, reason: "no key"})
}

func TestAuthJWKSURLRotation(t *testing.T) {
	k1, k2 := newKey(t, "ec", "a"), newKey(t, "ec", "b")
	var current atomic.Value
	current.Store(jwksJSON(t, k1))
	var fetches atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(current.Load().([]byte))
	}))
	defer idp.Close()
	srv := startGateway(t, func(o *gateway.Options) {
		o.JWT.HS256Secret = ""
		o.JWT.JWKSURL = idp.URL + "/jwks.json"
		o.JWT.JWKSAllowHTTP = true
		o.JWT.Algorithms = []string{"ES256"}
	})
	attempt(t, srv, "frame", signWith(t, "ES256", k1, "u"), authOutcome{})
	// A key rotated in at the IdP is fetched on the first token naming its kid.
	current.Store(jwksJSON(t, k1, k2))
	attempt(t, srv, "bearer", signWith(t, "ES256", k2, "u"), authOutcome{})
	if fetches.Load() < 2 {
		t.Fatalf("JWKS fetched %d times; the unknown kid should have refreshed it", fetches.Load())
	}
	// RS256 is off the allowlist even with a matching key type.
	k3 := newKey(t, "rsa", "c")
	current.Store(jwksJSON(t, k1, k2, k3))
	attempt(t, srv, "frame", signWith(t, "RS256", k3, "u"), authOutcome{close: protocol.CloseUnauthorized, reason: "not allowed"})
}

func TestAuthKeyTypeMustMatchAlg(t *testing.T) {
	// A token whose header claims ES256 but whose key id names an RSA key.
	k := newKey(t, "rsa", "rsa1")
	file := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(file, jwksJSON(t, k), 0o600)
	srv := startGateway(t, func(o *gateway.Options) { o.JWT.HS256Secret = ""; o.JWT.JWKSFile = file })
	other := newKey(t, "ec", "rsa1")
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, "rsa1")
	tok, _ := jwt.NewBuilder().Subject("x").Expiration(time.Now().Add(time.Hour)).Build()
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, other.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	attempt(t, srv, "frame", string(b), authOutcome{close: protocol.CloseUnauthorized, reason: "no key"})
}

// A slow or hung IdP never holds token checks: keys already fetched keep
// working, an unknown kid fails fast, and the node still stops promptly.
func TestAuthSlowJWKSURL(t *testing.T) {
	k1, k2 := newKey(t, "ec", "known"), newKey(t, "ec", "unknown")
	var fetches atomic.Int32
	hang := make(chan struct{})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) > 1 {
			select { // every fetch after the first hangs
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		w.Write(jwksJSON(t, k1))
	}))
	defer idp.Close()
	defer close(hang)
	srv, err := gateway.New(func() gateway.Options {
		o := testOptions(t)
		o.JWT.HS256Secret = ""
		o.JWT.JWKSURL = idp.URL
		o.JWT.JWKSAllowHTTP = true
		o.AuthWorkers = 1
		o.AuthTimeout = 2 * time.Second
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The unknown kid triggers the (hanging) refresh; it waits at most a
	// few seconds, then fails, and only it waits.
	start := time.Now()
	attempt(t, srv, "frame", signWith(t, "ES256", k2, "u"), authOutcome{close: protocol.CloseUnauthorized, reason: "no key"})
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("unknown kid took %s to fail", el)
	}
	// Meanwhile the refresh still hangs; a known key is checked at once.
	attempt(t, srv, "frame", signWith(t, "ES256", k1, "u"), authOutcome{})
	attempt(t, srv, "frame", signWith(t, "ES256", k2, "u"), authOutcome{close: protocol.CloseUnauthorized, reason: "no key"})
	start = time.Now()
	srv.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Close took %s with a hung IdP", el)
	}
}

package jwtverify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// ecKey is an ES256 key pair with a kid.
type ecKey struct{ priv, pub jwk.Key }

func newECKey(t *testing.T, kid string) ecKey {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := priv.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return ecKey{priv: priv, pub: pub}
}

// jwksOf is the JSON Web Key Set of the keys' public halves.
func jwksOf(t *testing.T, keys ...ecKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.pub); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signES256 is a token for sub "svc" signed with k (its kid in the header).
func signES256(t *testing.T, k ecKey) string {
	t.Helper()
	tok, err := jwt.NewBuilder().Subject("svc").Expiration(time.Now().Add(time.Hour)).Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, k.priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// idp serves a key set that the test can change, counting the fetches.
type idp struct {
	keys    atomic.Value // []byte
	fetches atomic.Int32
}

func (p *idp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	p.fetches.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(p.keys.Load().([]byte))
}

func newIDP(t *testing.T, jwks []byte) *idp {
	t.Helper()
	p := &idp{}
	p.keys.Store(jwks)
	return p
}

// tlsServer starts an httptest TLS server and returns it with the Option
// that makes JWKS requests trust its certificate.
func tlsServer(t *testing.T, h http.Handler) (*httptest.Server, Option) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv, WithHTTPTransport(srv.Client().Transport)
}

// checkFor polls f until it returns nil, failing the test after d.
func checkFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newVerifier(t *testing.T, cfg Config, opts ...Option) *Verifier {
	t.Helper()
	v, err := New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestJWKSURLPlainHTTP(t *testing.T) {
	k := newECKey(t, "a")
	p := newIDP(t, jwksOf(t, k))
	srv := httptest.NewServer(p)
	defer srv.Close()
	cases := []struct {
		name      string
		allowHTTP bool
		wantErr   string
	}{
		{name: "refused without the flag", wantErr: "--jwt-jwks-allow-http"},
		{name: "accepted with the flag", allowHTTP: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := p.fetches.Load()
			v, err := New(Config{JWKSURL: srv.URL, JWKSAllowHTTP: tc.allowHTTP})
			if tc.wantErr != "" {
				var oe *OptionError
				if !errors.As(err, &oe) || oe.Flag != "jwt-jwks-url" || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: %v, want an error naming --jwt-jwks-url and %s", err, tc.wantErr)
				}
				if n := p.fetches.Load() - before; n != 0 {
					t.Fatalf("the http URL was fetched %d times before it was refused", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if _, err := v.Verify(signES256(t, k)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Each JWKS URL that cannot be used is a startup error naming
// --jwt-jwks-url and saying why.
func TestJWKSFetchGuards(t *testing.T) {
	k := newECKey(t, "a")
	jwks := jwksOf(t, k)
	// A valid key set padded with white space to n bytes.
	const head = `{"keys":`
	if !strings.HasPrefix(string(jwks), head) {
		t.Fatalf("unexpected JWKS encoding %s", jwks)
	}
	padTo := func(n int) []byte {
		return []byte(head + strings.Repeat(" ", n-len(jwks)) + string(jwks[len(head):]))
	}
	atBound, overBound := padTo(MaxJWKSBytes), padTo(MaxJWKSBytes+1)
	other, _ := tlsServer(t, newIDP(t, jwks))
	plain := httptest.NewServer(newIDP(t, jwks))
	defer plain.Close()
	cases := []struct {
		name    string
		path    string // requested on the server
		handler http.HandlerFunc
		noTrust bool   // without the test server's transport
		wantErr string // "" means the key set loads
	}{
		{name: "https", path: "/jwks.json", handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }},
		{name: "untrusted certificate", path: "/jwks.json", noTrust: true, wantErr: "certificate",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }},
		{name: "body at the bound", path: "/jwks.json",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(atBound) }},
		{name: "body over the bound, streamed", path: "/jwks.json", wantErr: "larger than " + strconv.Itoa(MaxJWKSBytes) + " bytes",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(overBound) }},
		{name: "body over the bound, by Content-Length", path: "/jwks.json", wantErr: "larger than " + strconv.Itoa(MaxJWKSBytes) + " bytes",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(overBound)))
				_, _ = w.Write(overBound)
			}},
		{name: "not found", path: "/jwks.json", wantErr: "404 Not Found",
			handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "empty key set", path: "/jwks.json", wantErr: "the key set is empty",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) }},
		{name: "same-host redirect followed", path: "/old",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/old" {
					http.Redirect(w, r, "/jwks.json", http.StatusMovedPermanently)
					return
				}
				_, _ = w.Write(jwks)
			}},
		{name: "cross-host redirect refused", path: "/jwks.json", wantErr: "another host",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL+"/jwks.json", http.StatusFound)
			}},
		{name: "redirect to http refused", path: "/jwks.json", wantErr: "from https to http",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, plain.URL+"/jwks.json", http.StatusFound)
			}},
		{name: "redirect loop stopped", path: "/jwks.json", wantErr: "redirects",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, trust := tlsServer(t, tc.handler)
			var opts []Option
			if !tc.noTrust {
				opts = append(opts, trust)
			}
			v, err := New(Config{JWKSURL: srv.URL + tc.path}, opts...)
			if tc.wantErr != "" {
				var oe *OptionError
				if !errors.As(err, &oe) || oe.Flag != "jwt-jwks-url" || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: %v, want an error naming --jwt-jwks-url and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if _, err := v.Verify(signES256(t, k)); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// A token naming a kid rotated in at the IdP since the last fetch forces a
// fetch and verifies; another unknown kid within 10 seconds does not
// fetch again.
func TestJWKSUnknownKidRefresh(t *testing.T) {
	k1, k2, k3 := newECKey(t, "k1"), newECKey(t, "k2"), newECKey(t, "k3")
	p := newIDP(t, jwksOf(t, k1))
	srv, trust := tlsServer(t, p)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, trust, WithRefreshWait(5*time.Second))
	if _, err := v.Verify(signES256(t, k1)); err != nil {
		t.Fatal(err)
	}
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	p.keys.Store(jwksOf(t, k1, k2))
	if _, err := v.Verify(signES256(t, k2)); err != nil {
		t.Fatalf("a key rotated in: %v", err)
	}
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after an unknown kid, want 2", n)
	}
	if _, err := v.Verify(signES256(t, k3)); err != ErrNoKey {
		t.Fatalf("a kid the IdP does not have: %v, want ErrNoKey", err)
	}
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a second unknown kid within 10s, want still 2", n)
	}
	if _, err := v.Verify(signES256(t, k1)); err != nil {
		t.Fatalf("the first key after the refresh: %v", err)
	}
}

// The cache refreshes the key set on its own every JWKSRefresh.
func TestJWKSPeriodicRefresh(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	p := newIDP(t, jwksOf(t, k1))
	srv, trust := tlsServer(t, p)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: time.Second}, trust)
	p.keys.Store(jwksOf(t, k2))
	// Looked up without a token, which would force a fetch.
	checkFor(t, 10*time.Second, func() error {
		set := v.remote.keys.Load()
		if _, ok := (*set).LookupKeyID("k2"); !ok {
			return fmt.Errorf("k2 not fetched yet (%d fetches)", p.fetches.Load())
		}
		return nil
	})
	if _, err := v.Verify(signES256(t, k2)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(signES256(t, k1)); err != ErrNoKey {
		t.Fatalf("a key rotated out: %v, want ErrNoKey", err)
	}
}

// A failed refresh keeps the keys fetched before.
func TestJWKSRefreshFailureKeepsKeys(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	var fail atomic.Bool
	p := newIDP(t, jwksOf(t, k1))
	srv, trust := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			p.fetches.Add(1)
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.ServeHTTP(w, r)
	}))
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, trust)
	fail.Store(true)
	if _, err := v.Verify(signES256(t, k2)); err != ErrNoKey {
		t.Fatalf("unknown kid with the IdP down: %v, want ErrNoKey", err)
	}
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the failed one forced by the unknown kid)", n)
	}
	if _, err := v.Verify(signES256(t, k1)); err != nil {
		t.Fatalf("the key fetched before: %v", err)
	}
}

// A hung IdP holds neither the token checks nor Close.
func TestJWKSHungRefresh(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	var fetches atomic.Int32
	hang := make(chan struct{})
	srv, trust := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) > 1 {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write(jwksOf(t, k1))
	}))
	defer close(hang)
	v, err := New(Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, trust, WithRefreshWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(signES256(t, k2)); err != ErrNoKey {
		t.Fatalf("unknown kid: %v, want ErrNoKey", err)
	}
	if _, err := v.Verify(signES256(t, k1)); err != nil {
		t.Fatalf("known kid during a hung refresh: %v", err)
	}
	start := time.Now()
	v.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Close took %s with a fetch hanging", el)
	}
}

func TestJWKSFileReload(t *testing.T) {
	k1, k2 := newECKey(t, "k1"), newECKey(t, "k2")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwksOf(t, k1), 0o600); err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, Config{JWKSFile: file, JWKSRefresh: 20 * time.Millisecond})
	if _, err := v.Verify(signES256(t, k1)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, jwksOf(t, k2), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Second) // a new mtime even on a coarse clock
	if err := os.Chtimes(file, later, later); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		_, err := v.Verify(signES256(t, k2))
		return err
	})
	if _, err := v.Verify(signES256(t, k1)); err != ErrNoKey {
		t.Fatalf("a key rotated out of the file: %v, want ErrNoKey", err)
	}
}

func TestSameHost(t *testing.T) {
	cases := []struct {
		name string
		a, b string
		want bool
	}{
		{"same", "https://idp/a", "https://idp/b", true},
		{"case", "https://IdP.example.com/a", "https://idp.example.COM/b", true},
		{"explicit default port", "https://idp/a", "https://idp:443/b", true},
		{"http to https on default ports", "http://idp/a", "https://idp/b", true},
		{"other port", "https://idp/a", "https://idp:8443/b", false},
		{"other ports", "https://idp:8443/a", "https://idp:9443/b", false},
		{"other host", "https://idp/a", "https://evil/b", false},
		{"subdomain", "https://idp.example.com/a", "https://x.idp.example.com/b", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := url.Parse(tc.a)
			b, _ := url.Parse(tc.b)
			if got := sameHost(a, b); got != tc.want {
				t.Fatalf("sameHost(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

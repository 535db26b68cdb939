package jwtverify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.uber.org/zap"
)

// Limits of a JWKS fetch.
const (
	// JWKSTimeout bounds a JWKS request, the body included.
	JWKSTimeout = 10 * time.Second
	// MaxJWKSBytes bounds a JWKS response body (1 MiB); a larger one is an
	// error, never a truncated key set.
	MaxJWKSBytes = 1 << 20
	// maxJWKSRedirects bounds the (same-host) redirects followed.
	maxJWKSRedirects = 5
	// kidRefreshEvery is how often an unknown kid may force a refresh.
	kidRefreshEvery = 10 * time.Second
)

// errJWKSTooLarge is a JWKS response over MaxJWKSBytes.
var errJWKSTooLarge = fmt.Errorf("the response is larger than %d bytes (1 MiB), the most a JWKS may be", MaxJWKSBytes)

// errEmptySet is a JWKS without keys.
var errEmptySet = errors.New("the key set is empty")

// newJWKSClient is the HTTP client of JWKS requests: JWKSTimeout for the
// whole request, bodies bounded by MaxJWKSBytes, and redirects followed
// only to the same host and never from https to http. base is the
// transport under it; nil is a clone of http.DefaultTransport.
func newJWKSClient(base http.RoundTripper) *http.Client {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &http.Client{
		Timeout:       JWKSTimeout,
		Transport:     boundedTransport{base: base, max: MaxJWKSBytes},
		CheckRedirect: checkJWKSRedirect,
	}
}

// checkJWKSRedirect follows a redirect only to the host (and port) of the
// configured URL, and never from https to plain http.
func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxJWKSRedirects {
		return fmt.Errorf("stopped after %d redirects", maxJWKSRedirects)
	}
	first, prev := via[0].URL, via[len(via)-1].URL
	if prev.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refused a redirect from https to %s (%s)", req.URL.Scheme, req.URL.Redacted())
	}
	if !sameHost(first, req.URL) {
		return fmt.Errorf("refused a redirect to another host (%s): only the JWKS URL's own host %s is followed", req.URL.Redacted(), first.Host)
	}
	return nil
}

// sameHost reports whether a and b name the same host and port, a port
// left out being its scheme's default (so http://idp to https://idp is the
// same host).
func sameHost(a, b *url.URL) bool {
	if !strings.EqualFold(a.Hostname(), b.Hostname()) {
		return false
	}
	pa, pb := a.Port(), b.Port()
	return pa == pb || pa == "" && pb == "" || pa == "" && pb == defaultPort(a.Scheme) || pb == "" && pa == defaultPort(b.Scheme)
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

// boundedTransport turns an answer other than 200 (or a redirect the
// client follows) into an error, and bounds the body of a 200 to max
// bytes: reading past it is an error.
type boundedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return resp, nil // for the client to follow (checkJWKSRedirect) or refuse
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	if resp.ContentLength > t.max {
		_ = resp.Body.Close()
		return nil, errJWKSTooLarge
	}
	resp.Body = &boundedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// boundedBody reads at most left bytes of rc; a byte more is
// errJWKSTooLarge (and closes rc).
type boundedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errJWKSTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = -1
		_ = b.rc.Close()
		return n, errJWKSTooLarge
	}
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }

// jwksRemote is the key set behind a JWKS URL. A jwk.Cache fetches it at
// start and then every refresh interval; each set it fetches is stored
// (by its post-fetch hook) where token checks read it without waiting.
// An unknown kid forces a fetch of its own, at most every
// kidRefreshEvery.
type jwksRemote struct {
	url    string
	log    *zap.Logger
	client *http.Client
	ctx    context.Context // ends at Close
	cache  *jwk.Cache
	keys   atomic.Pointer[jwk.Set]
	last   atomic.Int64 // unix ns of the last forced refresh

	mu     sync.Mutex // guards closed and wg.Add against Close
	closed bool
	wg     sync.WaitGroup
}

// newJWKSRemote fetches the key set once (an error if that fails) and
// leaves a jwk.Cache refreshing it until ctx ends.
func newJWKSRemote(ctx context.Context, rawURL string, every time.Duration, client *http.Client, log *zap.Logger) (*jwksRemote, error) {
	r := &jwksRemote{url: rawURL, log: log, client: client, ctx: ctx}
	// jwk.Cache refreshes at most once a second, and checks what is due
	// every refresh window, which must not exceed the interval.
	every = max(every, time.Second)
	window := min(max(every/10, time.Second), time.Minute)
	r.cache = jwk.NewCache(ctx, jwk.WithRefreshWindow(window), jwk.WithErrSink(r))
	err := r.cache.Register(rawURL,
		jwk.WithRefreshInterval(every),
		jwk.WithHTTPClient(client),
		jwk.WithPostFetcher(jwk.PostFetchFunc(r.store)))
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, JWKSTimeout+5*time.Second)
	defer cancel()
	if _, err := r.cache.Refresh(fctx, rawURL); err != nil {
		return nil, fetchError(err)
	}
	return r, nil
}

// store keeps a fetched set for the token checks; an empty one is refused
// and the previous set stays.
func (r *jwksRemote) store(_ string, set jwk.Set) (jwk.Set, error) {
	if set.Len() == 0 {
		return nil, errEmptySet
	}
	r.keys.Store(&set)
	return set, nil
}

// Error logs a failed background refresh (jwk.ErrSink).
func (r *jwksRemote) Error(err error) {
	if r.ctx.Err() != nil {
		return
	}
	r.log.Warn("JWKS refresh failed; keeping the previous keys", zap.String("url", r.url), zap.Error(fetchError(err)))
}

// fetchError is the cause of a failed fetch, without the layers of
// wrapping jwk.Cache adds (which repeat the URL).
func fetchError(err error) error {
	var ue *url.Error
	switch {
	case errors.Is(err, errJWKSTooLarge):
		return errJWKSTooLarge
	case errors.Is(err, errEmptySet):
		return errEmptySet
	case errors.As(err, &ue):
		return ue.Err
	}
	return err
}

// fetch gets and stores the key set, outside the cache: jwk.Cache.Refresh
// would schedule one more periodic refresh each time it is called.
func (r *jwksRemote) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fetchError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // a redirect without a Location
		return fmt.Errorf("the server answered %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fetchError(err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	_, err = r.store(r.url, set)
	return err
}

// refreshNow fetches the key set and waits for it up to wait, unless
// another forced refresh started in the last kidRefreshEvery. It reports
// whether a fetch succeeded while it waited; a fetch that outlasts the
// wait still stores its keys when it ends.
func (r *jwksRemote) refreshNow(wait time.Duration) bool {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(kidRefreshEvery) || !r.last.CompareAndSwap(last, now) {
		return false
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.wg.Add(1)
	r.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer r.wg.Done()
		err := r.fetch(r.ctx)
		if err != nil && r.ctx.Err() == nil {
			r.log.Warn("JWKS refresh for an unknown kid failed; keeping the previous keys", zap.String("url", r.url), zap.Error(err))
		}
		done <- err
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-t.C:
		return false
	}
}

// close waits for forced refreshes, once the context given to
// newJWKSRemote has ended (which cancels their requests).
func (r *jwksRemote) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}

package router

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Idempotency keys. A publish (user, batch, broadcast) carrying an
// Idempotency-Key is done at most once per credential and key within
// IdempotencyWindow: the first request claims the key (an atomic create,
// "pending"), publishes, and stores its answer ("done"); a retry gets that
// stored answer, with the same message ids, and nothing is published
// again. A retry while the first is still in flight gets 409
// idempotency_in_progress; the same key with a different request gets 422
// idempotency_key_reused. A request that fails (nothing or not surely
// published, or refused) releases the key, so it can be retried.
//
// The store is a JetStream KV bucket shared by every router replica when
// the NATS server has JetStream, else a bounded map in this process.
//
// With Resume the key is also each message's Nats-Msg-Id (dedupID,
// resume.go): the history stream stores a retry within its duplicate
// window once and answers it with the first message's sequence, so a
// retry the store cannot answer (a released key, a claim taken over,
// another replica's memory) still gets the same id and is delivered once.

// MaxIdempotencyKeyBytes is the longest Idempotency-Key accepted.
const MaxIdempotencyKeyBytes = 255

// pendingTTL is how long a claim stays pending before another request may
// take it over (its router died between claim and answer).
const pendingTTL = 30 * time.Second

// idemRecord is what the store keeps under a key.
type idemRecord struct {
	State  string          `json:"state"` // "pending" or "done"
	FP     string          `json:"fp"`    // the request's fingerprint
	Until  int64           `json:"until,omitempty"`
	Status int             `json:"status,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// claimResult is the outcome of a claim.
type claimResult struct {
	owned bool
	rev   uint64      // the owned claim's revision (KV)
	rec   *idemRecord // the record found when not owned
}

type idemStore interface {
	kind() string
	claim(ctx context.Context, key, fp string, now time.Time) (claimResult, error)
	complete(ctx context.Context, key string, rev uint64, rec *idemRecord) error
	release(ctx context.Context, key string, rev uint64) error
}

// checkIdempotencyKey validates a key: 1-255 bytes of printable ASCII.
func checkIdempotencyKey(k string) *apiError {
	if len(k) > MaxIdempotencyKeyBytes {
		return &apiError{status: http.StatusBadRequest, code: CodeBadIdempotencyKey,
			msg: fmt.Sprintf("the idempotency key is %d bytes; at most %d are allowed", len(k), MaxIdempotencyKeyBytes)}
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x21 || c > 0x7e {
			return &apiError{status: http.StatusBadRequest, code: CodeBadIdempotencyKey,
				msg: "the idempotency key must be printable ASCII without spaces"}
		}
	}
	return nil
}

// storeKey is the store's key for a credential's idempotency key: a hash,
// so any key text is a valid KV key and no credential shows in it.
func storeKey(scope, key string) string {
	h := sha256.New()
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

// fingerprint identifies a request's content, so a key reused for another
// request is told apart from a retry.
func fingerprint(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		l := len(p)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// idempotent runs do at most once per (scope, key) within the window and
// returns its answer, or the stored answer of the first run. An empty key
// runs do. The JetStream store needs NATS: while it is down the claim
// waits for it, from the request's allowance w (natsWait).
func (s *Server) idempotent(ctx context.Context, w *natsWait, scope, key, fp string, do func() (opResult, *apiError)) (opResult, *apiError) {
	if key == "" {
		return do()
	}
	if aerr := checkIdempotencyKey(key); aerr != nil {
		return opResult{}, aerr
	}
	if _, kv := s.idem.(*kvStore); kv && !w.untilUp() {
		return opResult{}, w.gaveUp()
	}
	sk := storeKey(scope, key)
	cctx, cancel := context.WithTimeout(ctx, idemTimeout)
	c, err := s.idem.claim(cctx, sk, fp, time.Now())
	cancel()
	if err != nil {
		s.m.idempotency.WithLabelValues("error").Inc()
		s.logRateLimited("idempotency store unavailable", zap.String("store", s.idem.kind()), zap.Error(err))
		return opResult{}, &apiError{status: http.StatusServiceUnavailable, code: CodeIdempotencyUnavailable, retryAfter: 1,
			msg: "the idempotency store did not answer; nothing was published, retry later"}
	}
	if !c.owned {
		switch {
		case c.rec.FP != fp:
			s.m.idempotency.WithLabelValues("reused").Inc()
			return opResult{}, &apiError{status: http.StatusUnprocessableEntity, code: CodeIdempotencyKeyReused,
				msg: "this idempotency key was used for a different request"}
		case c.rec.State != "done":
			s.m.idempotency.WithLabelValues("in_progress").Inc()
			return opResult{}, &apiError{status: http.StatusConflict, code: CodeIdempotencyInProgress, retryAfter: 1,
				msg: "a request with this idempotency key is still in progress; retry later for its answer"}
		}
		s.m.idempotency.WithLabelValues("replayed").Inc()
		return opResult{status: c.rec.Status, body: c.rec.Body, replayed: true}, nil
	}
	s.m.idempotency.WithLabelValues("claimed").Inc()
	res, aerr := do()
	// The answer is stored even when the caller has gone away: the
	// messages went out.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idemTimeout)
	defer cancel()
	if aerr != nil {
		if err := s.idem.release(sctx, sk, c.rev); err != nil {
			s.logRateLimited("releasing an idempotency key failed; retries get 409 until it expires",
				zap.String("store", s.idem.kind()), zap.Error(err))
		}
		return res, aerr
	}
	if err := s.idem.complete(sctx, sk, c.rev, &idemRecord{State: "done", FP: fp, Status: res.status, Body: res.body}); err != nil {
		s.logRateLimited("storing an idempotent answer failed", zap.String("store", s.idem.kind()), zap.Error(err))
	}
	return res, nil
}

// idemTimeout bounds each call to the store.
const idemTimeout = 3 * time.Second

// openIdempotency picks and opens the store (IdempotencyStore).
func (s *Server) openIdempotency(nc *nats.Conn) (idemStore, error) {
	mem := func() idemStore { return newMemStore(s.opts.IdempotencyMaxKeys, s.opts.IdempotencyWindow) }
	if s.opts.IdempotencyStore == "memory" {
		s.log.Info("idempotency keys kept in memory, per router replica (--idempotency-store memory)")
		return mem(), nil
	}
	kv, err := openKV(nc, s.opts.IdempotencyBucket, s.opts.IdempotencyWindow, s.log)
	if err != nil {
		if s.opts.IdempotencyStore == "jetstream" {
			return nil, badOption("idempotency-store", "jetstream: %v", err)
		}
		s.log.Warn("JetStream unavailable: idempotency keys are kept in memory, per router replica; "+
			"a retry reaching another replica is published again",
			zap.Error(err), zap.Int("max_keys", s.opts.IdempotencyMaxKeys))
		return mem(), nil
	}
	s.log.Info("idempotency keys kept in a JetStream KV bucket shared by the router replicas",
		zap.String("bucket", s.opts.IdempotencyBucket), zap.Duration("window", s.opts.IdempotencyWindow))
	return kv, nil
}

// ---- JetStream KV ----

type kvStore struct{ kv jetstream.KeyValue }

func openKV(nc *nats.Conn, bucket string, window time.Duration, log *zap.Logger) (*kvStore, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return nil, err
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "wsfleet router idempotency keys",
		TTL:         window,
		History:     1,
		Storage:     jetstream.MemoryStorage,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Made by a replica with other settings: use it as it is.
		kv, err = js.KeyValue(ctx, bucket)
		if err == nil {
			if st, serr := kv.Status(ctx); serr == nil && st.TTL() != window {
				log.Warn("the idempotency bucket exists with another TTL; keeping it",
					zap.String("bucket", bucket), zap.Duration("bucket_ttl", st.TTL()), zap.Duration("idempotency_window", window))
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return &kvStore{kv: kv}, nil
}

func (k *kvStore) kind() string { return "jetstream" }

func (k *kvStore) claim(ctx context.Context, key, fp string, now time.Time) (claimResult, error) {
	pending, _ := json.Marshal(idemRecord{State: "pending", FP: fp, Until: now.Add(pendingTTL).UnixMilli()})
	for attempt := 0; attempt < 3; attempt++ {
		rev, err := k.kv.Create(ctx, key, pending)
		if err == nil {
			return claimResult{owned: true, rev: rev}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return claimResult{}, err
		}
		e, err := k.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or released meanwhile
		}
		if err != nil {
			return claimResult{}, err
		}
		var rec idemRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return claimResult{}, fmt.Errorf("idempotency record %s: %w", key, err)
		}
		if rec.State == "pending" && now.UnixMilli() > rec.Until {
			// Its owner died: take it over, unless another replica does first.
			rev, err := k.kv.Update(ctx, key, pending, e.Revision())
			if err == nil {
				return claimResult{owned: true, rev: rev}, nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return claimResult{}, err
			}
			continue
		}
		return claimResult{rec: &rec}, nil
	}
	return claimResult{}, errors.New("idempotency key contended")
}

func (k *kvStore) complete(ctx context.Context, key string, rev uint64, rec *idemRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = k.kv.Update(ctx, key, b, rev)
	return err
}

func (k *kvStore) release(ctx context.Context, key string, rev uint64) error {
	return k.kv.Delete(ctx, key, jetstream.LastRevision(rev))
}

// ---- in memory ----

// memStore keeps at most max keys, each for window after its answer; the
// oldest go first when it is full.
type memStore struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time // the clock of complete (claims are given the time); tests set it
	m      map[string]*list.Element
	order  *list.List // of *memEntry, oldest first
	rev    uint64
}

type memEntry struct {
	key     string
	rec     idemRecord
	rev     uint64
	expires time.Time
}

func newMemStore(max int, window time.Duration) *memStore {
	return &memStore{max: max, window: window, now: time.Now, m: map[string]*list.Element{}, order: list.New()}
}

func (m *memStore) kind() string { return "memory" }

func (m *memStore) claim(_ context.Context, key, fp string, now time.Time) (claimResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(now)
	if el, ok := m.m[key]; ok {
		e := el.Value.(*memEntry)
		if now.Before(e.expires) && (e.rec.State == "done" || now.UnixMilli() <= e.rec.Until) {
			rec := e.rec
			return claimResult{rec: &rec}, nil
		}
		m.remove(el) // expired, or a stale claim: take it over
	}
	for len(m.m) >= m.max {
		m.remove(m.order.Front())
	}
	m.rev++
	e := &memEntry{key: key, rev: m.rev, expires: now.Add(max(m.window, pendingTTL)),
		rec: idemRecord{State: "pending", FP: fp, Until: now.Add(pendingTTL).UnixMilli()}}
	m.m[key] = m.order.PushBack(e)
	return claimResult{owned: true, rev: e.rev}, nil
}

func (m *memStore) complete(_ context.Context, key string, rev uint64, rec *idemRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.m[key]
	if !ok || el.Value.(*memEntry).rev != rev {
		return errors.New("the claim was evicted or taken over")
	}
	e := el.Value.(*memEntry)
	e.rec = *rec
	e.expires = m.now().Add(m.window)
	m.order.MoveToBack(el)
	return nil
}

func (m *memStore) release(_ context.Context, key string, rev uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.m[key]; ok && el.Value.(*memEntry).rev == rev {
		m.remove(el)
	}
	return nil
}

// expire drops entries past their window from the front (lock held).
// Entries are in answer order, so the front ones expire first.
func (m *memStore) expire(now time.Time) {
	for el := m.order.Front(); el != nil; el = m.order.Front() {
		if now.Before(el.Value.(*memEntry).expires) {
			return
		}
		m.remove(el)
	}
}

func (m *memStore) remove(el *list.Element) {
	delete(m.m, el.Value.(*memEntry).key)
	m.order.Remove(el)
}

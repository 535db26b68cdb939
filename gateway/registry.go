package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// user is one authenticated user on this node and its devices. Its
// connection list is copy-on-write, so dispatchers read it without locks.
type user struct {
	id     string // JWT sub
	token  string // subject-safe encoding of id (the same string when id is token-safe)
	conns  atomic.Pointer[[]*conn]
	disp   int                // dispatcher whose channel carries its messages
	sub    *nats.Subscription // owned by the subscription manager goroutine
	subErr error              // owned by the subscription manager goroutine
}

const regShards = 64

// registry maps user tokens to users, sharded to keep connects on different
// loops from contending. When a user's first device registers, the
// subscription manager subscribes its subject; when the last leaves, it
// unsubscribes.
type registry struct {
	s      *Server
	seed   maphash.Seed
	shards [regShards]regShard
	users  atomic.Int64
}

type regShard struct {
	mu    sync.RWMutex
	users map[string]*user
	_     [40]byte // keep shards on separate cache lines
}

func newRegistry(s *Server) *registry {
	r := &registry{s: s, seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].users = make(map[string]*user)
	}
	return r
}

func (r *registry) hash(tok string) uint64 { return maphash.String(r.seed, tok) }

// add registers c as a device of user id and returns the user. With
// MaxDevicesPerUser set and reached, it either refuses c (ok false, policy
// reject-newest) or returns the user's oldest connection to close (policy
// close-oldest); the count and the choice are made under the shard lock.
func (r *registry) add(c *conn, id, tok string) (u *user, evict *conn, ok bool) {
	h := r.hash(tok)
	sh := &r.shards[h%regShards]
	sh.mu.Lock()
	u = sh.users[tok]
	first := u == nil
	if first {
		u = &user{id: id, token: tok, disp: int(h>>32) % len(r.s.disp.chans)}
		empty := []*conn{}
		u.conns.Store(&empty)
		sh.users[tok] = u
	}
	old := *u.conns.Load()
	if limit := r.s.opts.MaxDevicesPerUser; limit > 0 && len(old) >= limit {
		if r.s.opts.DevicePolicy == "reject-newest" {
			sh.mu.Unlock()
			return nil, nil, false
		}
		evict = old[len(old)-limit] // the oldest of those that stay over the limit
	}
	next := make([]*conn, len(old), len(old)+1)
	copy(next, old)
	next = append(next, c)
	u.conns.Store(&next)
	r.s.pres.changed(id, len(old), len(next))
	if first {
		// Queued under the shard lock: another device of the user, added
		// on another loop right after, queues its welcome behind this.
		r.s.subs.subscribe(u)
	}
	sh.mu.Unlock()
	if first {
		r.users.Add(1)
		r.s.m.users.Inc()
	}
	r.s.m.authed.Inc()
	return u, evict, true
}

// remove unregisters c; the user goes when its last device does.
func (r *registry) remove(c *conn) {
	u := c.user
	sh := &r.shards[r.hash(u.token)%regShards]
	sh.mu.Lock()
	old := *u.conns.Load()
	next := make([]*conn, 0, len(old))
	for _, o := range old {
		if o != c {
			next = append(next, o)
		}
	}
	u.conns.Store(&next)
	r.s.pres.changed(u.id, len(old), len(next))
	last := len(next) == 0 && sh.users[u.token] == u
	if last {
		delete(sh.users, u.token)
		r.s.subs.unsubscribe(u)
	}
	sh.mu.Unlock()
	r.s.m.authed.Dec()
	if last {
		r.users.Add(-1)
		r.s.m.users.Dec()
	}
}

// lookup returns the user of a token, or nil.
func (r *registry) lookup(tok string) *user {
	sh := &r.shards[r.hash(tok)%regShards]
	sh.mu.RLock()
	u := sh.users[tok]
	sh.mu.RUnlock()
	return u
}

// each calls f for every user, shard by shard under the shard's read lock
// (f must not call back into the registry).
func (r *registry) each(f func(*user)) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, u := range sh.users {
			f(u)
		}
		sh.mu.RUnlock()
	}
}

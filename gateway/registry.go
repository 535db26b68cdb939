package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/protocol"
)

// user is one authenticated user on this node and its devices, oldest
// first. conns is guarded by the user's registry shard lock; dispatchers
// copy it out under the read lock (registry.devices).
type user struct {
	id        string             // JWT sub
	conns     []*conn            // shard lock
	sub       *nats.Subscription // owned by the subscription manager goroutine
	disp      int32              // dispatcher whose channel carries its messages
	subFailed bool               // owned by the subscription manager goroutine
	// confirmed is 1 + the NATS epoch (Server.natsEpoch) in which a round
	// trip confirmed the user's subscription; 0: not confirmed.
	confirmed atomic.Uint32
}

// token returns the user's subject token (not kept: it is the id itself for
// the usual ids, and cheap to encode for the others).
func (u *user) token() string {
	tok, _ := protocol.EncodeUserToken(u.id) // ids were validated at authentication
	return tok
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
		u = &user{id: id, disp: int32((h >> 32) % uint64(len(r.s.disp.chans)))}
		sh.users[tok] = u
	}
	if limit := r.s.opts.MaxDevicesPerUser; limit > 0 && len(u.conns) >= limit {
		if r.s.opts.DevicePolicy == "reject-newest" {
			sh.mu.Unlock()
			return nil, nil, false
		}
		evict = u.conns[len(u.conns)-limit] // the oldest of those that stay over the limit
	}
	u.conns = append(u.conns, c)
	r.s.pres.changed(id, len(u.conns)-1, len(u.conns))
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
	r.s.m.authedBy[c.Kind].Inc()
	return u, evict, true
}

// remove unregisters c; the user goes when its last device does.
func (r *registry) remove(c *conn) {
	u := c.user
	tok := u.token()
	sh := &r.shards[r.hash(tok)%regShards]
	sh.mu.Lock()
	before := len(u.conns)
	for i, o := range u.conns {
		if o == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...) // keeps the order: oldest first
			u.conns[len(u.conns):before][0] = nil
			break
		}
	}
	if len(u.conns) == 0 {
		u.conns = nil
	}
	r.s.pres.changed(u.id, before, len(u.conns))
	last := len(u.conns) == 0 && sh.users[tok] == u
	if last {
		delete(sh.users, tok)
		r.s.subs.unsubscribe(u)
	}
	sh.mu.Unlock()
	r.s.m.authed.Dec()
	r.s.m.authedBy[c.Kind].Dec()
	if last {
		r.users.Add(-1)
		r.s.m.users.Dec()
	}
}

// devices returns the user of a token (nil if none) and its connections,
// appended to buf: a copy taken under the shard's read lock, so the caller
// writes to them without holding it.
func (r *registry) devices(tok string, buf []*conn) (*user, []*conn) {
	sh := &r.shards[r.hash(tok)%regShards]
	sh.mu.RLock()
	u := sh.users[tok]
	if u != nil {
		buf = append(buf, u.conns...)
	}
	sh.mu.RUnlock()
	return u, buf
}

// appendShard appends every user of shard i with its device count to dst:
// a copy taken under the shard's read lock, which is released before the
// caller does anything with it (no lock is held across I/O).
func (r *registry) appendShard(i int, dst []protocol.UserDevices) []protocol.UserDevices {
	sh := &r.shards[i]
	sh.mu.RLock()
	for _, u := range sh.users {
		if n := len(u.conns); n > 0 {
			dst = append(dst, protocol.UserDevices{User: u.id, Devices: n})
		}
	}
	sh.mu.RUnlock()
	return dst
}

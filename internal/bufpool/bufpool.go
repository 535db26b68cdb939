// Package bufpool hands out byte buffers from size-classed pools, plain
// ([Get]/[Put]) or reference-counted ([GetShared]) for one frame written to
// many connections.
//
// Classes are powers of two from 64 B to 4 MiB; a larger request is
// allocated and dropped to the garbage collector on release. Nothing here
// knows about sockets or frames.
package bufpool

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

const (
	minShift   = 6  // 64 B
	maxShift   = 22 // 4 MiB
	numClasses = maxShift - minShift + 1
)

// MaxPooled is the largest capacity kept in a pool.
const MaxPooled = 1 << maxShift

var pools [numClasses]sync.Pool

// class returns the index of the smallest class holding n bytes, or -1.
func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	if n > MaxPooled {
		return -1
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer of length 0 and capacity at least n.
func Get(n int) *[]byte {
	c := class(n)
	if c < 0 {
		b := make([]byte, 0, n)
		return &b
	}
	if v := pools[c].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 1<<(c+minShift))
	return &b
}

// Put returns a buffer obtained from Get. The caller must not use it again.
func Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c > MaxPooled || c&(c-1) != 0 {
		return // not one of ours, or too big to keep
	}
	*b = (*b)[:0]
	pools[bits.Len(uint(c))-1-minShift].Put(b)
}

// Grow returns a buffer holding the bytes of b with room for n more, moving
// them to a larger pooled buffer (and releasing b) when b is too small.
func Grow(b *[]byte, n int) *[]byte {
	if cap(*b)-len(*b) >= n {
		return b
	}
	nb := Get(len(*b) + n)
	*nb = append(*nb, *b...)
	Put(b)
	return nb
}

// Shared is a reference-counted buffer: one encoded frame queued on many
// connections is held once. It starts with one reference, the creator's.
// B may be re-sliced (a frame built with room in front of it) or grown.
type Shared struct {
	B    []byte
	refs atomic.Int32
	buf  *[]byte
	// alt is the same content encoded for another transport (Alt), built
	// once by the first connection that needs it and held until s goes.
	alt atomic.Pointer[Shared]
}

var sharedPool = sync.Pool{New: func() any { return new(Shared) }}

// GetShared returns a Shared buffer of length 0 and capacity at least n with
// one reference.
func GetShared(n int) *Shared {
	s := sharedPool.Get().(*Shared)
	s.buf = Get(n)
	s.B = *s.buf
	s.refs.Store(1)
	return s
}

// Alt returns s's content encoded for another transport: the buffer
// encode built from s.B the first time any goroutine asked, shared by every
// later caller. It holds one reference of its own, released with s's last;
// a caller that queues it retains it. encode must return a new Shared with
// one reference. The caller must hold a reference to s.
func (s *Shared) Alt(encode func(b []byte) *Shared) *Shared {
	if a := s.alt.Load(); a != nil {
		return a
	}
	a := encode(s.B)
	if s.alt.CompareAndSwap(nil, a) {
		return a
	}
	a.Release() // another goroutine built it first
	return s.alt.Load()
}

// Retain adds a reference.
func (s *Shared) Retain() { s.refs.Add(1) }

// Release drops a reference; the last one returns the memory to its pool.
func (s *Shared) Release() {
	switch r := s.refs.Add(-1); {
	case r > 0:
		return
	case r < 0:
		panic("bufpool: Shared released more often than retained")
	}
	if a := s.alt.Swap(nil); a != nil {
		a.Release()
	}
	// s.B may be a re-slice (or a reallocation) of the pooled buffer; the
	// pool gets back the buffer it handed out.
	Put(s.buf)
	s.B, s.buf = nil, nil
	sharedPool.Put(s)
}

package loadtest

// wheel is a hashed timing wheel of slots, one per event loop and touched
// only by its goroutine: the one timing structure behind connect timeouts,
// reconnect back-off, token refresh and close timeouts. A slot is in it at
// most once, linked through its own fields, so nothing is allocated per
// deadline and no timer exists per connection. Deadlines further away than
// the wheel spans stay in the bucket they hash to and are passed over until
// due.
type wheel struct {
	buckets []*slot
	firing  *slot
	mask    uint32
	cur     uint32 // last tick processed
}

func newWheel(size uint32) wheel {
	n := uint32(64)
	for n < size {
		n <<= 1
	}
	return wheel{buckets: make([]*slot, n), mask: n - 1}
}

// schedule (re)places s to fire at tick due (at the next tick when due is
// not in the future).
func (w *wheel) schedule(s *slot, due uint32) {
	w.unlink(s)
	if int32(due-w.cur) <= 0 {
		due = w.cur + 1
	}
	s.due = due
	i := due & w.mask
	s.tprev, s.tnext = nil, w.buckets[i]
	if s.tnext != nil {
		s.tnext.tprev = s
	}
	w.buckets[i] = s
	s.inWheel = true
}

// unlink takes s out of the wheel if it is in it.
func (w *wheel) unlink(s *slot) {
	if !s.inWheel {
		return
	}
	switch {
	case s.tprev != nil:
		s.tprev.tnext = s.tnext
	case w.firing == s:
		w.firing = s.tnext
	default:
		w.buckets[s.due&w.mask] = s.tnext
	}
	if s.tnext != nil {
		s.tnext.tprev = s.tprev
	}
	s.tprev, s.tnext, s.inWheel = nil, nil, false
}

// advance processes every tick up to now, calling fire for each slot whose
// deadline passed after taking it out; fire may schedule it again.
func (w *wheel) advance(now uint32, fire func(*slot)) {
	for int32(now-w.cur) > 0 {
		w.cur++
		i := w.cur & w.mask
		w.firing, w.buckets[i] = w.buckets[i], nil
		for w.firing != nil {
			s := w.firing
			w.firing = s.tnext
			if w.firing != nil {
				w.firing.tprev = nil
			}
			s.tprev, s.tnext, s.inWheel = nil, nil, false
			if int32(s.due-w.cur) > 0 { // a later round: put it back
				s.inWheel = true
				s.tnext = w.buckets[i]
				if s.tnext != nil {
					s.tnext.tprev = s
				}
				w.buckets[i] = s
				continue
			}
			fire(s)
		}
	}
}

package gateway

// wheel is a hashed timing wheel of connections, one per event loop and
// touched only by its loop's goroutine: the one shared timing structure
// behind handshake and auth timeouts, heartbeats, idle closes, token expiry
// and close timeouts. A connection is in at most one slot, linked through
// its own tprev/tnext fields, so scheduling allocates nothing and no timer
// exists per connection.
//
// Deadlines are in ticks of the loop's clock. A deadline further away than
// the wheel spans is parked in the slot it hashes to and re-linked when that
// slot comes round early.
type wheel struct {
	slots  []*conn
	firing *conn // the slot being processed by advance
	mask   uint32
	cur    uint32 // last tick processed
}

func newWheel(span uint32) wheel {
	n := uint32(64)
	for n < span && n < 1<<16 {
		n <<= 1
	}
	return wheel{slots: make([]*conn, n), mask: n - 1}
}

// schedule (re)places c to fire at tick due, or at the next tick when due is
// not in the future.
func (w *wheel) schedule(c *conn, due uint32) {
	if c.inWheel {
		w.unlink(c)
	}
	if int32(due-w.cur) <= 0 {
		due = w.cur + 1
	}
	c.due = due
	w.link(c)
}

func (w *wheel) link(c *conn) {
	i := c.due & w.mask
	c.tprev = nil
	c.tnext = w.slots[i]
	if c.tnext != nil {
		c.tnext.tprev = c
	}
	w.slots[i] = c
	c.inWheel = true
}

// unlink removes c from the wheel if it is in it.
func (w *wheel) unlink(c *conn) {
	if !c.inWheel {
		return
	}
	switch {
	case c.tprev != nil:
		c.tprev.tnext = c.tnext
	case w.firing == c:
		w.firing = c.tnext
	default:
		w.slots[c.due&w.mask] = c.tnext
	}
	if c.tnext != nil {
		c.tnext.tprev = c.tprev
	}
	c.tprev, c.tnext, c.inWheel = nil, nil, false
}

// advance processes every tick up to now and calls fire for each connection
// whose deadline passed, after taking it out of the wheel. fire may schedule
// it again.
func (w *wheel) advance(now uint32, fire func(*conn)) {
	for int32(now-w.cur) > 0 {
		w.cur++
		i := w.cur & w.mask
		w.firing, w.slots[i] = w.slots[i], nil
		// Pop one at a time: fire may unlink any connection, including
		// ones still waiting in this slot.
		for w.firing != nil {
			c := w.firing
			w.firing = c.tnext
			if w.firing != nil {
				w.firing.tprev = nil
			}
			c.tprev, c.tnext, c.inWheel = nil, nil, false
			if int32(c.due-w.cur) > 0 {
				w.link(c) // parked: its deadline is a later round
			} else {
				fire(c)
			}
		}
	}
}

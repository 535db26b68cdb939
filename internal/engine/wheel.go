package engine

// Timed is a pointer to a connection type P that embeds Conn[P]: the
// wheel links it through the Conn's fields, without allocating.
type Timed[P any] interface {
	comparable
	timer() *Conn[P]
}

// MaxAhead is the furthest a deadline may be scheduled ahead of the wheel's
// current tick; Schedule clamps later ones to it. A caller whose deadline
// lies further away (a token expiring in months at a 1 ms tick) re-arms it
// against the real time when it fires.
const MaxAhead = 1 << 30

// Wheel is a hashed timing wheel, one per loop and touched only by its
// goroutine: the one timing structure behind every timeout of the loop's
// connections. Deadlines are in ticks of the loop's clock. A deadline
// further away than the wheel spans stays in the slot it hashes to and is
// passed over until its round comes.
type Wheel[P Timed[P]] struct {
	slots  []P
	firing P // the rest of the slot being fired
	mask   uint32
	cur    uint32 // last tick processed
}

// NewWheel returns a wheel of at least span slots (a power of two between
// 64 and 65,536) whose current tick is now.
func NewWheel[P Timed[P]](span, now uint32) *Wheel[P] {
	n := uint32(64)
	for n < span && n < 1<<16 {
		n <<= 1
	}
	return &Wheel[P]{slots: make([]P, n), mask: n - 1, cur: now}
}

// Cur is the last tick the wheel processed.
func (w *Wheel[P]) Cur() uint32 { return w.cur }

// Schedule (re)places c to fire at tick due: at the next tick when due is
// not in the future, at most MaxAhead ticks ahead.
func (w *Wheel[P]) Schedule(c P, due uint32) {
	t := c.timer()
	if t.inWheel {
		w.Unlink(c)
	}
	switch d := int32(due - w.cur); {
	case d <= 0:
		due = w.cur + 1
	case d > MaxAhead:
		due = w.cur + MaxAhead
	}
	t.due = due
	w.link(c, t)
}

func (w *Wheel[P]) link(c P, t *Conn[P]) {
	i := t.due & w.mask
	var zero P
	t.prev = zero
	t.next = w.slots[i]
	if t.next != zero {
		t.next.timer().prev = c
	}
	w.slots[i] = c
	t.inWheel = true
}

// Unlink removes c from the wheel if it is in it.
func (w *Wheel[P]) Unlink(c P) {
	t := c.timer()
	if !t.inWheel {
		return
	}
	var zero P
	switch {
	case t.prev != zero:
		t.prev.timer().next = t.next
	case w.firing == c:
		w.firing = t.next
	default:
		w.slots[t.due&w.mask] = t.next
	}
	if t.next != zero {
		t.next.timer().prev = t.prev
	}
	t.prev, t.next, t.inWheel = zero, zero, false
}

// Advance processes every tick up to now and calls fire for each connection
// whose deadline passed, after taking it out of the wheel; fire may
// schedule it again. A jump of a whole rotation or more (a stalled loop, a
// test clock) is one pass over every slot, not one step per tick; the
// clock must not move 2^31 ticks or more at once (ticks compare as int32
// differences).
func (w *Wheel[P]) Advance(now uint32, fire func(P)) {
	if int32(now-w.cur) >= int32(len(w.slots)) {
		w.jump(now, fire)
		return
	}
	for int32(now-w.cur) > 0 {
		w.cur++
		w.fireSlot(w.cur&w.mask, fire)
	}
}

// fireSlot fires the due connections of slot i and re-links the others.
func (w *Wheel[P]) fireSlot(i uint32, fire func(P)) {
	var zero P
	w.firing, w.slots[i] = w.slots[i], zero
	// Pop one at a time: fire may unlink any connection, including ones
	// still waiting in this slot.
	for w.firing != zero {
		c := w.firing
		t := c.timer()
		w.firing = t.next
		if w.firing != zero {
			w.firing.timer().prev = zero
		}
		t.prev, t.next, t.inWheel = zero, zero, false
		if int32(t.due-w.cur) > 0 {
			w.link(c, t) // parked: its deadline is a later round
		} else {
			fire(c)
		}
	}
}

// jump moves the wheel to now in one pass: every slot once, firing what is
// due by now (earliest slots first, in tick order from the old position).
func (w *Wheel[P]) jump(now uint32, fire func(P)) {
	start := w.cur
	w.cur = now
	for k := uint32(1); k <= uint32(len(w.slots)); k++ {
		w.fireSlot((start+k)&w.mask, fire)
	}
}

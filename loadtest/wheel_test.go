package loadtest

import "testing"

func TestWheel(t *testing.T) {
	w := newWheel(64)
	ss := make([]*slot, 6)
	for i := range ss {
		ss[i] = &slot{idx: int32(i)}
	}
	w.schedule(ss[0], 5)
	w.schedule(ss[1], 5)
	w.schedule(ss[2], 70) // past the wheel's span: a later round
	w.schedule(ss[3], 3)
	w.schedule(ss[4], 0) // in the past: next tick
	w.schedule(ss[5], 5)
	w.unlink(ss[5])
	var fired []int32
	at := map[int32]uint32{}
	fire := func(s *slot) { fired = append(fired, s.idx); at[s.idx] = w.cur }
	w.advance(4, fire)
	if len(fired) != 2 || at[4] != 1 || at[3] != 3 {
		t.Fatalf("after 4 ticks: %v %v", fired, at)
	}
	// a fire callback that unlinks a slot waiting in the same bucket
	w.advance(5, func(s *slot) {
		fire(s)
		w.unlink(ss[0])
		w.unlink(ss[1])
	})
	if len(fired) != 3 {
		t.Fatalf("unlink during fire: %v", fired)
	}
	w.advance(69, fire)
	if len(fired) != 3 {
		t.Fatalf("slot 2 fired early: %v %v", fired, at)
	}
	w.advance(70, fire)
	if len(fired) != 4 || at[2] != 70 {
		t.Fatalf("slot 2: %v %v", fired, at)
	}
}

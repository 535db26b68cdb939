package engine

import (
	"math/rand"
	"testing"
)

// node is a connection type for wheel tests.
type node struct {
	Conn[*node]
	n int
}

func TestWheelFiresEachConnectionOnceAtItsDeadline(t *testing.T) {
	cases := []struct {
		name  string
		span  uint32
		count int
		maxAt uint32
		start uint32
		step  int // largest tick step of the clock
	}{
		{name: "within span", span: 64, count: 500, maxAt: 60, step: 3},
		{name: "far beyond span", span: 64, count: 500, maxAt: 5000, step: 3},
		{name: "start near wrap", span: 128, count: 200, maxAt: 300, start: ^uint32(0) - 100, step: 3},
		{name: "clock jumps", span: 64, count: 500, maxAt: 5000, step: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWheel[*node](tc.span, tc.start)
			start := w.Cur()
			want := map[*node]uint32{}
			r := rand.New(rand.NewSource(1))
			for i := 0; i < tc.count; i++ {
				c := &node{n: i}
				due := start + 1 + uint32(r.Intn(int(tc.maxAt)))
				w.Schedule(c, due)
				want[c] = due
			}
			// Unschedule a few, reschedule a few.
			n := 0
			for c := range want {
				switch n % 10 {
				case 0:
					w.Unlink(c)
					delete(want, c)
				case 1:
					due := start + 1 + uint32(r.Intn(int(tc.maxAt)))
					w.Schedule(c, due)
					want[c] = due
				}
				n++
			}
			fired := map[*node]uint32{}
			for now := start; ; {
				now += uint32(1 + r.Intn(tc.step)) // ticks may be skipped
				w.Advance(now, func(c *node) {
					if _, dup := fired[c]; dup {
						t.Fatalf("fired twice")
					}
					if int32(want[c]-now) > 0 {
						t.Fatalf("fired at %d before its deadline %d", now, want[c])
					}
					fired[c] = now
				})
				if int32(now-(start+tc.maxAt+2)) >= 0 {
					break
				}
			}
			if len(fired) != len(want) {
				t.Fatalf("fired %d, want %d", len(fired), len(want))
			}
			if tc.step > 3 {
				return // a jump fires at the tick it lands on
			}
			for c, due := range want {
				if fired[c] != due && int32(fired[c]-due) > int32(tc.step) {
					t.Fatalf("fired at %d, want %d", fired[c], due)
				}
			}
		})
	}
}

func TestWheelFireMayUnlinkOthersInTheSameSlot(t *testing.T) {
	w := NewWheel[*node](64, 0)
	a, b, c := &node{}, &node{}, &node{}
	for _, x := range []*node{a, b, c} {
		w.Schedule(x, 5)
	}
	var fired []*node
	w.Advance(10, func(x *node) {
		fired = append(fired, x)
		for _, y := range []*node{a, b, c} {
			if y != x {
				w.Unlink(y)
			}
		}
	})
	if len(fired) != 1 {
		t.Fatalf("fired %d connections; the first one unlinked the others", len(fired))
	}
}

func TestWheelClampsFarDeadlines(t *testing.T) {
	w := NewWheel[*node](64, 10)
	c := &node{}
	w.Schedule(c, 10+MaxAhead+12345)
	if c.Due() != 10+MaxAhead {
		t.Fatalf("due %d, want %d (MaxAhead from now)", c.Due(), 10+MaxAhead)
	}
	w.Schedule(c, 3) // the past: the next tick
	if c.Due() != 11 {
		t.Fatalf("due %d, want 11", c.Due())
	}
	fired := 0
	w.Advance(10+MaxAhead, func(*node) { fired++ }) // one jump, not 2^30 steps
	if fired != 1 || c.Scheduled() {
		t.Fatalf("fired %d, scheduled %v", fired, c.Scheduled())
	}
}

func TestWheelRescheduleFromFireDuringJump(t *testing.T) {
	w := NewWheel[*node](64, 0)
	c := &node{}
	w.Schedule(c, 5)
	fires := 0
	w.Advance(1000, func(x *node) {
		fires++
		w.Schedule(x, 0) // the next tick after the jump
	})
	if fires != 1 || c.Due() != 1001 {
		t.Fatalf("fires %d due %d", fires, c.Due())
	}
	w.Advance(1001, func(*node) { fires++ })
	if fires != 2 {
		t.Fatalf("rescheduled connection did not fire at the next tick")
	}
}

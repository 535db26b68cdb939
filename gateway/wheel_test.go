package gateway

import (
	"math/rand"
	"testing"
)

func TestWheelFiresEachConnectionOnceAtItsDeadline(t *testing.T) {
	cases := []struct {
		name  string
		span  uint32
		count int
		maxAt uint32
	}{
		{"within span", 64, 500, 60},
		{"far beyond span", 64, 500, 5000},
		{"start near wrap", 128, 200, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWheel(tc.span)
			if tc.name == "start near wrap" {
				w.cur = ^uint32(0) - 100 // tick numbers wrap around uint32
			}
			start := w.cur
			want := map[*conn]uint32{}
			r := rand.New(rand.NewSource(1))
			for i := 0; i < tc.count; i++ {
				c := &conn{}
				due := start + 1 + uint32(r.Intn(int(tc.maxAt)))
				w.schedule(c, due)
				want[c] = due
			}
			// Unschedule a few, reschedule a few.
			n := 0
			for c := range want {
				switch n % 10 {
				case 0:
					w.unlink(c)
					delete(want, c)
				case 1:
					due := start + 1 + uint32(r.Intn(int(tc.maxAt)))
					w.schedule(c, due)
					want[c] = due
				}
				n++
			}
			fired := map[*conn]uint32{}
			for now := start; now != start+tc.maxAt+2; {
				now += uint32(1 + r.Intn(3)) // ticks may be skipped
				w.advance(now, func(c *conn) {
					if _, dup := fired[c]; dup {
						t.Fatalf("fired twice")
					}
					fired[c] = w.cur
				})
				if int32(now-(start+tc.maxAt+2)) >= 0 {
					break
				}
			}
			if len(fired) != len(want) {
				t.Fatalf("fired %d, want %d", len(fired), len(want))
			}
			for c, due := range want {
				if fired[c] != due {
					t.Fatalf("fired at %d, want %d", fired[c], due)
				}
			}
		})
	}
}

func TestWheelFireMayUnlinkOthersInTheSameSlot(t *testing.T) {
	w := newWheel(64)
	a, b, c := &conn{}, &conn{}, &conn{}
	for _, x := range []*conn{a, b, c} {
		w.schedule(x, 5)
	}
	var fired []*conn
	w.advance(10, func(x *conn) {
		fired = append(fired, x)
		for _, y := range []*conn{a, b, c} {
			if y != x {
				w.unlink(y)
			}
		}
	})
	if len(fired) != 1 {
		t.Fatalf("fired %d connections; the first one unlinked the others", len(fired))
	}
}

package loadtest

import (
	"math"
	"testing"
	"time"
)

// The ramp's AIMD control, on a clock the test moves.
func TestRampControl(t *testing.T) {
	const s = time.Second
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// step: at time at, a pushback (with pause) or, without push, the time
	// passing; then the rate allowed must be want.
	type step struct {
		at    time.Duration
		push  bool
		pause time.Duration
		want  float64
	}
	for _, tc := range []struct {
		name      string
		target    float64
		off       bool
		steps     []step
		cuts      int64
		pushbacks int64
		min       float64
		below     time.Duration
		paused    time.Duration
	}{
		{
			name: "a pushback halves the rate", target: 1000,
			steps: []step{{at: ms(100), push: true, want: 500}},
			cuts:  1, pushbacks: 1, min: 500,
		},
		{
			name: "at most one cut per 250 ms", target: 1000,
			steps: []step{
				{at: ms(100), push: true, want: 500},
				{at: ms(200), push: true, want: 500},
				{at: ms(349), push: true, want: 500},
				{at: ms(350), push: true, want: 250},
				{at: ms(400), push: true, want: 250},
			},
			cuts: 2, pushbacks: 5, min: 250, below: ms(300),
		},
		{
			name: "floor: 1% of the target", target: 1000,
			steps: []step{
				{at: 0, push: true, want: 500}, {at: ms(250), push: true, want: 250},
				{at: ms(500), push: true, want: 125}, {at: ms(750), push: true, want: 62.5},
				{at: ms(1000), push: true, want: 31.25}, {at: ms(1250), push: true, want: 15.625},
				{at: ms(1500), push: true, want: 10}, {at: ms(1750), push: true, want: 10},
			},
			cuts: 7, pushbacks: 8, min: 10, below: ms(1750),
		},
		{
			name: "floor: 1 connect/s", target: 20,
			steps: []step{
				{at: 0, push: true, want: 10}, {at: ms(250), push: true, want: 5},
				{at: ms(500), push: true, want: 2.5}, {at: ms(750), push: true, want: 1.25},
				{at: ms(1000), push: true, want: 1}, {at: ms(1250), push: true, want: 1},
			},
			cuts: 5, pushbacks: 6, min: 1, below: ms(1250),
		},
		{
			name: "floor: a target under 1/s", target: 0.5,
			steps: []step{{at: 0, push: true, want: 0.5}},
			cuts:  0, pushbacks: 1, min: 0.5,
		},
		{
			name: "a tenth of the target back per quiet second, up to the target", target: 1000,
			steps: []step{
				{at: s, push: true, want: 500},
				{at: ms(1999), want: 500},
				{at: 2 * s, want: 600},
				{at: 3 * s, want: 700},
				{at: ms(3500), want: 700},
				{at: 4 * s, want: 800},
				{at: 5 * s, want: 900},
				{at: 6 * s, want: 1000},
				{at: 9 * s, want: 1000},
			},
			cuts: 1, pushbacks: 1, min: 500, below: 5 * s,
		},
		{
			name: "a pushback starts the quiet second over", target: 1000,
			steps: []step{
				{at: 0, push: true, want: 500},
				{at: ms(900), push: true, want: 250},
				{at: ms(1500), want: 250},
				{at: ms(1899), want: 250},
				{at: ms(1900), want: 350},
			},
			cuts: 2, pushbacks: 2, min: 250, below: ms(1900),
		},
		{
			name: "Retry-After pauses new connects", target: 1000,
			steps: []step{
				{at: s, push: true, pause: 2 * s, want: 0},
				{at: ms(2500), want: 0},
				{at: ms(2999), want: 0},
				{at: 3 * s, want: 700},
			},
			cuts: 1, pushbacks: 1, min: 500, below: 2 * s, paused: 2 * s,
		},
		{
			// a target under 1/s is its own floor: no cut, only the pause
			name: "the pause counts below the target", target: 0.5,
			steps: []step{
				{at: s, push: true, pause: 2 * s, want: 0},
				{at: 2 * s, want: 0},
				{at: 3 * s, want: 0.5},
				{at: 5 * s, want: 0.5},
			},
			cuts: 0, pushbacks: 1, min: 0.5, below: 2 * s, paused: 2 * s,
		},
		{
			name: "open loop only counts", target: 1000, off: true,
			steps: []step{
				{at: 0, push: true, pause: s, want: 1000},
				{at: s, push: true, want: 1000},
				{at: 2 * s, want: 1000},
			},
			cuts: 0, pushbacks: 2, min: 1000,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c rampControl
			t0 := int64(1e12)
			c.start(tc.target, !tc.off, t0)
			for _, st := range tc.steps {
				now := t0 + int64(st.at)
				if st.push {
					c.pushback(now, st.pause)
				} else {
					c.advance(now)
				}
				if got := c.allowed(now); math.Abs(got-st.want) > 1e-9 {
					t.Fatalf("at %v (push %v): allowed %v, want %v", st.at, st.push, got, st.want)
				}
			}
			if c.cuts != tc.cuts || c.pushbacks != tc.pushbacks || math.Abs(c.minRate-tc.min) > 1e-9 {
				t.Errorf("cuts %d, pushbacks %d, min %v; want %d, %d, %v", c.cuts, c.pushbacks, c.minRate, tc.cuts, tc.pushbacks, tc.min)
			}
			if time.Duration(c.below) != tc.below || time.Duration(c.paused) != tc.paused {
				t.Errorf("below the target %v, paused %v; want %v, %v", time.Duration(c.below), time.Duration(c.paused), tc.below, tc.paused)
			}
		})
	}
}

func TestRampWindow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target float64
		want   int
	}{
		{"a second's worth", 500, 500},
		{"at least 16", 3, 16},
		{"rounded", 99.6, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c rampControl
			c.start(tc.target, true, 0)
			if c.window != tc.want {
				t.Fatalf("window %d, want %d", c.window, tc.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		reason            string
		refused, pushback bool
	}{
		{"http_503_overloaded", true, true},
		{"http_503_node_full", true, true},
		{"http_503_connect_rate_limited", true, true},
		{"http_503", true, true},
		{"http_429", true, true},
		{"closed_1013_before_welcome", true, true},
		{"http_408_handshake_timeout", false, true},
		{"timeout_connect", false, true},
		{"timeout_upgrade", false, true},
		{"timeout_welcome", false, true},
		{"http_5030", false, false},
		{"http_500", false, false},
		{"http_401_unauthorized", false, false},
		{"closed_4401_before_welcome", false, false},
		{"closed_1013", false, false},
		{"connect_ECONNREFUSED", false, false},
		{"eof_before_welcome", false, false},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			r, p := classify(tc.reason)
			if r != tc.refused || p != tc.pushback {
				t.Fatalf("classify(%q) = %v, %v; want %v, %v", tc.reason, r, p, tc.refused, tc.pushback)
			}
		})
	}
}

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
	// step: at time at, ok attempts end welcomed and push end pushed back
	// (each with pause); then the rate allowed must be want.
	type step struct {
		at       time.Duration
		ok, push int
		pause    time.Duration
		want     float64
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
			name: "a period with a tenth pushed back cuts the rate to 70%", target: 1000,
			steps: []step{
				{at: ms(50), ok: 90, push: 10, want: 1000},
				{at: ms(999), want: 1000},
				{at: s, want: 700},
			},
			cuts: 1, pushbacks: 10, min: 700,
		},
		{
			name: "fewer pushbacks than a tenth: no cut", target: 1000,
			steps: []step{
				{at: ms(100), ok: 91, push: 9, want: 1000},
				{at: s, want: 1000},
				{at: 5 * s, want: 1000},
			},
			cuts: 0, pushbacks: 9, min: 1000,
		},
		{
			name: "no early weighing in a period's first 100 ms", target: 1000,
			steps: []step{
				{at: ms(50), push: 50, want: 1000},
				{at: ms(99), want: 1000},
				{at: s, want: 700},
			},
			cuts: 1, pushbacks: 50, min: 700,
		},
		{
			name: "early: eight pushbacks a tenth of the period's answers", target: 1000,
			steps: []step{
				{at: ms(50), ok: 63, push: 7, want: 1000},
				{at: ms(150), push: 1, want: 700},
				{at: ms(200), push: 7, want: 700},
				{at: ms(250), push: 1, want: 490},
				{at: ms(300), push: 8, want: 490}, // the new period is 50 ms old
				{at: ms(350), ok: 100, push: 1, want: 490},
				{at: ms(1250), want: 590}, // 9 of 109 in the period from 250 ms
				{at: ms(2250), want: 690},
			},
			cuts: 2, pushbacks: 25, min: 490, below: ms(2100),
		},
		{
			name: "floor: 1% of the target", target: 1000,
			steps: []step{
				{at: 0, push: 1}, {at: s, push: 1}, {at: 2 * s, push: 1}, {at: 3 * s, push: 1},
				{at: 4 * s, push: 1}, {at: 5 * s, push: 1}, {at: 6 * s, push: 1}, {at: 7 * s, push: 1},
				{at: 8 * s, push: 1}, {at: 9 * s, push: 1}, {at: 10 * s, push: 1}, {at: 11 * s, push: 1},
				{at: 12 * s, push: 1}, {at: 13 * s, push: 1},
				{at: 14 * s, want: 10},
			},
			cuts: 13, pushbacks: 14, min: 10, below: 13 * s,
		},
		{
			name: "floor: 1 connect/s", target: 5,
			steps: []step{
				{at: 0, push: 1}, {at: s, push: 1}, {at: 2 * s, push: 1}, {at: 3 * s, push: 1},
				{at: 4 * s, push: 1}, {at: 5 * s, push: 1},
				{at: 6 * s, want: 1},
			},
			cuts: 5, pushbacks: 6, min: 1, below: 5 * s,
		},
		{
			name: "floor: a target under 1/s", target: 0.5,
			steps: []step{{at: 0, push: 1}, {at: s, want: 0.5}},
			cuts:  0, pushbacks: 1, min: 0.5,
		},
		{
			name: "a tenth of the target back per quiet period, up to the target", target: 1000,
			steps: []step{
				{at: ms(500), push: 1, want: 1000},
				{at: s, want: 700},
				{at: ms(1999), want: 700},
				{at: 2 * s, want: 800},
				{at: ms(2500), ok: 95, push: 5, want: 800},
				{at: 3 * s, want: 900},
				{at: 4 * s, want: 1000},
				{at: 9 * s, want: 1000},
			},
			cuts: 1, pushbacks: 6, min: 700, below: 3 * s,
		},
		{
			name: "most pushed back with Retry-After: hold new connects", target: 1000,
			steps: []step{
				{at: ms(50), ok: 40, push: 60, pause: 2 * s, want: 1000},
				{at: s, want: 0},
				{at: ms(2999), want: 0},
				{at: 3 * s, want: 900}, // the two periods in the pause had no pushbacks
			},
			cuts: 1, pushbacks: 60, min: 700, below: 2 * s, paused: 2 * s,
		},
		{
			name: "a share under a half does not pause", target: 1000,
			steps: []step{
				{at: ms(50), ok: 60, push: 40, pause: 2 * s, want: 1000},
				{at: s, want: 700},
			},
			cuts: 1, pushbacks: 40, min: 700,
		},
		{
			// a target under 1/s is its own floor: no cut, only the pause
			name: "the pause counts below the target", target: 0.5,
			steps: []step{
				{at: ms(500), push: 1, pause: 2 * s, want: 0.5},
				{at: s, want: 0},
				{at: 2 * s, want: 0},
				{at: 3 * s, want: 0.5},
				{at: 5 * s, want: 0.5},
			},
			cuts: 0, pushbacks: 1, min: 0.5, below: 2 * s, paused: 2 * s,
		},
		{
			name: "open loop only counts", target: 1000, off: true,
			steps: []step{
				{at: 0, push: 100, pause: s, want: 1000},
				{at: s, push: 100, want: 1000},
				{at: 2 * s, want: 1000},
			},
			cuts: 0, pushbacks: 200, min: 1000,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c rampControl
			t0 := int64(1e12)
			c.start(tc.target, !tc.off, t0)
			for _, st := range tc.steps {
				now := t0 + int64(st.at)
				for range st.ok {
					c.attemptEnded(now)
				}
				for range st.push {
					c.attemptEnded(now)
					c.pushback(now, st.pause)
				}
				c.advance(now)
				if st.want == 0 && st.ok+st.push > 0 {
					continue // a step that only feeds the period
				}
				if got := c.allowed(now); math.Abs(got-st.want) > 1e-9 {
					t.Fatalf("at %v: allowed %v, want %v", st.at, got, st.want)
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

func TestRampLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want time.Duration
	}{
		{"default: 1.5 × conns/rate + connect timeout + 5 s", Config{Conns: 1000, ConnectRate: 100, ConnectTimeout: 10 * time.Second}, 30 * time.Second},
		{"--ramp-timeout", Config{Conns: 1000, ConnectRate: 100, ConnectTimeout: 10 * time.Second, RampTimeout: time.Minute}, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.RampLimit(); got != tc.want {
				t.Fatalf("RampLimit %v, want %v", got, tc.want)
			}
		})
	}
}

package loadtest

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
)

// A gateway that admits 100 upgrades a second (503 connect_rate_limited,
// Retry-After 1, past it) and a ramp asked for ten times that: both ramps
// open every connection, refused devices retrying, but the one that backs
// off is refused less often than the open-loop one.
func TestRampBackoff(t *testing.T) {
	f := startFleet(t)
	const (
		conns  = 300
		rate   = 1000.0
		admits = 100.0
		reason = "http_503_connect_rate_limited"
	)
	refused := map[bool]int64{}
	for _, tc := range []struct {
		name string
		open bool
	}{
		{"back-off", false},
		{"open loop", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config(ScenarioConnect)
			// a gateway of its own: each run starts with a full bucket
			cfg.URLs = []string{f.startGateway(t, "slow-"+strings.ReplaceAll(tc.name, " ", "-"), func(o *gateway.Options) { o.MaxConnectRate = admits })}
			cfg.MetricsURLs = nil
			cfg.Conns, cfg.ConnectRate, cfg.Duration = conns, rate, 100*time.Millisecond
			cfg.OpenLoopRamp = tc.open
			cfg.ProgressInterval = 200 * time.Millisecond
			start := time.Now()
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := res.Connections
			if c.Ramp == nil {
				t.Fatal("no ramp figures")
			}
			t.Logf("%s: ramp %.2f s, attempts %d, refusals %v, ramp %+v", time.Since(start).Round(time.Millisecond), c.RampSeconds, c.Attempts, c.Refusals, *c.Ramp)
			if !c.RampDone || c.EverWelcomed != conns || len(res.Failures) > 0 {
				t.Fatalf("ramp done %v, welcomed %d of %d, failures %q", c.RampDone, c.EverWelcomed, conns, res.Failures)
			}
			var n int64
			for k, v := range c.Refusals {
				n += v
				if c.Errors[k] != v {
					t.Errorf("refusal %s: %d, errors %d: want it in both", k, v, c.Errors[k])
				}
			}
			if c.Refusals[reason] == 0 || n != c.Refusals[reason] {
				t.Fatalf("refusals %v, want %s only", c.Refusals, reason)
			}
			refused[tc.open] = n
			if c.Attempts != conns+c.Failures {
				t.Errorf("attempts %d != %d connections + %d failed", c.Attempts, conns, c.Failures)
			}
			r := c.Ramp
			if r.Backoff == tc.open || r.Pushbacks == 0 {
				t.Errorf("ramp %+v", *r)
			}
			report := cfg.Stdout.(*bytes.Buffer).String()
			progress := cfg.Stderr.(*bytes.Buffer).String()
			if !strings.Contains(report, "refused (retried)") || !strings.Contains(report, reason) {
				t.Errorf("report lacks the refusals:\n%s", report)
			}
			if !strings.Contains(progress, " refused") {
				t.Errorf("progress lacks the refusals:\n%s", progress)
			}
			if tc.open {
				if r.RateCuts != 0 || r.MinRate != rate || r.BelowTargetSeconds != 0 || !strings.Contains(report, "open loop") {
					t.Errorf("open loop backed off: %+v", *r)
				}
				return
			}
			if r.RateCuts == 0 || r.MinRate >= rate/2 || r.BelowTargetSeconds <= 0 || r.PausedSeconds <= 0 || r.PausedSeconds > r.BelowTargetSeconds || r.InFlightLimit != int64(rate) {
				t.Errorf("ramp did not back off: %+v", *r)
			}
			if !strings.Contains(report, "ramp back-off") {
				t.Errorf("report lacks the back-off:\n%s", report)
			}
		})
	}
	t.Logf("refused: back-off %d, open loop %d", refused[false], refused[true])
	// The open loop starts every connection in 0.3 s: all but the bucket's
	// 100 and its refill are refused, retry together a second later, and
	// so on (about 240 refusals). Backing off, a loop weighs its answers
	// after 100 ms: most refused, it cuts its rate and waits out the
	// Retry-After, a few times over the ramp (about 125 refusals).
	if refused[true] == 0 || refused[false]*3 > refused[true]*2 {
		t.Errorf("refused: back-off %d, open loop %d: want under two thirds", refused[false], refused[true])
	}
}

// A fleet that accepts connections and never answers their upgrade: the
// ramp starts a second's worth of attempts and then holds, however long
// its connects have been due, until some finish.
func TestRampInFlightLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	const rate, window = 20.0, 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			if len(held) == window {
				// the window is full: a second more is 20 connects due
				time.AfterFunc(time.Second, cancel)
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	f := &fleet{wsURL: "ws://" + ln.Addr().String() + "/ws"}
	cfg := f.config(ScenarioConnect)
	cfg.MetricsURLs = nil
	cfg.Conns, cfg.ConnectRate, cfg.Pollers = 200, rate, 1
	cfg.Progress = "off" // the interruption's notice and progress lines would share a bytes.Buffer
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Connections
	t.Logf("attempts %d, errors %v, ramp %+v", c.Attempts, c.Errors, *c.Ramp)
	if !res.Interrupted {
		t.Fatalf("not interrupted: %+v", c)
	}
	if c.Attempts != window || c.Ramp.InFlightLimit != window {
		t.Errorf("attempts %d, in-flight limit %d: want %d", c.Attempts, c.Ramp.InFlightLimit, window)
	}
	if c.Ramp.HeldSeconds < 0.5 || c.Ramp.Pushbacks != 0 {
		t.Errorf("ramp %+v: want held for about a second and no pushback", *c.Ramp)
	}
}

// The report shows refusals apart from the other errors, and the ramp's
// back-off when there is something to say.
func TestReportRampRows(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ramp      *RampResult
		want, not []string
	}{
		{
			name: "backed off",
			ramp: &RampResult{Backoff: true, Pushbacks: 40, RateCuts: 6, MinRate: 62.5, BelowTargetSeconds: 3.5, PausedSeconds: 1.25, InFlightLimit: 2000, HeldSeconds: 0.4},
			want: []string{"ramp back-off", "40 pushbacks", "6 rate cuts", "lowest 63/s", "3.50 s below target (1.25 s paused)", "held 0.40 s at 2,000 in flight"},
		},
		{
			name: "never pushed back",
			ramp: &RampResult{Backoff: true, MinRate: 1000, InFlightLimit: 1000},
			not:  []string{"ramp back-off", "open loop"},
		},
		{
			name: "open loop",
			ramp: &RampResult{Pushbacks: 7, MinRate: 1000},
			want: []string{"open loop (--ramp-backoff=false)", "7 pushbacks"},
			not:  []string{"ramp back-off"},
		},
		{
			name: "a result without ramp figures",
			not:  []string{"ramp back-off", "open loop"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sampleResult()
			res.Connections.Errors = map[string]int64{"http_503_overloaded": 30, "closed_1013_before_welcome": 2, "timeout_welcome": 4}
			res.Connections.Refusals = map[string]int64{"http_503_overloaded": 30, "closed_1013_before_welcome": 2}
			res.Connections.Ramp = tc.ramp
			var b bytes.Buffer
			WriteReport(&b, res)
			txt := b.String()
			for _, w := range append(tc.want, "refused (retried)", "32", "closed_1013_before_welcome 2  http_503_overloaded 30", "error timeout_welcome") {
				if !strings.Contains(txt, w) {
					t.Errorf("report lacks %q:\n%s", w, txt)
				}
			}
			for _, n := range append(tc.not, "error http_503_overloaded", "error closed_1013") {
				if strings.Contains(txt, n) {
					t.Errorf("report has %q:\n%s", n, txt)
				}
			}
			path := t.TempDir() + "/r.json"
			if err := writeJSON(path, res); err != nil {
				t.Fatal(err)
			}
			back, err := ReadResult(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Connections.Ramp, tc.ramp) || !reflect.DeepEqual(back.Connections.Refusals, res.Connections.Refusals) {
				t.Errorf("after the JSON round trip: ramp %+v, refusals %v", back.Connections.Ramp, back.Connections.Refusals)
			}
		})
	}
}

func TestRampNote(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Progress
		want string
	}{
		{"nothing to say", Progress{RampRate: 1000, RampTarget: 1000}, ""},
		{"ramp done", Progress{Refused: 3}, ", 3 refused"},
		{"backing off", Progress{Refused: 1204, RampRate: 500, RampTarget: 2000}, ", 1,204 refused, ramp 500/s of 2,000/s"},
		{"paused", Progress{Refused: 9, RampRate: 0, RampTarget: 2000}, ", 9 refused, ramp paused"},
		{"timeouts only", Progress{RampRate: 250, RampTarget: 1000}, ", ramp 250/s of 1,000/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rampNote(tc.p); got != tc.want {
				t.Fatalf("rampNote = %q, want %q", got, tc.want)
			}
		})
	}
}

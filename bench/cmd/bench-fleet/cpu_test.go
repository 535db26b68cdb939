package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 0 0"
	if got := parseProcStat(line); got != 3.25 {
		t.Fatalf("%v", got)
	}
	if parseProcStat("garbage") != 0 {
		t.Fatal("garbage parsed")
	}
}

func TestParseMachineStat(t *testing.T) {
	busy, total := parseMachineStat(strings.NewReader("cpu  100 10 50 800 40 0 5 0 7 0\ncpu0 1 2 3 4 5 6 7 8\n"))
	// busy: user+nice+system+irq+softirq+steal = 165; total adds idle and iowait; guest is in user.
	if busy != 1.65 || total != 10.05 {
		t.Fatalf("busy %v total %v", busy, total)
	}
}

func TestParseMemStats(t *testing.T) {
	m, ok := parseMemStats(strings.NewReader(`heap profile: 1: 2 [3: 4] @ heap/1048576
# runtime.MemStats
# Alloc = 19244704
# Sys = 43489544
# HeapAlloc = 19244704
# HeapSys = 37060608
# HeapIdle = 10002432
# HeapInuse = 27058176
# HeapReleased = 4063232
# Stack = 688128 / 688128
`))
	if !ok || m.HeapAlloc != 19244704 || m.HeapInuse != 27058176 || m.HeapIdle != 10002432 || m.HeapReleased != 4063232 || m.StackInuse != 688128 || m.Sys != 43489544 {
		t.Fatalf("%+v %v", m, ok)
	}
	if _, ok := parseMemStats(strings.NewReader("# Alloc = 1\n")); ok {
		t.Fatal("a page without MemStats accepted")
	}
}

func TestPhaseWindows(t *testing.T) {
	t0 := time.Now()
	at := func(s, busy, gw float64) cpuSnap {
		return cpuSnap{At: t0.Add(time.Duration(s * float64(time.Second))), Busy: busy, Gateways: gw, NATS: busy / 10}
	}
	var p phaseSnaps
	p.add("start", at(0, 0, 0))
	p.add("ramp", at(1, 1, 0.2))
	p.add("deliver", at(11, 19, 4.2))
	p.add("deliver", at(12, 100, 100)) // a phase's first sighting counts
	p.add("drain", at(21, 37, 6.2))
	p.add("end", at(23, 40, 7))
	d := p.window("deliver", "closing", "drain")
	if d == nil || d.Seconds != 10 || math.Abs(d.MachineBusy-1.8) > 1e-9 || math.Abs(d.Gateways-0.2) > 1e-9 || math.Abs(d.NATS-0.18) > 1e-9 || math.Abs(d.Rest-1.42) > 1e-9 {
		t.Fatalf("%+v", d)
	}
	// Without the phases named, the next phase ends the window.
	if r := p.window("ramp", "hold"); r == nil || r.Seconds != 10 {
		t.Fatalf("%+v", r)
	}
	if p.window("hold") != nil || p.window("end") != nil {
		t.Fatal("a window from a phase not seen, or the last one")
	}
}

func TestDiagnostics(t *testing.T) {
	sp := &CPUSplit{MachineBusy: 1.9, Gateways: 0.9, NATS: 0.1, Router: 0.2, Rest: 0.7}
	rep := &Report{Runs: []*RunRecord{
		{System: sysWsfleet, Run: 1, Connect: &ConnectSample{RSSPerConn: 2000, RampSplit: sp, IdleSplit: &CPUSplit{Gateways: 0.02},
			GoPerConn: &GoPerConn{HeapLive: 1200, HeapFragment: 400, HeapIdleRetained: 300, Stacks: 0, Other: 100}},
			Deliver: &DeliverSample{NetDeliveriesPerCPU: 90000, Split: sp}},
		{System: sysBaseline, Run: 1, Deliver: &DeliverSample{NetDeliveriesPerCPU: 30000}},
		{System: sysWsfleet, Run: 2, Deliver: &DeliverSample{NetDeliveriesPerCPU: 110000}},
	}}
	all := strings.Join(diagnostics(rep), "\n")
	for _, want := range []string{
		"CPU in cores, wsfleet run 1: ramp: machine 1.90 busy (gateways 0.90, NATS 0.10, router 0.20, loadtest and the rest 0.70); idle hold: gateways 0.020; deliver:",
		"RSS per connection, wsfleet run 1: 2,000 B = Go heap live 1,200 + heap fragmentation 400 + idle heap kept from the OS 300 + stacks 0 + the rest 100",
		"net of the idle connections' CPU (measured in the hold): wsfleet 100,000 (90,000–110,000), baseline 30,000, ratio 3.33×",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "wsfleet run 2") {
		t.Errorf("only the first run of each system is shown:\n%s", all)
	}
}

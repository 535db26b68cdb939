package main

import (
	"slices"
	"strings"
	"testing"
)

// This machine: 20,000 open files, the default port range, 23 GiB free.
var devBox = Machine{FDHard: 20000, PortLow: 32768, PortHigh: 60999, MemTotal: 24 << 30, MemAvailable: 23 << 30,
	CPUs: 2, FileMax: 2466177, ConntrackMax: 262144, ConntrackCount: 0}

func TestPlanDefaultScale(t *testing.T) {
	p := makePlan(devBox, PlanInput{Conns: 100000, Baseline: true, ListenPorts: []int{27000}})
	if len(p.Advice) != 0 {
		t.Fatalf("advice for 100k on the dev box: %v", p.Advice)
	}
	// 19,744 per process at most; planned at 85 %: 16,782 → 6 processes.
	if p.ConnsPerGateway != 19744 || p.Gateways != 6 {
		t.Fatalf("gateways %d (at most %d each), want 6 (19,744)", p.Gateways, p.ConnsPerGateway)
	}
	if p.LoadWorkers != 6 {
		t.Fatalf("loadtest workers %d, want 6", p.LoadWorkers)
	}
	// Ranges under a quarter full: 4 × 100,000 / 28,232 → 15 addresses.
	if p.SourceIPs != "127.0.0.2-127.0.0.16" || p.SourceIPCount != 15 || p.PortCapacity != 15*28232 {
		t.Fatalf("source %s (%d), capacity %d", p.SourceIPs, p.SourceIPCount, p.PortCapacity)
	}
	if p.MemNeedBaseline <= p.MemNeedWsfleet || p.MemNeed != p.MemNeedBaseline {
		t.Fatalf("memory: wsfleet %d, baseline %d, need %d", p.MemNeedWsfleet, p.MemNeedBaseline, p.MemNeed)
	}
}

func TestPlanMillion(t *testing.T) {
	p := makePlan(devBox, PlanInput{Conns: 1000000})
	if len(p.Advice) != 0 {
		t.Fatalf("advice for a million, wsfleet only: %v", p.Advice)
	}
	if p.Gateways != 60 || p.LoadWorkers != 53 || p.SourceIPCount != 142 {
		t.Fatalf("gateways %d, workers %d, source addresses %d", p.Gateways, p.LoadWorkers, p.SourceIPCount)
	}
	// The baseline cannot hold it: the advice says so, and what to do.
	p = makePlan(devBox, PlanInput{Conns: 1000000, Baseline: true})
	if len(p.Advice) != 1 || !strings.Contains(p.Advice[0], "--skip-baseline") {
		t.Fatalf("advice %v", p.Advice)
	}
}

func TestPlanRefusesWithAdvice(t *testing.T) {
	small := devBox
	small.MemAvailable = 2 << 30
	p := makePlan(small, PlanInput{Conns: 500000})
	if len(p.Advice) != 1 || !strings.Contains(p.Advice[0], "lower --conns to about") {
		t.Fatalf("memory advice %v", p.Advice)
	}
	// The suggested scale fits.
	var n int
	for _, f := range strings.Fields(p.Advice[0][strings.Index(p.Advice[0], "about "):]) {
		if f != "about" {
			n = atoiCommas(f)
			break
		}
	}
	if n <= 0 || len(makePlan(small, PlanInput{Conns: n}).Advice) != 0 {
		t.Fatalf("suggested %d does not fit", n)
	}

	// Too few source addresses given for the ports.
	p = makePlan(devBox, PlanInput{Conns: 100000, SourceIPs: "127.0.0.2-127.0.0.4"})
	if len(p.Advice) != 1 || !strings.Contains(p.Advice[0], "--source-ips 127.0.0.2-127.0.0.5") {
		t.Fatalf("port advice %v", p.Advice)
	}
	// More than loopback can give: widen the range.
	p = makePlan(devBox, PlanInput{Conns: 8000000, SourceIPs: "127.0.0.2-127.0.0.254"})
	if !strings.Contains(strings.Join(p.Advice, "\n"), "--port-range") {
		t.Fatalf("advice %v", p.Advice)
	}
	// Source addresses off loopback are refused.
	p = makePlan(devBox, PlanInput{Conns: 1000, SourceIPs: "10.0.0.1-10.0.0.3"})
	if len(p.Advice) == 0 || !strings.Contains(p.Advice[0], "loopback only") {
		t.Fatalf("advice %v", p.Advice)
	}
	// Too few gateways for the open files.
	p = makePlan(devBox, PlanInput{Conns: 100000, Gateways: 4})
	if len(p.Advice) != 1 || !strings.Contains(p.Advice[0], "use at least 6") {
		t.Fatalf("gateway advice %v", p.Advice)
	}
	// Connection tracking that would overflow.
	ct := devBox
	ct.ConntrackCount = 10
	if p = makePlan(ct, PlanInput{Conns: 300000}); !strings.Contains(strings.Join(p.Advice, "\n"), "nf_conntrack_max") {
		t.Fatalf("conntrack advice %v", p.Advice)
	}
	// A listen port inside the ephemeral range is noted.
	if p = makePlan(devBox, PlanInput{Conns: 1000, ListenPorts: []int{40000}}); !strings.Contains(strings.Join(p.Notes, "\n"), "inside the ephemeral range") {
		t.Fatalf("notes %v", p.Notes)
	}
}

func atoiCommas(s string) int {
	n := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			n = n*10 + int(c-'0')
		case c == ',':
		default:
			return n
		}
	}
	return n
}

func TestCountLoopbackIPs(t *testing.T) {
	for spec, want := range map[string]int{
		"127.0.0.2-127.0.0.60":            59,
		"127.0.0.2,127.0.0.3,127.0.0.3":   2,
		"127.0.0.250-127.0.1.5":           12,
		"127.0.0.2-127.0.0.4, 127.0.0.10": 4,
	} {
		if n, err := countLoopbackIPs(spec); err != nil || n != want {
			t.Errorf("%q: %d, %v; want %d", spec, n, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.9-127.0.0.2", "192.168.1.1", "127.0.0.1-128.0.0.1", "::1", "x"} {
		if _, err := countLoopbackIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	if lo, hi, err := parsePortRange("1024-65000"); err != nil || lo != 1024 || hi != 65000 {
		t.Fatal(lo, hi, err)
	}
	for _, bad := range []string{"", "80-1000", "1024-70000", "50000-40000", "30000-30500", "a-b"} {
		if _, _, err := parsePortRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMillionDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		rate float64
		env  []string
	}{
		{"the measured settings", []string{"--million"}, 3000,
			[]string{"WSFLEET_GATEWAY_AUTH_TIMEOUT=60s", "WSFLEET_GATEWAY_HANDSHAKE_TIMEOUT=30s", "WSFLEET_GATEWAY_SHED_LAG=3s", "WSFLEET_GATEWAY_HEARTBEAT=120s", "WSFLEET_GATEWAY_IDLE_TIMEOUT=360s"}},
		{"flags win", []string{"--million", "--connect-rate", "3000", "--gateway-env", "WSFLEET_GATEWAY_HEARTBEAT=20s,GOGC=50"}, 3000,
			[]string{"WSFLEET_GATEWAY_HEARTBEAT=20s", "GOGC=50", "WSFLEET_GATEWAY_AUTH_TIMEOUT=60s", "WSFLEET_GATEWAY_HANDSHAKE_TIMEOUT=30s", "WSFLEET_GATEWAY_SHED_LAG=3s", "WSFLEET_GATEWAY_IDLE_TIMEOUT=360s"}},
		{"not without --million", []string{"--conns", "20000"}, 8000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if c.connectRate != tc.rate || !slices.Equal(c.gatewayEnv, tc.env) {
				t.Fatalf("rate %v env %q; want %v %q", c.connectRate, c.gatewayEnv, tc.rate, tc.env)
			}
		})
	}
}

package main

import (
	"math"
	"strings"
	"testing"

	"github.com/wsfleet/wsfleet/loadtest"
)

func TestStatsOf(t *testing.T) {
	s := statsOf([]float64{3, 1, math.NaN(), 2})
	if s.N != 3 || s.Min != 1 || s.Median != 2 || s.Max != 3 {
		t.Fatalf("%+v", s)
	}
	if s := statsOf([]float64{4, 1, 2, 3}); s.Median != 2.5 {
		t.Fatalf("even median %v", s.Median)
	}
	if s := statsOf(nil); s.N != 0 || s.Median != 0 {
		t.Fatalf("%+v", s)
	}
}

// A report of two runs of each system becomes the table's figures: medians,
// ratios wsfleet / baseline, and whether the targets are met.
func TestFigures(t *testing.T) {
	rep := &Report{Settings: Settings{Conns: 100000}, Peak: &PeakSearch{Peak: 20000, Rate: 10000}}
	add := func(sys string, rss, cps, dpc, p99 float64, lasts ...float64) {
		b := &BroadcastSample{}
		for _, l := range lasts {
			b.Each = append(b.Each, BcastOne{Receivers: 100000, LastMs: l})
		}
		rep.Runs = append(rep.Runs, &RunRecord{System: sys,
			Connect:   &ConnectSample{Conns: 100000, RSSPerConn: rss, RampCPU: 1, ConnsPerCPU: cps},
			Deliver:   &DeliverSample{Delivered: 1000, CPU: 1, DeliveriesPerCPU: dpc, P99: p99},
			Broadcast: b})
	}
	add(sysWsfleet, 900, 25000, 80000, 3, 100, 120)
	add(sysBaseline, 30000, 8000, 20000, 8, 400)
	add(sysWsfleet, 1000, 21000, 100000, 4, 140)
	add(sysBaseline, 32000, 9000, 22000, 9, 500)
	// A run that failed before measuring adds nothing.
	rep.Runs = append(rep.Runs, &RunRecord{System: sysBaseline, Errors: []string{"fleet: boom"}})

	figs := figures(rep)
	byID := map[string]Figure{}
	for _, f := range figs {
		byID[f.ID] = f
	}
	if len(figs) != 7 {
		t.Fatalf("%d figures", len(figs))
	}
	rss := byID["rss_per_conn"]
	if rss.Wsfleet.Median != 950 || rss.Baseline.Median != 31000 || rss.Wsfleet.N != 2 || !*rss.Met {
		t.Fatalf("rss %+v", rss)
	}
	if r := byID["rss_ratio"]; math.Abs(1/r.Ratio-31000.0/950) > 1e-9 || !*r.Met {
		t.Fatalf("rss ratio %+v", r)
	}
	if c := byID["conns_per_cpu"]; c.Wsfleet.Median != 23000 || !*c.Met {
		t.Fatalf("conns/cpu %+v", c)
	}
	if d := byID["deliveries_per_cpu"]; math.Abs(d.Ratio-90000.0/21000) > 1e-9 || !*d.Met || !strings.Contains(d.Name, "10,000 msg/s") {
		t.Fatalf("deliveries %+v", d)
	}
	if p := byID["p99_half_peak"]; p.Wsfleet.Median != 3.5 || !*p.Met || !strings.Contains(p.Name, "peak 20,000") {
		t.Fatalf("p99 %+v", p)
	}
	// Every broadcast is a sample.
	if b := byID["broadcast_last"]; b.Wsfleet.N != 3 || b.Wsfleet.Median != 120 || b.Baseline.Median != 450 || !*b.Met {
		t.Fatalf("broadcast %+v", b)
	}
	if m := byID["million"]; m.Met != nil || m.Text != "not run (--million)" {
		t.Fatalf("million %+v", m)
	}

	// Missed targets.
	rep.Runs[0].Connect.RSSPerConn, rep.Runs[2].Connect.RSSPerConn = 2000, 3000
	rep.Million = &MillionResult{Yes: false, Why: "peak 900,000 of 1,000,000 connections"}
	byID = map[string]Figure{}
	for _, f := range figures(rep) {
		byID[f.ID] = f
	}
	if *byID["rss_per_conn"].Met || *byID["rss_ratio"].Met {
		t.Fatalf("rss at 2,500 B met: %+v", byID["rss_per_conn"])
	}
	if m := byID["million"]; *m.Met || m.Text != "no" || m.Note == "" {
		t.Fatalf("million %+v", m)
	}
}

func TestNextProbe(t *testing.T) {
	var probes []Probe
	results := map[float64]bool{2000: true, 4000: true, 8000: true, 16000: false, 11300: true, 13400: false}
	var seen []float64
	for i := 0; i < 10; i++ {
		r := nextProbe(probes, 2000, 64000)
		if r == 0 {
			break
		}
		seen = append(seen, r)
		probes = append(probes, Probe{Rate: r, Pass: results[r]})
	}
	want := []float64{2000, 4000, 8000, 16000, 11300, 13400}
	if len(seen) != len(want) {
		t.Fatalf("probes %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("probes %v, want %v", seen, want)
		}
	}
	// The top of the range passes: stop there; the bottom fails: stop.
	if r := nextProbe([]Probe{{Rate: 64000, Pass: true}}, 2000, 64000); r != 0 {
		t.Fatal(r)
	}
	if r := nextProbe([]Probe{{Rate: 32000, Pass: true}}, 2000, 50000); r != 50000 {
		t.Fatal(r)
	}
	if r := nextProbe([]Probe{{Rate: 2000}}, 2000, 64000); r != 0 {
		t.Fatal(r)
	}
}

func TestJudgeProbe(t *testing.T) {
	steady := func(p50s ...float64) []loadtest.Point {
		var pts []loadtest.Point
		for _, v := range p50s {
			pts = append(pts, loadtest.Point{Acked: 100, LatCount: 100, LatP50: v})
		}
		return pts
	}
	ok := func() *loadtest.Result {
		return &loadtest.Result{
			Messages: &loadtest.MsgResult{RateTarget: 1000, Rate: 1000, Acked: 10000, DrainEnd: "complete",
				Counts: loadtest.SeqCounts{Expected: 10000, Delivered: 10000}},
			Series: steady(9, 1, 1.2, 1, 1.1, 1, 1.3, 1, 1.1, 50),
		}
	}
	if pass, why := judgeProbe(ok()); !pass {
		t.Fatal(why)
	}
	cases := map[string]func(*loadtest.Result){
		"skipped": func(r *loadtest.Result) { r.Messages.Skipped = 5 },
		"failed":  func(r *loadtest.Result) { r.Messages.Failed = 1 },
		"lost":    func(r *loadtest.Result) { r.Messages.Counts.Lost = 1 },
		"missing": func(r *loadtest.Result) { r.Messages.Counts.Delivered = 9999 },
		"drain":   func(r *loadtest.Result) { r.Messages.DrainEnd = "timeout" },
		"slow":    func(r *loadtest.Result) { r.Messages.Rate = 900 },
		"backlog": func(r *loadtest.Result) { r.Series = steady(1, 1, 2, 5, 20, 40, 80, 160, 320, 400) },
		"no msgs": func(r *loadtest.Result) { r.Messages = nil },
	}
	for name, mod := range cases {
		r := ok()
		mod(r)
		if pass, why := judgeProbe(r); pass || why == "" {
			t.Errorf("%s: pass %v (%q)", name, pass, why)
		}
	}
}

func TestSettled(t *testing.T) {
	mb := float64(1 << 20)
	if settled([]float64{100 * mb, 100 * mb}) {
		t.Fatal("two readings")
	}
	if !settled([]float64{200 * mb, 100 * mb, 100.3 * mb, 100.2 * mb}) {
		t.Fatal("flat tail not settled")
	}
	if settled([]float64{300 * mb, 200 * mb, 150 * mb}) {
		t.Fatal("falling series settled")
	}
}

func TestParseSample(t *testing.T) {
	s, err := parseSample(strings.NewReader(`# HELP process_cpu_seconds_total x
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.2e+08
wsfleet_gateway_connections 1000
wsfleet_gateway_connections_total{x="y"} 7
go_goroutines 9
`))
	if err != nil || s.CPU != 12.5 || s.RSS != 1.2e8 || s.Conns != 1000 {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := parseSample(strings.NewReader("process_cpu_seconds_total 1\n")); err == nil {
		t.Fatal("a page without RSS and connections accepted")
	}
}

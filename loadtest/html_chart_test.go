package loadtest

import (
	"bytes"
	"math"
	"regexp"
	"strings"
	"testing"
)

// Each chart is drawn when the run has something for it and replaced by
// a "no samples" note when not; every chart scales to the page (a viewBox,
// no fixed size).
func TestHTMLCharts(t *testing.T) {
	lat := func(r *Result) {
		r.Series = []Point{{T: 0}, {T: 1, Live: 10, LatCount: 5, LatP50: 1, LatP99: 4, LatMax: 9}, {T: 2, Live: 10, LatCount: 5, LatP50: 2, LatP99: 5, LatMax: 7}}
	}
	for _, tc := range []struct {
		name   string
		result func(*Result)
		want   []string // in the page
		banned []string // not in the page
	}{
		{
			name: "connect: no latency over time",
			result: func(r *Result) {
				r.Scenario, r.Messages = ScenarioConnect, nil
				r.Series = []Point{{T: 0}, {T: 1, Live: 50, Connects: 50}, {T: 2, Live: 100, Connects: 50}}
			},
			want:   []string{`<svg xmlns="http://www.w3.org/2000/svg" id="connections"`, `<figure class="nodata" id="latency">`, "No samples in this scenario: a connect run publishes nothing", "Handshake latency histogram"},
			banned: []string{`id="deliveries"`, `<svg xmlns="http://www.w3.org/2000/svg" id="latency"`},
		},
		{
			name: "broadcast: its latency over time",
			result: func(r *Result) {
				lat(r)
				r.Scenario, r.Messages = ScenarioBroadcast, nil
				r.Broadcasts = &BcastResult{Histogram: []HistBucket{{UpTo: 1, Count: 10}}}
			},
			want:   []string{`id="deliveries"`, `<svg xmlns="http://www.w3.org/2000/svg" id="latency"`, "Broadcast latency over time", "Broadcast latency histogram"},
			banned: []string{`class="nodata"`},
		},
		{
			name: "storm: the drop and the recovery marked, the dip in a band",
			result: func(r *Result) {
				lat(r)
				r.Scenario = ScenarioStorm
				r.Live = []LiveSpan{{T: 0, Dur: 0.4, Min: 0, Max: 10, Last: 10}, {T: 0.4, Dur: 0.4, Min: 5, Max: 10, Last: 10}}
				r.Marks = []Mark{{T: 0.5, Label: "drop: 5 reset"}, {T: 0.7, Label: "all back after 0.2 s"}}
			},
			want: []string{`<g class="marks">`, ">drop: 5 reset</text>", ">all back after 0.2 s</text>", "<polygon", "lowest to highest of each span", "phases and events of the run"},
		},
		{
			name: "deliver: every chart",
			result: func(r *Result) {
				lat(r)
			},
			want:   []string{`id="connections"`, `id="deliveries"`, `<svg xmlns="http://www.w3.org/2000/svg" id="latency"`, `id="histogram"`, "End-to-end latency over time"},
			banned: []string{`class="nodata"`, `class="marks"`},
		},
		{
			name: "nothing recorded: notes, no chart",
			result: func(r *Result) {
				*r = Result{Scenario: ScenarioConnect}
			},
			want:   []string{`<figure class="nodata" id="connections">`, `<figure class="nodata" id="latency">`, `<figure class="nodata" id="histogram">`},
			banned: []string{"<svg"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sampleResult()
			tc.result(res)
			var page bytes.Buffer
			if err := WriteHTML(&page, res); err != nil {
				t.Fatal(err)
			}
			p := page.String()
			for _, w := range tc.want {
				if !strings.Contains(p, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, b := range tc.banned {
				if strings.Contains(p, b) {
					t.Errorf("page has %q", b)
				}
			}
			for _, svg := range regexp.MustCompile(`<svg[^>]*>`).FindAllString(p, -1) {
				if !regexp.MustCompile(`viewBox="0 0 960 \d+"`).MatchString(svg) || strings.Contains(svg, " width=") || strings.Contains(svg, " height=") {
					t.Errorf("a chart of fixed size: %s", svg)
				}
			}
			for _, d := range regexp.MustCompile(`<g class="data">(.*?)</g>`).FindAllStringSubmatch(p, -1) {
				if !strings.Contains(d[1], "<polyline") && !strings.Contains(d[1], "<circle") && !strings.Contains(d[1], "<rect") {
					t.Errorf("a chart draws no data: %.300s", d[1])
				}
			}
		})
	}
}

// Thinning a line denser than the plot keeps its spikes and dips.
func TestThin(t *testing.T) {
	var pts []pt
	for i := range 100000 {
		y := 100.0
		switch i {
		case 31337:
			y = 0 // a spike (SVG y grows downwards)
		case 77777:
			y = 250 // a dip
		}
		pts = append(pts, pt{x: padL + float64(i)*plotW/100000, y: y})
	}
	got := thin(pts)
	if len(got) > 2*plotW+2 {
		t.Errorf("%d points left of %d, want at most two a pixel column", len(got), len(pts))
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, p := range got {
		lo, hi = min(lo, p.y), max(hi, p.y)
		if i > 0 && p.x < got[i-1].x {
			t.Fatalf("points out of order at %d", i)
		}
	}
	if lo != 0 || hi != 250 {
		t.Errorf("thinned line spans y %v…%v, want the spike 0 and the dip 250 kept", lo, hi)
	}
}

// The y axis: linear ticks of 1, 2 or 5 times a power of ten up to the
// data's top; latencies on decades.
func TestYScale(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ms     bool
		ys     []float64
		labels string
	}{
		{"counts", false, []float64{0, 210}, "0 100 200 300"},
		{"counts at a tick", false, []float64{0, 200}, "0 50 100 150 200"},
		{"thousands", false, []float64{12000}, "0 5k 10k 15k"},
		{"all zero", false, []float64{0, 0}, "0 1"},
		{"latency in one decade", true, []float64{1.5, 8}, "1 ms 2 ms 5 ms 10 ms"},
		{"latency over decades", true, []float64{0.3, 2000}, "0.1 ms 1 ms 10 ms 100 ms 1 s 10 s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := chart{ms: tc.ms, lines: []line{{ys: tc.ys}}}
			s := c.yScale()
			if got := strings.Join(s.labels, " "); got != tc.labels {
				t.Errorf("labels %q, want %q", got, tc.labels)
			}
			top, bot := s.at(s.ticks[len(s.ticks)-1]), s.at(s.ticks[0])
			if math.Abs(top-padT) > 0.01 || math.Abs(bot-(padT+plotH)) > 0.01 {
				t.Errorf("ticks span y %.1f…%.1f, want the plot's %d…%d", top, bot, padT, padT+plotH)
			}
		})
	}
}

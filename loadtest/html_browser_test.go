package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Every scenario runs briefly against a real fleet and writes its HTML
// report, which headless Chromium then lays out 1000 px wide: the page
// must not scroll sideways, and every chart on it must draw its data
// (points in the SVG, and coloured pixels inside the chart's box of the
// screenshot); a chart with nothing to draw must be a "no samples" note.
// Without chromium the test fails, unless -short.
func TestHTMLReportInBrowser(t *testing.T) {
	browser := findChromium(t)
	f := startFleet(t, direct) // rooms: the members' own publish frames reach their room
	dir := t.TempDir()
	if d := os.Getenv("LOADTEST_BROWSER_DIR"); d != "" {
		dir = d // keep the reports and the screenshot to look at
	}
	all := []string{"connections", "deliveries", "latency", "histogram"}
	cases := []struct {
		name   string
		tune   func(*Config)
		charts []string // drawn, with data
		nodata []string // a note instead of a chart
		marks  []string // labels marked on the time axes, in order
		check  func(t *testing.T, res *Result)
	}{
		{
			name:   ScenarioConnect,
			tune:   func(c *Config) { c.Duration = 500 * time.Millisecond },
			charts: []string{"connections", "histogram"}, nodata: []string{"latency"},
			marks: []string{"ramp", "hold", "closing"},
		},
		{
			name: ScenarioDeliver,
			tune: func(c *Config) {
				c.MsgRate, c.Duration = 300, 1500*time.Millisecond
				c.Workers = "2" // the live series summed over processes
			},
			charts: all, marks: []string{"ramp", "publishing", "drain", "closing"},
		},
		{
			name:   ScenarioBroadcast,
			tune:   func(c *Config) { c.Broadcasts, c.BroadcastInterval = 3, 300*time.Millisecond },
			charts: all, marks: []string{"ramp", "broadcasts", "drain", "closing"},
			check: func(t *testing.T, res *Result) {
				var n int64
				for _, p := range res.Series {
					n += p.LatCount
				}
				if want := res.Broadcasts.Latency.Count; n != want {
					t.Errorf("the per-second series holds %d broadcast latencies, the run %d", n, want)
				}
			},
		},
		{
			name: ScenarioStorm,
			tune: func(c *Config) {
				c.MsgRate, c.Duration, c.DropAfter, c.DropShare = 200, 2500*time.Millisecond, 500*time.Millisecond, 0.5
				// down for 250 ms at least: the dip spans several samples
				c.BackoffMin, c.BackoffMax = 500*time.Millisecond, time.Second
			},
			charts: all, marks: []string{"ramp", "storm", "drop: 50 reset", "all back after", "drain", "closing"},
			check: func(t *testing.T, res *Result) {
				low := res.Connections.Target
				for _, s := range res.Live {
					low = min(low, int(s.Min))
				}
				if low > 75 {
					t.Errorf("the live series never shows the drop of 50 of 100 connections (lowest %d): %+v", low, res.Live)
				}
			},
		},
		{
			name: ScenarioChurn,
			tune: func(c *Config) {
				c.MsgRate, c.Duration, c.ChurnRate, c.ChurnDown = 200, 1500*time.Millisecond, 20, 200*time.Millisecond
			},
			charts: all, marks: []string{"ramp", "churn", "drain", "closing"},
		},
		{
			name:   ScenarioLive,
			tune:   func(c *Config) { c.MsgRate, c.Duration = 200, 1500*time.Millisecond },
			charts: append(append([]string(nil), all...), "fanout"), marks: []string{"ramp", "subscribe", "publishing", "drain", "closing"},
			check: func(t *testing.T, res *Result) {
				var n int64
				for _, p := range res.Series {
					n += p.LatCount
				}
				if want := res.Topics.Latency.Count; n != want {
					t.Errorf("the per-second series holds %d topic latencies, the run %d", n, want)
				}
			},
		},
		{
			name:   ScenarioRooms,
			tune:   func(c *Config) { c.MsgRate, c.Duration = 200, 1500*time.Millisecond },
			charts: all, marks: []string{"ramp", "subscribe", "client publish check", "publishing", "drain", "closing"},
		},
	}
	var pages []string
	for _, tc := range cases {
		cfg := f.config(tc.name)
		cfg.Conns, cfg.ConnectRate = 100, 2000
		cfg.Publish.Via = "nats"
		tc.tune(&cfg)
		cfg.HTMLFile = filepath.Join(dir, tc.name+".html")
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(res.Failures) > 0 {
			t.Errorf("%s failed: %q", tc.name, res.Failures)
		}
		t.Run(tc.name+"/timeline", func(t *testing.T) { checkTimeline(t, res) })
		if tc.check != nil {
			t.Run(tc.name+"/result", func(t *testing.T) { tc.check(t, res) })
		}
		pages = append(pages, cfg.HTMLFile)
	}
	start := time.Now()
	probes, shot := openInBrowser(t, browser, dir, pages)
	t.Logf("the browser took %s", time.Since(start).Round(time.Millisecond))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := probes[i]
			if p.ScrollWidth > p.ClientWidth {
				t.Errorf("the page scrolls sideways in a 1000 px window: %d px wide, %d px shown", p.ScrollWidth, p.ClientWidth)
			}
			var drawn []string
			for _, c := range p.Charts {
				drawn = append(drawn, c.ID)
				if c.Points == 0 || c.DataW <= 0 && c.DataH <= 0 {
					t.Errorf("chart %s draws nothing: %d points, data box %.0f×%.0f", c.ID, c.Points, c.DataW, c.DataH)
				}
				if c.X < p.X || c.X+c.W > p.X+float64(p.ClientWidth)+0.5 {
					t.Errorf("chart %s spans x %.0f…%.0f, the page %.0f…%.0f", c.ID, c.X, c.X+c.W, p.X, p.X+float64(p.ClientWidth))
				}
				if n := colouredPixels(shot, c); n < 10 {
					t.Errorf("chart %s: %d coloured pixels in its box of the screenshot: its data is not drawn", c.ID, n)
				}
				for _, m := range c.Marks {
					if m.X < -0.5 || m.X+m.W > cw+0.5 {
						t.Errorf("chart %s: mark label %q at %.0f…%.0f is cut off (the chart is %d wide)", c.ID, m.Label, m.X, m.X+m.W, cw)
					}
				}
			}
			if strings.Join(drawn, ",") != strings.Join(tc.charts, ",") {
				t.Errorf("charts drawn %q, want %q", drawn, tc.charts)
			}
			if strings.Join(p.NoData, ",") != strings.Join(tc.nodata, ",") {
				t.Errorf("notes of no samples %q, want %q", p.NoData, tc.nodata)
			}
			if len(p.Charts) > 0 {
				var labels []string
				for _, m := range p.Charts[0].Marks {
					labels = append(labels, m.Label)
				}
				if !hasPrefixes(labels, tc.marks) {
					t.Errorf("marks %q, want %q", labels, tc.marks)
				}
			}
		})
	}
}

// checkTimeline checks a run's live series and marks: the series reaches
// every connection and ends with none open, the marks are in order
// within the run.
func checkTimeline(t *testing.T, res *Result) {
	t.Helper()
	if len(res.Live) == 0 {
		t.Fatal("no live series")
	}
	var peak int64
	for i, s := range res.Live {
		peak = max(peak, s.Max)
		if i > 0 && s.T < res.Live[i-1].T+res.Live[i-1].Dur-1e-9 {
			t.Errorf("live span %d starts at %.2f s, inside the one before", i, s.T)
		}
	}
	if want := int64(res.Connections.Target); peak != want {
		t.Errorf("the live series peaks at %d, want %d", peak, want)
	}
	if last := res.Live[len(res.Live)-1]; last.Last != 0 {
		t.Errorf("the live series ends with %d open, want 0 after the close", last.Last)
	}
	for i, m := range res.Marks {
		if m.T < 0 || m.T > res.Elapsed || i > 0 && m.T < res.Marks[i-1].T {
			t.Errorf("mark %q at %.3f s: out of order or outside the run (%.3f s)", m.Label, m.T, res.Elapsed)
		}
	}
}

// findChromium returns the browser's path; without one the test fails,
// unless -short.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("no chromium (-short)")
	}
	t.Fatal("no chromium on PATH: install it (apt-get install chromium), or run with -short")
	return ""
}

// pageProbe is what probeScript measures of a page.
type pageProbe struct {
	X           float64      // the page's left edge in the screenshot, px
	ScrollWidth int          `json:"scrollWidth"`
	ClientWidth int          `json:"clientWidth"`
	Height      int          `json:"height"`
	Charts      []chartProbe `json:"charts"`
	NoData      []string     `json:"nodata"`
}

type chartProbe struct {
	ID           string  `json:"id"`
	X, Y, W, H   float64 // the chart's box in the screenshot, px
	Points       int     `json:"points"` // drawn: polyline and polygon points, dots, bars
	DataW, DataH float64 // the drawn data's box, chart units
	Marks        []struct {
		Label string  `json:"label"`
		X, W  float64 // the label's box, chart units
	} `json:"marks"`
}

// The browser shows the pages side by side, each in a frame 1000 px wide
// (a window of that width: its own viewport, a vertical scroll bar shown
// as a long page would have). Once they are laid out, probeScript makes
// each frame as tall as its page, so the screenshot has all of it, and
// writes the measures into an attribute of the root, which --dump-dom
// shows.
const (
	probeHead = `<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;padding:0;overflow:hidden}body{display:flex;align-items:flex-start}
iframe{flex:none;width:1000px;height:100px;border:0}</style></head><body>`
	pageStyle   = `<style>html{overflow-y:scroll}</style>`
	probeScript = `<script>
window.addEventListener('load', function(){
var out=[], frames=document.querySelectorAll('iframe');
frames.forEach(function(f){
  var de=f.contentDocument.documentElement;
  out.push({scrollWidth:de.scrollWidth, clientWidth:de.clientWidth, height:de.scrollHeight, charts:[], nodata:[]});
  f.style.height=de.scrollHeight+'px';
});
frames.forEach(function(f, i){
  var d=f.contentDocument, fr=f.getBoundingClientRect(), p=out[i];
  p.X=fr.left;
  d.querySelectorAll('svg.chart').forEach(function(s){
    var r=s.getBoundingClientRect(), g=s.querySelector('g.data');
    var c={id:s.id, X:fr.left+r.left, Y:fr.top+r.top, W:r.width, H:r.height, points:0, DataW:0, DataH:0, marks:[]};
    if(g){
      g.querySelectorAll('polyline,polygon').forEach(function(e){c.points+=e.points.numberOfItems});
      c.points+=g.querySelectorAll('circle').length;
      g.querySelectorAll('rect').forEach(function(e){if(e.height.baseVal.value>0)c.points++});
      var bb=g.getBBox(); c.DataW=bb.width; c.DataH=bb.height;
    }
    s.querySelectorAll('.marks text').forEach(function(m){var bb=m.getBBox(); c.marks.push({label:m.textContent, X:bb.x, W:bb.width})});
    p.charts.push(c);
  });
  d.querySelectorAll('figure.nodata').forEach(function(e){p.nodata.push(e.id)});
});
document.documentElement.setAttribute('data-probe', JSON.stringify(out));
});
</script></body></html>`
	probeHeight = 4000 // the window's, px: the tallest page must fit
	// probeScale is the screenshot's pixels per CSS pixel: a quarter of
	// the pixels to draw and encode, lines still a pixel wide.
	probeScale = 0.5
)

var probeAttr = regexp.MustCompile(`data-probe="([^"]*)"`)

// openInBrowser lays the pages out in headless Chromium, each 1000 px
// wide, and returns their measures and the screenshot (probe.png in dir).
func openInBrowser(t *testing.T, browser, dir string, pages []string) ([]pageProbe, image.Image) {
	t.Helper()
	var doc bytes.Buffer
	doc.WriteString(probeHead)
	for _, path := range pages {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&doc, `<iframe srcdoc="%s"></iframe>`, html.EscapeString(strings.Replace(string(b), "</head>", pageStyle+"</head>", 1)))
	}
	doc.WriteString(probeScript)
	probe, shot := filepath.Join(dir, "probe.html"), filepath.Join(dir, "probe.png")
	if err := os.WriteFile(probe, doc.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	width := 1000 * len(pages)
	cmd := exec.CommandContext(ctx, browser, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
		"--user-data-dir="+t.TempDir(), fmt.Sprintf("--window-size=%d,%d", width, probeHeight),
		fmt.Sprintf("--force-device-scale-factor=%g", probeScale),
		"--screenshot="+shot, "--dump-dom", "file://"+probe)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", browser, err, stderr.Bytes())
	}
	m := probeAttr.FindSubmatch(stdout.Bytes())
	if m == nil {
		t.Fatalf("the measures are missing from the DOM (did the probe run?):\n%.2000s\n%s", stdout.Bytes(), stderr.Bytes())
	}
	var ps []pageProbe
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &ps); err != nil || len(ps) != len(pages) {
		t.Fatalf("measures of %d pages (%v): %s", len(ps), err, m[1])
	}
	for i, p := range ps {
		if p.Height > probeHeight {
			t.Fatalf("%s is %d px tall, the window %d: raise probeHeight", pages[i], p.Height, probeHeight)
		}
	}
	img := decodePNG(t, shot)
	if r, w, h := img.Bounds(), int(float64(width)*probeScale), int(probeHeight*probeScale); r.Dx() != w || r.Dy() != h {
		t.Fatalf("screenshot %v, want %d×%d", r, w, h)
	}
	return ps, img
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return img
}

// colouredPixels counts the pixels in the chart's box of the screenshot
// that are of a series' colour: the frame, grid, marks and text are grey,
// the page white, so these are the drawn data.
func colouredPixels(img image.Image, c chartProbe) int {
	n := 0
	for y := int(c.Y * probeScale); y < int((c.Y+c.H)*probeScale); y++ {
		for x := int(c.X * probeScale); x < int((c.X+c.W)*probeScale); x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if max(r, g, b)>>8-min(r, g, b)>>8 > 40 {
				n++
			}
		}
	}
	return n
}

// hasPrefixes reports whether each of got starts with the want of the
// same index.
func hasPrefixes(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes one self-contained page: the verdict, the report and
// the charts (connections, deliveries and latency over time, the latency
// histogram). The charts are inline SVG that scale to the window's width;
// no script, stylesheet or font is fetched: it opens offline. A chart with
// nothing to draw in the run's scenario is replaced by a sentence saying
// so.
func WriteHTML(w io.Writer, res *Result) error {
	var rep strings.Builder
	WriteReport(&rep, res)
	ax := newTimeAxis(res)
	figs := []template.HTML{connectionsFigure(res, ax)}
	if res.Messages != nil || res.Broadcasts != nil || res.Topics != nil {
		figs = append(figs, deliveriesFigure(res, ax))
	}
	figs = append(figs, latencyFigure(res, ax), histogramFigure(res))
	if t := res.Topics; t != nil && t.Fanout != nil {
		figs = append(figs, fanoutFigure(t.Fanout))
	}
	verdict, class := fmt.Sprintf("Passed (exit status %d)", ExitStatus(res)), "pass"
	fails := Verdict(res)
	switch {
	case res.Interrupted:
		verdict, class = fmt.Sprintf("Interrupted: partial (exit status %d)", ExitStatus(res)), "fail"
	case len(fails) > 0:
		verdict, class = fmt.Sprintf("FAILED (exit status %d)", ExitStatus(res)), "fail"
	}
	return pageTmpl.Execute(w, struct {
		Title, Verdict, Class string
		Failures              []string
		Report                string
		Figures               []template.HTML
	}{fmt.Sprintf("wsfleet loadtest %s %s", res.Scenario, res.RunID), verdict, class, fails, rep.String(), figs})
}

// The page fits the window: the report scrolls inside its box, a chart
// scales with the page (and scrolls inside its figure below 560 px, where
// its text would be too small to read).
var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.5em;color:#1a202c;max-width:1100px;line-height:1.4}
h1{font-size:1.5em;overflow-wrap:anywhere}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:1em;overflow-x:auto;font-size:13px}
figure{margin:2em 0;overflow-x:auto}
figcaption{font-weight:600;margin-bottom:.4em}
.keys{display:flex;flex-wrap:wrap;gap:.2em 1.4em;font-weight:400;font-size:14px;margin-top:.3em}
.key i{display:inline-block;width:16px;height:4px;margin-right:.4em;vertical-align:middle}
.key i.band{height:12px;opacity:.4}
.key i.mark{width:0;height:14px;border-left:2px dashed #4a5568}
svg.chart{display:block;width:100%;height:auto;min-width:560px;background:#fff;border:1px solid #e2e8f0}
svg text{font-family:system-ui,sans-serif;font-size:13px;fill:#4a5568}
svg .marks text{fill:#2d3748;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
.nodata p{color:#4a5568;border:1px dashed #cbd5e0;padding:1em;margin:0}
.verdict{padding:.6em 1em;border-radius:4px;font-weight:600;overflow-wrap:anywhere}
.pass{background:#f0fff4;border:1px solid #9ae6b4;color:#22543d}
.fail{background:#fff5f5;border:1px solid #feb2b2;color:#742a2a}
.verdict ul{margin:.4em 0 0;font-weight:400}
</style></head><body>
<h1>{{.Title}}</h1>
<div class="verdict {{.Class}}" id="verdict">{{.Verdict}}{{if .Failures}}
<ul>{{range .Failures}}<li>{{.}}</li>{{end}}</ul>{{end}}</div>
<pre>{{.Report}}</pre>
{{range .Figures}}{{.}}
{{end}}</body></html>
`))

// line is one series of a chart: the points (xs, ys), a NaN y leaving a
// gap; lo and hi, when set, draw a band around it (the lowest and highest
// value of each point's span). A step line's point is a figure of the
// second up to its x: drawn level over that second.
type line struct {
	name, color string
	xs, ys      []float64
	lo, hi      []float64
	step        bool
}

// chart is a chart over the run's time axis, or (bars) a histogram.
type chart struct {
	id, title, yLabel string
	ms                bool // the values are latencies in ms: log axis
	lines             []line
	ax                timeAxis
	top               int // the plot's top: below the marks' labels
}

// timeAxis is what every chart over time shares: the run's length and its
// marks.
type timeAxis struct {
	xmax  float64
	marks []Mark
}

func newTimeAxis(res *Result) timeAxis {
	a := timeAxis{xmax: res.Elapsed, marks: res.Marks}
	if n := len(res.Series); n > 0 {
		a.xmax = max(a.xmax, res.Series[n-1].T)
	}
	if n := len(res.Live); n > 0 {
		a.xmax = max(a.xmax, res.Live[n-1].T+res.Live[n-1].Dur)
	}
	for _, m := range res.Marks {
		a.xmax = max(a.xmax, m.T)
	}
	if !(a.xmax > 0) {
		a.xmax = 1
	}
	return a
}

// Colours of the series.
const (
	blue, green, red, orange, purple, yellow = "#2b6cb0", "#38a169", "#c53030", "#dd6b20", "#805ad5", "#b7791f"
)

func connectionsFigure(res *Result, ax timeAxis) template.HTML {
	open := line{name: "open connections", color: blue}
	if len(res.Live) > 0 {
		// every 100 ms: the line is each span's last sample, the band its
		// lowest and highest (spans are wider in a long run)
		for _, s := range res.Live {
			open.xs = append(open.xs, s.T+s.Dur/2)
			open.ys = append(open.ys, float64(s.Last))
			open.lo = append(open.lo, float64(s.Min))
			open.hi = append(open.hi, float64(s.Max))
		}
	} else {
		for _, p := range res.Series {
			open.xs = append(open.xs, p.T)
			open.ys = append(open.ys, float64(p.Live))
		}
	}
	welcomed := perSecond("welcomed per second", green, res.Series, func(p Point) float64 { return float64(p.Connects) })
	closed := perSecond("closed per second", red, res.Series, func(p Point) float64 { return float64(p.Closes) })
	ramp := line{name: "ramp rate allowed, per second", color: orange}
	var closes, ramped bool
	for _, p := range res.Series {
		ramp.xs, ramp.ys = append(ramp.xs, p.T), append(ramp.ys, p.RampRate)
		closes, ramped = closes || p.Closes > 0, ramped || p.RampRate > 0
	}
	c := chart{id: "connections", title: "Connections over time", yLabel: "connections", ax: ax, lines: []line{open, welcomed}}
	if closes {
		c.lines = append(c.lines, closed)
	}
	if ramped {
		c.lines = append(c.lines, ramp)
	}
	return c.figure("no connection was opened")
}

func deliveriesFigure(res *Result, ax timeAxis) template.HTML {
	recv := perSecond("receipts per second", purple, res.Series, func(p Point) float64 { return float64(p.Delivered) })
	acked := perSecond("publishes acknowledged per second", yellow, res.Series, func(p Point) float64 { return float64(p.Acked) })
	c := chart{id: "deliveries", title: "Deliveries per second", yLabel: "per second", ax: ax, lines: []line{recv}}
	if res.Messages != nil || (res.Topics != nil && res.Topics.RoomSize > 0) {
		c.lines = append(c.lines, acked) // (a live run's publisher is the parent: not in the series)
	}
	return c.figure("no time series was recorded")
}

func latencyFigure(res *Result, ax timeAxis) template.HTML {
	title := "End-to-end latency over time (publish → receipt, each second's)"
	switch {
	case res.Broadcasts != nil:
		title = "Broadcast latency over time (publish → each receipt, each second's)"
	case res.Topics != nil:
		title = "Topic latency over time (publish → each receipt, each second's)"
	}
	pct := func(v func(Point) float64) func(Point) float64 {
		return func(p Point) float64 {
			if p.LatCount == 0 {
				return math.NaN()
			}
			return v(p)
		}
	}
	p50 := perSecond("p50", blue, res.Series, pct(func(p Point) float64 { return p.LatP50 }))
	p99 := perSecond("p99", orange, res.Series, pct(func(p Point) float64 { return p.LatP99 }))
	pmax := perSecond("max", red, res.Series, pct(func(p Point) float64 { return p.LatMax }))
	why := "no message was received"
	switch {
	case res.Scenario == ScenarioConnect:
		why = "a connect run publishes nothing; its latency is the handshake's (the histogram below)"
	case res.Topics != nil && res.Topics.Published == 0:
		why = "nothing was published"
	case res.Messages == nil && res.Broadcasts == nil && res.Topics == nil:
		why = "nothing was published (--msg-rate 0)"
	}
	c := chart{id: "latency", title: title, yLabel: "latency", ms: true, ax: ax, lines: []line{p50, p99, pmax}}
	return c.figure(why)
}

// perSecond is a step line of a figure of each second of the series (a
// point's counts are those of the second up to it; the first point's, of
// the moments before the first sample, count with the next).
func perSecond(name, color string, ps []Point, v func(Point) float64) line {
	l := line{name: name, color: color, step: true}
	for i, p := range ps {
		y := v(p)
		if i == 0 && len(ps) > 1 {
			continue
		}
		if i == 1 && !math.IsNaN(v(ps[0])) {
			y += v(ps[0])
		}
		l.xs, l.ys = append(l.xs, p.T), append(l.ys, y)
	}
	return l
}

// figure is the chart with its caption and legend, or, when no line has
// a point to draw, the caption and a sentence saying why.
func (c *chart) figure(why string) template.HTML {
	var b strings.Builder
	if !c.hasData() {
		fmt.Fprintf(&b, `<figure class="nodata" id="%s"><figcaption>%s</figcaption><p>No samples in this scenario: %s.</p></figure>`,
			c.id, esc(c.title), esc(why))
		return template.HTML(b.String())
	}
	fmt.Fprintf(&b, `<figure><figcaption>%s<span class="keys">`, esc(c.title))
	for _, l := range c.lines {
		fmt.Fprintf(&b, `<span class="key"><i style="background:%s"></i>%s</span>`, l.color, esc(l.name))
		if l.hasBand() {
			fmt.Fprintf(&b, `<span class="key"><i class="band" style="background:%s"></i>lowest to highest of each span</span>`, l.color)
		}
	}
	if len(c.ax.marks) > 0 {
		b.WriteString(`<span class="key"><i class="mark"></i>phases and events of the run</span>`)
	}
	b.WriteString(`</span></figcaption>`)
	c.svg(&b)
	b.WriteString(`</figure>`)
	return template.HTML(b.String())
}

// hasBand reports whether the line's band is drawn: its lowest and
// highest differ somewhere.
func (l *line) hasBand() bool {
	for i := range l.lo {
		if i < len(l.hi) && l.lo[i] != l.hi[i] {
			return true
		}
	}
	return false
}

func (c *chart) hasData() bool {
	for _, l := range c.lines {
		for _, y := range l.ys {
			if !math.IsNaN(y) {
				return true
			}
		}
	}
	return false
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// The charts' geometry, in the units of their viewBox (drawn at the page's
// width, about one unit per pixel in a 1000 px window). A chart over time
// with marks is taller by the rows of their labels, above the plot.
const (
	cw         = 960
	padL, padR = 72, 16
	padT, padB = 12, 46
	plotW      = cw - padL - padR
	plotH      = 242
	svgHead    = `<svg xmlns="http://www.w3.org/2000/svg" id="%s" class="chart" viewBox="0 0 %d %d" preserveAspectRatio="xMidYMid meet" role="img" aria-label="%s">`
)

// niceStep is the smallest of 1, 2 or 5 times a power of ten that is at
// least v.
func niceStep(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

func fmtAxis(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e3)/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v)/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

// fmtMsAxis labels a latency in ms: "0.1 ms", "10 ms", "1 s".
func fmtMsAxis(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%g s", v/1000)
	}
	return fmt.Sprintf("%g ms", math.Round(v*1000)/1000)
}

// yScale maps values to the plot's height; ticks are labelled.
type yScale struct {
	ticks  []float64
	labels []string
	at     func(float64) float64
}

func (c *chart) yScale() yScale {
	top0 := float64(max(c.top, padT))
	lo, hi := math.Inf(1), 0.0
	for _, l := range c.lines {
		for _, ys := range [][]float64{l.ys, l.lo, l.hi} {
			for _, y := range ys {
				if !math.IsNaN(y) {
					hi = max(hi, y)
					if y > 0 {
						lo = min(lo, y)
					}
				}
			}
		}
	}
	var s yScale
	if c.ms {
		if math.IsInf(lo, 1) {
			lo, hi = 0.1, 1
		}
		bot := math.Pow(10, math.Floor(math.Log10(lo)))
		top := math.Pow(10, math.Ceil(math.Log10(hi)))
		if top <= bot {
			top = bot * 10
		}
		decades := math.Round(math.Log10(top / bot))
		for d := bot; d <= top*1.0001; d *= 10 {
			for _, m := range []float64{1, 2, 5} {
				if (m == 1 || decades <= 2) && d*m <= top*1.0001 {
					s.ticks = append(s.ticks, d*m)
					s.labels = append(s.labels, fmtMsAxis(d*m))
				}
			}
		}
		s.at = func(y float64) float64 {
			y = math.Max(y, bot)
			return top0 + plotH - plotH*math.Log10(y/bot)/math.Log10(top/bot)
		}
		return s
	}
	step := niceStep(hi / 4)
	top := math.Max(step, math.Ceil(hi/step-1e-9)*step)
	for t := 0.0; t <= top*1.0001; t += step {
		s.ticks = append(s.ticks, t)
		s.labels = append(s.labels, fmtAxis(t))
	}
	s.at = func(y float64) float64 { return top0 + plotH - plotH*y/top }
	return s
}

// svg draws the chart: frame, grid and axes, the lines (in a group of
// class "data"), then the marks.
func (c *chart) svg(b *strings.Builder) {
	xmap := func(x float64) float64 { return padL + plotW*x/c.ax.xmax }
	marks, rows := layoutMarks(c.ax.marks, xmap)
	c.top = padT
	if rows > 0 {
		c.top = markTop + rows*markRowH
	}
	bottom := c.top + plotH
	fmt.Fprintf(b, svgHead, c.id, cw, bottom+padB, esc(c.title))
	ys := c.yScale()
	c.frame(b, ys)
	step := niceStep(c.ax.xmax / 8)
	for x := 0.0; x <= c.ax.xmax*1.0001; x += step {
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#a0aec0"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`,
			xmap(x), xmap(x), bottom, bottom+5, xmap(x), bottom+19, fmtAxis(x))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">seconds since the start of the run</text>`, padL+plotW/2, bottom+padB-6)
	b.WriteString(`<g class="data">`)
	for _, l := range c.lines {
		if l.hasBand() {
			band(b, l, xmap, ys.at)
		}
		var pts []pt
		for j := 0; j < len(l.ys) && j < len(l.xs); j++ {
			y := l.ys[j]
			switch {
			case math.IsNaN(y):
				polyline(b, pts, l.color)
				pts = pts[:0]
			case l.step:
				pts = append(pts, pt{xmap(max(l.xs[j]-1, 0)), ys.at(y)}, pt{xmap(l.xs[j]), ys.at(y)})
			default:
				pts = append(pts, pt{xmap(l.xs[j]), ys.at(y)})
			}
		}
		polyline(b, pts, l.color)
	}
	b.WriteString(`</g>`)
	drawMarks(b, marks, bottom)
	b.WriteString(`</svg>`)
}

// frame draws the plot's border, the y grid with its labels and the y
// axis's title.
func (c *chart) frame(b *strings.Builder, ys yScale) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#a0aec0"/>`, padL, c.top, plotW, plotH)
	for i, t := range ys.ticks {
		y := ys.at(t)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#edf2f7"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL+1, padL+plotW-1, y, y, padL-6, y+4, ys.labels[i])
	}
	fmt.Fprintf(b, `<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">%s</text>`, c.top+plotH/2, esc(c.yLabel))
}

type pt struct{ x, y float64 }

// thin keeps, of points denser than two a pixel, each pixel column's
// lowest and highest: the line looks the same, spikes and dips included.
func thin(pts []pt) []pt {
	if len(pts) <= 2*plotW {
		return pts
	}
	var out []pt
	for i := 0; i < len(pts); {
		col := math.Floor(pts[i].x)
		lo, hi := i, i
		j := i
		for ; j < len(pts) && math.Floor(pts[j].x) == col; j++ {
			if pts[j].y > pts[lo].y { // SVG y grows downwards
				lo = j
			}
			if pts[j].y < pts[hi].y {
				hi = j
			}
		}
		out = append(out, pts[min(lo, hi)])
		if lo != hi {
			out = append(out, pts[max(lo, hi)])
		}
		i = j
	}
	return out
}

// polyline draws the points as a line, a lone point as a dot.
func polyline(b *strings.Builder, pts []pt, color string) {
	var uniq []pt
	for _, p := range pts {
		if n := len(uniq); n == 0 || math.Abs(uniq[n-1].x-p.x) >= 0.05 || math.Abs(uniq[n-1].y-p.y) >= 0.05 {
			uniq = append(uniq, p)
		}
	}
	switch pts = thin(uniq); len(pts) {
	case 0:
	case 1:
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, pts[0].x, pts[0].y, color)
	default:
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" points="`, color)
		for i, p := range pts {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(b, "%.1f,%.1f", p.x, p.y)
		}
		b.WriteString(`"/>`)
	}
}

// band draws the area between l.lo and l.hi.
func band(b *strings.Builder, l line, xmap, ymap func(float64) float64) {
	var lo, hi []pt
	for i := range l.lo {
		lo = append(lo, pt{xmap(l.xs[i]), ymap(l.lo[i])})
		hi = append(hi, pt{xmap(l.xs[i]), ymap(l.hi[i])})
	}
	lo, hi = thin(lo), thin(hi)
	fmt.Fprintf(b, `<polygon fill="%s" fill-opacity="0.25" stroke="none" points="`, l.color)
	for _, p := range lo {
		fmt.Fprintf(b, "%.1f,%.1f ", p.x, p.y)
	}
	for i := len(hi) - 1; i >= 0; i-- {
		fmt.Fprintf(b, "%.1f,%.1f ", hi[i].x, hi[i].y)
	}
	b.WriteString(`"/>`)
}

// Marks' labels are in rows above the plot, each row markRowH high, the
// first at markTop.
const (
	markTop, markRowH, markRows = 8, 16, 4
	markCharW                   = 7.2 // a label's width per character, roughly
)

// placedMark is a mark's line and its label's place.
type placedMark struct {
	x, tx  float64
	anchor string
	row    int
	label  string
}

// layoutMarks places each mark's label right of its line (left when it
// would overrun the plot), in the first row where it overlaps no other;
// it returns the marks placed and the rows used.
func layoutMarks(marks []Mark, xmap func(float64) float64) ([]placedMark, int) {
	var ends [markRows]float64 // the right end of each row's last label
	for i := range ends {
		ends[i] = math.Inf(-1)
	}
	var out []placedMark
	rows := 0
	for i, m := range marks {
		p := placedMark{x: xmap(m.T), anchor: "start", row: i % markRows, label: m.Label}
		w := float64(len([]rune(m.Label)))*markCharW + 4
		x0 := p.x + 4
		p.tx = x0
		if x0+w > cw-padR {
			x0, p.anchor, p.tx = p.x-4-w, "end", p.x-4
		}
		for r := range markRows {
			if ends[r] < x0-6 {
				p.row = r
				break
			}
		}
		ends[p.row] = x0 + w
		rows = max(rows, p.row+1)
		out = append(out, p)
	}
	return out, rows
}

// drawMarks draws each mark as a dashed line down to the plot's bottom
// from under its label.
func drawMarks(b *strings.Builder, marks []placedMark, bottom int) {
	if len(marks) == 0 {
		return
	}
	b.WriteString(`<g class="marks">`)
	for _, m := range marks {
		y := markTop + (m.row+1)*markRowH - 4
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#4a5568" stroke-width="1.2" stroke-dasharray="5 4"/><text x="%.1f" y="%d" text-anchor="%s">%s</text>`,
			m.x, m.x, y-11, bottom, m.tx, y, m.anchor, esc(m.label))
	}
	b.WriteString(`</g>`)
}

func histogramFigure(res *Result) template.HTML {
	var buckets []HistBucket
	title, unit := "Latency histogram", "samples"
	switch {
	case res.Messages != nil && len(res.Messages.Histogram) > 0:
		buckets, title, unit = res.Messages.Histogram, "End-to-end latency histogram (messages to users)", "receipts"
	case res.Broadcasts != nil && len(res.Broadcasts.Histogram) > 0:
		buckets, title, unit = res.Broadcasts.Histogram, "Broadcast latency histogram (publish → each receipt)", "receipts"
	case res.Topics != nil && len(res.Topics.Histogram) > 0:
		buckets, title, unit = res.Topics.Histogram, "Topic latency histogram (publish → each receipt)", "receipts"
	default:
		if h, err := importHist(res.Hists["welcome"]); err == nil {
			buckets, title, unit = logBuckets(h), "Handshake latency histogram (connect → welcome)", "handshakes"
		}
	}
	var b strings.Builder
	if len(buckets) == 0 {
		fmt.Fprintf(&b, `<figure class="nodata" id="histogram"><figcaption>%s</figcaption><p>No samples in this scenario: no latency was recorded.</p></figure>`, esc(title))
		return template.HTML(b.String())
	}
	fmt.Fprintf(&b, `<figure><figcaption>%s<span class="keys"><span class="key"><i style="background:#4299e1"></i>%s per bar</span></span></figcaption>`, esc(title), unit)
	histSVG(&b, "histogram", title, unit, buckets)
	b.WriteString(`</figure>`)
	return template.HTML(b.String())
}

// fanoutFigure is a live run's fan-out time histogram: publish → last
// receipt of each message.
func fanoutFigure(f *FanoutResult) template.HTML {
	title := "Fan-out time histogram (publish → last receipt, per message)"
	var b strings.Builder
	if len(f.Histogram) == 0 {
		fmt.Fprintf(&b, `<figure class="nodata" id="fanout"><figcaption>%s</figcaption><p>No samples in this scenario: no message was received.</p></figure>`, esc(title))
		return template.HTML(b.String())
	}
	fmt.Fprintf(&b, `<figure><figcaption>%s<span class="keys"><span class="key"><i style="background:#4299e1"></i>messages per bar</span></span></figcaption>`, esc(title))
	histSVG(&b, "fanout", title, "messages", f.Histogram)
	b.WriteString(`</figure>`)
	return template.HTML(b.String())
}

// histSVG draws the latency buckets as bars, their bounds on a log axis.
func histSVG(b *strings.Builder, id, title, unit string, bs []HistBucket) {
	fmt.Fprintf(b, svgHead, id, cw, padT+plotH+padB, esc(title))
	c := chart{lines: []line{{}}, top: padT, yLabel: unit}
	for _, x := range bs {
		c.lines[0].ys = append(c.lines[0].ys, float64(x.Count))
	}
	ys := c.yScale()
	c.frame(b, ys)
	bw := float64(plotW) / float64(len(bs))
	every := max(1, (len(bs)+9)/10)
	b.WriteString(`<g class="data">`)
	for i, x := range bs {
		y := ys.at(float64(x.Count))
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4299e1"><title>≤ %s ms: %d</title></rect>`,
			padL+float64(i)*bw+1, y, math.Max(bw-2, 1), padT+plotH-y, fmtMs(x.UpTo), x.Count)
	}
	b.WriteString(`</g>`)
	for i, x := range bs {
		if i%every == 0 {
			fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, padL+float64(i)*bw+bw/2, padT+plotH+19, fmtMs(x.UpTo))
		}
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">latency, ms (the upper bound of each bar; 10 bars a decade)</text>`, padL+plotW/2, padT+plotH+padB-6)
	b.WriteString(`</svg>`)
}

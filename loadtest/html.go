package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes one self-contained page: the report and three charts
// (connections over time, latency over time, latency histogram) as inline
// SVG. No script, stylesheet or font is fetched: it opens offline.
func WriteHTML(w io.Writer, res *Result) error {
	var rep strings.Builder
	WriteReport(&rep, res)
	var xs, live, conn, ramp, p50, p99, pmax, deliv []float64
	ramped := false
	for _, p := range res.Series {
		xs = append(xs, p.T)
		live = append(live, float64(p.Live))
		conn = append(conn, float64(p.Connects))
		ramp = append(ramp, p.RampRate)
		ramped = ramped || p.RampRate > 0
		deliv = append(deliv, float64(p.Delivered))
		if p.LatCount > 0 {
			p50 = append(p50, p.LatP50)
			p99 = append(p99, p.LatP99)
			pmax = append(pmax, p.LatMax)
		} else {
			p50 = append(p50, math.NaN())
			p99 = append(p99, math.NaN())
			pmax = append(pmax, math.NaN())
		}
	}
	conns := []series{{"open connections", "#2b6cb0", live}, {"welcomed per second", "#38a169", conn}}
	if ramped {
		conns = append(conns, series{"ramp rate allowed", "#dd6b20", ramp})
	}
	charts := []template.HTML{lineChart("connections", "Connections over time", "seconds", "", xs, conns, false)}
	if res.Messages != nil || res.Broadcasts != nil {
		charts = append(charts, lineChart("deliveries", "Deliveries per second", "seconds", "", xs, []series{
			{"receipts per second", "#805ad5", deliv},
		}, false))
	}
	charts = append(charts, lineChart("latency", "End-to-end latency over time", "seconds", "ms", xs, []series{
		{"p50", "#2b6cb0", p50}, {"p99", "#dd6b20", p99}, {"max", "#c53030", pmax},
	}, true))
	var buckets []HistBucket
	title := "Latency histogram"
	switch {
	case res.Messages != nil && len(res.Messages.Histogram) > 0:
		buckets, title = res.Messages.Histogram, "End-to-end latency histogram (messages to users)"
	case res.Broadcasts != nil && len(res.Broadcasts.Histogram) > 0:
		buckets, title = res.Broadcasts.Histogram, "Broadcast latency histogram (publish → each receipt)"
	default:
		if h, err := importHist(res.Hists["welcome"]); err == nil {
			buckets, title = logBuckets(h), "Handshake latency histogram (connect → welcome)"
		}
	}
	charts = append(charts, histChart("histogram", title, buckets))
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
		Charts                []template.HTML
	}{fmt.Sprintf("wsfleet loadtest %s %s", res.Scenario, res.RunID), verdict, class, fails, rep.String(), charts})
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#1a202c;max-width:1100px}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:1em;overflow-x:auto;font-size:13px}
figure{margin:2em 0}svg{background:#fff;border:1px solid #e2e8f0}
svg text{font-family:system-ui,sans-serif;font-size:12px;fill:#4a5568}
.verdict{padding:.6em 1em;border-radius:4px;font-weight:600}
.pass{background:#f0fff4;border:1px solid #9ae6b4;color:#22543d}
.fail{background:#fff5f5;border:1px solid #feb2b2;color:#742a2a}
.verdict ul{margin:.4em 0 0;font-weight:400}
</style></head><body>
<h1>{{.Title}}</h1>
<div class="verdict {{.Class}}" id="verdict">{{.Verdict}}{{if .Failures}}
<ul>{{range .Failures}}<li>{{.}}</li>{{end}}</ul>{{end}}</div>
<pre>{{.Report}}</pre>
{{range .Charts}}<figure>{{.}}</figure>
{{end}}</body></html>
`))

type series struct {
	name  string
	color string
	ys    []float64
}

const (
	cw, ch            = 960, 320
	padL, padR        = 70, 20
	padT, padB        = 40, 45
	plotW, plotH      = cw - padL - padR, ch - padT - padB
	svgHead           = `<svg xmlns="http://www.w3.org/2000/svg" id="%s" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`
	svgTitle          = `<text x="%d" y="22" style="font-size:15px;font-weight:600;fill:#1a202c">%s</text>`
	maxPolylinePoints = 4000
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtAxis(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
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

// lineChart draws series over xs; logY uses a logarithmic y axis.
func lineChart(id, title, xlabel, unit string, xs []float64, ss []series, logY bool) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, svgHead, id, cw, ch, cw, ch, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, svgTitle, padL, template.HTMLEscapeString(title))
	xmax := 1.0
	if len(xs) > 0 {
		xmax = math.Max(xs[len(xs)-1], 1)
	}
	ymin, ymax := math.Inf(1), 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			if !math.IsNaN(y) {
				ymax = math.Max(ymax, y)
				if y > 0 {
					ymin = math.Min(ymin, y)
				}
			}
		}
	}
	var ymap func(float64) float64
	var ticks []float64
	if logY {
		lo := math.Pow(10, math.Floor(math.Log10(math.Min(ymin, ymax))))
		hi := math.Pow(10, math.Ceil(math.Log10(math.Max(ymax, lo*10))))
		if math.IsInf(ymin, 1) || ymax == 0 {
			lo, hi = 0.1, 100
		}
		for t := lo; t <= hi*1.0001; t *= 10 {
			ticks = append(ticks, t)
		}
		ymap = func(y float64) float64 {
			y = math.Max(y, lo)
			return padT + plotH - plotH*(math.Log10(y)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
		}
	} else {
		top := niceMax(ymax)
		for i := 0; i <= 4; i++ {
			ticks = append(ticks, top*float64(i)/4)
		}
		ymap = func(y float64) float64 { return padT + plotH - plotH*y/top }
	}
	xmap := func(x float64) float64 { return padL + plotW*x/xmax }
	axes(&b, ticks, ymap, xmax, xmap, xlabel, unit)
	for i, s := range ss {
		var pts []string
		flush := func() {
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, s.color, strings.Join(pts, " "))
			} else if len(pts) == 1 {
				var x, y float64
				fmt.Sscanf(pts[0], "%f,%f", &x, &y)
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, x, y, s.color)
			}
			pts = pts[:0]
		}
		step := max(1, len(s.ys)/maxPolylinePoints)
		for j := 0; j < len(s.ys) && j < len(xs); j += step {
			y := s.ys[j]
			if math.IsNaN(y) {
				flush()
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xmap(xs[j]), ymap(y)))
		}
		flush()
		lx := padL + 10 + i*170
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s</text>`,
			lx, ch-12, s.color, lx+16, ch-8, template.HTMLEscapeString(s.name))
	}
	if len(xs) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text>`, padL+plotW/2-20, padT+plotH/2)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func axes(b *strings.Builder, ticks []float64, ymap func(float64) float64, xmax float64, xmap func(float64) float64, xlabel, unit string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#a0aec0"/>`, padL, padT, plotW, plotH)
	for _, t := range ticks {
		y := ymap(t)
		label := fmtAxis(t)
		if unit == "ms" {
			label = fmtMsAxis(t)
		}
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#edf2f7"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, padL+plotW, y, y, padL-6, y+4, label)
	}
	xtop := niceMax(xmax)
	for i := 0; i <= 5; i++ {
		x := xtop * float64(i) / 5
		if x > xmax*1.0001 {
			break
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, xmap(x), padT+plotH+16, fmtAxis(x))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, padL+plotW, padT+plotH+32, xlabel)
}

// histChart draws the latency buckets as bars, their bounds on a log axis.
func histChart(id, title string, bs []HistBucket) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, svgHead, id, cw, ch, cw, ch, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, svgTitle, padL, template.HTMLEscapeString(title))
	if len(bs) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text></svg>`, padL+plotW/2-20, padT+plotH/2)
		return template.HTML(b.String())
	}
	var top int64
	for _, x := range bs {
		top = max(top, x.Count)
	}
	ytop := niceMax(float64(top))
	ymap := func(y float64) float64 { return padT + plotH - plotH*y/ytop }
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#a0aec0"/>`, padL, padT, plotW, plotH)
	for i := 0; i <= 4; i++ {
		t := ytop * float64(i) / 4
		y := ymap(t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#edf2f7"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, padL+plotW, y, y, padL-6, y+4, fmtAxis(t))
	}
	bw := float64(plotW) / float64(len(bs))
	every := max(1, len(bs)/10)
	for i, x := range bs {
		h := plotH * float64(x.Count) / ytop
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4299e1"><title>≤ %s ms: %d</title></rect>`,
			padL+float64(i)*bw+1, padT+plotH-h, math.Max(bw-2, 1), h, fmtMs(x.UpTo), x.Count)
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, padL+float64(i)*bw+bw/2, padT+plotH+16, fmtMs(x.UpTo))
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">ms (upper bound of each bar; bars are 10 per decade)</text>`, padL+plotW, padT+plotH+32)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

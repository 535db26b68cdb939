package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/wsfleet/wsfleet/internal/numfmt"
)

// formatValue writes one value in a figure's unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case unitBytes:
		return numfmt.Thousands(int64(math.Round(v))) + " B"
	case unitPerCPU:
		return numfmt.Thousands(int64(math.Round(v)))
	case unitMs:
		switch {
		case v >= 100:
			return fmt.Sprintf("%.0f ms", v)
		case v >= 10:
			return fmt.Sprintf("%.1f ms", v)
		default:
			return fmt.Sprintf("%.2f ms", v)
		}
	}
	return fmt.Sprintf("%g", v)
}

// formatStats writes "median (min–max)", or the one value, or "–".
func formatStats(s Stats, unit string) string {
	switch s.N {
	case 0:
		return "–"
	case 1:
		return formatValue(s.Median, unit)
	}
	lo, hi := formatValue(s.Min, unit), formatValue(s.Max, unit)
	if u := " " + unit; unit == unitBytes || unit == unitMs {
		lo, hi = strings.TrimSuffix(lo, u), strings.TrimSuffix(hi, u)
	}
	return fmt.Sprintf("%s (%s–%s)", formatValue(s.Median, unit), lo, hi)
}

// formatRatio writes wsfleet / baseline, and what it means.
func formatRatio(f Figure) string {
	if f.Ratio <= 0 {
		return "–"
	}
	r := f.Ratio
	switch {
	case f.Better == lowerBetter && r < 1:
		return fmt.Sprintf("%.3g (%.3g× less)", r, 1/r)
	case f.Better == lowerBetter:
		return fmt.Sprintf("%.3g (%.3g× more)", r, r)
	default:
		return fmt.Sprintf("%.3g×", r)
	}
}

// tableRows turns the figures into cells: figure, wsfleet, baseline,
// ratio, target, met.
func tableRows(figs []Figure) [][]string {
	rows := [][]string{{"figure", "wsfleet median (min–max)", "baseline median (min–max)", "ratio wsfleet / baseline", "target", "met"}}
	for _, f := range figs {
		met := "–"
		if f.Met != nil {
			met = "no"
			if *f.Met {
				met = "yes"
			}
		}
		var ws, bl, ratio string
		switch {
		case f.Unit == unitYesNo:
			ws, bl, ratio = f.Text, "cannot hold it (not run)", "–"
		case f.ID == "rss_ratio":
			ws, bl, ratio = "(row above)", "(row above)", formatRatio(f)
		default:
			ws, bl, ratio = formatStats(f.Wsfleet, f.Unit), formatStats(f.Baseline, f.Unit), formatRatio(f)
		}
		if f.Unit == unitPerCPU && f.ID != "rss_ratio" {
			if ws != "–" {
				ws += " /CPU-s"
			}
			if bl != "–" {
				bl += " /CPU-s"
			}
		}
		rows = append(rows, []string{f.Name, ws, bl, ratio, f.Target, met})
	}
	return rows
}

// writeTable prints rows as an aligned Markdown table.
func writeTable(w io.Writer, rows [][]string) {
	if len(rows) == 0 {
		return
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range r {
			b.WriteString(" ")
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			b.WriteString(" |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, n := range width {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}

// diagnostics are the lines under the table that say what limited the
// figures: where the machine's CPU went in each phase, what the RSS per
// connection is made of, and deliveries per CPU-second net of what the
// idle connections cost (first run of each system; every run is in the
// JSON).
func diagnostics(rep *Report) []string {
	var out []string
	if m := rep.Million; m != nil && m.Why != "" {
		out = append(out, "million: "+m.Why)
	}
	net := map[string][]float64{}
	seen := map[string]bool{}
	for _, r := range rep.Runs {
		if d := r.Deliver; d != nil && d.NetDeliveriesPerCPU > 0 {
			net[r.System] = append(net[r.System], d.NetDeliveriesPerCPU)
		}
		if seen[r.System] {
			continue
		}
		seen[r.System] = true
		var parts []string
		if c := r.Connect; c != nil {
			if c.RampSplit != nil {
				parts = append(parts, cpuPart("ramp", c.RampSplit))
			}
			if c.IdleSplit != nil {
				parts = append(parts, fmt.Sprintf("idle hold: gateways %.3f", c.IdleSplit.Gateways))
			}
		}
		if d := r.Deliver; d != nil && d.Split != nil {
			parts = append(parts, cpuPart("deliver", d.Split))
		}
		if b := r.Broadcast; b != nil && b.Split != nil {
			parts = append(parts, cpuPart("broadcast", b.Split))
		}
		if len(parts) > 0 {
			out = append(out, fmt.Sprintf("CPU in cores, %s run %d: %s", r.System, r.Run, strings.Join(parts, "; ")))
		}
		if c := r.Connect; c != nil && c.GoPerConn != nil {
			g := c.GoPerConn
			out = append(out, fmt.Sprintf("RSS per connection, %s run %d: %s B = Go heap live %s + heap fragmentation %s + idle heap kept from the OS %s + stacks %s + the rest %s",
				r.System, r.Run, numfmt.Thousands(int64(c.RSSPerConn)), numfmt.Thousands(int64(g.HeapLive)), numfmt.Thousands(int64(g.HeapFragment)),
				numfmt.Thousands(int64(g.HeapIdleRetained)), numfmt.Thousands(int64(g.Stacks)), numfmt.Thousands(int64(g.Other))))
			if c.NATSRSS > 0 {
				out = append(out, fmt.Sprintf("outside the gateways, %s run %d: NATS RSS %s, router RSS %s (at the RSS reading)", r.System, r.Run, mib(c.NATSRSS), mib(c.RouterRSS)))
			}
		}
	}
	if w, b := statsOf(net[sysWsfleet]), statsOf(net[sysBaseline]); w.N > 0 {
		l := fmt.Sprintf("deliveries per gateway CPU-second net of the idle connections' CPU (measured in the hold): wsfleet %s", formatStats(w, unitPerCPU))
		if b.N > 0 && b.Median > 0 {
			l += fmt.Sprintf(", baseline %s, ratio %.3g×", formatStats(b, unitPerCPU), w.Median/b.Median)
		}
		out = append(out, l)
	}
	return out
}

func cpuPart(name string, s *CPUSplit) string {
	return fmt.Sprintf("%s: machine %.2f busy (gateways %.2f, NATS %.2f, router %.2f, loadtest and the rest %.2f)",
		name, s.MachineBusy, s.Gateways, s.NATS, s.Router, s.Rest)
}

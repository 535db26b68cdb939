package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// formatValue writes one value in a figure's unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case unitBytes:
		return thousands(int64(math.Round(v))) + " B"
	case unitPerCPU:
		return thousands(int64(math.Round(v)))
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

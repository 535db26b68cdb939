package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{1128.4, unitBytes, "1,128 B"},
		{23456.7, unitPerCPU, "23,457"},
		{3.214, unitMs, "3.21 ms"},
		{42.26, unitMs, "42.3 ms"},
		{144.6, unitMs, "145 ms"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
	if got := formatStats(statsOf([]float64{1010, 1128, 1337}), unitBytes); got != "1,128 B (1,010–1,337)" {
		t.Errorf("stats %q", got)
	}
	if got := formatStats(statsOf([]float64{3.2}), unitMs); got != "3.20 ms" {
		t.Errorf("one sample %q", got)
	}
	if got := formatStats(Stats{}, unitMs); got != "–" {
		t.Errorf("none %q", got)
	}
	for _, c := range []struct {
		f    Figure
		want string
	}{
		{Figure{Better: lowerBetter, Ratio: 0.05}, "0.05 (20× less)"},
		{Figure{Better: lowerBetter, Ratio: 1.5}, "1.5 (1.5× more)"},
		{Figure{Better: higherBetter, Ratio: 4.23}, "4.23×"},
		{Figure{Better: higherBetter}, "–"},
	} {
		if got := formatRatio(c.f); got != c.want {
			t.Errorf("ratio %v: %q, want %q", c.f.Ratio, got, c.want)
		}
	}
}

// The table is a Markdown table whose columns line up (in runes: the
// cells hold ≤, ×, –).
func TestWriteTable(t *testing.T) {
	rep := &Report{Settings: Settings{Conns: 20000}, Peak: &PeakSearch{Given: true, Rate: 5000}}
	rep.Runs = []*RunRecord{
		{System: sysWsfleet, Connect: &ConnectSample{Conns: 20000, RSSPerConn: 980, RampCPU: 1, ConnsPerCPU: 21000}},
		{System: sysBaseline, Connect: &ConnectSample{Conns: 20000, RSSPerConn: 39000, RampCPU: 2, ConnsPerCPU: 7000}},
	}
	var b bytes.Buffer
	writeTable(&b, tableRows(figures(rep)))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2+7 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	width := utf8.RuneCountInString(lines[0])
	for _, l := range lines {
		if utf8.RuneCountInString(l) != width || !strings.HasPrefix(l, "| ") || !strings.HasSuffix(l, " |") {
			t.Fatalf("ragged table:\n%s", b.String())
		}
	}
	for _, want := range []string{
		"| gateway RSS per idle authenticated connection at 20,000 connections",
		"980 B", "39,000 B", "0.0251 (39.8× less)", "≤ 1.0 KB (1,024 B)", "| yes |",
		"21,000 /CPU-s", "7,000 /CPU-s", "3×",
		"end-to-end p99 at 5,000 msg/s (--msg-rate; no peak search)",
		"not run (--million)", "cannot hold it (not run)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

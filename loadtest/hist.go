package loadtest

import (
	"errors"
	"fmt"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to one hour.
const (
	histLowest  = 1
	histHighest = 3_600_000_000
	histSigFigs = 3 // run totals: 0.1% resolution
	seriesSig   = 2 // per-second histograms of the time series: 1%
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histLowest, histHighest, histSigFigs) }

func newSeriesHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, seriesSig)
}

// recordMicros records a duration in nanoseconds as microseconds, clamped
// to the histogram's range (a negative duration, from a clock step, is 1 µs).
func recordMicros(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < histLowest {
		us = histLowest
	}
	if us > histHighest {
		us = histHighest
	}
	_ = h.RecordValue(us)
}

// HistWire is a histogram's exported snapshot (hdrhistogram's Export) with
// its counts stored sparsely: pairs of index and count, for the zeros that
// make up most of a latency histogram. Import of a HistWire gives back the
// exact histogram, so merging imported histograms is exact.
type HistWire struct {
	Lowest  int64   `json:"lowest"`
	Highest int64   `json:"highest"`
	SigFigs int64   `json:"sig_figs"`
	Counts  []int64 `json:"counts,omitempty"` // index, count, index, count…
}

// exportHist returns h's snapshot in wire form.
func exportHist(h *hdrhistogram.Histogram) HistWire {
	s := h.Export()
	w := HistWire{Lowest: s.LowestTrackableValue, Highest: s.HighestTrackableValue, SigFigs: s.SignificantFigures}
	for i, c := range s.Counts {
		if c != 0 {
			w.Counts = append(w.Counts, int64(i), c)
		}
	}
	return w
}

var errBadHist = errors.New("malformed histogram")

// importHist rebuilds a histogram from its wire form (hdrhistogram's Import
// of the snapshot, after Validate).
func importHist(w HistWire) (*hdrhistogram.Histogram, error) {
	if len(w.Counts)%2 != 0 {
		return nil, errBadHist
	}
	n := 0
	for i := 0; i < len(w.Counts); i += 2 {
		idx := w.Counts[i]
		if idx < 0 || idx > 1<<24 {
			return nil, fmt.Errorf("%w: count index %d", errBadHist, idx)
		}
		n = max(n, int(idx)+1)
	}
	s := &hdrhistogram.Snapshot{
		LowestTrackableValue:  w.Lowest,
		HighestTrackableValue: w.Highest,
		SignificantFigures:    w.SigFigs,
		Counts:                make([]int64, n),
	}
	for i := 0; i < len(w.Counts); i += 2 {
		s.Counts[w.Counts[i]] += w.Counts[i+1]
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadHist, err)
	}
	return hdrhistogram.Import(s), nil
}

// mergeWire merges the histogram in w into dst (creating it with w's
// geometry when dst is nil) and returns dst.
func mergeWire(dst *hdrhistogram.Histogram, w HistWire) (*hdrhistogram.Histogram, error) {
	h, err := importHist(w)
	if err != nil {
		return dst, err
	}
	if dst == nil {
		return h, nil
	}
	if dropped := dst.Merge(h); dropped != 0 {
		return dst, fmt.Errorf("%w: %d values out of range in merge", errBadHist, dropped)
	}
	return dst, nil
}

// LatencyStats summarises a latency histogram, in milliseconds.
type LatencyStats struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(us int64) float64 { return float64(us) / 1000 }

// statsOf computes the summary of h (zero for nil or empty).
func statsOf(h *hdrhistogram.Histogram) LatencyStats {
	if h == nil || h.TotalCount() == 0 {
		return LatencyStats{}
	}
	v := h.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9})
	return LatencyStats{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1000,
		P50:   ms(v[0]),
		P90:   ms(v[1]),
		P99:   ms(v[2]),
		P999:  ms(v[3]),
		Max:   ms(h.Max()),
	}
}

// HistBucket is one bar of a latency histogram: Count values at most UpTo
// milliseconds (and more than the previous bucket's UpTo).
type HistBucket struct {
	UpTo  float64 `json:"up_to_ms"`
	Count int64   `json:"count"`
}

// logBuckets folds h into buckets whose bounds grow by a factor of about
// 1.26 (ten per decade), from the first to the last non-empty one: what the
// HTML report draws.
func logBuckets(h *hdrhistogram.Histogram) []HistBucket {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	var out []HistBucket
	bound := 1.0 // µs
	for bound < float64(h.Min()) {
		bound *= 1.2589254117941673
	}
	cur := HistBucket{UpTo: bound / 1000}
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		v := float64(b.To)
		for v > bound {
			if cur.Count > 0 || len(out) > 0 {
				out = append(out, cur)
			}
			bound *= 1.2589254117941673
			cur = HistBucket{UpTo: bound / 1000}
		}
		cur.Count += b.Count
	}
	out = append(out, cur)
	return out
}

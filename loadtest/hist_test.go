package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Merging the exported snapshots of several histograms gives exactly the
// histogram of all their values: same counts, so the same percentiles.
func TestHistMergeEqualsSingle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all := newHist()
	parts := []*hdrhistogram.Histogram{newHist(), newHist(), newHist()}
	for i := 0; i < 200000; i++ {
		// a long-tailed mix: most around 1-5 ms, some up to seconds
		v := int64(rng.ExpFloat64()*2000) + 200
		if i%97 == 0 {
			v = rng.Int64N(5_000_000) + 1
		}
		recordMicros(all, v*1000)
		recordMicros(parts[i%3], v*1000)
	}
	var merged *hdrhistogram.Histogram
	for _, p := range parts {
		// through JSON, as between worker processes
		b, err := json.Marshal(exportHist(p))
		if err != nil {
			t.Fatal(err)
		}
		var w HistWire
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatal(err)
		}
		if merged, err = mergeWire(merged, w); err != nil {
			t.Fatal(err)
		}
	}
	if !merged.Equals(all) {
		t.Fatal("merged histogram differs from the histogram of all values")
	}
	for _, q := range []float64{0, 50, 90, 99, 99.9, 99.99, 100} {
		if got, want := merged.ValueAtPercentile(q), all.ValueAtPercentile(q); got != want {
			t.Errorf("p%v: merged %d, single %d", q, got, want)
		}
	}
	if statsOf(merged) != statsOf(all) {
		t.Errorf("stats differ: %+v vs %+v", statsOf(merged), statsOf(all))
	}
	// Averaging the parts' percentiles is not the same thing in general; the
	// merge must not depend on it. (Documented contrast, not an assertion.)
}

func TestHistWireRejectsGarbage(t *testing.T) {
	for _, w := range []HistWire{
		{Lowest: 1, Highest: 1000, SigFigs: 3, Counts: []int64{1}},
		{Lowest: 1, Highest: 1000, SigFigs: 9, Counts: []int64{1, 1}},
		{Lowest: 1, Highest: 1000, SigFigs: 3, Counts: []int64{-1, 1}},
		{Lowest: 1, Highest: 1000, SigFigs: 3, Counts: []int64{5, -3}},
	} {
		if _, err := importHist(w); err == nil {
			t.Errorf("importHist(%+v) accepted", w)
		}
	}
}

func TestLogBuckets(t *testing.T) {
	h := newHist()
	for _, us := range []int64{100, 150, 1000, 1000, 20000} {
		_ = h.RecordValue(us)
	}
	bs := logBuckets(h)
	var n int64
	for i, b := range bs {
		n += b.Count
		if i > 0 && b.UpTo <= bs[i-1].UpTo {
			t.Fatalf("bounds not increasing: %+v", bs)
		}
	}
	if n != 5 {
		t.Fatalf("buckets hold %d values, want 5: %+v", n, bs)
	}
	if bs[len(bs)-1].UpTo < 20 {
		t.Fatalf("last bucket %v ms does not reach 20 ms", bs[len(bs)-1].UpTo)
	}
}

package loadtest

import (
	"reflect"
	"testing"
	"time"
)

func TestLiveSpans(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		values []int64 // one a step from step 0
		want   []LiveSpan
	}{
		{
			name: "under the cap: a span a sample", limit: 4, values: []int64{10, 20, 15},
			want: []LiveSpan{{T: 0, Dur: 0.1, Min: 10, Max: 10, Last: 10}, {T: 0.1, Dur: 0.1, Min: 20, Max: 20, Last: 20}, {T: 0.2, Dur: 0.1, Min: 15, Max: 15, Last: 15}},
		},
		{
			name: "past the cap: neighbours merged, the dip kept", limit: 2, values: []int64{100, 100, 40, 100, 100},
			want: []LiveSpan{{T: 0, Dur: 0.4, Min: 40, Max: 100, Last: 100}, {T: 0.4, Dur: 0.4, Min: 100, Max: 100, Last: 100}},
		},
		{
			name: "twice past the cap", limit: 3, values: []int64{1, 2, 3, 4, 5, 6, 7, 8, 9},
			want: []LiveSpan{{T: 0, Dur: 0.4, Min: 1, Max: 4, Last: 4}, {T: 0.4, Dur: 0.4, Min: 5, Max: 8, Last: 8}, {T: 0.8, Dur: 0.4, Min: 9, Max: 9, Last: 9}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := liveSpans{step: 1, limit: tc.limit}
			for i, v := range tc.values {
				d.add(i, v)
			}
			if got := d.export(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("spans\ngot  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// A day of samples stays within the cap, and a dip of one sample shows.
func TestLiveSpansBounded(t *testing.T) {
	d := liveSpans{step: 1}
	steps := int(24 * time.Hour / liveEvery)
	for i := range steps {
		v := int64(1000)
		if i == steps/2 {
			v = 3
		}
		d.add(i, v)
	}
	spans := d.export()
	if len(spans) > maxLiveSpans || len(spans) < maxLiveSpans/2 {
		t.Fatalf("%d spans, want at most %d and at least half", len(spans), maxLiveSpans)
	}
	low := int64(1000)
	for _, s := range spans {
		low = min(low, s.Min)
	}
	if low != 3 {
		t.Errorf("the dip to 3 is lost: lowest %d", low)
	}
}

func TestLiveMerger(t *testing.T) {
	type step struct {
		worker int
		pts    []liveWire
		end    bool
		merged []int64 // the sums merged so far, a step each
	}
	for _, tc := range []struct {
		name  string
		steps []step
		final []int64 // after result()
	}{
		{
			name: "a step is merged once every worker has reported it",
			steps: []step{
				{worker: 0, pts: []liveWire{{0, 5}, {1, 6}, {2, 7}}},
				{worker: 1, pts: []liveWire{{0, 10}}, merged: []int64{15}},
				{worker: 1, pts: []liveWire{{1, 20}, {2, 30}}, merged: []int64{15, 26, 37}},
			},
			final: []int64{15, 26, 37},
		},
		{
			name: "a skipped step counts with the worker's sample before it",
			steps: []step{
				{worker: 0, pts: []liveWire{{0, 5}, {1, 6}, {2, 7}}},
				{worker: 1, pts: []liveWire{{0, 10}, {2, 30}}, merged: []int64{15, 16, 37}},
			},
			final: []int64{15, 16, 37},
		},
		{
			name: "a worker that ended no longer holds the others back",
			steps: []step{
				{worker: 0, pts: []liveWire{{0, 5}}},
				{worker: 0, end: true},
				{worker: 1, pts: []liveWire{{0, 10}, {1, 11}}, merged: []int64{15, 16}},
			},
			final: []int64{15, 16},
		},
		{
			name: "samples older than the worker's last are dropped",
			steps: []step{
				{worker: 0, pts: []liveWire{{0, 5}, {1, 6}, {1, 99}, {0, 99}}},
				{worker: 1, pts: []liveWire{{1, 1}}, merged: []int64{5, 7}},
			},
			final: []int64{5, 7},
		},
		{
			name: "the result merges what a silent worker held back",
			steps: []step{
				{worker: 0, pts: []liveWire{{0, 5}, {1, 6}}},
			},
			final: []int64{5, 6},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newLiveMerger(2)
			lasts := func(spans []LiveSpan) []int64 {
				var out []int64
				for _, s := range spans {
					out = append(out, s.Last)
				}
				return out
			}
			for i, s := range tc.steps {
				if s.end {
					m.end(s.worker)
				} else {
					m.add(s.worker, s.pts)
				}
				if got := lasts(m.spans.export()); !reflect.DeepEqual(got, s.merged) {
					t.Errorf("after step %d merged %v, want %v", i, got, s.merged)
				}
			}
			if got := lasts(m.result()); !reflect.DeepEqual(got, tc.final) {
				t.Errorf("result %v, want %v", got, tc.final)
			}
		})
	}
}

func TestSampleLive(t *testing.T) {
	var c seriesCollector
	c.init()
	ms := int64(time.Millisecond)
	c.sampleLive(0, 10*ms, 1)  // step 0
	c.sampleLive(0, 90*ms, 2)  // step 0 again: the later wins
	c.sampleLive(0, 250*ms, 3) // step 2
	c.sampleLive(0, 150*ms, 9) // step 1, older than the last: dropped
	if got, want := c.takeLive(), []liveWire{{0, 2}, {2, 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("first take %v, want %v", got, want)
	}
	c.sampleLive(0, 260*ms, 4) // step 2, already sent: dropped
	c.sampleLive(0, 300*ms, 5)
	if got, want := c.takeLive(), []liveWire{{3, 5}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("second take %v, want %v", got, want)
	}
	// the last sample, after the connections closed, is never dropped
	c.sampleLiveLast(0, 310*ms, 0) // step 3, sent: the next
	if got, want := c.takeLive(), []liveWire{{4, 0}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("last sample in a step sent %v, want %v", got, want)
	}
	c.sampleLive(0, 500*ms, 7)
	c.sampleLiveLast(0, 510*ms, 0) // step 5, not sent: replaced
	if got, want := c.takeLive(), []liveWire{{5, 0}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("last sample in a step not sent %v, want %v", got, want)
	}
	c.sampleLiveLast(0, 900*ms, 0) // a step of its own
	if got, want := c.takeLive(), []liveWire{{9, 0}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("last sample in a new step %v, want %v", got, want)
	}
}

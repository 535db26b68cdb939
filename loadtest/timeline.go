package loadtest

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// The timeline is what the charts' time axes show besides the per-second
// series: the open connections sampled every liveEvery (so a storm's drop
// and recovery, over in a second or two, are seen) and the moments the run
// changed phase.

// liveEvery is how often a process samples its open connections.
const liveEvery = 100 * time.Millisecond

// maxLiveSpans bounds the merged live series: past it, neighbouring spans
// are merged two by two (keeping their lowest and highest sample), so a
// long run costs no more memory than a short one, only resolution.
const maxLiveSpans = 2000

// LiveSpan is the open connections over one span of the run: the lowest,
// the highest and the last of the samples taken in it (every 100 ms; a
// long run's spans are wider, see maxLiveSpans).
type LiveSpan struct {
	T    float64 `json:"t"`   // start, seconds since the start of the run
	Dur  float64 `json:"dur"` // seconds
	Min  int64   `json:"min"`
	Max  int64   `json:"max"`
	Last int64   `json:"last"`
}

// Mark is a moment of the run, marked on the charts' time axes: a phase
// starting (ramp, publishing, drain, closing…), a storm's drop, the
// recovery from it.
type Mark struct {
	T     float64 `json:"t"` // seconds since the start of the run
	Label string  `json:"label"`
}

// liveWire is a process's open connections sampled in step I (of
// liveEvery) of the run.
type liveWire struct {
	I    int   `json:"i"`
	Live int64 `json:"n"`
}

// sampleLive records a process's open connections at mono time at (the
// last sample of a step wins; a sample older than the last is dropped).
func (c *seriesCollector) sampleLive(t0, at, live int64) {
	i := int((at - t0) / int64(liveEvery))
	c.mu.Lock()
	defer c.mu.Unlock()
	switch n := len(c.live); {
	case n > 0 && c.live[n-1].I == i:
		c.live[n-1].Live = live
	case i > c.liveLast:
		c.live = append(c.live, liveWire{I: i, Live: live})
		c.liveLast = i
	}
}

// sampleLiveLast records a process's last sample, after its connections
// closed: when its step was sent already, in the step after.
func (c *seriesCollector) sampleLiveLast(t0, at, live int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := int((at - t0) / int64(liveEvery))
	switch n := len(c.live); {
	case i > c.liveLast:
		c.live = append(c.live, liveWire{I: i, Live: live})
		c.liveLast = i
	case n > 0 && c.live[n-1].I == c.liveLast:
		c.live[n-1].Live = live // not sent yet
	default:
		c.liveLast++
		c.live = append(c.live, liveWire{I: c.liveLast, Live: live})
	}
}

// takeLive returns the live samples taken since the last take.
func (c *seriesCollector) takeLive() []liveWire {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.live
	c.live = nil
	return p
}

// liveNow is the process's open connections.
func (e *clientSet) liveNow() int64 {
	var n int64
	for _, l := range e.loops {
		n += l.st.live.Load()
	}
	return n
}

// liveMerger sums the workers' live samples step by step, as soon as every
// worker still running has reported the step (a worker that skipped a
// step counts with its previous sample), into spans of bounded number.
// The runner's mu guards it.
type liveMerger struct {
	pending  [][]liveWire // per worker, steps increasing
	reported []int        // the last step each worker reported
	ended    []bool       // the worker sent its result or is gone
	cur      []int64      // each worker's latest sample merged
	next     int          // the first step not merged
	spans    liveSpans
}

func newLiveMerger(workers int) *liveMerger {
	m := &liveMerger{pending: make([][]liveWire, workers), reported: make([]int, workers), ended: make([]bool, workers), cur: make([]int64, workers)}
	for i := range m.reported {
		m.reported[i] = -1
	}
	m.spans.step = 1
	return m
}

// add files worker w's samples and merges the steps now complete.
func (m *liveMerger) add(w int, pts []liveWire) {
	for _, p := range pts {
		if p.I <= m.reported[w] {
			continue
		}
		m.pending[w] = append(m.pending[w], p)
		m.reported[w] = p.I
	}
	m.merge(false)
}

// end marks worker w as done sending samples.
func (m *liveMerger) end(w int) {
	m.ended[w] = true
	m.merge(false)
}

// merge sums the steps every running worker has reported (with all, every
// step any worker reported).
func (m *liveMerger) merge(all bool) {
	upTo, running := math.MaxInt, false
	for w, r := range m.reported {
		if !m.ended[w] && !all {
			upTo, running = min(upTo, r), true
		}
	}
	if !running {
		upTo = -1
		for _, r := range m.reported {
			upTo = max(upTo, r)
		}
	}
	for ; m.next <= upTo; m.next++ {
		var sum int64
		for w, q := range m.pending {
			for len(q) > 0 && q[0].I <= m.next {
				m.cur[w], q = q[0].Live, q[1:]
			}
			m.pending[w] = q
			sum += m.cur[w]
		}
		m.spans.add(m.next, sum)
	}
}

// result merges what is left and returns the spans.
func (m *liveMerger) result() []LiveSpan {
	if m == nil {
		return nil
	}
	m.merge(true)
	return m.spans.export()
}

// liveSpans is a series of sample steps kept in at most maxLiveSpans
// spans, each step wide (a power of two).
type liveSpans struct {
	step  int
	spans []liveSpan
	limit int // maxLiveSpans unless set (tests)
}

type liveSpan struct {
	k              int // span k covers steps [k·step, (k+1)·step)
	min, max, last int64
}

func (d *liveSpans) add(i int, v int64) {
	if n := len(d.spans); n > 0 && d.spans[n-1].k == i/d.step {
		s := &d.spans[n-1]
		s.min, s.max, s.last = min(s.min, v), max(s.max, v), v
		return
	}
	limit := d.limit
	if limit <= 0 {
		limit = maxLiveSpans
	}
	if len(d.spans) >= limit {
		d.widen()
		d.add(i, v)
		return
	}
	d.spans = append(d.spans, liveSpan{k: i / d.step, min: v, max: v, last: v})
}

// widen doubles the spans' width, merging neighbours.
func (d *liveSpans) widen() {
	d.step *= 2
	out := d.spans[:0]
	for _, s := range d.spans {
		s.k /= 2
		if n := len(out); n > 0 && out[n-1].k == s.k {
			o := &out[n-1]
			o.min, o.max, o.last = min(o.min, s.min), max(o.max, s.max), s.last
			continue
		}
		out = append(out, s)
	}
	d.spans = out
}

func (d *liveSpans) export() []LiveSpan {
	out := []LiveSpan{}
	ms := d.step * int(liveEvery/time.Millisecond) // a span's width
	for _, s := range d.spans {
		out = append(out, LiveSpan{T: float64(s.k*ms) / 1e3, Dur: float64(ms) / 1e3, Min: s.min, Max: s.max, Last: s.last})
	}
	return out
}

// phaseMark is when the run entered a phase (mono ns).
type phaseMark struct {
	at    int64
	phase string
}

// phaseLabels are the phases marked on the time axes, by their label; the
// storm's drop and recovery are marked when the workers saw them instead.
var phaseLabels = map[string]string{
	"ramp": "ramp", "hold": "hold", "deliver": "publishing", "broadcast": "broadcasts",
	"storm": "storm", "churn": "churn", "drain": "drain", "closing": "closing",
	"subscribe": "subscribe", "probe": "client publish check", "live": "publishing", "rooms": "publishing",
}

// timelineMarks returns the run's marks in time order.
func (r *runner) timelineMarks(sum Progress, res *Result) []Mark {
	secs := func(at int64) float64 { return math.Round(float64(at-r.t0)/1e6) / 1e3 }
	r.phaseMu.Lock()
	marks := []Mark{}
	for _, p := range r.phases {
		if l, ok := phaseLabels[p.phase]; ok {
			marks = append(marks, Mark{T: secs(p.at), Label: l})
		}
	}
	r.phaseMu.Unlock()
	if s := res.Storm; s != nil && sum.FirstDrop != 0 {
		marks = append(marks, Mark{T: secs(sum.FirstDrop), Label: fmt.Sprintf("drop: %d reset", s.Dropped)})
		if s.RecoverySeconds >= 0 && sum.LastRecovery > sum.FirstDrop {
			marks = append(marks, Mark{T: secs(sum.LastRecovery), Label: fmt.Sprintf("all back after %.1f s", s.RecoverySeconds)})
		}
	}
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].T < marks[j].T })
	return marks
}

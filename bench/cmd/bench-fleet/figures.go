package main

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"github.com/wsfleet/wsfleet/loadtest"
)

// Report is everything a bench-fleet run measured: what --json writes.
type Report struct {
	Tool        string         `json:"tool"`
	Started     time.Time      `json:"started"`
	ElapsedS    float64        `json:"elapsed_s"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Settings    Settings       `json:"settings"`
	Machine     Machine        `json:"machine"`
	Plan        Plan           `json:"plan"`
	Peak        *PeakSearch    `json:"peak_search,omitempty"`
	Runs        []*RunRecord   `json:"runs"`
	Million     *MillionResult `json:"million,omitempty"`
	Figures     []Figure       `json:"figures"`
	Problems    []string       `json:"problems,omitempty"`
	LogDir      string         `json:"log_dir"`
}

// Settings are the run's parameters.
type Settings struct {
	Conns             int     `json:"conns"`
	Runs              int     `json:"runs"`
	Hold              string  `json:"hold"`
	ConnectRate       float64 `json:"connect_rate"`
	MsgRate           float64 `json:"msg_rate,omitempty"` // given; 0: searched
	PeakRange         string  `json:"peak_range,omitempty"`
	PeakConns         int     `json:"peak_conns,omitempty"`
	DeliverDuration   string  `json:"deliver_duration"`
	Broadcasts        int     `json:"broadcasts"`
	BroadcastInterval string  `json:"broadcast_interval"`
	Via               string  `json:"via"`
	MsgBytes          int     `json:"msg_bytes"`
	Gateways          int     `json:"gateways"`
	Baseline          bool    `json:"baseline"`
	Million           bool    `json:"million,omitempty"`
}

// RunRecord is one run of one system: connect → hold, deliver, broadcast.
type RunRecord struct {
	System    string           `json:"system"`
	Run       int              `json:"run"`
	Connect   *ConnectSample   `json:"connect,omitempty"`
	Deliver   *DeliverSample   `json:"deliver,omitempty"`
	Broadcast *BroadcastSample `json:"broadcast,omitempty"`
	Errors    []string         `json:"errors,omitempty"`
}

// ConnectSample is the connect phase: the ramp's CPU (from the gateways'
// /metrics scraped by loadtest just before and just after the ramp) and
// the memory of the idle connections after a hold (GC forced in every
// gateway, RSS settled), against the same reading before the ramp.
type ConnectSample struct {
	Conns        float64          `json:"conns"` // summed wsfleet_gateway_connections at the RSS reading
	RSSBefore    float64          `json:"rss_before_bytes"`
	RSSAfter     float64          `json:"rss_after_bytes"`
	RSSPerConn   float64          `json:"rss_per_conn_bytes"`
	Settled      bool             `json:"rss_settled"`
	RampConns    float64          `json:"ramp_conns"` // summed gateway connections at the end of the ramp
	RampCPU      float64          `json:"ramp_cpu_seconds"`
	ConnsPerCPU  float64          `json:"conns_per_cpu_second"`
	RampSeconds  float64          `json:"ramp_s"`
	ConnectRate  float64          `json:"connect_rate"`
	HandshakeP99 float64          `json:"handshake_p99_ms"`
	Failures     int64            `json:"connect_failures"`
	Closes       map[string]int64 `json:"closes_by_code,omitempty"`
	Gateways     []Sample         `json:"gateways_after_hold"`
	GoBefore     memStats         `json:"go_memstats_before"` // summed over the gateways, after the forced GC
	GoAfter      memStats         `json:"go_memstats_after"`
	GoPerConn    *GoPerConn       `json:"go_per_conn,omitempty"`
	RampSplit    *CPUSplit        `json:"ramp_cpu,omitempty"`
	IdleSplit    *CPUSplit        `json:"idle_cpu,omitempty"` // the hold: what idle connections cost
	NATSRSS      float64          `json:"nats_rss_bytes"`     // at the RSS reading
	RouterRSS    float64          `json:"router_rss_bytes"`
}

// GoPerConn splits the RSS per connection by the Go runtime's MemStats
// (deltas over the connections): live heap, heap spans in use but not
// filled, idle heap not yet returned to the OS, goroutine stacks, and the
// rest (runtime metadata, binary pages, other mappings).
type GoPerConn struct {
	HeapLive         float64 `json:"heap_live_bytes"`
	HeapFragment     float64 `json:"heap_fragmentation_bytes"`
	HeapIdleRetained float64 `json:"heap_idle_retained_bytes"`
	Stacks           float64 `json:"stacks_bytes"`
	Other            float64 `json:"other_bytes"`
}

// DeliverSample is the deliver phase: messages to random users at one
// rate; CPU from the gateways' /metrics at the end of the ramp and just
// before the connections closed (publishing and drain).
type DeliverSample struct {
	Rate             float64 `json:"rate"`
	Published        int64   `json:"published"`
	Expected         int64   `json:"expected"`
	Delivered        int64   `json:"delivered"`
	Lost             int64   `json:"lost"`
	Skipped          int64   `json:"skipped_behind"`
	Failed           int64   `json:"publish_failed"`
	CPU              float64 `json:"gateway_cpu_seconds"`
	DeliveriesPerCPU float64 `json:"deliveries_per_cpu_second"`
	P50              float64 `json:"p50_ms"`
	P99              float64 `json:"p99_ms"`
	Max              float64 `json:"max_ms"`
	DrainEnd         string  `json:"drain_end"`
	Conns            int64   `json:"conns"`
	WindowSeconds    float64 `json:"cpu_window_s"` // loadtest's scrapes: end of the ramp → before the close
	// Net of the idle connections' CPU (the connect phase's hold, same
	// run): deliveries / (CPU - idle cores × window).
	NetDeliveriesPerCPU float64   `json:"net_deliveries_per_cpu_second,omitempty"`
	Split               *CPUSplit `json:"cpu,omitempty"`
}

// BroadcastSample is the broadcast phase.
type BroadcastSample struct {
	Conns     int64      `json:"conns"` // connections open when broadcasting (loadtest's peak)
	Each      []BcastOne `json:"each"`
	Split     *CPUSplit  `json:"cpu,omitempty"`
	ClientCPU float64    `json:"loadtest_cpu_seconds"` // the whole loadtest run
}

// BcastOne is one broadcast.
type BcastOne struct {
	Receivers int64   `json:"receivers"`
	FirstMs   float64 `json:"first_ms"`
	LastMs    float64 `json:"last_ms"`
	Error     string  `json:"error,omitempty"`
}

// PeakSearch finds the highest rate at which every message is delivered
// and the backlog does not grow (wsfleet), and the rate the deliver phase
// then runs at: half of it.
type PeakSearch struct {
	Given   bool    `json:"given,omitempty"` // --msg-rate: no search
	Conns   int     `json:"conns,omitempty"`
	Probes  []Probe `json:"probes,omitempty"`
	Peak    float64 `json:"peak,omitempty"`     // highest passing rate (0: none passed)
	AtLeast bool    `json:"at_least,omitempty"` // the top of the range passed: the peak may be higher
	Rate    float64 `json:"rate"`               // the deliver phase's rate
}

// Probe is one deliver run of the search.
type Probe struct {
	Rate      float64   `json:"rate"`
	Pass      bool      `json:"pass"`
	Why       string    `json:"why,omitempty"`
	Delivered int64     `json:"delivered"`
	P50       float64   `json:"p50_ms"`
	P99       float64   `json:"p99_ms"`
	CPU       *CPUSplit `json:"cpu,omitempty"`
}

// MillionResult is the --million mode: N connections held, then a broadcast.
type MillionResult struct {
	Conns          int              `json:"conns"`
	Peak           int64            `json:"peak"`
	HeldSeconds    float64          `json:"held_s"` // from the end of the ramp to the last broadcast
	MinDuringHold  float64          `json:"min_gateway_connections_during_hold"`
	Closes         map[string]int64 `json:"closes_by_code"`
	Unexpected     int64            `json:"unexpected_closes"`
	Receivers      int64            `json:"last_broadcast_receivers"`
	LastMs         float64          `json:"last_broadcast_last_ms"`
	RampSeconds    float64          `json:"ramp_s"`
	GatewayRSS     float64          `json:"gateway_rss_bytes"`
	MachineMemUsed uint64           `json:"machine_mem_used_bytes"` // MemTotal - MemAvailable during the hold, less before the start
	// Phases says, for the ramp, the hold and the broadcasts, what the
	// fleet refused and why and how NATS and the router fared.
	Phases []PhaseDiag `json:"phases,omitempty"`
	// The load tester's side: the attempts the gateways refused for now by
	// reason, every failed attempt by reason, and how the ramp backed off.
	Refusals map[string]int64     `json:"refusals,omitempty"`
	Attempts int64                `json:"attempts,omitempty"`
	Failures map[string]int64     `json:"failures,omitempty"`
	Ramp     *loadtest.RampResult `json:"ramp,omitempty"`
	Yes      bool                 `json:"yes"`
	// HeldAll: every condition held at the connections asked for (a trial
	// at --million-conns below 1,000,000 holds all, yet is not a yes).
	HeldAll bool   `json:"held_all"`
	Why     string `json:"why,omitempty"`
}

// Stats summarizes the samples of one figure.
type Stats struct {
	N       int       `json:"n"`
	Min     float64   `json:"min"`
	Median  float64   `json:"median"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func statsOf(xs []float64) Stats {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	s := Stats{N: len(v), Samples: v}
	if len(v) == 0 {
		return s
	}
	sorted := append([]float64(nil), v...)
	sort.Float64s(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// Units of figures.
const (
	unitBytes    = "B"
	unitPerCPU   = "/CPU-s"
	unitMs       = "ms"
	unitYesNo    = "yes/no"
	lowerBetter  = -1
	higherBetter = 1
)

// Figure is one row of the table.
type Figure struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Better   int     `json:"better"` // -1: lower is better, 1: higher
	Wsfleet  Stats   `json:"wsfleet"`
	Baseline Stats   `json:"baseline"`
	Ratio    float64 `json:"ratio,omitempty"` // wsfleet median / baseline median
	Target   string  `json:"target"`
	Met      *bool   `json:"met,omitempty"`  // on the medians; nil: not measured
	Text     string  `json:"text,omitempty"` // yes/no figures: the answer
	Note     string  `json:"note,omitempty"`
}

func boolp(b bool) *bool { return &b }

// figures assembles the table's rows from the runs.
func figures(rep *Report) []Figure {
	n := rep.Settings.Conns
	var rss, cps, dpc, p99, bc [2][]float64 // [0] wsfleet, [1] baseline
	for _, r := range rep.Runs {
		i := 0
		if r.System == sysBaseline {
			i = 1
		}
		if c := r.Connect; c != nil {
			if c.Conns > 0 {
				rss[i] = append(rss[i], c.RSSPerConn)
			}
			if c.RampCPU > 0 {
				cps[i] = append(cps[i], c.ConnsPerCPU)
			}
		}
		if d := r.Deliver; d != nil {
			if d.CPU > 0 {
				dpc[i] = append(dpc[i], d.DeliveriesPerCPU)
			}
			if d.Delivered > 0 {
				p99[i] = append(p99[i], d.P99)
			}
		}
		if b := r.Broadcast; b != nil {
			for _, e := range b.Each {
				if e.Receivers > 0 {
					bc[i] = append(bc[i], e.LastMs)
				}
			}
		}
	}
	mk := func(id, name, unit string, better int, xs [2][]float64) Figure {
		f := Figure{ID: id, Name: name, Unit: unit, Better: better, Wsfleet: statsOf(xs[0]), Baseline: statsOf(xs[1])}
		if f.Wsfleet.N > 0 && f.Baseline.N > 0 && f.Baseline.Median != 0 {
			f.Ratio = f.Wsfleet.Median / f.Baseline.Median
		}
		return f
	}
	var out []Figure

	f := mk("rss_per_conn", fmt.Sprintf("gateway RSS per idle authenticated connection at %s connections (sum over gateway processes)", numfmt.Thousands(int64(n))), unitBytes, lowerBetter, rss)
	f.Target = "≤ 1.0 KB (1,024 B)"
	if f.Wsfleet.N > 0 {
		f.Met = boolp(f.Wsfleet.Median <= 1024)
	}
	out = append(out, f)

	g := f
	g.ID, g.Name, g.Target, g.Met = "rss_ratio", "the same, against the naive baseline", "≥ 15× less", nil
	if g.Ratio > 0 {
		g.Met = boolp(1/g.Ratio >= 15)
	}
	out = append(out, g)

	f = mk("conns_per_cpu", "connect + JWT auth (HS256) per gateway CPU-second (ramp)", unitPerCPU, higherBetter, cps)
	f.Target = "≥ 20,000"
	if f.Wsfleet.N > 0 {
		f.Met = boolp(f.Wsfleet.Median >= 20000)
	}
	out = append(out, f)

	rate := ""
	if rep.Peak != nil && rep.Peak.Rate > 0 {
		rate = fmt.Sprintf(" (%s msg/s, both)", numfmt.Thousands(int64(rep.Peak.Rate)))
	}
	f = mk("deliveries_per_cpu", "per-user deliveries per gateway CPU-second"+rate, unitPerCPU, higherBetter, dpc)
	f.Target = "≥ 4× the baseline"
	if f.Ratio > 0 {
		f.Met = boolp(f.Ratio >= 4)
	}
	out = append(out, f)

	name := "end-to-end p99 at half the peak delivery rate"
	if p := rep.Peak; p != nil {
		switch {
		case p.Given:
			name = fmt.Sprintf("end-to-end p99 at %s msg/s (--msg-rate; no peak search)", numfmt.Thousands(int64(p.Rate)))
		case p.Peak > 0:
			at := ""
			if p.AtLeast {
				at = "≥ "
			}
			name = fmt.Sprintf("end-to-end p99 at half the peak delivery rate (%s msg/s; peak %s%s)", numfmt.Thousands(int64(p.Rate)), at, numfmt.Thousands(int64(p.Peak)))
		default:
			name = fmt.Sprintf("end-to-end p99 at %s msg/s (no probe passed: below the search range)", numfmt.Thousands(int64(p.Rate)))
		}
	}
	f = mk("p99_half_peak", name, unitMs, lowerBetter, p99)
	f.Target = "≤ 5 ms"
	if f.Wsfleet.N > 0 {
		f.Met = boolp(f.Wsfleet.Median <= 5)
	}
	out = append(out, f)

	f = mk("broadcast_last", fmt.Sprintf("broadcast to %s connections, time to the last delivery", numfmt.Thousands(int64(n))), unitMs, lowerBetter, bc)
	f.Target = "≤ 150 ms"
	if f.Wsfleet.N > 0 {
		f.Met = boolp(f.Wsfleet.Median <= 150)
	}
	out = append(out, f)

	f = Figure{ID: "million", Name: "1,000,000 authenticated connections held ≥ 60 s, 0 unexpected closes, then one broadcast reaching all", Unit: unitYesNo, Target: "yes"}
	if m := rep.Million; m != nil {
		f.Text = "no"
		if m.Yes {
			f.Text = "yes"
		}
		f.Met = boolp(m.Yes)
		f.Note = m.Why
	} else {
		f.Text = "not run (--million)"
	}
	out = append(out, f)
	return out
}

// medianOf is the median of xs (0 for none).
func medianOf(xs []float64) float64 { return statsOf(xs).Median }

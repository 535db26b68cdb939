package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/wsfleet/wsfleet/internal/numfmt"
	"golang.org/x/sys/unix"
)

// Result is everything a run measured: what --json writes and the report
// and HTML page are made of. Every key documented in docs/loadtest.md is
// always written: null for a part that does not apply to the scenario (no
// messages in a connect run), [] or {} when a list or map is empty.
type Result struct {
	Tool        string    `json:"tool"`
	Scenario    string    `json:"scenario"`
	RunID       string    `json:"run_id"`
	Started     time.Time `json:"started"`
	Elapsed     float64   `json:"elapsed_s"`
	Interrupted bool      `json:"interrupted"`
	Settings    Settings  `json:"settings"`
	Limits      Limits    `json:"limits"`

	Connections ConnResult          `json:"connections"`
	Messages    *MsgResult          `json:"messages"`
	Broadcasts  *BcastResult        `json:"broadcasts"`
	Topics      *TopicResult        `json:"topics"` // live, rooms; null otherwise
	Storm       *StormResult        `json:"storm"`
	Churn       *ChurnResult        `json:"churn"`
	Kicks       *KickResult         `json:"kicks"`
	Resume      *ResumeResult       `json:"resume"` // --resume; null without
	Closes      map[string]int64    `json:"closes_by_code"`
	CPU         CPUResult           `json:"client_cpu"`
	Gateways    []GatewayFigures    `json:"gateways"`
	Series      []Point             `json:"series"`
	Live        []LiveSpan          `json:"live_series"` // open connections every 100 ms
	Marks       []Mark              `json:"marks"`       // phases, a storm's drop and recovery
	Hists       map[string]HistWire `json:"histograms"`
	Accounting  Accounting          `json:"accounting"`
	Problems    []string            `json:"problems"`
	// Failures are the verdict: why the run failed, one line each (none:
	// it passed); ExitStatus is the status the command exits with.
	Failures   []string `json:"failures"`
	ExitStatus int      `json:"exit_status"`
}

// Settings are the run's parameters (no secrets).
type Settings struct {
	URLs           []string `json:"urls"`
	Transport      string   `json:"transport"` // ws or sse
	Conns          int      `json:"conns"`
	ConnectRate    float64  `json:"connect_rate"`
	Duration       string   `json:"duration"`
	DevicesPerUser int      `json:"devices_per_user"`
	UserPrefix     string   `json:"user_prefix"`
	JWTAlg         string   `json:"jwt_alg"`
	TokenTTL       string   `json:"token_ttl"`
	TokenRefresh   bool     `json:"token_refresh"`
	Via            string   `json:"via"`
	MsgRate        float64  `json:"msg_rate"`
	MsgBytes       int      `json:"msg_bytes"`
	Broadcasts     int      `json:"broadcasts"`
	DropShare      float64  `json:"drop_share"`
	ChurnRate      float64  `json:"churn_rate"`
	KickUsers      int      `json:"kick_users"`
	Drain          string   `json:"drain"`
	Resume         bool     `json:"resume"`
	Topic          string   `json:"topic,omitempty"`        // live
	RoomSize       int      `json:"room_size,omitempty"`    // rooms
	RoomPublish    string   `json:"room_publish,omitempty"` // rooms
}

// ConnResult is about connections.
type ConnResult struct {
	Target       int              `json:"target"`
	Peak         int64            `json:"peak"`
	OpenAtEnd    int64            `json:"open_at_end"`
	Attempts     int64            `json:"attempts"`
	Welcomes     int64            `json:"welcomes"`
	EverWelcomed int64            `json:"ever_welcomed"` // connections (slots) welcomed at least once
	Failures     int64            `json:"failures"`
	RampDone     bool             `json:"ramp_done"`
	RampSeconds  float64          `json:"ramp_s"`
	RateTarget   float64          `json:"connect_rate_target"`
	Rate         float64          `json:"connect_rate"`      // connections welcomed per second during the ramp
	Upgrade      LatencyStats     `json:"upgrade_latency"`   // connect() → 101 (--transport sse: → the 200's head)
	Handshake    LatencyStats     `json:"handshake_latency"` // connect() → welcome
	Errors       map[string]int64 `json:"errors"`
	Refreshed    int64            `json:"tokens_refreshed"`
	TokenMints   int64            `json:"tokens_minted"`
	// Sessions the gateway or the network ended (not the load tester: a
	// storm's drop, churn, the end of the run, a token expiry the run
	// asked for), and connections still down after one at the end.
	ClosedUnexpectedly int64 `json:"closed_unexpectedly"`
	ClosedNotBack      int64 `json:"closed_not_back"`
	// Refusals are the attempts the gateways refused for now, by reason
	// (HTTP 503 whatever its code, 429, a close 1013 before the welcome);
	// Errors counts them too. A refused device retries after its back-off
	// and the refusal's Retry-After.
	Refusals map[string]int64 `json:"refusals"`
	Ramp     *RampResult      `json:"ramp"` // how the ramp backed off
}

// RampResult is how the ramp backed off. Each event loop runs its share of
// --connect-rate and backs off on its own (see docs/loadtest.md).
type RampResult struct {
	Backoff bool `json:"backoff"` // --ramp-backoff: false, the ramp ran open-loop
	// Signs of a fleet behind while the ramp had connections left to start:
	// refusals, 408s, attempts that timed out (counted with or without
	// --ramp-backoff).
	Pushbacks int64 `json:"pushbacks"`
	RateCuts  int64 `json:"rate_cuts"` // times a loop cut its rate
	// MinRate is the lowest rate the ramp backed off to, connects per
	// second: the sum of each loop's lowest (pauses aside). Loops back off
	// on their own, so the ramp's total rate was never below it.
	MinRate float64 `json:"min_rate"`
	// BelowTargetSeconds is the longest a loop spent below its share of
	// --connect-rate, or paused by a Retry-After; PausedSeconds the
	// longest a loop was paused.
	BelowTargetSeconds float64 `json:"below_target_s"`
	PausedSeconds      float64 `json:"paused_s"`
	// InFlightLimit is the attempts in flight past which the ramp starts no
	// new connect (the sum of the loops' limits; 0 for the open loop);
	// HeldSeconds the longest a loop had connects due but waited for its
	// attempts to finish.
	InFlightLimit int64   `json:"in_flight_limit"`
	HeldSeconds   float64 `json:"held_s"`
}

// MsgResult is about messages to users.
type MsgResult struct {
	Via        string           `json:"via"`
	RateTarget float64          `json:"rate_target"`
	Rate       float64          `json:"rate"` // acknowledged per second of publishing
	Published  int64            `json:"published"`
	Acked      int64            `json:"acked"`
	Failed     int64            `json:"failed"`
	Skipped    int64            `json:"skipped_behind"` // not sent: the publisher fell behind its rate
	Errors     map[string]int64 `json:"publish_errors"`
	Counts     SeqCounts        `json:"counts"`
	Foreign    int64            `json:"foreign"`
	Misrouted  int64            `json:"misrouted"`
	Latency    LatencyStats     `json:"latency"`
	Histogram  []HistBucket     `json:"histogram"`
	DrainEnd   string           `json:"drain_end"`
}

// BcastResult is about broadcasts.
type BcastResult struct {
	Via       string       `json:"via"`
	Counts    SeqCounts    `json:"counts"`
	Latency   LatencyStats `json:"latency"`
	Histogram []HistBucket `json:"histogram"`
	Each      []BcastEach  `json:"each"`
	DrainEnd  string       `json:"drain_end"`
}

// BcastEach is one broadcast: receivers and the time from the publish to
// the first and the last receipt.
type BcastEach struct {
	Seq       int     `json:"seq"`
	Acked     bool    `json:"acked"`
	Error     string  `json:"error"` // "" when acknowledged
	Receivers int64   `json:"receivers"`
	FirstMs   float64 `json:"first_ms"`
	LastMs    float64 `json:"last_ms"`
}

// StormResult is about a storm.
type StormResult struct {
	Share           float64      `json:"share"`
	Dropped         int64        `json:"dropped"`
	Recovered       int64        `json:"recovered"`
	RecoverySeconds float64      `json:"recovery_s"` // drop → last dropped connection welcomed again; -1: not all came back
	Reconnect       LatencyStats `json:"reconnect_latency"`
	Missed          int64        `json:"missed"`
}

// ChurnResult is about churn.
type ChurnResult struct {
	RateTarget float64 `json:"rate_target"`
	Closed     int64   `json:"closed"`
	Rate       float64 `json:"rate"`
	Missed     int64   `json:"missed"`
}

// CPUResult is the client's CPU time (every process of the run).
type CPUResult struct {
	UserSeconds float64 `json:"user_s"`
	SysSeconds  float64 `json:"sys_s"`
	Cores       float64 `json:"cores"` // (user+sys) / elapsed
	Processes   int     `json:"processes"`
}

// Point is one second of the time series.
type Point struct {
	T         float64 `json:"t"` // seconds since the start
	Live      int64   `json:"live"`
	Connects  int64   `json:"connects"`  // welcomes during the second
	Closes    int64   `json:"closes"`    // sessions ended during the second
	Delivered int64   `json:"delivered"` // message receipts during the second
	Acked     int64   `json:"acked"`
	// The latencies of the second up to T: of the messages, or in a
	// broadcast run of the broadcasts' receipts.
	LatCount int64   `json:"lat_count"`
	LatP50   float64 `json:"lat_p50_ms"`
	LatP99   float64 `json:"lat_p99_ms"`
	LatMax   float64 `json:"lat_max_ms"`
	// RampRate is the rate the ramp allowed at the second (0 while paused,
	// and once every connection was started).
	RampRate float64 `json:"ramp_rate"`
}

// Accounting says whether the counts add up.
type Accounting struct {
	OK     bool     `json:"ok"`
	Checks []string `json:"checks"`
}

// result merges the workers' results.
func (r *runner) result(end int64) *Result {
	c := &r.cfg
	alg, _, _ := c.Auth.signingKey()
	res := &Result{
		Tool: "wsfleet-loadtest", Scenario: c.Scenario, RunID: r.runID, Started: r.started,
		Elapsed: float64(end-r.t0) / 1e9, Interrupted: r.interrupted, Limits: r.lim,
		Settings: Settings{URLs: c.URLs, Transport: c.Transport, Conns: c.Conns, ConnectRate: c.ConnectRate, Duration: c.Duration.String(),
			DevicesPerUser: c.Devices, UserPrefix: c.UserPrefix, JWTAlg: alg, TokenTTL: c.Auth.TTL.String(),
			TokenRefresh: c.Auth.Refresh, Drain: c.Drain.String(), KickUsers: c.KickUsers, Resume: c.Resume},
		Closes: map[string]int64{}, Hists: map[string]HistWire{}, Problems: []string{},
	}
	res.Limits.SourceIPs = orEmpty(res.Limits.SourceIPs)
	res.Limits.Targets = orEmpty(res.Limits.Targets)
	res.Limits.Advice = orEmpty(res.Limits.Advice)
	res.Limits.Notes = orEmpty(res.Limits.Notes)
	r.mu.Lock()
	results := append([]*workerResult(nil), r.results...)
	res.Problems = append(res.Problems, r.workerErrs...)
	peak := r.peakLive
	r.mu.Unlock()
	sum, _ := r.progress()

	hs := map[string]*hdrhistogram.Histogram{}
	var msgs, bc SeqCounts
	errs, perrs, refusals := map[string]int64{}, map[string]int64{}, map[string]int64{}
	var ramp rampWire
	var resume resumeWire
	bstats := map[int]*BroadcastStat{}
	var foreign, misrouted, refreshed, churned, behind, open, mints, unexpected, notBack int64
	for _, w := range results {
		msgs.add(w.Msgs)
		bc.add(w.Bcast)
		for k, v := range w.Hists {
			h, err := mergeWire(hs[k], v)
			if err != nil {
				res.Problems = append(res.Problems, fmt.Sprintf("worker %d histogram %s: %v", w.Index, k, err))
				continue
			}
			hs[k] = h
		}
		for k, v := range w.Closes {
			res.Closes[k] += v
		}
		for k, v := range w.Errors {
			errs[k] += v
		}
		for k, v := range w.Refusals {
			refusals[k] += v
		}
		ramp.add(w.Ramp)
		resume.add(w.Resume)
		for k, v := range w.PubErrors {
			perrs[k] += v
		}
		for _, b := range w.Broadcasts {
			t := bstats[b.Seq]
			if t == nil {
				bb := b
				bstats[b.Seq] = &bb
				continue
			}
			t.Receivers += b.Receivers
			if b.Receivers > 0 {
				if t.First == 0 || b.First < t.First {
					t.First = b.First
				}
				t.Last = max(t.Last, b.Last)
			}
		}
		foreign += w.Foreign
		misrouted += w.Misrouted
		refreshed += w.Refreshed
		churned += w.Churned
		behind += w.Behind
		open += w.OpenAtEnd
		unexpected += w.Unexpected
		notBack += w.NotBack
		mints += w.Mints
		res.CPU.UserSeconds += w.CPUUser
		res.CPU.SysSeconds += w.CPUSys
	}
	if r.lim.Processes > 0 {
		var ru unix.Rusage
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
			res.CPU.UserSeconds += float64(ru.Utime.Nano()) / 1e9
			res.CPU.SysSeconds += float64(ru.Stime.Nano()) / 1e9
		}
		res.CPU.Processes = r.lim.Processes + 1
	} else {
		res.CPU.Processes = 1
	}
	if res.Elapsed > 0 {
		res.CPU.Cores = (res.CPU.UserSeconds + res.CPU.SysSeconds) / res.Elapsed
	}
	for k, h := range hs {
		res.Hists[k] = exportHist(h)
	}

	cr := &res.Connections
	cr.Target, cr.Peak, cr.OpenAtEnd = c.Conns, max(peak, sum.Live), open
	cr.Attempts, cr.Welcomes, cr.Failures, cr.EverWelcomed = sum.Attempts, sum.Welcomes, sum.Fails, sum.EverWelcomed
	cr.ClosedUnexpectedly, cr.ClosedNotBack = unexpected, notBack
	cr.RateTarget = c.ConnectRate
	cr.Upgrade, cr.Handshake = statsOf(hs["upgrade"]), statsOf(hs["welcome"])
	cr.Errors, cr.Refreshed, cr.TokenMints = errs, refreshed, mints
	cr.Refusals = refusals
	cr.Ramp = &RampResult{Backoff: !c.OpenLoopRamp, Pushbacks: ramp.Pushbacks, RateCuts: ramp.Cuts, MinRate: ramp.MinRate,
		BelowTargetSeconds: float64(ramp.Below) / 1e9, PausedSeconds: float64(ramp.Paused) / 1e9, HeldSeconds: float64(ramp.Held) / 1e9}
	if cr.Ramp.Backoff {
		cr.Ramp.InFlightLimit = ramp.Window
	}
	_, all := r.progress()
	cr.RampDone = len(all) > 0
	var rampStart, rampDone int64
	for _, p := range all {
		if p.RampDone == 0 {
			cr.RampDone = false
		}
		if p.RampStart != 0 && (rampStart == 0 || p.RampStart < rampStart) {
			rampStart = p.RampStart
		}
		rampDone = max(rampDone, p.RampDone)
	}
	if cr.RampDone && rampDone > rampStart {
		cr.RampSeconds = float64(rampDone-rampStart) / 1e9
		cr.Rate = float64(c.Conns) / cr.RampSeconds
	}

	if c.publishes() {
		m := &MsgResult{Via: c.Publish.Via, RateTarget: c.MsgRate, Published: sum.Published, Acked: sum.Acked,
			Failed: sum.PubFailed, Skipped: behind, Errors: perrs, Counts: msgs, Foreign: foreign, Misrouted: misrouted,
			Latency: statsOf(hs["e2e"]), Histogram: orEmpty(logBuckets(hs["e2e"])), DrainEnd: r.drainEnd}
		pubSecs := c.Duration.Seconds()
		if pubSecs > 0 {
			m.Rate = float64(m.Acked) / pubSecs
		}
		res.Messages = m
		res.Settings.Via, res.Settings.MsgRate, res.Settings.MsgBytes = c.Publish.Via, c.MsgRate, c.Publish.MsgBytes
	}
	if c.Scenario == ScenarioBroadcast {
		b := &BcastResult{Via: c.Publish.Via, Counts: bc, Latency: statsOf(hs["broadcast"]), Histogram: orEmpty(logBuckets(hs["broadcast"])),
			Each: []BcastEach{}, DrainEnd: r.drainEnd}
		for _, p := range r.bcasts {
			e := BcastEach{Seq: p.seq, Acked: p.ok, Error: p.reason}
			if s := bstats[p.seq]; s != nil && s.Receivers > 0 {
				e.Receivers = s.Receivers
				e.FirstMs = float64(s.First-p.t) / 1e6
				e.LastMs = float64(s.Last-p.t) / 1e6
			}
			b.Each = append(b.Each, e)
		}
		res.Broadcasts = b
		res.Settings.Via, res.Settings.Broadcasts = c.Publish.Via, c.Broadcasts
	}
	if c.topics() {
		t, probs := r.topicResult(results, hs, perrs, behind, sum)
		res.Problems = append(res.Problems, probs...)
		res.Topics = t
		res.Settings.Via, res.Settings.MsgRate, res.Settings.MsgBytes = t.Via, c.MsgRate, c.Publish.MsgBytes
		if c.Scenario == ScenarioLive {
			res.Settings.Topic = c.Topic
		} else {
			res.Settings.RoomSize, res.Settings.RoomPublish = c.RoomSize, c.RoomPublish
		}
		if h := hs["fanout"]; h != nil {
			res.Hists["fanout"] = exportHist(h)
		}
	}
	if c.Scenario == ScenarioStorm {
		s := &StormResult{Share: c.DropShare, Dropped: sum.Dropped, Recovered: sum.Recovered, RecoverySeconds: -1,
			Reconnect: statsOf(hs["reconnect"]), Missed: msgs.Missed}
		if s.Dropped > 0 && s.Recovered >= s.Dropped && sum.LastRecovery > sum.FirstDrop {
			s.RecoverySeconds = float64(sum.LastRecovery-sum.FirstDrop) / 1e9
		}
		res.Storm = s
		res.Settings.DropShare = c.DropShare
	}
	if c.Scenario == ScenarioChurn {
		ch := &ChurnResult{RateTarget: c.ChurnRate, Closed: churned, Missed: msgs.Missed}
		ch.Rate = float64(churned) / c.Duration.Seconds()
		res.Churn = ch
		res.Settings.ChurnRate = c.ChurnRate
	}
	res.Series = r.mergedSeries()
	r.mu.Lock()
	res.Live = r.live.result()
	r.mu.Unlock()
	res.Marks = r.timelineMarks(sum, res)
	res.Kicks = r.kicks
	if c.Resume {
		res.Resume = resumeResult(resume, msgs, bc, statsOf(hs["replay"]))
	}
	res.Series = orEmpty(res.Series)
	res.Gateways = orEmpty(r.gatewayFigures())
	res.Accounting = checkAccounting(res, msgs, bc)
	res.Failures, res.ExitStatus = Verdict(res), ExitStatus(res)
	return res
}

// orEmpty returns s, or an empty slice for nil: JSON [] rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// mergedSeries sums the workers' per-second points (carrying a worker's
// last point over a second it skipped) and takes each second's latency
// percentiles from the merged histogram of that second.
func (r *runner) mergedSeries() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	maxI := -1
	for _, m := range r.series {
		for i := range m {
			maxI = max(maxI, i)
		}
	}
	if maxI < 0 {
		return nil
	}
	// the latencies of the last second, after its sample, end a point
	// of their own
	for i := range r.seriesLat {
		maxI = max(maxI, i+1)
	}
	last := make([]seriesWire, len(r.series))
	var prev seriesWire
	var out []Point
	for i := 0; i <= maxI; i++ {
		var s seriesWire
		for w, m := range r.series {
			if p, ok := m[i]; ok {
				last[w] = p
			}
			s.Live += last[w].Live
			s.Welcomes += last[w].Welcomes
			s.Closes += last[w].Closes
			s.Receipts += last[w].Receipts + last[w].BReceipts
			s.Acked += last[w].Acked
			s.RampRate += last[w].RampRate
		}
		p := Point{T: float64(i), Live: s.Live, Connects: s.Welcomes - prev.Welcomes, Closes: s.Closes - prev.Closes,
			Delivered: s.Receipts - prev.Receipts, Acked: s.Acked - prev.Acked, RampRate: s.RampRate}
		if h := r.seriesLat[i-1]; h != nil && h.TotalCount() > 0 {
			v := h.ValueAtPercentilesSlice([]float64{50, 99})
			p.LatCount, p.LatP50, p.LatP99, p.LatMax = h.TotalCount(), ms(v[0]), ms(v[1]), ms(h.Max())
		}
		out = append(out, p)
		prev = s
	}
	return out
}

// checkAccounting verifies that the counts add up.
func checkAccounting(res *Result, msgs, bc SeqCounts) Accounting {
	a := Accounting{OK: true}
	check := func(ok bool, format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		if !ok {
			a.OK = false
			s = "FAILED: " + s
		}
		a.Checks = append(a.Checks, s)
	}
	counts := map[string]SeqCounts{"messages": msgs, "broadcasts": bc}
	if t := res.Topics; t != nil {
		counts["topic deliveries"] = t.Counts
		check(t.Published == t.Acked+t.Failed, "topic publishes %d = acknowledged %d + failed %d", t.Published, t.Acked, t.Failed)
		check(t.Latency.Count == t.Counts.Receipts-t.Counts.Duplicated, "topic latency samples %d = receipts %d - duplicates %d",
			t.Latency.Count, t.Counts.Receipts, t.Counts.Duplicated)
	}
	for name, c := range counts {
		if c == (SeqCounts{}) {
			continue
		}
		check(c.Expected == c.Delivered+c.Lost+c.Missed, "%s: expected %d = delivered %d + lost %d + missed %d", name, c.Expected, c.Delivered, c.Lost, c.Missed)
		check(c.MissedClosed <= c.Missed, "%s: missed after unexpected closes %d ≤ missed %d", name, c.MissedClosed, c.Missed)
		if res.Resume != nil || name == "topic deliveries" {
			check(c.Pending <= c.Lost, "%s: pending %d ≤ lost %d", name, c.Pending, c.Lost)
		}
		if res.Resume != nil {
			check(c.Unrecovered <= c.Missed, "%s: unrecovered %d ≤ missed %d", name, c.Unrecovered, c.Missed)
			check(c.ByID <= c.Expected, "%s: classified by id %d ≤ expected %d", name, c.ByID, c.Expected)
			check(c.IDMismatch == 0, "%s: %d received with another id than the publisher's", name, c.IDMismatch)
		}
		check(c.Receipts == c.Delivered+c.Early+c.Unconfirmed+c.Unknown+c.Duplicated, "%s: receipts %d = delivered %d + early %d + unconfirmed %d + unknown %d + duplicates %d",
			name, c.Receipts, c.Delivered, c.Early, c.Unconfirmed, c.Unknown, c.Duplicated)
	}
	if m := res.Messages; m != nil {
		check(m.Published == m.Acked+m.Failed, "publishes %d = acknowledged %d + failed %d", m.Published, m.Acked, m.Failed)
		if res.Resume != nil {
			// a replayed message's latency is apart (it includes the time away)
			check(m.Latency.Count == m.Counts.Receipts-m.Counts.Duplicated-m.Counts.Replayed, "latency samples %d = receipts %d - duplicates %d - replayed %d",
				m.Latency.Count, m.Counts.Receipts, m.Counts.Duplicated, m.Counts.Replayed)
		} else {
			check(m.Latency.Count == m.Counts.Receipts-m.Counts.Duplicated, "latency samples %d = receipts %d - duplicates %d", m.Latency.Count, m.Counts.Receipts, m.Counts.Duplicated)
		}
	}
	sort.Strings(a.Checks)
	a.Checks = orEmpty(a.Checks)
	return a
}

// writeOutputs writes --json and --html, then the report, which is written
// even when a file could not be (the error is returned after it).
func (r *runner) writeOutputs(res *Result) error {
	var errs []error
	if r.cfg.JSONFile != "" {
		if err := writeJSON(r.cfg.JSONFile, res); err != nil {
			errs = append(errs, err)
		}
	}
	if r.cfg.HTMLFile != "" {
		if err := writeHTMLFile(r.cfg.HTMLFile, res); err != nil {
			errs = append(errs, err)
		}
	}
	WriteReport(r.out, res)
	return errors.Join(errs...)
}

func writeHTMLFile(path string, res *Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--html: %v", err)
	}
	if err := WriteHTML(f, res); err != nil {
		f.Close()
		return fmt.Errorf("--html: %v", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--html: %v", err)
	}
	return nil
}

func writeJSON(path string, res *Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %v", err)
	}
	return nil
}

// ReadResult reads a --json file.
func ReadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

func latRow(w io.Writer, name string, s LatencyStats) {
	if s.Count == 0 {
		fmt.Fprintf(w, "  %s\t–\n", name)
		return
	}
	fmt.Fprintf(w, "  %s\tp50 %s ms\tp90 %s ms\tp99 %s ms\tp99.9 %s ms\tmax %s ms\t(%s samples)\n", name,
		fmtMs(s.P50), fmtMs(s.P90), fmtMs(s.P99), fmtMs(s.P999), fmtMs(s.Max), numfmt.Thousands(s.Count))
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// WriteReport writes the final report table.
func WriteReport(out io.Writer, res *Result) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	title := fmt.Sprintf("wsfleet loadtest %s: run %s, %s, %.1f s", res.Scenario, res.RunID, res.Started.Format(time.RFC3339), res.Elapsed)
	if res.Interrupted {
		title += " (INTERRUPTED: partial)"
	}
	fmt.Fprintln(w, "\n"+title)
	fmt.Fprintln(w, strings.Repeat("─", len([]rune(title))))
	c := res.Connections
	fmt.Fprintln(w, "connections")
	upgrade := "upgrade (connect → 101)"
	switch res.Settings.Transport {
	case TransportWS:
		fmt.Fprintf(w, "  transport\tws (WebSocket)\n")
	case TransportSSE:
		fmt.Fprintf(w, "  transport\tsse (server-sent events: GET /sse)\n")
		upgrade = "response (connect → 200)"
	}
	fmt.Fprintf(w, "  target\t%s\tpeak %s\topen at end %s\n", numfmt.Thousands(int64(c.Target)), numfmt.Thousands(c.Peak), numfmt.Thousands(c.OpenAtEnd))
	ramp := "not complete"
	if c.RampDone {
		ramp = fmt.Sprintf("%s/s achieved in %.2f s (target %s/s)", numfmt.Thousands(int64(c.Rate+0.5)), c.RampSeconds, numfmt.Thousands(int64(c.RateTarget)))
	}
	fmt.Fprintf(w, "  connect rate\t%s\n", ramp)
	fmt.Fprintf(w, "  attempts\t%s\twelcomed %s\tfailed %s\n", numfmt.Thousands(c.Attempts), numfmt.Thousands(c.Welcomes), numfmt.Thousands(c.Failures))
	latRow(w, "handshake (connect → welcome)", c.Handshake)
	latRow(w, upgrade, c.Upgrade)
	rampRows(w, c)
	for _, k := range sortedKeys(c.Errors) {
		if _, ok := c.Refusals[k]; !ok {
			fmt.Fprintf(w, "  error %s\t%s\n", k, numfmt.Thousands(c.Errors[k]))
		}
	}
	if c.Refreshed > 0 {
		fmt.Fprintf(w, "  tokens refreshed\t%s\n", numfmt.Thousands(c.Refreshed))
	}
	if c.ClosedUnexpectedly > 0 || c.ClosedNotBack > 0 {
		fmt.Fprintf(w, "  closed by the gateway\t%s\tnot back at the end %s\n", numfmt.Thousands(c.ClosedUnexpectedly), numfmt.Thousands(c.ClosedNotBack))
	}
	if m := res.Messages; m != nil {
		fmt.Fprintf(w, "messages (via %s, target %s/s)\n", m.Via, numfmt.Thousands(int64(m.RateTarget)))
		fmt.Fprintf(w, "  published\t%s\tacknowledged %s\tfailed %s\tskipped (behind) %s\n", numfmt.Thousands(m.Published), numfmt.Thousands(m.Acked), numfmt.Thousands(m.Failed), numfmt.Thousands(m.Skipped))
		for _, k := range sortedKeys(m.Errors) {
			fmt.Fprintf(w, "  publish error %s\t%s\n", k, numfmt.Thousands(m.Errors[k]))
		}
		seqRows(w, m.Counts)
		if m.Foreign+m.Misrouted > 0 {
			fmt.Fprintf(w, "  foreign\t%s\tmisrouted %s\n", numfmt.Thousands(m.Foreign), numfmt.Thousands(m.Misrouted))
		}
		latRow(w, "end-to-end latency", m.Latency)
		fmt.Fprintf(w, "  drain ended\t%s\n", m.DrainEnd)
	}
	if b := res.Broadcasts; b != nil {
		fmt.Fprintf(w, "broadcasts (via %s)\n", b.Via)
		for _, e := range b.Each {
			if !e.Acked {
				fmt.Fprintf(w, "  #%d\tNOT ACKNOWLEDGED: %s\n", e.Seq, e.Error)
				continue
			}
			fmt.Fprintf(w, "  #%d\t%s receivers\tfirst %s ms\tlast %s ms\n", e.Seq, numfmt.Thousands(e.Receivers), fmtMs(e.FirstMs), fmtMs(e.LastMs))
		}
		seqRows(w, b.Counts)
		latRow(w, "publish → receipt", b.Latency)
		fmt.Fprintf(w, "  drain ended\t%s\n", b.DrainEnd)
	}
	if t := res.Topics; t != nil {
		topicRows(w, t, res)
	}
	if s := res.Storm; s != nil {
		fmt.Fprintf(w, "storm (drop %.0f%%)\n", s.Share*100)
		rec := "NOT ALL BACK"
		if s.RecoverySeconds >= 0 {
			rec = fmt.Sprintf("%.2f s", s.RecoverySeconds)
		}
		fmt.Fprintf(w, "  dropped\t%s\trecovered %s\tfull recovery %s\tmessages missed meanwhile %s\n", numfmt.Thousands(s.Dropped), numfmt.Thousands(s.Recovered), rec, numfmt.Thousands(s.Missed))
		latRow(w, "drop → welcome again", s.Reconnect)
	}
	if ch := res.Churn; ch != nil {
		fmt.Fprintln(w, "churn")
		fmt.Fprintf(w, "  closed\t%s\t%.1f/s (target %.1f/s)\tmessages missed while away %s\n", numfmt.Thousands(ch.Closed), ch.Rate, ch.RateTarget, numfmt.Thousands(ch.Missed))
	}
	if rs := res.Resume; rs != nil {
		resumeRows(w, rs)
	}
	if k := res.Kicks; k != nil {
		fmt.Fprintf(w, "kicks\t%s users at %.1f s\t%s connections closed\tfailed %s\n", numfmt.Thousands(int64(k.Users)), k.AtSeconds, numfmt.Thousands(k.Closed), numfmt.Thousands(k.Failed))
		for _, e := range sortedKeys(k.Errors) {
			fmt.Fprintf(w, "  kick error %s\t%s\n", e, numfmt.Thousands(k.Errors[e]))
		}
	}
	if len(res.Closes) > 0 {
		var parts []string
		for _, k := range sortedKeys(res.Closes) {
			parts = append(parts, fmt.Sprintf("%s×%s", k, numfmt.Thousands(res.Closes[k])))
		}
		fmt.Fprintf(w, "closes by the gateway\t%s\n", strings.Join(parts, "  "))
	}
	fmt.Fprintf(w, "client CPU\tuser %.2f s\tsys %.2f s\t%.2f cores (%d process(es))\n", res.CPU.UserSeconds, res.CPU.SysSeconds, res.CPU.Cores, res.CPU.Processes)
	for _, g := range res.Gateways {
		fmt.Fprintf(w, "gateway %s\n", g.URL)
		for _, p := range []struct {
			n string
			s *Scrape
		}{{"start", g.Start}, {"peak", g.Peak}, {"before close", g.BeforeClose}, {"end", g.End}} {
			switch {
			case p.s == nil:
			case p.s.Error != "":
				fmt.Fprintf(w, "  %s\tscrape failed: %s\n", p.n, p.s.Error)
			default:
				fmt.Fprintf(w, "  %s\tRSS %.1f MiB\tgoroutines %.0f\tconnections %s\tCPU %.2f s\n", p.n, p.s.RSSBytes/(1<<20), p.s.Goroutines, numfmt.Thousands(int64(p.s.Connections)), p.s.CPUSeconds)
			}
		}
		if g.FixedBytes > 0 {
			fmt.Fprintf(w, "  fixed RSS\t%.1f MiB at the start, 0 connections: paid once, whatever the count\n", g.FixedBytes/(1<<20))
		}
		switch {
		case g.BytesPerConn <= 0:
		case g.FixedBytes > 0:
			fmt.Fprintf(w, "  memory per connection\t%.1f KiB without the fixed RSS (RSS delta / connections delta, start → peak); %.1f KiB with it (peak RSS / connections)\n",
				g.BytesPerConn/1024, g.BytesPerConnWithFixed/1024)
		default:
			fmt.Fprintf(w, "  memory per connection\t%.1f KiB (RSS delta / connections delta, start → peak; the gateway held connections at the start)\n", g.BytesPerConn/1024)
		}
	}
	verdict := "counts add up"
	if !res.Accounting.OK {
		verdict = "COUNTS DO NOT ADD UP"
	}
	fmt.Fprintf(w, "accounting\t%s\n", verdict)
	for _, ch := range res.Accounting.Checks {
		if strings.HasPrefix(ch, "FAILED") {
			fmt.Fprintf(w, "  %s\n", ch)
		}
	}
	for _, p := range res.Problems {
		fmt.Fprintf(w, "problem\t%s\n", p)
	}
	fails, code := Verdict(res), ExitStatus(res)
	switch {
	case res.Interrupted:
		fmt.Fprintf(w, "verdict\tINTERRUPTED: partial (exit status %d)\n", code)
	case len(fails) > 0:
		fmt.Fprintf(w, "verdict\tFAILED (exit status %d)\n", code)
	default:
		fmt.Fprintf(w, "verdict\tpassed (exit status %d)\n", code)
	}
	for _, f := range fails {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	w.Flush()
}

// rampRows writes the refusals (apart from the other errors) and, when
// there is something to say, how the ramp backed off.
func rampRows(w io.Writer, c ConnResult) {
	if len(c.Refusals) > 0 {
		var n int64
		var parts []string
		for _, k := range sortedKeys(c.Refusals) {
			n += c.Refusals[k]
			parts = append(parts, k+" "+numfmt.Thousands(c.Refusals[k]))
		}
		fmt.Fprintf(w, "  refused (retried)\t%s\t%s\n", numfmt.Thousands(n), strings.Join(parts, "  "))
	}
	r := c.Ramp
	switch {
	case r == nil:
	case !r.Backoff:
		fmt.Fprintf(w, "  ramp\topen loop (--ramp-backoff=false)\t%s pushbacks\n", numfmt.Thousands(r.Pushbacks))
	case r.Pushbacks > 0 || r.HeldSeconds > 0:
		held := ""
		if r.HeldSeconds > 0 {
			held = fmt.Sprintf("\theld %.2f s at %s in flight", r.HeldSeconds, numfmt.Thousands(r.InFlightLimit))
		}
		fmt.Fprintf(w, "  ramp back-off\t%s pushbacks\t%s rate cuts\tlowest %s/s\t%.2f s below target (%.2f s paused)%s\n",
			numfmt.Thousands(r.Pushbacks), numfmt.Thousands(r.RateCuts), numfmt.Thousands(int64(r.MinRate+0.5)),
			r.BelowTargetSeconds, r.PausedSeconds, held)
	}
}

// resumeResult sums what --resume measured.
func resumeResult(w resumeWire, msgs, bc SeqCounts, lat LatencyStats) *ResumeResult {
	r := &ResumeResult{Reconnects: w.Reconnects, Recovered: w.Recovered, NotRecovered: w.NotRecovered, NoPosition: w.NoPosition, Moved: w.Moved, Latency: lat}
	for _, c := range []SeqCounts{msgs, bc} {
		r.Replayed += c.Replayed
		r.Lost += c.Lost
		r.Duplicated += c.Duplicated
		r.OutOfOrder += c.OutOfOrder
		r.Unrecovered += c.Unrecovered
		r.Pending += c.Pending
		r.AwayAtEnd += c.Missed - c.Unrecovered
		r.ByID += c.ByID
		r.Expected += c.Expected
		r.IDMismatch += c.IDMismatch
	}
	return r
}

// resumeRows writes the resume section.
func resumeRows(w io.Writer, r *ResumeResult) {
	th := numfmt.Thousands
	fmt.Fprintln(w, "resume")
	fmt.Fprintf(w, "  reconnects with since\t%s\trecovered %s\tnot recovered %s\tmoved on notice %s\n",
		th(r.Reconnects), th(r.Recovered), th(r.NotRecovered), th(r.Moved))
	fmt.Fprintf(w, "  replayed\t%s\tlost %s\tduplicated %s\tout of order %s\n", th(r.Replayed), th(r.Lost), th(r.Duplicated), th(r.OutOfOrder))
	fmt.Fprintf(w, "  classified by id\t%s of %s expected\tthe rest by payload and time\n", th(r.ByID), th(r.Expected))
	if r.Unrecovered+r.AwayAtEnd+r.IDMismatch+r.Pending > 0 {
		fmt.Fprintf(w, "  not delivered\tunrecovered %s\taway at the end %s\tlost but pending %s\tid mismatches %s\n",
			th(r.Unrecovered), th(r.AwayAtEnd), th(r.Pending), th(r.IDMismatch))
	}
	if r.NoPosition > 0 {
		fmt.Fprintf(w, "  welcomes without a position\t%s\tthe gateway does not run with --resume\n", th(r.NoPosition))
	}
	latRow(w, "replay (publish → receipt)", r.Latency)
}

func seqRows(w io.Writer, c SeqCounts) {
	fmt.Fprintf(w, "  delivered\t%s of %s expected\tlost %s\tduplicated %s\tout of order %s\n",
		numfmt.Thousands(c.Delivered), numfmt.Thousands(c.Expected), numfmt.Thousands(c.Lost), numfmt.Thousands(c.Duplicated), numfmt.Thousands(c.OutOfOrder))
	if c.Missed+c.Early+c.Unconfirmed+c.Unknown > 0 {
		fmt.Fprintf(w, "  missed while away\t%s\tearly %s\tunconfirmed %s\tunknown %s", numfmt.Thousands(c.Missed), numfmt.Thousands(c.Early), numfmt.Thousands(c.Unconfirmed), numfmt.Thousands(c.Unknown))
		if c.MissedClosed > 0 {
			// missed because the gateway closed the device's connection
			fmt.Fprintf(w, "\tafter gateway closes %s", numfmt.Thousands(c.MissedClosed))
		}
		fmt.Fprintln(w)
	}
}

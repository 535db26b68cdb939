package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/loadtest"
)

// progressRE matches loadtest's progress lines ("--progress lines"):
// "[   5.0s] ramp      conns 21,551/50,000 (...".
var progressRE = regexp.MustCompile(`^\[\s*([0-9.]+)s\] (\S+)\s+conns`)

// ltJob is one bin/loadtest run.
type ltJob struct {
	tag      string // log and JSON names
	label    string // progress prefix
	scenario string
	conns    int
	args     []string           // scenario flags
	onPhase  func(phase string) // each phase change seen in the progress lines
	timeout  time.Duration      // hard bound on the run
	stop     <-chan struct{}    // closed: the harness has what it needs; end the run early (SIGINT)
}

// runLoadtest runs bin/loadtest against f and returns its --json result.
// loadtest's verdict (exit status 1 or 3 with its failures listed) is a
// result, not an error: the harness judges the figures itself.
func (h *harness) runLoadtest(ctx context.Context, f *fleet, j ltJob) (*loadtest.Result, *phaseSnaps, error) {
	snaps := &phaseSnaps{}
	res, err := h.runLoadtestSnaps(ctx, f, j, snaps)
	return res, snaps, err
}

func (h *harness) runLoadtestSnaps(ctx context.Context, f *fleet, j ltJob, snaps *phaseSnaps) (*loadtest.Result, error) {
	jsonPath := filepath.Join(h.logDir, j.tag+".json")
	args := []string{j.scenario,
		"--url", f.wsURL, "--conns", strconv.Itoa(j.conns), "--max-conns", strconv.Itoa(j.conns),
		"--connect-rate", fmt.Sprint(h.cfg.connectRate), "--source-ips", h.plan.SourceIPs,
		"--progress", "lines", "--progress-interval", "1s", "--json", jsonPath}
	for _, a := range f.admins {
		args = append(args, "--metrics-url", a+"/metrics")
	}
	if j.scenario != "connect" {
		args = append(args, "--via", h.cfg.via, "--router-url", f.routerURL, "--nats-url", f.natsURL,
			"--msg-bytes", strconv.Itoa(h.cfg.msgBytes))
		if h.cfg.publishConcurrency > 0 {
			args = append(args, "--publish-concurrency", strconv.Itoa(h.cfg.publishConcurrency))
		}
	}
	args = append(args, j.args...)
	env := []string{"LOADTEST_JWT_HS256_SECRET=" + h.secret, "LOADTEST_API_KEY=" + h.apiKey}

	var mu sync.Mutex
	var stopping atomic.Bool
	phase, lastRelay := "", time.Time{}
	lines := func(line string) {
		m := progressRE.FindStringSubmatch(line)
		if m == nil {
			if strings.HasPrefix(line, "limits:") || strings.HasPrefix(line, "plan:") || strings.TrimSpace(line) == "" {
				return
			}
			if stopping.Load() && (strings.HasPrefix(line, "loadtest: stopping") || strings.HasPrefix(line, "interrupted: stopping")) {
				return // the harness ended the run: its notice is noise
			}
			h.logf("%s | %s", j.label, line)
			return
		}
		mu.Lock()
		changed := m[2] != phase
		relay := changed || time.Since(lastRelay) >= 5*time.Second
		if changed {
			phase = m[2]
		}
		if relay {
			lastRelay = time.Now()
		}
		mu.Unlock()
		if relay {
			h.logf("%s | %s", j.label, line)
		}
		if changed {
			snaps.add(m[2], f.snap())
			if j.onPhase != nil {
				j.onPhase(m[2])
			}
		}
	}
	snaps.add("start", f.snap())
	p, err := h.ps.Start(j.tag+"-loadtest", filepath.Join(h.cfg.bin, "loadtest"), args, env, lines)
	if err != nil {
		return nil, err
	}
	defer func() { snaps.add("end", f.snap()) }()
	timeout := time.NewTimer(j.timeout)
	defer timeout.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var failure error
	stopped := false
	stop := j.stop
wait:
	for {
		select {
		case <-p.done:
			break wait
		case <-stop:
			// loadtest ends its phase, closes the connections and still
			// writes its result (marked interrupted, exit status 130).
			stop, stopped = nil, true
			stopping.Store(true)
			_ = syscall.Kill(p.Pid(), syscall.SIGINT)
		case <-ctx.Done():
			h.ps.Stop(p, syscall.SIGINT, 20*time.Second)
			return nil, ctx.Err()
		case <-timeout.C:
			failure = fmt.Errorf("loadtest ran over its bound of %s; stopped (see %s)", j.timeout.Round(time.Second), p.log)
			h.ps.Stop(p, syscall.SIGINT, 20*time.Second)
			break wait
		case <-tick.C:
			if d := f.dead(); d != "" {
				failure = errors.New(d)
				h.ps.Stop(p, syscall.SIGINT, 20*time.Second)
				break wait
			}
		}
	}
	h.ps.Stop(p, syscall.SIGTERM, time.Second) // reaped already; forget it
	code := 0
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		code = ee.ExitCode()
	} else if p.err != nil {
		code = -1
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		if failure != nil {
			return nil, failure
		}
		return nil, fmt.Errorf("loadtest exited with status %d and wrote no result (%v); see %s", code, err, p.log)
	}
	var res loadtest.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %v", jsonPath, err)
	}
	if failure == nil && !judged(code, stopped, &res) {
		failure = fmt.Errorf("loadtest exited with status %d; see %s", code, p.log)
	}
	return &res, failure
}

// judged reports whether loadtest's exit status is its verdict on a run it
// completed, which the harness reads from the result (its failures, lost
// messages, peak), rather than an error: 0, 1 or 3 with the failures
// listed, or 130 when the harness stopped it.
func judged(code int, stopped bool, res *loadtest.Result) bool {
	switch code {
	case loadtest.ExitOK:
		return true
	case loadtest.ExitFailed, loadtest.ExitDelivery:
		return len(res.Failures) > 0
	case loadtest.ExitInterrupted:
		return stopped
	}
	return false
}

// gatewayCPU sums the gateways' CPU seconds between two of loadtest's
// scrape points, and their connections at the later one.
func gatewayCPU(res *loadtest.Result, from, to func(loadtest.GatewayFigures) *loadtest.Scrape) (cpu, conns float64, err error) {
	if len(res.Gateways) == 0 {
		return 0, 0, errors.New("loadtest scraped no gateway")
	}
	for _, g := range res.Gateways {
		a, b := from(g), to(g)
		switch {
		case a == nil || b == nil:
			return 0, 0, fmt.Errorf("%s: a scrape is missing", g.URL)
		case a.Error != "":
			return 0, 0, fmt.Errorf("%s: %s", g.URL, a.Error)
		case b.Error != "":
			return 0, 0, fmt.Errorf("%s: %s", g.URL, b.Error)
		}
		cpu += b.CPUSeconds - a.CPUSeconds
		conns += b.Connections
	}
	return cpu, conns, nil
}

func atStart(g loadtest.GatewayFigures) *loadtest.Scrape       { return g.Start }
func atPeak(g loadtest.GatewayFigures) *loadtest.Scrape        { return g.Peak }
func atBeforeClose(g loadtest.GatewayFigures) *loadtest.Scrape { return g.BeforeClose }

// rampBound is how long loadtest may take to ramp n connections (its own
// limit is 1.5 × n/rate + connect timeout + 5 s), plus starting up (token
// minting, worker processes) and closing.
func rampBound(n int, rate float64) time.Duration {
	return time.Duration(1.5*float64(n)/rate*float64(time.Second)) + 75*time.Second
}

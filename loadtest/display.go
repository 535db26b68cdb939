package loadtest

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wsfleet/wsfleet/internal/numfmt"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal (TCGETS succeeds on it).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 20 {
			return int(ws.Col)
		}
	}
	return 100
}

// display shows progress while a run goes: bars redrawn in place on a
// terminal, plain lines otherwise (CI, logs).
type display struct {
	r     *runner
	w     io.Writer
	bars  bool
	every time.Duration
	stopc chan struct{}
	done  chan struct{}
	once  sync.Once
	lines int // lines drawn last time (bars)
	prev  Progress
	prevT time.Time
}

func newDisplay(r *runner) *display {
	d := &display{r: r, w: r.log, every: r.cfg.ProgressInterval, stopc: make(chan struct{}), done: make(chan struct{})}
	switch r.cfg.Progress {
	case "off":
		d.every = 0
	case "bars":
		d.bars = true
	case "lines":
	default:
		d.bars = isTerminal(r.log)
	}
	if d.bars {
		d.every = min(d.every, 250*time.Millisecond)
	}
	return d
}

func (d *display) start() {
	if d.every <= 0 {
		close(d.done)
		return
	}
	go func() {
		defer close(d.done)
		t := time.NewTicker(d.every)
		defer t.Stop()
		for {
			select {
			case <-d.stopc:
				if d.bars {
					d.draw() // the last state stays on screen
				}
				return
			case <-t.C:
				d.draw()
			}
		}
	}()
}

func (d *display) stop() {
	d.once.Do(func() { close(d.stopc) })
	<-d.done
}

// rampNote is what the progress adds about refusals and a ramp that backs
// off: ", 1,204 refused, ramp 500/s of 2,000/s" ("ramp paused" while a
// Retry-After holds every loop); nothing when there is neither.
func rampNote(p Progress) string {
	var s string
	if p.Refused > 0 {
		s += ", " + numfmt.Thousands(p.Refused) + " refused"
	}
	switch {
	case p.RampTarget <= 0 || p.RampRate >= p.RampTarget*0.999:
	case p.RampRate == 0:
		s += ", ramp paused"
	default:
		s += fmt.Sprintf(", ramp %s/s of %s/s", numfmt.Thousands(int64(p.RampRate+0.5)), numfmt.Thousands(int64(p.RampTarget+0.5)))
	}
	return s
}

// topicNote is what the progress adds in a topic run: the connections
// subscribed now, and the client publish check's test messages back.
func topicNote(r *runner, p Progress) string {
	if !r.cfg.topics() {
		return ""
	}
	s := fmt.Sprintf("  subscribed %s", numfmt.Thousands(p.TLive))
	if p.ProbeSent > 0 {
		s += fmt.Sprintf(" (check %s/%s back)", numfmt.Thousands(p.ProbeOK), numfmt.Thousands(p.ProbeSent))
	}
	return s
}

func (d *display) draw() {
	p, _ := d.r.progress()
	now := time.Now()
	el := float64(mono()-d.r.t0) / 1e9
	dt := now.Sub(d.prevT).Seconds()
	if d.prevT.IsZero() || dt <= 0 {
		dt = el
	}
	rate := func(a, b int64) float64 { return float64(a-b) / dt }
	recvRate := rate(p.Receipts+p.BReceipts+p.TReceipts, d.prev.Receipts+d.prev.BReceipts+d.prev.TReceipts)
	connRate := rate(p.Welcomes, d.prev.Welcomes)
	d.prev, d.prevT = p, now
	errs := p.Fails + p.PubFailed + p.Dups + p.OOO
	phase := d.r.getPhase()
	target := int64(d.r.cfg.Conns)
	back := rampNote(p)
	resume := ""
	if d.r.cfg.Resume {
		resume = fmt.Sprintf("  replayed %s (%s away)", numfmt.Thousands(p.Replayed), numfmt.Thousands(p.Away))
	}
	if !d.bars {
		fmt.Fprintf(d.w, "[%7.1fs] %-9s conns %s/%s (+%s/s, %s connecting%s)  published %s  received %s (%s/s)%s  errors %s\n",
			el, phase, numfmt.Thousands(p.Live), numfmt.Thousands(target), numfmt.Thousands(int64(connRate)), numfmt.Thousands(p.Connecting), back,
			numfmt.Thousands(p.Acked), numfmt.Thousands(p.Receipts+p.BReceipts+p.TReceipts), numfmt.Thousands(int64(recvRate)), resume+topicNote(d.r, p), numfmt.Thousands(errs))
		return
	}
	width := termWidth(d.w)
	barW := max(10, min(40, width-60))
	bar := func(v, max int64) string {
		if max <= 0 {
			max = 1
		}
		n := int(float64(barW) * float64(min(v, max)) / float64(max))
		return "[" + strings.Repeat("█", n) + strings.Repeat("░", barW-n) + "]"
	}
	var b strings.Builder
	if d.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.lines)
	}
	line := func(format string, args ...any) {
		b.WriteString("\x1b[2K")
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	line("%s  %.1fs  %s", d.r.cfg.Scenario, el, phase)
	line("conns    %s %s/%s  +%s/s  %s connecting%s", bar(p.Live, target), numfmt.Thousands(p.Live), numfmt.Thousands(target), numfmt.Thousands(int64(connRate)), numfmt.Thousands(p.Connecting), back)
	if d.r.cfg.topics() {
		check := ""
		if p.ProbeSent > 0 {
			check = fmt.Sprintf("  client publish check %s/%s back", numfmt.Thousands(p.ProbeOK), numfmt.Thousands(p.ProbeSent))
		}
		line("topics   %s %s/%s subscribed%s", bar(p.TLive, target), numfmt.Thousands(p.TLive), numfmt.Thousands(target), check)
	}
	if d.r.cfg.publishes() || d.r.cfg.Scenario == ScenarioBroadcast || d.r.cfg.topics() {
		rateTarget := int64(d.r.cfg.MsgRate)
		if d.r.cfg.Scenario == ScenarioBroadcast {
			rateTarget = max(int64(recvRate), 1)
		}
		line("msgs/s   %s %s/s received  %s published  %s outstanding", bar(int64(recvRate), max(rateTarget, int64(recvRate))), numfmt.Thousands(int64(recvRate)), numfmt.Thousands(p.Acked), numfmt.Thousands(p.Outstanding))
	}
	line("errors   %s connect failures  %s publish failures  %s duplicates  %s out of order", numfmt.Thousands(p.Fails), numfmt.Thousands(p.PubFailed), numfmt.Thousands(p.Dups), numfmt.Thousands(p.OOO))
	if resume != "" {
		line("resume  %s", resume)
	}
	if p.Dropped > 0 {
		line("storm    %s %s/%s back", bar(p.Recovered, p.Dropped), numfmt.Thousands(p.Recovered), numfmt.Thousands(p.Dropped))
	}
	n := strings.Count(b.String(), "\n")
	// clear lines left over from a taller frame
	for i := n; i < d.lines; i++ {
		b.WriteString("\x1b[2K\n")
		n++
	}
	d.lines = n
	io.WriteString(d.w, b.String())
}

package loadtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// WorkerEnv is set in the environment of worker processes: a binary that
// finds it runs as a worker (RunWorker) instead of parsing flags.
const WorkerEnv = "WSFLEET_LOADTEST_WORKER"

// IsWorker reports whether this process was started as a worker.
func IsWorker() bool { return os.Getenv(WorkerEnv) == "1" }

// command is what the parent tells a worker (one JSON line on its stdin).
type command struct {
	Cmd   string        `json:"cmd"` // init, connect, publish, stop_publish, bcast, tpub, probe, probe_end, drop, churn, finish
	Plan  *workerPlan   `json:"plan,omitempty"`
	Rate  float64       `json:"rate,omitempty"`
	Share float64       `json:"share,omitempty"`
	Down  time.Duration `json:"down,omitempty"`
	Seq   int           `json:"seq,omitempty"`
	ID    uint64        `json:"id,omitempty"` // bcast: the broadcast's stream sequence (0: unknown)
	T     int64         `json:"t,omitempty"`
	OK    bool          `json:"ok,omitempty"`
	// tpub (live): the parent's publishes numbered Seq, Seq+1…: their
	// times and whether they were acknowledged; OK asks for an answer.
	Ts  []int64 `json:"ts,omitempty"`
	Oks []bool  `json:"oks,omitempty"`
}

// event is what a worker tells the parent (one JSON line on its stdout).
type event struct {
	Ev       string        `json:"ev"` // ready, progress, stopped, result, error
	Worker   int           `json:"worker"`
	Progress *Progress     `json:"progress,omitempty"`
	Series   []seriesWire  `json:"series,omitempty"`
	Lats     []secHist     `json:"lats,omitempty"`
	Live     []liveWire    `json:"live,omitempty"`
	Result   *workerResult `json:"result,omitempty"`
	Err      string        `json:"err,omitempty"`
}

// serveWorker runs one process's share of a run: it executes commands
// until finish (or until cmds closes: the parent is gone) and emits events.
// emit may be called from several goroutines.
func serveWorker(cmds <-chan command, emit func(event)) {
	var e *clientSet
	var stopRep chan struct{}
	var repDone sync.WaitGroup
	idx := 0
	finish := func() {
		if e == nil {
			return
		}
		close(stopRep)
		repDone.Wait()
		r := e.finish()
		emit(event{Ev: "result", Worker: idx, Result: r})
	}
	for c := range cmds {
		switch c.Cmd {
		case "init":
			if c.Plan == nil {
				emit(event{Ev: "error", Err: "init without a plan"})
				return
			}
			idx = c.Plan.Index
			var err error
			if e, err = newClientSet(c.Plan); err != nil {
				emit(event{Ev: "error", Worker: idx, Err: err.Error()})
				return
			}
			stopRep = make(chan struct{})
			repDone.Add(1)
			go func() { defer repDone.Done(); report(e, emit, stopRep) }()
			emit(event{Ev: "ready", Worker: idx})
		case "connect":
			e.connect(c.Rate)
		case "publish":
			if e.pub != nil {
				e.pub.start(c.Rate, e.plan.Seed^uint64(idx+1)*0x9e3779b97f4a7c15)
			}
		case "stop_publish":
			if e.pub != nil {
				e.pub.stopAndWait()
			}
			p := e.progress()
			emit(event{Ev: "stopped", Worker: idx, Progress: &p})
		case "bcast":
			e.announce(c.Seq, c.T, c.OK, c.ID)
			p := e.progress()
			emit(event{Ev: "announced", Worker: idx, Progress: &p})
		case "tpub":
			e.announceTopic(uint32(c.Seq), c.Ts, c.Oks)
			if c.OK {
				p := e.progress()
				emit(event{Ev: "tannounced", Worker: idx, Progress: &p})
			}
		case "probe":
			e.probe()
			p := e.progress()
			emit(event{Ev: "probing", Worker: idx, Progress: &p})
		case "probe_end":
			e.probeEnd()
			p := e.progress()
			emit(event{Ev: "probe_ended", Worker: idx, Progress: &p})
		case "drop":
			e.drop(c.Share)
			p := e.progress()
			emit(event{Ev: "dropped", Worker: idx, Progress: &p})
		case "churn":
			e.churn(c.Rate, c.Down)
		case "finish":
			finish()
			return
		}
	}
	finish() // the parent went away: clean up all the same
}

const progressEvery = 250 * time.Millisecond

// report emits progress every 250 ms and a time-series point at every
// whole second of the run, and samples the open connections every
// liveEvery in between.
func report(e *clientSet, emit func(event), stop <-chan struct{}) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	lt := time.NewTicker(liveEvery)
	defer lt.Stop()
	for {
		select {
		case <-stop:
			return
		case <-lt.C:
			e.series.sampleLive(e.plan.T0, mono(), e.liveNow())
			continue
		case <-t.C:
		}
		p := e.progress()
		e.series.sampleLive(e.plan.T0, p.At, p.Live)
		ev := event{Ev: "progress", Worker: e.plan.Index, Progress: &p}
		// Counters at each whole second; the loops hand over a second's
		// latencies on their first 10 ms tick after it, so those of the
		// seconds before the current one are (nearly always) complete.
		sec := int((p.At - e.plan.T0) / int64(time.Second))
		e.series.sampleUpTo(sec, p)
		ev.Series, ev.Lats = e.series.take(sec)
		ev.Live = e.series.takeLive()
		emit(ev)
	}
}

// workerHandle is the parent's end of a worker, in this process or another.
type workerHandle interface {
	send(c command) error
	events() <-chan event
	// stop ends the worker: closes its input and, for a process, kills it
	// if it has not exited within grace.
	stop(grace time.Duration)
}

// localWorker runs serveWorker on goroutines of this process.
type localWorker struct {
	cmds chan command
	evs  chan event
	once sync.Once
	done chan struct{}
}

func startLocal() *localWorker {
	w := &localWorker{cmds: make(chan command, 16), evs: make(chan event, 256), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		serveWorker(w.cmds, func(ev event) { w.evs <- ev })
		close(w.evs) // nothing emits after serveWorker returns
	}()
	return w
}

func (w *localWorker) send(c command) error {
	select {
	case <-w.done:
		return errors.New("worker stopped")
	case w.cmds <- c:
		return nil
	}
}

func (w *localWorker) events() <-chan event { return w.evs }

func (w *localWorker) stop(grace time.Duration) {
	w.once.Do(func() { close(w.cmds) })
	select {
	case <-w.done:
	case <-time.After(grace):
	}
}

// procWorker is a worker process: the same binary re-executed with
// WorkerEnv set, commands on its stdin, events on its stdout.
type procWorker struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	enc    *json.Encoder
	mu     sync.Mutex
	evs    chan event
	exited chan struct{}
	once   sync.Once
	pgid   int
}

// spawner starts worker processes from one goroutine locked to its OS
// thread for as long as any of them runs: Pdeathsig fires when the thread
// that started a child exits, not the process, so that thread must live.
type spawner struct {
	reqs chan spawnReq
	pgid int
}

type spawnReq struct {
	exe  string
	env  []string
	resp chan spawnResp
}

type spawnResp struct {
	w   *procWorker
	err error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go s.run()
	return s
}

func (s *spawner) run() {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, after every child
	var live sync.WaitGroup
	for r := range s.reqs {
		w, err := s.start(r.exe, r.env)
		if err == nil {
			live.Add(1)
			go func() { defer live.Done(); <-w.exited }()
		}
		r.resp <- spawnResp{w, err}
	}
	live.Wait()
}

func (s *spawner) spawn(exe string, env []string) (*procWorker, error) {
	r := spawnReq{exe: exe, env: env, resp: make(chan spawnResp)}
	s.reqs <- r
	resp := <-r.resp
	return resp.w, resp.err
}

// close lets the spawner's thread go once every worker has exited.
func (s *spawner) close() { close(s.reqs) }

func (s *spawner) start(exe string, env []string) (*procWorker, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), env...), WorkerEnv+"=1")
	// Own process group (shared by every worker of the run), so a terminal's
	// Ctrl-C reaches only the parent, which stops them in order; Pdeathsig
	// kills them if the parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Pgid: s.pgid}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting worker %s: %v", exe, err)
	}
	if s.pgid == 0 {
		s.pgid = cmd.Process.Pid
	}
	w := &procWorker{cmd: cmd, in: in, enc: json.NewEncoder(in), evs: make(chan event, 256), exited: make(chan struct{}), pgid: s.pgid}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 256<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				w.evs <- event{Ev: "error", Err: fmt.Sprintf("worker pid %d: bad event: %v", cmd.Process.Pid, err)}
				continue
			}
			w.evs <- ev
		}
		err := cmd.Wait()
		if err != nil {
			w.evs <- event{Ev: "exit", Err: fmt.Sprintf("worker pid %d: %v", cmd.Process.Pid, err)}
		}
		close(w.exited)
		close(w.evs)
	}()
	return w, nil
}

func (w *procWorker) send(c command) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(c)
}

func (w *procWorker) events() <-chan event { return w.evs }

func (w *procWorker) stop(grace time.Duration) {
	w.once.Do(func() { w.in.Close() })
	select {
	case <-w.exited:
	case <-time.After(grace):
		// This worker is still unreaped, so the group exists: kill all of
		// it (only our workers are in it), then this one for certain.
		_ = syscall.Kill(-w.pgid, syscall.SIGKILL)
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

// RunWorker is the main of a worker process: commands on stdin, events on
// stdout, until finish or until stdin closes (the parent is gone).
func RunWorker() int {
	cmds := make(chan command, 16)
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(ev event) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(ev); err != nil {
			os.Exit(3) // the parent is gone
		}
	}
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var c command
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				fmt.Fprintln(os.Stderr, "loadtest worker: bad command:", err)
				continue
			}
			cmds <- c
		}
	}()
	raiseNoFile()
	serveWorker(cmds, emit)
	return 0
}

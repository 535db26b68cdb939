package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// proc is one process the harness started: in its own process group (a
// terminal's Ctrl-C reaches only the harness, which stops it in order),
// with Pdeathsig so it dies with the harness whatever happens, its output
// in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done closes
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procs starts processes from one goroutine locked to its OS thread:
// Pdeathsig fires when the thread that forked a child exits, not the
// process, so that thread lives as long as the harness.
type procs struct {
	dir  string
	reqs chan startReq
	mu   sync.Mutex
	live []*proc
}

type startReq struct {
	name  string
	path  string
	args  []string
	env   []string
	lines func(string) // every line of stderr, besides the log (nil: none)
	resp  chan startResp
}

type startResp struct {
	p   *proc
	err error
}

func newProcs(dir string) *procs {
	ps := &procs{dir: dir, reqs: make(chan startReq)}
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the harness
		close(ready)
		for r := range ps.reqs {
			p, err := ps.start(r)
			r.resp <- startResp{p, err}
		}
		select {} // keep the thread (and the children's Pdeathsig) until exit
	}()
	<-ready
	return ps
}

// Start runs path with args; env is added to the harness's environment.
func (ps *procs) Start(name, path string, args, env []string, lines func(string)) (*proc, error) {
	r := startReq{name: name, path: path, args: args, env: env, lines: lines, resp: make(chan startResp)}
	ps.reqs <- r
	resp := <-r.resp
	return resp.p, resp.err
}

func (ps *procs) start(r startReq) (*proc, error) {
	logPath := filepath.Join(ps.dir, r.name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.path, r.args...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Stdout = f
	var pw *os.File
	if r.lines != nil {
		var pr *os.File
		if pr, pw, err = os.Pipe(); err != nil {
			f.Close()
			return nil, err
		}
		cmd.Stderr = pw
		go func() {
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				io.WriteString(f, line+"\n")
				r.lines(line)
			}
			pr.Close()
		}()
	} else {
		cmd.Stderr = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		if pw != nil {
			pw.Close()
		}
		return nil, fmt.Errorf("starting %s (%s): %v", r.name, r.path, err)
	}
	if pw != nil {
		pw.Close() // the child has it
	}
	p := &proc{name: r.name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.live = append(ps.live, p)
	ps.mu.Unlock()
	return p, nil
}

// Stop asks p to end with sig, then kills its process group after grace.
func (ps *procs) Stop(p *proc, sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = syscall.Kill(p.Pid(), sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-p.Pid(), syscall.SIGKILL) // its group: only it (and what it started in it)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	ps.mu.Lock()
	for i, q := range ps.live {
		if q == p {
			ps.live = append(ps.live[:i], ps.live[i+1:]...)
			break
		}
	}
	ps.mu.Unlock()
}

// StopMany stops several processes at once.
func (ps *procs) StopMany(list []*proc, sig syscall.Signal, grace time.Duration) {
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Add(1)
		go func(p *proc) { defer wg.Done(); ps.Stop(p, sig, grace) }(p)
	}
	wg.Wait()
}

// KillAll ends every process still running: SIGTERM, then SIGKILL to its
// group after grace. Used on the way out, whatever the reason.
func (ps *procs) KillAll(grace time.Duration) {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.live...)
	ps.mu.Unlock()
	ps.StopMany(list, syscall.SIGTERM, grace)
}

// KillNow SIGKILLs every process group at once (a second Ctrl-C).
func (ps *procs) KillNow() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.live {
		if !p.exited() {
			_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
			_ = p.cmd.Process.Kill()
		}
	}
}

// Pids are the processes running now.
func (ps *procs) Pids() []int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []int
	for _, p := range ps.live {
		if !p.exited() {
			out = append(out, p.Pid())
		}
	}
	return out
}

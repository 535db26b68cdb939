package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kinds of fleet processes, in the order they stop: the gateways drain
// while the router and NATS still carry what services publish, then the
// router stops, then NATS.
const (
	kindGateway = "gateway"
	kindRouter  = "router"
	kindNATS    = "nats"
)

// proc is a fleet process running under devfleet.
type proc struct {
	name string // gateway-1, router, nats-1
	kind string
	log  string // its output
	cmd  *exec.Cmd
	done chan struct{}
	err  error // what Wait returned, once done is closed
	sigs int   // signals devfleet sent it
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(s syscall.Signal) {
	if p.running() {
		p.sigs++
		p.cmd.Process.Signal(s)
	}
}

// fleet is the processes of one devfleet run.
type fleet struct {
	dir    string // logs and control sockets
	procs  []*proc
	exited chan *proc // each process once it ends
}

func newFleet(dir string, size int) *fleet {
	return &fleet{dir: dir, exited: make(chan *proc, size)}
}

// childEnv is devfleet's environment without the fleet's own variables:
// the gateway and router refuse WSFLEET_* names they do not know, and a
// setting exported for another fleet must not change this one; devfleet
// sets everything its processes need with flags, and their secrets with
// the variables start is given (kept out of the process list).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WSFLEET_") && !strings.HasPrefix(kv, "DEVFLEET_") {
			env = append(env, kv)
		}
	}
	return env
}

// start runs path with args and, besides childEnv, the variables in env,
// its output going to <dir>/<name>.log. The
// process gets a process group of its own, so a Ctrl-C in the terminal
// reaches devfleet only, which then stops the fleet in order; and SIGTERM
// should devfleet die without stopping it.
func (f *fleet) start(name, kind, path string, env []string, args ...string) (*proc, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s not found: run `make build` (or `make run`) first", path)
	}
	logPath := filepath.Join(f.dir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, kind: kind, log: logPath, cmd: cmd, done: make(chan struct{})}
	f.procs = append(f.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		f.exited <- p
	}()
	return p, nil
}

func (f *fleet) ofKind(kind string) []*proc {
	var ps []*proc
	for _, p := range f.procs {
		if p.kind == kind {
			ps = append(ps, p)
		}
	}
	return ps
}

func (f *fleet) running(kind string) int {
	n := 0
	for _, p := range f.ofKind(kind) {
		if p.running() {
			n++
		}
	}
	return n
}

// errInterrupted is a signal during the start; the stop that follows
// counts it as the first.
var errInterrupted = errors.New("interrupted")

// waitReady polls ready(i) for each process ps[i] until all are ready. A
// process that exits, a signal on sig or the timeout ends the wait with an
// error.
func (f *fleet) waitReady(ps []*proc, ready func(i int) bool, sig <-chan os.Signal, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pending := make([]int, len(ps))
	for i := range pending {
		pending[i] = i
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for j := 0; j < len(pending); {
			if ready(pending[j]) {
				pending = append(pending[:j], pending[j+1:]...)
				continue
			}
			j++
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			p := ps[pending[0]]
			return fmt.Errorf("%s not ready within %s; %s", p.name, timeout, tail(p))
		}
		select {
		case p := <-f.exited:
			return fmt.Errorf("%s exited (%s); %s", p.name, exitStatus(p.err), tail(p))
		case <-sig:
			return errInterrupted
		case <-tick.C:
		}
	}
}

// httpOK reports whether url answers 200.
func httpOK(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// tcpOpen reports whether addr accepts connections.
func tcpOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stop stops the fleet: SIGTERM to the gateways, which drain, then to the
// router once they are gone (it publishes what services send until then),
// then to the NATS servers. A signal on sig while it waits forwards a
// second SIGTERM to the processes told to stop (the gateways and the router
// then close at once) and makes the rest stop at once too; a third kills
// them. A process that outlives its bound is killed.
func (f *fleet) stop(sig <-chan os.Signal, drainTimeout time.Duration, say func(string, ...any)) {
	hurry := 0
	for _, g := range []struct {
		kind  string
		bound time.Duration
		what  string
	}{
		{kindGateway, drainTimeout + 15*time.Second, fmt.Sprintf("draining the gateways (up to %s; Ctrl-C again to close at once)", drainTimeout)},
		{kindRouter, 15 * time.Second, "stopping the router"},
		{kindNATS, 10 * time.Second, "stopping NATS"},
	} {
		ps := f.ofKind(g.kind)
		live := 0
		for _, p := range ps {
			if p.running() {
				live++
			}
		}
		if live == 0 {
			continue
		}
		if g.kind == kindGateway && live == 1 {
			g.what = strings.Replace(g.what, "gateways", "gateway", 1)
		}
		say("devfleet: %s... ", g.what)
		start := time.Now()
		for _, p := range ps {
			p.signal(syscall.SIGTERM)
		}
		if hurry > 0 {
			// The second SIGTERM (close at once) a moment after the first:
			// two pending at once would be delivered as one.
			time.Sleep(50 * time.Millisecond)
			for _, p := range ps {
				p.signal(syscall.SIGTERM)
			}
		}
		timer := time.NewTimer(g.bound)
	wait:
		for _, p := range ps {
			for p.running() {
				select {
				case <-p.done:
				case <-sig:
					hurry++
					for _, q := range f.procs {
						if hurry == 1 && q.sigs > 0 {
							q.signal(syscall.SIGTERM)
						} else if hurry > 1 && q.running() {
							q.cmd.Process.Kill()
						}
					}
				case <-timer.C:
					for _, q := range ps {
						if q.running() {
							say("\ndevfleet: %s still running after %s; killing it ", q.name, g.bound)
							q.cmd.Process.Kill()
							<-q.done
						}
					}
					break wait
				}
			}
		}
		timer.Stop()
		say("done (%s)\n", time.Since(start).Round(time.Millisecond))
	}
}

// exitStatus describes what Wait returned.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tail is the end of p's log, indented, for an error message.
func tail(p *proc) string {
	const lines = 15
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return "  (" + p.log + " is empty)"
	}
	ls := strings.Split(string(b), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "the end of " + p.log + ":\n  " + strings.Join(ls, "\n  ")
}

// addrs returns n addresses from addr: its host with consecutive ports
// from addr's, or with port 0 n free ports.
func addrs(flag, addr string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: %v", flag, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("--%s %q: bad port", flag, addr)
	}
	out := make([]string, n)
	for i := range out {
		if port == 0 {
			if out[i], err = freeAddr(host); err != nil {
				return nil, fmt.Errorf("--%s %q: %v", flag, addr, err)
			}
			continue
		}
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}

// freeAddr is host with a port nothing listens on now.
func freeAddr(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

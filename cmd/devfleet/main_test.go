package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds gateway, router and devfleet side by side, as bin/
// holds them, once per test run, and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "devfleet-bin-"); buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "../gateway", "../router", ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// syncBuffer is devfleet's output, written by exec's copier while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devfleetProc is a devfleet process under test, in a process group of
// its own as a shell runs a command.
type devfleetProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer // stdout and stderr, in the order written
	info info
	done chan struct{}
	err  error // what Wait returned, once done is closed
}

// startDevfleet runs devfleet with every address on a free port and args,
// and waits for its --info-file and for its instructions, the last thing
// it prints before a signal.
func startDevfleet(t *testing.T, args ...string) *devfleetProc {
	t.Helper()
	dir := t.TempDir()
	infoPath := filepath.Join(dir, "info.json")
	all := []string{
		"--gateway-listen", "127.0.0.1:0", "--gateway-admin", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--nats-cluster-listen", "127.0.0.1:0", "--nats-http-listen", "127.0.0.1:0",
		"--router-listen", "127.0.0.1:0", "--router-admin", "127.0.0.1:0", "--demo-listen", "127.0.0.1:0",
		"--run-dir", filepath.Join(dir, "run"), "--info-file", infoPath,
	}
	cmd := exec.Command(filepath.Join(binaries(t), "devfleet"), append(all, args...)...)
	// Fleet variables of the caller's shell reach no process of the fleet:
	// the gateway and the router would refuse to start on this one.
	cmd.Env = append(os.Environ(), "WSFLEET_NO_SUCH_SETTING=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d := &devfleetProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out // one pipe
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		// Two Ctrl-Cs stop a fleet at once; devfleet returns once its
		// processes are gone, before t.TempDir's removal.
		for i := 0; i < 2 && d.running(); i++ {
			d.interrupt(t)
		}
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
	})
	deadline := time.Now().Add(40 * time.Second)
	for {
		if b, err := os.ReadFile(infoPath); err == nil && strings.Contains(d.out.String(), "Ctrl-C drains") {
			if err := json.Unmarshal(b, &d.info); err != nil {
				t.Fatalf("info file: %v\n%s", err, b)
			}
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("devfleet exited (%v) before the fleet was ready:\n%s", d.err, d.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet was not ready within 40s:\n%s", d.out)
		}
	}
}

func (d *devfleetProc) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// interrupt sends SIGINT to devfleet's process group, as a terminal's
// Ctrl-C does.
func (d *devfleetProc) interrupt(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT); err != nil && d.running() {
		t.Fatal(err)
	}
}

// exitsWithin waits for devfleet to exit with status 0.
func (d *devfleetProc) exitsWithin(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("devfleet: %v, want exit status 0; output:\n%s", d.err, d.out)
		}
	case <-time.After(within):
		t.Fatalf("devfleet still running %s after the signal; output:\n%s", within, d.out)
	}
}

// connect opens an authenticated connection as the fleet's user and
// returns it with its welcome.
func connect(t *testing.T, in info) (*wstest.Conn, protocol.Welcome) {
	t.Helper()
	d := wstest.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(in.WSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if err := ws.WriteJSON(map[string]string{"type": protocol.TypeAuth, "token": in.Token}); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var w protocol.Welcome
	if err := ws.ReadJSON(&w); err != nil || w.Type != protocol.TypeWelcome {
		t.Fatalf("welcome: %+v, %v", w, err)
	}
	return ws, w
}

// nextFrame reads the next frame that is not a ping, until deadline.
func nextFrame(ws *wstest.Conn, deadline time.Time) ([]byte, error) {
	ws.SetReadDeadline(deadline)
	for {
		_, b, err := ws.ReadMessage()
		if err != nil || !bytes.Equal(b, protocol.PingJSON) {
			return b, err
		}
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCtrlC is Ctrl-C in the terminal of `make run`: it reaches devfleet
// only, which drains the gateway (a reconnect notice, then 1012) and exits
// 0; a second Ctrl-C cuts the drain short.
func TestCtrlC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drain   string
		second  bool          // a second Ctrl-C once the reconnect notice arrived
		exitsIn time.Duration // from the last Ctrl-C
		gwLog   []string      // in the gateway's log
		notLog  []string      // not in it
	}{
		{name: "one drains", drain: "2s", exitsIn: 15 * time.Second,
			gwLog:  []string{"signal received; draining", "drained: no connection left"},
			notLog: []string{"second signal"}},
		{name: "a second cuts the drain short", drain: "1m", second: true, exitsIn: 5 * time.Second,
			gwLog: []string{"signal received; draining", "second signal; closing now"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDevfleet(t, "--drain-timeout", tc.drain)
			out := d.out.String()
			if !strings.HasPrefix(lastLine(out), "Ctrl-C drains") {
				t.Errorf("the instructions do not come last; output:\n%s", out)
			}
			if strings.Contains(out, "INFO") {
				t.Errorf("process logs on devfleet's output:\n%s", out)
			}
			// Secrets go to the processes in their environment, not on
			// their command lines (which any user of the host can read).
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.info.Gateways[0].PID))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(cmdline, []byte(d.info.JWTHS256Secret)) || bytes.Contains(cmdline, []byte(d.info.APIKey)) {
				t.Errorf("a secret on the gateway's command line: %q", cmdline)
			}
			// Resumable delivery is on by default: the same settings for
			// the gateway and the router, its JetStream in the run directory.
			checkHistoryEnv(t, d.info, 1)
			if !bytes.Contains(cmdline, []byte(filepath.Join(d.info.RunDir, "jetstream", "embedded"))) {
				t.Errorf("the embedded NATS server's JetStream directory is not in the run directory: %q", cmdline)
			}
			if !strings.Contains(out, `"since":"<last id>"`) || !strings.Contains(out, "History           wsfleet_history") {
				t.Errorf("the instructions do not say how to resume:\n%s", out)
			}
			ws, _ := connect(t, d.info)
			d.interrupt(t)
			b, err := nextFrame(ws, time.Now().Add(10*time.Second))
			if err != nil || !bytes.Equal(b, protocol.ReconnectJSON) {
				t.Fatalf("after Ctrl-C: %s, %v; want %s\n%s", b, err, protocol.ReconnectJSON, d.out)
			}
			if tc.second {
				d.interrupt(t)
				if _, err := nextFrame(ws, time.Now().Add(tc.exitsIn)); err == nil {
					t.Fatal("a frame after the second Ctrl-C, want the end of the connection")
				}
			} else {
				_, err := nextFrame(ws, time.Now().Add(10*time.Second))
				var ce *wstest.CloseError
				if !errors.As(err, &ce) || ce.Code != int(protocol.CloseServiceRestart) {
					t.Fatalf("after the reconnect notice: %v, want close %d", err, protocol.CloseServiceRestart)
				}
			}
			d.exitsWithin(t, tc.exitsIn)
			gw := readLog(t, d.info.Gateways[0].Log)
			for _, s := range tc.gwLog {
				if strings.Count(gw, s) != 1 {
					t.Errorf("gateway log has %q %d times, want once:\n%s", s, strings.Count(gw, s), gw)
				}
			}
			for _, s := range tc.notLog {
				if strings.Contains(gw, s) {
					t.Errorf("gateway log has %q:\n%s", s, gw)
				}
			}
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestClusterDeliversAcrossNodes runs two gateways on one port, each on
// its own server of a three-server NATS cluster: a message published
// through the router reaches the user's connections on both nodes.
func TestClusterDeliversAcrossNodes(t *testing.T) {
	d := startDevfleet(t, "--gateways", "2", "--nats-servers", "3")
	in := d.info
	if len(in.Gateways) != 2 || len(in.NATSServers) != 3 || in.Gateways[0].NATSURL == in.Gateways[1].NATSURL {
		t.Fatalf("fleet: %+v", in)
	}
	// The kernel picks a gateway for each connection: connect until both
	// nodes hold one.
	conns := map[string]*wstest.Conn{}
	for i := 0; len(conns) < 2; i++ {
		if i == 64 {
			t.Fatalf("64 connections all landed on one node: %v", conns)
		}
		ws, w := connect(t, in)
		if conns[w.Node] != nil {
			ws.Close()
			continue
		}
		conns[w.Node] = ws
	}
	// Wait until the router sees one device on each node: the nodes'
	// subscriptions then reach every server of the cluster.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var p struct {
			Devices int `json:"devices"`
			Nodes   []struct {
				Node    string `json:"node"`
				Devices int    `json:"devices"`
			} `json:"nodes"`
		}
		status := call(t, in, http.MethodGet, "/v1/users/"+in.User+"/presence", "", &p)
		if status == http.StatusOK && p.Devices == 2 && len(p.Nodes) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence: %d %+v, want 2 devices on 2 nodes", status, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var sent struct {
		ID string `json:"id"`
	}
	if status := call(t, in, http.MethodPost, "/v1/users/"+in.User+"/messages", `{"text":"across"}`, &sent); status/100 != 2 {
		t.Fatalf("publish: status %d", status)
	}
	// With resumable delivery (devfleet's default) a message's id is its
	// sequence in the history stream, the same on every node.
	ids := map[string]bool{}
	for node, ws := range conns {
		b, err := nextFrame(ws, time.Now().Add(10*time.Second))
		var m protocol.Message
		if err != nil || json.Unmarshal(b, &m) != nil || m.Type != protocol.TypeMessage || string(m.Data) != `{"text":"across"}` {
			t.Errorf("on %s: %s, %v; want the message", node, b, err)
			continue
		}
		if !isSeq(m.ID) {
			t.Errorf("on %s: id %q, want a stream sequence", node, m.ID)
		}
		// The router's answer names the message by its sequence once it
		// publishes to the stream itself (its --resume).
		if isSeq(sent.ID) && m.ID != sent.ID {
			t.Errorf("on %s: id %s, the router answered %s", node, m.ID, sent.ID)
		}
		ids[m.ID] = true
	}
	if len(ids) > 1 {
		t.Errorf("the nodes delivered the message with different ids: %v", ids)
	}
	// Three NATS servers: the history stream has three replicas, one on
	// each, kept in the run directory.
	checkHistoryEnv(t, in, 3)
	for _, n := range in.NATSServers {
		if !strings.HasPrefix(n.StoreDir, in.RunDir+string(filepath.Separator)) {
			t.Errorf("%s keeps JetStream in %q, outside the run directory %s", n.Name, n.StoreDir, in.RunDir)
		}
	}
	st := historyStream(t, in.NATSServers[0].MonitoringURL)
	if st == nil || st.Config.Replicas != 3 || len(st.Cluster.Replicas) != 2 {
		t.Errorf("history stream on %s: %+v, want 3 replicas", in.NATSServers[0].Name, st)
	}
}

// TestResumeSince: a client that reconnects with the id of the last message
// it got (devfleet listen --since) receives what was published meanwhile.
func TestResumeSince(t *testing.T) {
	d := startDevfleet(t)
	in := d.info
	if !in.Resume || in.History == nil || in.History.Replicas != 1 || in.History.Stream != "wsfleet_history" {
		t.Fatalf("resume %v, history %+v", in.Resume, in.History)
	}
	ws, w := connect(t, in)
	if w.Position == "" {
		t.Fatalf("welcome %+v without a position: the gateway does not resume", w)
	}
	publish := func(text string) {
		t.Helper()
		var sent struct{ ID string }
		if status := call(t, in, http.MethodPost, "/v1/users/"+in.User+"/messages", `{"text":"`+text+`"}`, &sent); status/100 != 2 {
			t.Fatalf("publish: status %d", status)
		}
	}
	publish("one")
	b, err := nextFrame(ws, time.Now().Add(10*time.Second))
	var first protocol.Message
	if err != nil || json.Unmarshal(b, &first) != nil || first.Type != protocol.TypeMessage || !isSeq(first.ID) {
		t.Fatalf("first message: %s, %v; want one with a stream sequence as its id", b, err)
	}
	ws.Close()
	publish("two") // while no device is connected

	l := startListen(t, in, "--since", first.ID)
	next := func(typ string) []byte { return l.next(t, typ) }
	var again protocol.Welcome
	if err := json.Unmarshal(next(protocol.TypeWelcome), &again); err != nil || again.Recovered == nil || !*again.Recovered {
		t.Errorf("welcome after --since %s: %+v, %v; want recovered", first.ID, again, err)
	}
	var missed protocol.Message
	if b := next(protocol.TypeMessage); json.Unmarshal(b, &missed) != nil || string(missed.Data) != `{"text":"two"}` || !isSeq(missed.ID) || seq(missed.ID) <= seq(first.ID) {
		t.Errorf("after --since %s: %s; want the message published meanwhile, with a later id", first.ID, b)
	}
	// Stopped, it says where to resume from: the last id it printed.
	l.cmd.Process.Signal(os.Interrupt)
	l.cmd.Wait()
	if want := "--since " + missed.ID + "\n"; !strings.Contains(l.stderr.String(), want) {
		t.Errorf("devfleet listen's stderr when stopped: %q; want it to name %q", l.stderr.String(), want)
	}
}

// TestRoom is the README's chat room: two `devfleet listen --topic room.42`
// on a fleet of two gateways, a publish to the room through the router,
// and both print it, with the id the router answered.
func TestRoom(t *testing.T) {
	d := startDevfleet(t, "--gateways", "2", "--nats-servers", "1")
	in := d.info
	var ls []*listenProc
	for i := 0; i < 2; i++ {
		l := startListen(t, in, "--topic", "room.42")
		l.next(t, protocol.TypeWelcome)
		var sub protocol.Subscribed
		if err := json.Unmarshal(l.next(t, protocol.TypeSubscribed), &sub); err != nil || sub.Topic != "room.42" {
			t.Fatalf("listener %d: %+v, %v", i, sub, err)
		}
		ls = append(ls, l)
	}
	var sent struct{ Topic, ID string }
	if status := call(t, in, http.MethodPost, "/v1/topics/room.42/messages", `{"text":"hello, room"}`, &sent); status != http.StatusAccepted || sent.ID == "" {
		t.Fatalf("publish to the room: status %d, %+v", status, sent)
	}
	for i, l := range ls {
		var m protocol.Message
		if err := json.Unmarshal(l.next(t, protocol.TypeMessage), &m); err != nil || m.Topic != "room.42" || m.ID != sent.ID || string(m.Data) != `{"text":"hello, room"}` {
			t.Fatalf("listener %d: %+v, %v; want the room's message %s", i, m, err, sent.ID)
		}
	}
	// Presence: alice, with both listeners (the gateways run --topic-presence room.*).
	var pres struct {
		Users, Devices int
	}
	checkFor(t, 10*time.Second, func() error {
		if status := call(t, in, http.MethodGet, "/v1/topics/room.42/presence", "", &pres); status != http.StatusOK || pres.Users != 1 || pres.Devices != 2 {
			return fmt.Errorf("room.42's presence: %d %+v, want alice with 2 devices", status, pres)
		}
		return nil
	})
	// A listener back after the room moved on (the fleet runs --resume):
	// with --since, its subscribe replays what the room had meanwhile.
	var away struct{ Topic, ID string }
	if status := call(t, in, http.MethodPost, "/v1/topics/room.42/messages", `{"text":"while away"}`, &away); status != http.StatusAccepted {
		t.Fatalf("publish to the room: status %d", status)
	}
	back := startListen(t, in, "--topic", "room.42", "--since", sent.ID)
	back.next(t, protocol.TypeWelcome)
	var sub protocol.Subscribed
	if err := json.Unmarshal(back.next(t, protocol.TypeSubscribed), &sub); err != nil || sub.Recovered == nil || !*sub.Recovered || sub.Position != sent.ID {
		t.Fatalf("resubscribe: %+v, %v; want recovered from %s", sub, err, sent.ID)
	}
	var m protocol.Message
	if err := json.Unmarshal(back.next(t, protocol.TypeMessage), &m); err != nil || m.Topic != "room.42" || m.ID != away.ID {
		t.Fatalf("after the resubscribe: %+v, %v; want %s", m, err, away.ID)
	}
	// The token allows room.* only (devfleet --topics).
	bad := startListen(t, in, "--topic", "other.1")
	bad.next(t, protocol.TypeWelcome)
	if b := bad.next(t, protocol.TypeError); !strings.Contains(string(b), `"code":"forbidden"`) {
		t.Fatalf("a topic the token does not allow: %s", b)
	}
}

// TestListenResumesOnMove: when a drain moves `devfleet listen` to another
// node, its new connection resumes after the last message it printed.
func TestListenResumesOnMove(t *testing.T) {
	d := startDevfleet(t, "--gateways", "2", "--nats-servers", "1")
	in := d.info
	l := startListen(t, in)
	var w protocol.Welcome
	if err := json.Unmarshal(l.next(t, protocol.TypeWelcome), &w); err != nil {
		t.Fatal(err)
	}
	if status := call(t, in, http.MethodPost, "/v1/users/"+in.User+"/messages", `{"text":"before the move"}`, &struct{}{}); status/100 != 2 {
		t.Fatalf("publish: status %d", status)
	}
	var m protocol.Message
	if err := json.Unmarshal(l.next(t, protocol.TypeMessage), &m); err != nil || !isSeq(m.ID) {
		t.Fatalf("message %+v, %v; want one with a stream sequence", m, err)
	}
	sock := ""
	for _, g := range in.Gateways {
		if g.Node == w.Node {
			sock = g.ControlSocket
		}
	}
	if sock == "" {
		t.Fatalf("welcomed by %q, not a node of the fleet", w.Node)
	}
	drain := exec.Command(filepath.Join(binaries(t), "gateway"), "drain", "--control-socket", sock, "--delay", "0s", "--timeout", "20s")
	if out, err := drain.CombinedOutput(); err != nil {
		t.Fatalf("gateway drain: %v\n%s", err, out)
	}
	var moved protocol.Welcome
	if err := json.Unmarshal(l.next(t, protocol.TypeWelcome), &moved); err != nil || moved.Node == w.Node || moved.Recovered == nil || !*moved.Recovered {
		t.Errorf("welcome after the move from %s: %+v, %v; want another node, recovered (resumed after %s)", w.Node, moved, err, m.ID)
	}
}

// listenProc is a `devfleet listen` under test.
type listenProc struct {
	lines  chan string
	stderr *syncBuffer
	cmd    *exec.Cmd
}

// startListen runs `devfleet listen` as the fleet's user with args.
func startListen(t *testing.T, in info, args ...string) *listenProc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "devfleet"), append([]string{"listen", "--url", in.WSURL, "--token", in.Token}, args...)...)
	cmd.Env = os.Environ()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &listenProc{lines: make(chan string, 64), stderr: &syncBuffer{}, cmd: cmd}
	cmd.Stderr = l.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	return l
}

// next is the next frame of type typ listen printed, within 10 s.
func (l *listenProc) next(t *testing.T, typ string) []byte {
	t.Helper()
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatalf("devfleet listen ended before a %s frame; stderr:\n%s", typ, l.stderr.String())
			}
			if strings.Contains(line, `"type":"`+typ+`"`) {
				return []byte(line)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s frame from devfleet listen within 10s; stderr:\n%s", typ, l.stderr.String())
		}
	}
}

// TestNoResume: --resume=false is the fleet without history: NATS without
// JetStream, no history settings, the publishers' message ids.
func TestNoResume(t *testing.T) {
	d := startDevfleet(t, "--resume=false", "--nats-servers", "1")
	in := d.info
	if in.Resume || in.History != nil || in.NATSServers[0].StoreDir != "" {
		t.Fatalf("resume %v, history %+v, NATS %+v", in.Resume, in.History, in.NATSServers)
	}
	if out := d.out.String(); strings.Contains(out, "since") || strings.Contains(out, "History") {
		t.Errorf("the instructions speak of resuming:\n%s", out)
	}
	for what, pid := range map[string]int{"gateway": in.Gateways[0].PID, "router": in.RouterPID} {
		for k := range procEnv(t, pid) {
			if k == "WSFLEET_RESUME" || strings.HasPrefix(k, "WSFLEET_HISTORY_") {
				t.Errorf("the %s has %s", what, k)
			}
		}
	}
	var jsz struct {
		Disabled bool `json:"disabled"`
	}
	if err := getJSON(in.NATSServers[0].MonitoringURL+"/jsz", &jsz); err != nil || !jsz.Disabled {
		t.Errorf("/jsz: %+v, %v; want JetStream disabled", jsz, err)
	}
	if _, err := os.Stat(filepath.Join(in.RunDir, "jetstream")); !os.IsNotExist(err) {
		t.Errorf("a JetStream directory without JetStream: %v", err)
	}
	ws, w := connect(t, in)
	if w.Position != "" || w.Recovered != nil {
		t.Errorf("welcome %+v: a position without resumable delivery", w)
	}
	var sent struct{ ID string }
	if status := call(t, in, http.MethodPost, "/v1/users/"+in.User+"/messages", `{"text":"plain"}`, &sent); status/100 != 2 {
		t.Fatalf("publish: status %d", status)
	}
	b, err := nextFrame(ws, time.Now().Add(10*time.Second))
	var m protocol.Message
	if err != nil || json.Unmarshal(b, &m) != nil || m.Type != protocol.TypeMessage || m.ID != sent.ID || isSeq(m.ID) {
		t.Errorf("delivery: %s, %v; want message %s with the router's id", b, err, sent.ID)
	}
}

func seq(id string) uint64 {
	n, _ := protocol.ParseSince(id)
	return n
}

// checkHistoryEnv checks that the gateways and the router got resumable
// delivery with the same history settings, in the shared variables.
func checkHistoryEnv(t *testing.T, in info, replicas int) {
	t.Helper()
	want := map[string]string{"WSFLEET_RESUME": "true", "WSFLEET_HISTORY_REPLICAS": fmt.Sprint(replicas)}
	pids := map[string]int{"router": in.RouterPID}
	for _, g := range in.Gateways {
		pids[g.Node] = g.PID
	}
	for what, pid := range pids {
		env := procEnv(t, pid)
		got := map[string]string{}
		for k, v := range env {
			if k == "WSFLEET_RESUME" || strings.HasPrefix(k, "WSFLEET_HISTORY_") {
				got[k] = v
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: history settings %v, want %v", what, got, want)
		}
	}
}

// procEnv is the environment process pid started with.
func procEnv(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// streamDetail is what a NATS server's /jsz says of a stream.
type streamDetail struct {
	Name   string `json:"name"`
	Config struct {
		Replicas          int    `json:"num_replicas"`
		Storage           string `json:"storage"`
		MaxMsgsPerSubject int64  `json:"max_msgs_per_subject"`
	} `json:"config"`
	Cluster struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name string `json:"name"`
		} `json:"replicas"`
	} `json:"cluster"`
}

// historyStream is the history stream as the NATS server at monitoring
// URL mon sees it, nil when it has none.
func historyStream(t *testing.T, mon string) *streamDetail {
	t.Helper()
	var jsz struct {
		Accounts []struct {
			Streams []streamDetail `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := getJSON(mon+"/jsz?accounts=true&streams=true&config=true", &jsz); err != nil {
		t.Fatal(err)
	}
	for _, a := range jsz.Accounts {
		for i, s := range a.Streams {
			if s.Name == "wsfleet_history" {
				return &a.Streams[i]
			}
		}
	}
	return nil
}

func getJSON(url string, v any) error {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// call sends an authenticated request to the fleet's router and decodes
// its JSON answer into v.
func call(t *testing.T, in info, method, path, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, in.RouterURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+in.APIKey)
	req.Header.Set("Content-Type", "application/json")
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		natsServers int
		noResume    bool
		replicas    int // of the history stream, with resume
		err         string
	}{
		{name: "default: NATS embedded", args: nil, natsServers: 0, replicas: 1},
		{name: "several gateways get a NATS server", args: []string{"--gateways", "3"}, natsServers: 1, replicas: 1},
		{name: "two servers: one replica", args: []string{"--nats-servers", "2"}, natsServers: 2, replicas: 1},
		{name: "a cluster: three replicas", args: []string{"--gateways", "3", "--nats-servers", "3"}, natsServers: 3, replicas: 3},
		{name: "five servers: three replicas", args: []string{"--nats-servers", "5"}, natsServers: 5, replicas: 3},
		{name: "resume off", args: []string{"--resume=false", "--nats-servers", "3"}, natsServers: 3, noResume: true},
		{name: "no gateway", args: []string{"--gateways", "0"}, err: "--gateways 0"},
		{name: "bad user", args: []string{"--user", "a\nb"}, err: "--user"},
		{name: "bad topic pattern", args: []string{"--topics", "room.* a..b"}, err: "--topics: bad topic pattern: an empty segment"},
		{name: "admin ports run into the router's", args: []string{"--gateways", "12", "--nats-servers", "1"},
			err: "--gateway-admin and --router-listen would both listen on 127.0.0.1:8090"},
		{name: "same address twice", args: []string{"--router-admin", "127.0.0.1:8080"},
			err: "--gateway-listen and --router-admin would both listen on 127.0.0.1:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args)
			if err == nil {
				_, err = c.addresses()
			}
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case c.natsServers != tc.natsServers:
				t.Errorf("nats servers %d, want %d", c.natsServers, tc.natsServers)
			case c.resume == tc.noResume:
				t.Errorf("resume %v", c.resume)
			case tc.noResume && c.historyEnv() != nil:
				t.Errorf("without resume the fleet gets %v", c.historyEnv())
			case !tc.noResume && fmt.Sprint(c.historyEnv()) != fmt.Sprintf("[WSFLEET_RESUME=true WSFLEET_HISTORY_REPLICAS=%d]", tc.replicas):
				t.Errorf("history settings %v, want %d replicas", c.historyEnv(), tc.replicas)
			}
		})
	}
}

// checkFor polls f until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package main

import (
	"bufio"
	"encoding/json"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/internal/wstest"
)

const secret = "cmd-test-secret-0123456789abcdef-0123"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the gateway command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gateway-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gateway")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// node is a running gateway process.
type node struct {
	cmd          *exec.Cmd
	listen       string
	admin        string
	logs         chan map[string]any
	stderrClosed chan struct{}
}

// startNode runs the gateway with args and waits for its "gateway started" log line.
func startNode(t *testing.T, env []string, args ...string) *node {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd, logs: make(chan map[string]any, 1000), stderrClosed: make(chan struct{})}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		defer close(n.stderrClosed)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case n.logs <- m:
				default:
				}
			}
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-n.logs:
			if m["msg"] == "gateway started" {
				n.listen, n.admin = m["listen"].(string), m["admin"].(string)
				return n
			}
		case <-deadline:
			t.Fatal("gateway did not start")
		}
	}
}

// exitsCleanly waits up to within for the process to exit with status 0.
func (n *node) exitsCleanly(t *testing.T, within time.Duration) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- n.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v, want status 0", err)
		}
	case <-time.After(within):
		t.Fatalf("did not exit within %s", within)
	}
}

func mint(t *testing.T, sub string) string {
	t.Helper()
	out, err := exec.Command(binary(t), "token", "--sub", sub, "--jwt-hs256-secret", secret).Output()
	if err != nil {
		t.Fatalf("gateway token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestSIGTERMDrains(t *testing.T) {
	n := startNode(t, []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret, "WSFLEET_GATEWAY_DRAIN_TIMEOUT=1s"},
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-embedded-listen", "127.0.0.1:-1")
	var clients []*wstest.Conn
	for i := 0; i < 20; i++ {
		ws, _, err := wstest.Dial("ws://"+n.listen+"/ws", http.Header{"Authorization": {"Bearer " + mint(t, "u")}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), "welcome") {
			t.Fatalf("no welcome: %s %v", b, err)
		}
		clients = append(clients, ws)
	}
	if code := get(t, "http://"+n.admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d before SIGTERM", code)
	}
	start := time.Now()
	n.cmd.Process.Signal(syscall.SIGTERM)
	for i, ws := range clients {
		// Each gets a reconnect notice first, then (not acting on it) 1012.
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		notified := false
		for {
			_, b, err := ws.ReadMessage()
			if err == nil {
				notified = notified || strings.Contains(string(b), `"reconnect"`)
				continue
			}
			var ce *wstest.CloseError
			if !errors.As(err, &ce) || ce.Code != 1012 {
				t.Fatalf("client %d: %v, want close 1012", i, err)
			}
			break
		}
		if !notified {
			t.Fatalf("client %d was closed without a reconnect notice", i)
		}
	}
	n.exitsCleanly(t, 15*time.Second)
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("drained 20 connections in %s; closes should spread over the 1s drain timeout", el)
	}
}

func TestReadyzFalseWhileDraining(t *testing.T) {
	n := startNode(t, []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret, "WSFLEET_GATEWAY_DRAIN_TIMEOUT=3s"},
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-embedded-listen", "127.0.0.1:-1")
	// A connection keeps the drain going for a while.
	ws, _, err := wstest.Dial("ws://"+n.listen+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteJSON(map[string]string{"type": "auth", "token": mint(t, "v")})
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	ws.ReadMessage()
	n.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for {
		if code := get(t, "http://"+n.admin+"/readyz"); code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz stayed ready after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := get(t, "http://"+n.admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d while draining, want 200 (alive)", code)
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestCommandLine(t *testing.T) {
	bin := binary(t)
	cases := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		want     string // in the output
	}{
		{"help lists defaults and env", []string{"--help"}, nil, 0, "WSFLEET_GATEWAY_IDLE_TIMEOUT"},
		{"help shows a default", []string{"--help"}, nil, 0, "default 30s, env WSFLEET_GATEWAY_HEARTBEAT"},
		{"no key names the settings", nil, nil, 2, "--jwt-hs256-secret"},
		{"bad env names the variable", nil, []string{"WSFLEET_GATEWAY_HEARTBEAT=often"}, 2, "WSFLEET_GATEWAY_HEARTBEAT"},
		{"bad flag", []string{"--heartbeat", "often"}, nil, 2, `--heartbeat: "often" is not a duration (e.g. 30s`},
		{"bad flag, one dash", []string{"-heartbeat=abc"}, nil, 2, `--heartbeat: "abc" is not a duration`},
		{"zero is not the default", []string{"--jwt-hs256-secret", secret, "--heartbeat", "0s"}, nil, 2, "--heartbeat (WSFLEET_GATEWAY_HEARTBEAT): must be more than 0"},
		{"http NATS URL", []string{"--jwt-hs256-secret", secret, "--nats-url", "http://127.0.0.1:4222"}, nil, 2, `gateway: invalid setting --nats-url: "http://127.0.0.1:4222" is an HTTP URL`},
		{"zero message rate", []string{"--jwt-hs256-secret", secret, "--max-client-msgs-per-sec", "0"}, nil, 2, "--max-client-msgs-per-sec (WSFLEET_GATEWAY_MAX_CLIENT_MSGS_PER_SEC): 0 is not a setting"},
		{"a subcommand's variable is no typo", []string{"--heartbeat", "often"}, []string{"WSFLEET_GATEWAY_TTL=1h"}, 2, `--heartbeat: "often"`},
		{"typo in a variable", nil, []string{"WSFLEET_GATEWAY_HEARTBEET=5s"}, 2, "unknown environment variable WSFLEET_GATEWAY_HEARTBEET"},
		{"a name of an older release", nil, []string{"WSFLEET_JWT_HS256_SECRET=" + secret}, 2, "WSFLEET_GATEWAY_JWT_HS256_SECRET or WSFLEET_ROUTER_JWT_HS256_SECRET"},
		{"NATS unreachable", []string{"--jwt-hs256-secret", secret, "--nats-url", "nats://127.0.0.1:1", "--nats-connect-timeout", "200ms", "--admin-listen", "off", "--listen", "127.0.0.1:0"}, nil, 1, "gateway: NATS unavailable: --nats-url nats://127.0.0.1:1"},
		{"the router's variables are not read", []string{"--jwt-hs256-secret", secret, "--heartbeat", "often"}, []string{"WSFLEET_ROUTER_API_KEY=k"}, 2, `--heartbeat: "often"`},
		{"short secret", []string{"--jwt-hs256-secret", "x"}, nil, 2, "--jwt-hs256-secret"},
		{"token needs sub", []string{"token", "--jwt-hs256-secret", secret}, nil, 2, "--sub"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tc.wantCode, tc.want)
			}
			if strings.Contains(string(out), "gateway: gateway:") {
				t.Fatalf("the program name twice:\n%s", out)
			}
		})
	}
}

// cpuSeconds reads a process's user+system CPU time from /proc.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return float64(ut+st) / 100 // clock ticks (USER_HZ)
}

// TestAcceptBackpressureOnEMFILE runs the gateway with 64 open files: once
// they are used, accepting pauses with back-off (one log line, no spinning
// core) and resumes when descriptors free up.
func TestAcceptBackpressureOnEMFILE(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command("sh", "-c", `ulimit -n 64 && exec "$0" "$@"`, bin,
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-embedded-listen", "127.0.0.1:-1",
		"--max-connections", "1000", "--pollers", "1", "--auth-workers", "1", "--dispatchers", "1")
	cmd.Env = append(os.Environ(), "WSFLEET_GATEWAY_JWT_HS256_SECRET="+secret)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := make(chan map[string]any, 1000)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				logs <- m
			}
		}
		close(logs)
	}()
	var listen string
	for m := range logs {
		if m["msg"] == "gateway started" {
			listen = m["listen"].(string)
			break
		}
	}
	if listen == "" {
		t.Fatal("gateway did not start")
	}
	var held []net.Conn
	for i := 0; i < 80; i++ { // more than the process can hold
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	pauses := 0
	deadline := time.After(5 * time.Second)
wait:
	for {
		select {
		case m := <-logs:
			if strings.Contains(fmt.Sprint(m["msg"]), "accept paused") {
				pauses++
				break wait
			}
		case <-deadline:
			t.Fatal("no accept-paused log line")
		}
	}
	before := cpuSeconds(t, cmd.Process.Pid)
	time.Sleep(2 * time.Second) // out of descriptors the whole time
	used := cpuSeconds(t, cmd.Process.Pid) - before
	if used > 0.5 {
		t.Errorf("%.2f CPU seconds in 2s while out of file descriptors: accepting spins", used)
	}
	for len(logs) > 0 {
		if m := <-logs; strings.Contains(fmt.Sprint(m["msg"]), "accept paused") {
			pauses++
		}
	}
	if pauses != 1 {
		t.Errorf("%d accept-paused log lines in 2s, want 1 (rate limited)", pauses)
	}
	// Free descriptors: the sockets held still get served once the
	// gateway can accept again (their handshake times out or completes).
	for _, c := range held[:40] {
		c.Close()
	}
	ws, _, err := wstest.Dial("ws://"+listen+"/ws", nil)
	if err != nil {
		t.Fatalf("no upgrade after descriptors freed: %v", err)
	}
	ws.Close()
	for _, c := range held[40:] {
		c.Close()
	}
}

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  bool
	}{
		{"1500000000", 1500000000, false}, {"512MiB", 512 << 20, false}, {"2GiB", 2 << 30, false},
		{"10KiB", 10 << 10, false}, {"7B", 7, false}, {"", 0, true}, {"-1GiB", 0, true}, {"lots", 0, true}, {"1.5GiB", 0, true},
		{"8388607TiB", 8388607 << 40, false}, {"8388608TiB", 0, true}, {"9999999999TiB", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBytes(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("parseBytes(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

// `gateway drain` (the chart's preStop hook) drains the node through its
// control socket: clients get a reconnect notice and 1012, the node stays
// up and unready with no connection, and the SIGTERM that follows finds
// nothing left to drain.
func TestDrainCommand(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "gw.sock")
	n := startNode(t, []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret, "WSFLEET_GATEWAY_DRAIN_TIMEOUT=3s"},
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-embedded-listen", "127.0.0.1:-1",
		"--control-socket", sock)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %v %v, want mode 0600", fi, err)
	}
	ws, _, err := wstest.Dial("ws://"+n.listen+"/ws", http.Header{"Authorization": {"Bearer " + mint(t, "w")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), "welcome") {
		t.Fatalf("no welcome: %s %v", b, err)
	}
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()

	// The socket as the chart gives it: in the environment.
	cmd := exec.Command(binary(t), "drain", "--delay", "100ms", "--timeout", "20s")
	cmd.Env = append(os.Environ(), "WSFLEET_GATEWAY_CONTROL_SOCKET="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"drained"`) {
		t.Fatalf("gateway drain: %v: %s", err, out)
	}
	select {
	case err := <-closed:
		var ce *wstest.CloseError
		if !errors.As(err, &ce) || ce.Code != 1012 {
			t.Fatalf("client: %v, want close 1012", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client is still connected after the drain")
	}
	if code := get(t, "http://"+n.admin+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d after the drain, want 503", code)
	}
	if code := get(t, "http://"+n.admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d after the drain, want 200 (the process serves on)", code)
	}
	if _, _, err := wstest.Dial("ws://"+n.listen+"/ws", nil); err == nil {
		t.Fatal("a drained node accepted a connection")
	}
	// A second drain finds the node drained.
	cmd = exec.Command(binary(t), "drain", "--control-socket", sock)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"drained"`) {
		t.Fatalf("second gateway drain: %v: %s", err, out)
	}
	start := time.Now()
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.exitsCleanly(t, 10*time.Second)
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Errorf("SIGTERM after the drain took %s; nothing was left to drain (the drain timeout is 3s)", el)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket outlived the process: %v", err)
	}
}

func TestDrainCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no socket", nil, 2, "--control-socket"},
		{"nothing serves it", []string{"--control-socket", filepath.Join(t.TempDir(), "none.sock"), "--timeout", "5s"}, 1, "none.sock"},
		{"bad flag", []string{"--nope"}, 2, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary(t), append([]string{"drain"}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
				t.Fatalf("gateway drain %v: %v: %s; want exit %d mentioning %q", tc.args, err, out, tc.code, tc.want)
			}
		})
	}
}

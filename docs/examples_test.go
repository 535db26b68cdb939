// Package docs_test runs the examples of README.md, docs/router.md,
// docs/limits.md and docs/deploy.md and checks their documented answers.
package docs_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/wstest"
)

// docFiles are the files whose examples TestDocExamples runs, from the
// repository's root. docs/loadtest.md's run in the loadtest package
// (TestDocExamples there); docs/benchmarks.md shows measurements.
var docFiles = []string{"README.md", "docs/router.md", "docs/limits.md", "docs/deploy.md"}

// TestDocExamples runs every marked example of docFiles and compares what
// it prints with the answer the document shows.
//
// # Marking an example
//
// An HTML comment on the line right before a fenced block makes it an
// example; Markdown renderers do not show it:
//
//	<!-- example: NAME -->        the block is an example (NAME: [a-z0-9-], unique in its file)
//	<!-- example: NAME; exit N --> one that exits with status N (default 0)
//	<!-- expect: NAME -->         the block is the answer of example NAME, shown after it
//	<!-- not run: REASON -->      the block is not run, for REASON
//
// The example block's language says what it is:
//
//   - ```sh: a bash script (bash -e -o pipefail), run from the repository's
//     root. Its answer is its standard output and standard error.
//   - ```yaml: Helm values for the chart: `make helm-template VALUES=FILE
//     HELM_LINT=1` must pass, and `make helm-template VALUES=FILE` render.
//   - ```text: a WebSocket session with the gateway at 127.0.0.1:8080:
//     "> FRAME" is a text frame the client sends, "< FRAME" one it
//     receives, "< close CODE [REASON]" the close frame it receives last,
//     "$ COMMAND" a bash command run meanwhile, which must exit 0 (its
//     output is not checked).
//
// An answer is matched line by line. A line holding only … stands for any
// number of lines; … within a line for any text. A line starting with { or
// [ begins a JSON value (on one line or several): the output must hold the
// same value, member for member, where … (bare, or as the string "…")
// stands for any value and … within a string for any text in it. From a
// line starting with HTTP/ up to the next blank line is the status line and
// headers of `curl -i`: the status line must match, and each header shown
// must be among those sent (any others are left out of the answer).
//
// A ```sh block with a curl, bin/gateway, bin/router or bin/loadtest
// command and no marker fails the test, so none is left unchecked.
//
// # The fleet the examples run against
//
// Two gateway nodes, gw-1 (with the embedded NATS server) and gw-2, and a
// router, built from this tree, on free ports. Before each example, alice
// has two devices connected to gw-1 and one to gw-2, bob one on gw-1, and
// the router's view says so (an example that closes them, a kick, gets
// them back for the next). The examples' addresses are the local fleet's
// (make run), mapped to the test's:
//
//	127.0.0.1:8080  gw-1's WebSocket port      127.0.0.1:8090  the router's API
//	127.0.0.1:8081  gw-1's admin port          127.0.0.1:8091  the router's admin port
//	127.0.0.1:4222  the NATS server
//
// and bin/gateway and bin/router are the binaries built here. The scripts
// get these environment variables, and no other WSFLEET_* one (nor make's
// MAKELEVEL and MAKEFLAGS):
//
//	API_KEY                           an API key of the router
//	TOKEN                             a token for alice, valid for an hour,
//	                                  whose topics claim allows room.*
//	WSFLEET_GATEWAY_JWT_HS256_SECRET  the gateways' HS256 secret
//
// A session's frames may hold $TOKEN.
//
// # Not run
//
//   - README.md: the `make run` blocks and the local fleet's output (the
//     local fleet is cmd/devfleet's, tested there); the Go fragments
//     (publishing from a Go service, router/client): not whole programs
//     (router/client/example_test.go runs the SDK's examples); the
//     bin/loadtest command: 10,000 connections for 30 s, over this test's
//     budget (docs/loadtest.md's commands run in the loadtest package).
//   - docs/router.md: `go get` and `go mod edit`, which need a service's
//     module and the network; the Go SDK fragment (as above). The NATS
//     request API has no example: it would need a NATS client such as the
//     nats CLI, which this repository does not build; a router test
//     checks that it answers as HTTP does.
//   - docs/limits.md: bench/shed-cost.sh, a benchmark of minutes.
//   - docs/deploy.md: `make images` (builds three release binaries and
//     writes dist/images/ in the tree; internal/ociimage's tests build
//     images); docker, podman and skopeo (a container engine and a
//     registry); `helm install` and `helm test` (a Kubernetes cluster).
func TestDocExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a fleet")
	}
	for _, cmd := range []string{"bash", "curl", "make"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("the examples need %s: %v", cmd, err)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	examples := map[string][]*example{}
	total := 0
	for _, file := range docFiles {
		text, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		exs, errs := parseExamples(file, string(text))
		for _, err := range errs {
			t.Error(err)
		}
		examples[file] = exs
		total += len(exs)
	}
	if t.Failed() {
		t.FailNow()
	}
	if total < 20 {
		t.Fatalf("%d examples marked in %s", total, strings.Join(docFiles, ", "))
	}

	f := startFleet(t, root)
	for _, file := range docFiles {
		t.Run(file, func(t *testing.T) {
			for _, ex := range examples[file] {
				t.Run(ex.name, func(t *testing.T) {
					f.settle(t)
					f.run(t, ex)
				})
			}
		})
	}
}

// example is a marked block of a document.
type example struct {
	file       string
	line       int // of the marker, from 1
	name       string
	exit       int
	lang       string // sh, yaml or text
	body       string
	answer     string
	answerLine int // 0: none shown
}

func (ex *example) String() string { return fmt.Sprintf("%s:%d (%s)", ex.file, ex.line, ex.name) }

var (
	exampleRE  = regexp.MustCompile(`^<!-- example: ([a-z0-9][a-z0-9-]*)(?:; exit ([0-9]+))? -->$`)
	expectRE   = regexp.MustCompile(`^<!-- expect: ([a-z0-9][a-z0-9-]*) -->$`)
	notRunRE   = regexp.MustCompile(`^<!-- not run: \S.* -->$`)
	anyMarker  = regexp.MustCompile(`^<!-- *(example|expect|not run)`)
	fenceRE    = regexp.MustCompile("^(```+|~~~+)\\s*([A-Za-z0-9_-]*)")
	runnableRE = regexp.MustCompile(`(^|[\s;&|(])(curl|bin/gateway|bin/router|bin/loadtest)(\s|$)`)
	commentRE  = regexp.MustCompile(`(^|\s)#`)
)

// parseExamples reads the marked examples of a document and checks its
// markers.
func parseExamples(file, text string) ([]*example, []error) {
	lines := strings.Split(text, "\n")
	var (
		exs  []*example
		errs []error
	)
	byName := map[string]*example{}
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if anyMarker.MatchString(l) && !exampleRE.MatchString(l) && !expectRE.MatchString(l) && !notRunRE.MatchString(l) {
			fail(i+1, "malformed marker %q", l)
			continue
		}
		m := fenceRE.FindStringSubmatch(l)
		if m == nil {
			if exampleRE.MatchString(l) || expectRE.MatchString(l) || notRunRE.MatchString(l) {
				if i+1 >= len(lines) || !fenceRE.MatchString(lines[i+1]) {
					fail(i+1, "a marker not right before a fenced block")
				}
			}
			continue
		}
		// A fenced block: up to the line holding only the same fence.
		start, fence, lang := i, m[1], m[2]
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != fence; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			fail(start+1, "a fenced block without its end")
			break
		}
		text := strings.Join(body, "\n") + "\n"
		prev := ""
		if start > 0 {
			prev = lines[start-1]
		}
		switch {
		case exampleRE.MatchString(prev):
			mm := exampleRE.FindStringSubmatch(prev)
			ex := &example{file: file, line: start, name: mm[1], lang: lang, body: text}
			if mm[2] != "" {
				ex.exit, _ = strconv.Atoi(mm[2])
			}
			switch lang {
			case "sh", "yaml", "text":
			default:
				fail(start, "example %s: a ```%s block (want sh, yaml or text)", ex.name, lang)
			}
			if byName[ex.name] != nil {
				fail(start, "example %s is already at line %d", ex.name, byName[ex.name].line)
			}
			byName[ex.name] = ex
			exs = append(exs, ex)
		case expectRE.MatchString(prev):
			name := expectRE.FindStringSubmatch(prev)[1]
			ex := byName[name]
			switch {
			case ex == nil:
				fail(start, "the answer of example %s, which no block before it is", name)
			case ex.answerLine != 0:
				fail(start, "example %s already has its answer at line %d", name, ex.answerLine)
			case ex.lang != "sh":
				fail(start, "example %s is a ```%s block: it has no answer", name, ex.lang)
			default:
				ex.answer, ex.answerLine = text, start
			}
		case notRunRE.MatchString(prev):
		case (lang == "sh" || lang == "bash") && runnable(text):
			fail(start+1, "a ```%s block with a command and no <!-- example: NAME --> or <!-- not run: REASON --> marker", lang)
		}
	}
	return exs, errs
}

// runnable reports whether a script runs curl or one of the binaries, in
// a command rather than a comment.
func runnable(script string) bool {
	for _, l := range strings.Split(script, "\n") {
		if i := commentRE.FindStringIndex(l); i != nil {
			l = l[:i[0]]
		}
		if runnableRE.MatchString(l) {
			return true
		}
	}
	return false
}

// fleet is what the examples run against.
type fleet struct {
	root    string
	bin     map[string]string // binary name → path
	secret  string
	apiKey  string
	tokens  map[string]string // user → token
	addrs   map[string]string // documented port → the test's host:port
	env     []string          // the scripts' environment
	router  string            // the router's base URL
	ws      map[string]string // node → WebSocket URL
	devices []*device
	hc      *http.Client
}

// device is a client connection the fleet keeps.
type device struct {
	user, node string
	conn       *wstest.Conn
	done       chan struct{} // closed when the connection ended
}

// The fleet's clients before each example: user → node → devices.
var wantDevices = []struct {
	user, node string
	n          int
}{{"alice", "gw-1", 2}, {"bob", "gw-1", 1}, {"alice", "gw-2", 1}}

func startFleet(t *testing.T, root string) *fleet {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/gateway", "./cmd/router")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f := &fleet{
		root:   root,
		bin:    map[string]string{"gateway": filepath.Join(dir, "gateway"), "router": filepath.Join(dir, "router")},
		secret: "docs-examples-hs256-secret-0123456789abcdef",
		apiKey: "docs-examples-api-key-0123456789",
		tokens: map[string]string{},
		ws:     map[string]string{},
		hc:     &http.Client{Timeout: 10 * time.Second},
	}
	for _, user := range []string{"alice", "bob"} {
		// With the topics claim of the local fleet's token (devfleet --topics).
		tok, err := jwtmint.Mint("HS256", []byte(f.secret), jwtmint.Claims{Subject: user, TTL: time.Hour,
			Extra: map[string]any{"topics": []string{"room.*"}}})
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[user] = tok
	}
	gwEnv := []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + f.secret}
	// Heartbeats every 250 ms, so that the router's connection counts
	// follow the clients within the poll of settle.
	gw1 := startProcess(t, dir, "gw-1", f.bin["gateway"], gwEnv, "gateway started",
		"--node-id", "gw-1", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--nats-embedded-listen", "127.0.0.1:0", "--nats-embedded-store-dir", filepath.Join(dir, "jetstream"),
		"--presence-interval", "250ms")
	natsURL, _ := gw1["nats"].(string)
	if natsURL == "" {
		t.Fatalf("gw-1 did not say its NATS URL: %v", gw1)
	}
	gw2 := startProcess(t, dir, "gw-2", f.bin["gateway"], gwEnv, "gateway started",
		"--node-id", "gw-2", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--nats-url", natsURL, "--presence-interval", "250ms")
	rt := startProcess(t, dir, "router", f.bin["router"], []string{"WSFLEET_ROUTER_API_KEY=" + f.apiKey}, "router started",
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--nats-url", natsURL)
	f.addrs = map[string]string{
		"8080": gw1["listen"].(string),
		"8081": gw1["admin"].(string),
		"8090": rt["listen"].(string),
		"8091": rt["admin"].(string),
		"4222": strings.TrimPrefix(natsURL, "nats://"),
	}
	f.router = "http://" + f.addrs["8090"]
	f.ws["gw-1"] = "ws://" + f.addrs["8080"] + "/ws"
	f.ws["gw-2"] = "ws://" + gw2["listen"].(string) + "/ws"

	f.env = append(cleanEnv(), "API_KEY="+f.apiKey, "TOKEN="+f.tokens["alice"], "WSFLEET_GATEWAY_JWT_HS256_SECRET="+f.secret)

	for _, w := range wantDevices {
		for range w.n {
			f.devices = append(f.devices, &device{user: w.user, node: w.node})
		}
	}
	t.Cleanup(func() {
		for _, d := range f.devices {
			if d.conn != nil {
				d.conn.Close()
			}
		}
	})
	return f
}

// cleanEnv is this process's environment without the variables the
// examples are given and without any WSFLEET_* one, which would change the
// fleet's settings; without make's either: under `make test` they would
// make the examples' make say the directories it enters.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "WSFLEET_"), name == "API_KEY", name == "TOKEN",
			name == "MAKELEVEL", name == "MAKEFLAGS", name == "MFLAGS", name == "MAKEOVERRIDES":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startProcess runs a binary of the fleet, its log in dir/name.log, and
// returns the fields of its log line whose msg is started. The process is
// killed when the test ends; the end of its log is shown if the test
// failed.
func startProcess(t *testing.T, dir, name, path string, env []string, started string, args ...string) map[string]any {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(cleanEnv(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fields := make(chan map[string]any, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			logFile.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == started {
				select {
				case fields <- m:
				default:
				}
			}
		}
	}()
	var waited error
	var waitOnce sync.Once
	wait := func() error { waitOnce.Do(func() { waited = cmd.Wait() }); return waited }
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-copied // every line read before Wait closes the pipe
		wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := splitLines(string(b))
			t.Logf("the end of %s's log:\n%s", name, strings.Join(lines[max(0, len(lines)-20):], "\n"))
		}
	})
	select {
	case m := <-fields:
		return m
	case <-copied:
		t.Fatalf("%s exited before %q: %v", name, started, wait())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log %q within 30s", name, started)
	}
	return nil
}

// settle brings the fleet back to wantDevices: it connects the devices
// whose connection ended, then waits until the router's view and the
// nodes' heartbeats count them all, and nothing else.
//
// The view is asked first: a node's presence batches and heartbeats reach
// the router in the order the node sent them, so once the view counts the
// devices of the last connect or close, the stats asked after it come from
// that node's heartbeats of that time or later. An example that leaves a
// change on its way could otherwise show in the next one; a session waits
// for its connection to be counted before it closes it (session), so the
// view only ever moves towards wantDevices here.
func (f *fleet) settle(t *testing.T) {
	t.Helper()
	want := `{"results":[{"user":"alice","online":true,"devices":3},{"user":"bob","online":true,"devices":1}]}` + "\n" +
		`{"nodes":2,"connections":4,"users":2,"node_list":[` +
		`{"node":"gw-1","connections":3,"users":2,"last_heartbeat_ms_ago":…,"draining":false,"synced":true},` +
		`{"node":"gw-2","connections":1,"users":1,"last_heartbeat_ms_ago":…,"draining":false,"synced":true}]}` + "\n"
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, d := range f.devices {
			if err := f.reconnect(d); err != nil {
				t.Fatalf("%s on %s: %v", d.user, d.node, err)
			}
		}
		presence, err1 := f.call(http.MethodPost, "/v1/presence/query", `{"users":["alice","bob"]}`)
		stats, err2 := f.call(http.MethodGet, "/v1/stats", "")
		got := presence + stats
		err := errors.Join(err1, err2)
		if err == nil {
			if err = matchOutput(want, got); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet did not settle within 15s: %v\n%s", err, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends a request to the router with the API key and returns the body
// of a 200 answer.
func (f *fleet) call(method, path, body string) (string, error) {
	req, err := http.NewRequest(method, f.router+path, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	resp, err := f.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s %s", method, path, resp.Status, b.String())
	}
	return b.String(), nil
}

// reconnect connects d unless its connection is open: it authenticates and
// waits for the welcome, then reads (and drops) what arrives, answering
// the gateway's pings, until the connection ends.
func (f *fleet) reconnect(d *device) error {
	if d.conn != nil {
		select {
		case <-d.done:
			d.conn.Close()
		default:
			return nil
		}
	}
	c, err := authenticate(f.ws[d.node], f.tokens[d.user])
	if err != nil {
		return err
	}
	d.conn, d.done = c, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if bytes.Equal(p, []byte(`{"type":"ping"}`)) {
				c.WriteMessage(wstest.TextMessage, []byte(`{"type":"pong"}`))
			}
		}
	}(d.done)
	return nil
}

// authenticate connects to url and waits for the welcome.
func authenticate(url, token string) (*wstest.Conn, error) {
	c, _, err := wstest.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(wstest.TextMessage, []byte(`{"type":"auth","token":"`+token+`"}`)); err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, err
	}
	var m struct{ Type string }
	if json.Unmarshal(p, &m) != nil || m.Type != "welcome" {
		c.Close()
		return nil, fmt.Errorf("got %s, want a welcome", p)
	}
	c.SetReadDeadline(time.Time{})
	return c, nil
}

var (
	addrRE = regexp.MustCompile(`127\.0\.0\.1:([0-9]+)`)
	binRE  = regexp.MustCompile(`(^|[\s;&|(=])bin/([a-z][a-z-]*)`)
)

// localize rewrites a documented command for the test's fleet: its
// addresses and its binaries.
func (f *fleet) localize(t *testing.T, ex *example, s string) string {
	t.Helper()
	s = addrRE.ReplaceAllStringFunc(s, func(a string) string {
		port := addrRE.FindStringSubmatch(a)[1]
		addr, ok := f.addrs[port]
		if !ok {
			t.Fatalf("%v: %s is no address of the fleet the examples run against", ex, a)
		}
		return addr
	})
	return binRE.ReplaceAllStringFunc(s, func(b string) string {
		m := binRE.FindStringSubmatch(b)
		path, ok := f.bin[m[2]]
		if !ok {
			t.Fatalf("%v: bin/%s is not built for the examples", ex, m[2])
		}
		return m[1] + path
	})
}

// run runs an example and checks its exit status and answer.
func (f *fleet) run(t *testing.T, ex *example) {
	t.Helper()
	switch ex.lang {
	case "sh":
		out, code, err := f.script(f.localize(t, ex, ex.body))
		if err != nil {
			t.Fatalf("%v: %v\n%s", ex, err, out)
		}
		if code != ex.exit {
			t.Fatalf("%v: exit status %d, want %d; output:\n%s", ex, code, ex.exit, out)
		}
		if ex.answerLine == 0 {
			return
		}
		if err := matchOutput(ex.answer, out); err != nil {
			t.Errorf("%v: the output is not the answer at %s:%d: %v\noutput:\n%s\nanswer:\n%s",
				ex, ex.file, ex.answerLine, err, out, ex.answer)
		}
	case "yaml":
		values := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(values, []byte(ex.body), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, script := range []string{
			"make -s helm-template VALUES=" + values + " HELM_LINT=1",
			"make -s helm-template VALUES=" + values + " >/dev/null",
		} {
			out, code, err := f.script(script)
			if err != nil || code != 0 {
				t.Fatalf("%v: %s: exit status %d, %v\n%s", ex, script, code, err, out)
			}
		}
	case "text":
		if err := f.session(t, ex); err != nil {
			t.Fatalf("%v: %v", ex, err)
		}
	}
}

// script runs a bash script from the repository's root and returns its
// output (standard output and standard error) and exit status.
func (f *fleet) script(script string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = f.root
	cmd.Env = f.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The whole process group, should an example leave a process behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), -1, fmt.Errorf("did not end within 2 minutes")
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), exit.ExitCode(), nil
	}
	return out.String(), 0, err
}

// session plays a WebSocket session on gw-1. A session still open at its
// end, after a welcome, is closed once the router's view counts it (see
// settle).
func (f *fleet) session(t *testing.T, ex *example) error {
	t.Helper()
	c, _, err := wstest.Dial(f.ws["gw-1"], nil)
	if err != nil {
		return err
	}
	defer c.Close()
	closed, welcomed := false, false
	for i, line := range splitLines(ex.body) {
		at := fmt.Sprintf("line %d %q", ex.line+2+i, line)
		if closed {
			return fmt.Errorf("%s: after the close", at)
		}
		switch {
		case strings.HasPrefix(line, "> "):
			frame := strings.ReplaceAll(line[2:], "$TOKEN", f.tokens["alice"])
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(wstest.TextMessage, []byte(frame)); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		case strings.HasPrefix(line, "< close"):
			code, reason, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "< close")), " ")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, p, err := c.ReadMessage()
			var ce *wstest.CloseError
			if !errors.As(err, &ce) {
				return fmt.Errorf("%s: got %s (%v), want a close frame", at, p, err)
			}
			if strconv.Itoa(ce.Code) != code || (reason != "" && !glob(reason, ce.Text)) {
				return fmt.Errorf("%s: got close %d %q", at, ce.Code, ce.Text)
			}
			closed = true
		case strings.HasPrefix(line, "< "):
			want, err := decodeOne(quoteEllipses(line[2:]))
			if err != nil {
				return fmt.Errorf("%s: not JSON: %v", at, err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, p, err := c.ReadMessage()
			if err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
			got, err := decodeOne(string(p))
			if err != nil {
				return fmt.Errorf("%s: got %s: %v", at, p, err)
			}
			if err := matchJSON("$", want, got); err != nil {
				return fmt.Errorf("%s: got %s: %v", at, p, err)
			}
			if m, ok := got.(map[string]any); ok && m["type"] == "welcome" {
				welcomed = true
			}
		case strings.HasPrefix(line, "$ "):
			out, code, err := f.script(f.localize(t, ex, line[2:]))
			if err != nil || code != 0 {
				return fmt.Errorf("%s: exit status %d, %v\n%s", at, code, err, out)
			}
		default:
			return fmt.Errorf("%s: want \"> FRAME\", \"< FRAME\", \"< close CODE [REASON]\" or \"$ COMMAND\"", at)
		}
	}
	if !welcomed || closed {
		return nil
	}
	want := `{"user":"alice","online":true,"devices":4,"nodes":[{"node":"gw-1","devices":3},{"node":"gw-2","devices":1}]}`
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := f.call(http.MethodGet, "/v1/users/alice/presence", "")
		if err == nil {
			if err = matchOutput(want, got); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the router did not count the session's connection within 15s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
)

// The examples of docs/loadtest.md. Each command the guide shows is marked
// by a comment on the line before its block:
//
//	<!-- example: exit N[; own fleet][; test with --flag value …][; shows row, row] -->
//
// A ```sh block runs as a bash script; in another block the line starting
// with "$ " is the command (the rest is its output), else the bin/loadtest
// command in it (devfleet's printed command). The fenced block right after
// the command block, if it is not a script, is the output it shows.
//
// TestDocExamples runs each with bin/ holding loadtest, gateway and router
// built from this tree (or $WSFLEET_TEST_BIN_DIR), against a fleet started here:
// every 127.0.0.1 port of the guide is mapped to the test's (8080 and 28080
// the gateway, 8081 and 28081 its /metrics, 8090 and 28090 the router,
// 4222 and 28222 NATS, 29080 a gateway admitting 1,000 upgrades/s, 28180
// and 28190 ports where nothing listens); LOADTEST_URL, LOADTEST_ROUTER_URL
// and LOADTEST_NATS_URL point the defaults at it and LOADTEST_JWT_HS256_SECRET
// and LOADTEST_API_KEY hold its secret and key, which also replace the
// values of --jwt-hs256-secret and --api-key shown. "own fleet" blocks start
// their gateway and router themselves (on free ports; "make" lines are
// skipped). "test with" replaces the values of the flags it names in the
// bin/loadtest command (or adds them) to keep the runs short.
//
// It checks the exit status; that each line of the shown output has its
// like in the real one, by label, figures aside (a report's sections, and
// the rows it always prints; a row printed only when something happened,
// such as "refused (retried)", only when the marker says it "shows" it);
// that the FAILED:, loadtest: and verdict lines are the same once numbers
// are left out; and that a --json file holds every top-level key the guide
// lists, and the exit status.

const docPath = "../docs/loadtest.md"

type docExample struct {
	line     int // of the marker, in docs/loadtest.md
	exit     int
	ownFleet bool
	with     [][2]string // flag, value
	shows    []string    // rows printed only when something happened, which the run must show
	script   bool        // a ```sh block
	command  string
	output   string
}

var (
	markerRE = regexp.MustCompile(`^<!-- example: (.*) -->$`)
	numRE    = regexp.MustCompile(`[0-9][0-9,.]*`)
	portRE   = regexp.MustCompile(`127\.0\.0\.1:([0-9]+)`)
)

// parseDocExamples reads the marked examples and checks that no block
// showing a bin/loadtest command is left unmarked.
func parseDocExamples(t *testing.T, text string) []docExample {
	t.Helper()
	lines := strings.Split(text, "\n")
	type block struct {
		start, end int // fence lines
		lang       string
		body       string
	}
	var blocks []block
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "```") {
			continue
		}
		b := block{start: i, lang: strings.TrimPrefix(lines[i], "```")}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
			j++
		}
		if j == len(lines) {
			t.Fatalf("%s:%d: unclosed block", docPath, i+1)
		}
		b.end, b.body = j, strings.Join(lines[i+1:j], "\n")
		blocks = append(blocks, b)
		i = j
	}
	var out []docExample
	used := map[int]bool{}
	for bi, b := range blocks {
		k := b.start - 1
		if k < 0 {
			continue
		}
		m := markerRE.FindStringSubmatch(lines[k])
		if m == nil {
			continue
		}
		ex := docExample{line: k + 1, exit: -1, script: b.lang == "sh"}
		for _, opt := range strings.Split(m[1], ";") {
			opt = strings.TrimSpace(opt)
			switch {
			case strings.HasPrefix(opt, "exit "):
				n, err := strconv.Atoi(strings.TrimPrefix(opt, "exit "))
				if err != nil {
					t.Fatalf("%s:%d: %q", docPath, k+1, opt)
				}
				ex.exit = n
			case opt == "own fleet":
				ex.ownFleet = true
			case strings.HasPrefix(opt, "shows "):
				for _, r := range strings.Split(strings.TrimPrefix(opt, "shows "), ",") {
					ex.shows = append(ex.shows, strings.TrimSpace(r))
				}
			case strings.HasPrefix(opt, "test with "):
				f := strings.Fields(strings.TrimPrefix(opt, "test with "))
				if len(f)%2 != 0 {
					t.Fatalf("%s:%d: test with: want --flag value pairs", docPath, k+1)
				}
				for i := 0; i < len(f); i += 2 {
					ex.with = append(ex.with, [2]string{f[i], f[i+1]})
				}
			default:
				t.Fatalf("%s:%d: unknown example option %q", docPath, k+1, opt)
			}
		}
		if ex.exit < 0 {
			t.Fatalf("%s:%d: the example has no exit status", docPath, k+1)
		}
		used[bi] = true
		switch {
		case ex.script:
			ex.command = b.body
		case strings.Contains(b.body, "\n$ ") || strings.HasPrefix(b.body, "$ "):
			body := strings.Split(b.body, "\n")
			for i, l := range body {
				if strings.HasPrefix(l, "$ ") {
					ex.command = strings.TrimPrefix(l, "$ ")
					ex.output = strings.Join(body[i+1:], "\n")
					break
				}
			}
		default:
			ex.command = loadtestCommand(b.body)
		}
		if ex.command == "" {
			t.Fatalf("%s:%d: no command in the block", docPath, k+1)
		}
		// the output shown next
		if bi+1 < len(blocks) && ex.output == "" {
			n := blocks[bi+1]
			between := strings.TrimSpace(strings.Join(lines[b.end+1:n.start], "\n"))
			if between == "" && n.lang != "sh" {
				ex.output = n.body
				used[bi+1] = true
			}
		}
		out = append(out, ex)
	}
	for bi, b := range blocks {
		if !used[bi] && regexp.MustCompile(`(^|\s)bin/loadtest \w`).MatchString(b.body) {
			t.Errorf("%s:%d: a bin/loadtest command without an <!-- example: … --> marker", docPath, b.start+1)
		}
	}
	return out
}

// loadtestCommand cuts the bin/loadtest command, with its continuation
// lines, out of a block.
func loadtestCommand(body string) string {
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "bin/loadtest ") {
			cmd := []string{t}
			for k := i; k+1 < len(lines) && strings.HasSuffix(strings.TrimSpace(lines[k]), `\`); k++ {
				cmd = append(cmd, lines[k+1])
			}
			return strings.Join(cmd, "\n")
		}
	}
	return ""
}

// withFlags replaces the value of each flag of with in the bin/loadtest
// command of script, or adds the flag to it.
func withFlags(t *testing.T, script string, with [][2]string) string {
	t.Helper()
	lines := strings.Split(script, "\n")
	first := -1
	for i, l := range lines {
		if strings.Contains(l, "bin/loadtest ") {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatalf("no bin/loadtest command in\n%s", script)
	}
	last := first
	for last+1 < len(lines) && strings.HasSuffix(strings.TrimSpace(lines[last]), `\`) {
		last++
	}
	cmd := strings.Join(lines[first:last+1], "\n")
	for _, fv := range with {
		re := regexp.MustCompile(regexp.QuoteMeta(fv[0]) + `([ =])[^ \n\\]+`)
		if re.MatchString(cmd) {
			cmd = re.ReplaceAllString(cmd, fv[0]+"${1}"+fv[1])
			continue
		}
		bg := strings.HasSuffix(strings.TrimSpace(cmd), "&")
		cmd = strings.TrimSuffix(strings.TrimSpace(cmd), "&")
		cmd = strings.TrimRight(cmd, " ") + " " + fv[0] + " " + fv[1]
		if bg {
			cmd += " &"
		}
	}
	return strings.Join(append(append(append([]string(nil), lines[:first]...), cmd), lines[last+1:]...), "\n")
}

// alwaysRows are the indented rows the report prints whenever their
// section is there; the others say that something happened (the memory
// rows: that the gateway's RSS grew from a start with no connection; the
// test's gateway is the test process, whose RSS need not).
var alwaysRows = map[string]bool{
	"transport": true, "target": true, "connect rate": true, "attempts": true, "handshake (connect → welcome)": true,
	"upgrade (connect → #)": true, "response (connect → #)": true,
	"published": true, "delivered": true, "end-to-end latency": true, "drain ended": true, "##": true, "publish → receipt": true,
	"dropped": true, "drop → welcome again": true, "closed": true,
	"subscribed": true, "subscribe (sent → subscribed)": true, "fan-out (publish → last receipt)": true, "publish → first receipt": true,
	"receivers per message": true, "topics": true, "rooms failed": true,
	"start": true, "peak": true, "before close": true, "end": true,
}

// checked reports whether the label of line l of a shown output must be
// in the run's: top-level lines (sections, verdict, limits: …) but
// "note:" and "problem", and the rows of alwaysRows or shows.
func checked(l string, shows []string) bool {
	lb := label(l)
	switch {
	case lb == "" || lb == "note:" || lb == "problem":
		return false
	case !strings.HasPrefix(l, " "):
		return true
	case alwaysRows[lb]:
		return true
	}
	for _, s := range shows {
		if s == lb {
			return true
		}
	}
	return false
}

// labels are what the lines of a report say, figures aside: the label of
// each line (before its first run of two spaces, or its colon for
// "limits:" and the like), numbers replaced by #.
func labels(out string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if lb := label(l); lb != "" {
			m[lb] = true
		}
	}
	return m
}

func label(l string) string {
	t := strings.TrimSpace(l)
	switch {
	case t == "", strings.HasPrefix(t, "["), strings.HasPrefix(t, "…"), strings.HasPrefix(t, "─"), strings.HasPrefix(t, "FAILED:"):
		return ""
	case strings.HasPrefix(t, "wsfleet loadtest "):
		return strings.SplitN(t, ":", 2)[0]
	}
	if i := strings.Index(t, ": "); i > 0 && !strings.Contains(t[:i], " ") {
		return t[:i+1] // limits:, plan:, advice:, note:, loadtest:
	}
	if i := strings.Index(t, "  "); i > 0 {
		t = t[:i]
	}
	return numRE.ReplaceAllString(t, "#")
}

// exact are the lines that must appear as shown, numbers aside.
func exact(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "FAILED:") || strings.HasPrefix(t, "loadtest:") || strings.HasPrefix(t, "verdict ") {
			ls = append(ls, strings.Join(strings.Fields(numRE.ReplaceAllString(t, "#")), " "))
		}
	}
	return ls
}

// docBinaries returns a directory holding loadtest, gateway and router:
// $WSFLEET_TEST_BIN_DIR, or built from this tree.
func docBinaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("WSFLEET_TEST_BIN_DIR"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/loadtest", "./cmd/gateway", "./cmd/router")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// freePort returns a port on 127.0.0.1 nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func hostPort(raw string) string {
	raw = strings.TrimPrefix(strings.TrimPrefix(raw, "ws://"), "http://")
	raw = strings.TrimPrefix(raw, "nats://")
	return strings.SplitN(raw, "/", 2)[0]
}

// docJSONKeys are the top-level keys the guide lists for --json.
func docJSONKeys(t *testing.T, text string) []string {
	t.Helper()
	m := regexp.MustCompile("(?s)Its top-level keys:\\s*`([^`]*)`").FindStringSubmatch(text)
	if m == nil {
		t.Fatal("docs/loadtest.md lists no top-level keys")
	}
	var keys []string
	for _, k := range strings.Split(m[1], ",") {
		keys = append(keys, strings.TrimSpace(k))
	}
	return keys
}

func TestDocExamples(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	examples := parseDocExamples(t, text)
	if len(examples) < 10 {
		t.Fatalf("%d examples marked in %s", len(examples), docPath)
	}
	keys := docJSONKeys(t, text)
	bin := docBinaries(t)

	f := startFleet(t)
	slow := f.startGateway(t, "slow", func(o *gateway.Options) { o.MaxConnectRate = 1000 })
	ports := map[string]string{
		"8080": hostPort(f.wsURL), "28080": hostPort(f.wsURL),
		"8081": hostPort(f.metrics), "28081": hostPort(f.metrics),
		"8090": hostPort(f.routerURL), "28090": hostPort(f.routerURL),
		"4222": hostPort(f.natsURL), "28222": hostPort(f.natsURL),
		"29080": hostPort(slow),
		"28180": "127.0.0.1:" + freePort(t), "28190": "127.0.0.1:" + freePort(t),
	}

	for _, ex := range examples {
		t.Run(fmt.Sprintf("line%d", ex.line), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Symlink(bin, filepath.Join(dir, "bin")); err != nil {
				t.Fatal(err)
			}
			m, secret, key := ports, testSecret, testAPIKey
			if ex.ownFleet {
				m = map[string]string{}
				for _, p := range []string{"8080", "8081", "8090", "8091", "4222"} {
					m[p] = "127.0.0.1:" + freePort(t)
				}
			}
			script := ex.command
			if !ex.script {
				script = strings.Join(strings.Fields(strings.ReplaceAll(script, "\\\n", " ")), " ")
			}
			var kept []string
			for _, l := range strings.Split(script, "\n") {
				if !strings.HasPrefix(l, "make ") {
					kept = append(kept, l)
				}
			}
			script = strings.Join(kept, "\n")
			var unmapped []string
			script = portRE.ReplaceAllStringFunc(script, func(s string) string {
				p := strings.TrimPrefix(s, "127.0.0.1:")
				if a, ok := m[p]; ok {
					return a
				}
				unmapped = append(unmapped, p)
				return s
			})
			if len(unmapped) > 0 {
				t.Fatalf("ports %v have no mapping in the test", unmapped)
			}
			if !ex.ownFleet {
				script = regexp.MustCompile(`--api-key[ =][^ \n\\]+`).ReplaceAllString(script, "--api-key "+key)
				script = regexp.MustCompile(`--jwt-hs256-secret[ =][^ \n\\]+`).ReplaceAllString(script, "--jwt-hs256-secret "+secret)
				script = regexp.MustCompile(`(LOADTEST_JWT_HS256_SECRET)=[^ \n]+`).ReplaceAllString(script, "${1}="+secret)
				script = regexp.MustCompile(`(export LOADTEST_API_KEY)=[^ \n]+`).ReplaceAllString(script, "${1}="+key)
			}
			script = withFlags(t, script, ex.with)

			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
				"LOADTEST_URL=ws://" + m["8080"] + "/ws", "LOADTEST_ROUTER_URL=http://" + m["8090"], "LOADTEST_NATS_URL=nats://" + m["4222"]}
			if !ex.ownFleet {
				env = append(env, "LOADTEST_JWT_HS256_SECRET="+secret, "LOADTEST_API_KEY="+key)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-c", "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"+script)
			cmd.Dir, cmd.Env = dir, env
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Start()
			if err != nil {
				t.Fatal(err)
			}
			pgid := cmd.Process.Pid
			err = cmd.Wait()
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // what the script left behind
			code := cmd.ProcessState.ExitCode()
			t.Logf("%s:%d: exit %d in %.1f s\n%s", docPath, ex.line, code, time.Since(start).Seconds(), script)
			if code != ex.exit {
				t.Fatalf("exit status %d (%v), want %d; output:\n%s", code, err, ex.exit, out.String())
			}
			got := out.String()
			have := labels(got)
			shown := labels(ex.output)
			for _, s := range ex.shows {
				if !shown[s] {
					t.Errorf("%s:%d: the marker says it shows %q; the output shown has no such row", docPath, ex.line, s)
				}
			}
			for _, l := range strings.Split(ex.output, "\n") {
				if lb := label(l); checked(l, ex.shows) && !have[lb] {
					t.Errorf("the output has no line %q (shown: %q); output:\n%s", lb, strings.TrimSpace(l), got)
				}
			}
			gotExact := map[string]bool{}
			for _, l := range exact(got) {
				gotExact[l] = true
			}
			for _, l := range exact(ex.output) {
				if !gotExact[l] {
					t.Errorf("the output has no line %q; output:\n%s", l, got)
				}
			}
			if jm := regexp.MustCompile(`--json[ =]([^ \n\\]+)`).FindStringSubmatch(script); jm != nil && ex.exit != ExitBadFlags {
				checkJSONFile(t, filepath.Join(dir, jm[1]), keys, ex.exit)
			}
		})
	}
}

// checkJSONFile checks a --json file: every documented top-level key, and
// the exit status.
func checkJSONFile(t *testing.T, path string, keys []string, exit int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("--json: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatalf("--json: %v", err)
	}
	for _, k := range keys {
		if _, ok := top[k]; !ok {
			t.Errorf("--json %s has no %q key", filepath.Base(path), k)
		}
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExitStatus != exit {
		t.Errorf("--json exit_status %d, want %d", res.ExitStatus, exit)
	}
}

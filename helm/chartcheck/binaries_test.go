package chartcheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// The binaries the chart runs, built from this repository (or taken from
// WSFLEET_TEST_BIN_DIR when set, e.g. to bin/), and the flags
// their --help lists with the environment variable of each.
type binaries struct {
	dir    string
	flags  map[string]map[string]string // binary -> flag -> WSFLEET_* variable
	shared map[string]map[string]string // binary -> flag -> its shared WSFLEET_<FLAG> variable, for the flags that have one
	err    error
}

var (
	binOnce sync.Once
	bins    binaries
	builtIn string // the temporary directory the binaries were built in
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtIn != "" {
		os.RemoveAll(builtIn)
	}
	os.Exit(code)
}

// commands the tests need; loadtest is optional while it is being written.
var required = []string{"gateway", "router"}

func getBinaries(t *testing.T) *binaries {
	t.Helper()
	binOnce.Do(func() {
		bins.flags = map[string]map[string]string{}
		bins.shared = map[string]map[string]string{}
		bins.dir = os.Getenv("WSFLEET_TEST_BIN_DIR")
		if bins.dir == "" {
			dir, err := os.MkdirTemp("", "wsfleet-chart-bin")
			if err != nil {
				bins.err = err
				return
			}
			bins.dir, builtIn = dir, dir
			for _, c := range append(append([]string(nil), required...), "loadtest") {
				if _, err := os.Stat(filepath.Join(repoRoot, "cmd", c, "main.go")); err != nil {
					continue
				}
				cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c)
				cmd.Dir = repoRoot
				if out, err := cmd.CombinedOutput(); err != nil && c != "loadtest" {
					bins.err = &buildError{c, string(out)}
					return
				}
			}
		} else if abs, err := filepath.Abs(bins.dir); err == nil {
			bins.dir = abs
		}
		for _, c := range append(append([]string(nil), required...), "loadtest") {
			p := filepath.Join(bins.dir, c)
			if _, err := os.Stat(p); err != nil {
				if c != "loadtest" {
					bins.err = err
					return
				}
				continue
			}
			var out bytes.Buffer
			cmd := exec.Command(p, "--help")
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			_ = cmd.Start()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			bins.flags[c] = parseHelp(out.String())
			bins.shared[c] = parseSharedHelp(out.String())
		}
	})
	if bins.err != nil {
		t.Fatalf("the gateway and router binaries: %v", bins.err)
	}
	return &bins
}

type buildError struct{ cmd, out string }

func (e *buildError) Error() string { return "go build ./cmd/" + e.cmd + ":\n" + e.out }

var (
	helpFlag   = regexp.MustCompile(`(?m)^\s+--([a-z0-9][a-z0-9-]*)\b`)
	helpEnv    = regexp.MustCompile(`\benv ([A-Z][A-Z0-9_]+)`)
	helpShared = regexp.MustCompile(`\(or (WSFLEET_[A-Z0-9_]+), shared`)
)

// parseHelp reads flagenv's usage: each flag on its own line ("  --name"),
// its description, then "default ..., env WSFLEET_NAME". Flags without an
// environment variable map to "".
func parseHelp(help string) map[string]string {
	flags := map[string]string{}
	locs := helpFlag.FindAllStringSubmatchIndex(help, -1)
	for i, l := range locs {
		end := len(help)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		f := help[l[2]:l[3]]
		env := ""
		if m := helpEnv.FindStringSubmatch(help[l[1]:end]); m != nil {
			env = m[1]
		}
		flags[f] = env
	}
	return flags
}

// parseSharedHelp reads the shared variable flagenv's usage shows after a
// fleet binary's own ("env WSFLEET_GATEWAY_RESUME (or WSFLEET_RESUME,
// shared by the fleet's binaries)") for each flag that has one.
func parseSharedHelp(help string) map[string]string {
	shared := map[string]string{}
	locs := helpFlag.FindAllStringSubmatchIndex(help, -1)
	for i, l := range locs {
		end := len(help)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		if m := helpShared.FindStringSubmatch(help[l[1]:end]); m != nil {
			shared[help[l[2]:l[3]]] = m[1]
		}
	}
	return shared
}

// envFlags maps each WSFLEET_* variable a binary reads to its flag: its
// own (WSFLEET_GATEWAY_*) and the shared ones (WSFLEET_RESUME).
func (b *binaries) envFlags(bin string) map[string]string {
	out := map[string]string{}
	for f, e := range b.flags[bin] {
		if e != "" {
			out[e] = f
		}
	}
	for f, e := range b.shared[bin] {
		out[e] = f
	}
	return out
}

func (b *binaries) path(bin string) string { return filepath.Join(b.dir, bin) }

package chartcheck

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// helpOf runs `bin args... --help` and returns its output.
func helpOf(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "--help")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	_ = cmd.Run()
	return out.String()
}

// testPod is the `helm test` hook's pod and its loadtest container.
func testPod(t *testing.T, o *objects) (*corev1.Pod, *corev1.Container) {
	t.Helper()
	p := o.pods[name("test-deliver")]
	if p == nil {
		return nil, nil
	}
	return p, container(&p.Spec, "loadtest")
}

// The hook runs `loadtest deliver` with flags and LOADTEST_* variables the
// binary has (checked against its --help when cmd/loadtest builds).
func TestHelmTestHook(t *testing.T) {
	b := getBinaries(t)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			p, c := testPod(t, o)
			if want := o.value("tests.enabled") == true; want != (p != nil) {
				t.Fatalf("tests.enabled %v, test pod rendered %v", want, p != nil)
			}
			if p == nil {
				return
			}
			if p.Annotations["helm.sh/hook"] != "test" || p.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("test pod: hook %q, restartPolicy %s", p.Annotations["helm.sh/hook"], p.Spec.RestartPolicy)
			}
			if c == nil || len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/loadtest" || len(c.Args) == 0 {
				t.Fatalf("test container: %+v", c)
			}
			for _, a := range c.Args {
				if strings.Contains(a, "$(") {
					t.Errorf("argument %q expands a variable: secrets go in through LOADTEST_* variables", a)
				}
			}
			// The URLs name the rendered Services and ports.
			for i, a := range c.Args {
				if (a == "--url" || a == "--router-url") && i+1 < len(c.Args) {
					u, err := url.Parse(c.Args[i+1])
					if err != nil {
						t.Fatalf("%s %q: %v", a, c.Args[i+1], err)
					}
					if a == "--url" && u.Path != "/ws" {
						t.Errorf("--url %s: the gateway upgrades only /ws", c.Args[i+1])
					}
					svc, port := u.Hostname(), u.Port()
					s := o.services[svc]
					if s == nil || len(s.Spec.Ports) == 0 || port == "" || port != strconv.Itoa(int(s.Spec.Ports[0].Port)) {
						t.Errorf("%s %s: not a rendered Service port", a, c.Args[i+1])
					}
				}
			}
			if _, ok := b.flags["loadtest"]; !ok {
				t.Logf("cmd/loadtest is not built: the hook's arguments %q are unchecked against its --help", c.Args)
				return
			}
			scenario := c.Args[0]
			if !strings.Contains(helpOf(t, b.path("loadtest")), "\n  "+scenario+" ") {
				t.Errorf("`loadtest --help` lists no scenario %q", scenario)
			}
			flags := parseHelp(helpOf(t, b.path("loadtest"), scenario))
			envs := map[string]bool{}
			for _, e := range flags {
				envs[e] = true
			}
			for _, a := range c.Args[1:] {
				if f, ok := strings.CutPrefix(a, "--"); ok {
					if _, known := flags[f]; !known {
						t.Errorf("`loadtest %s` has no flag --%s", scenario, f)
					}
				}
			}
			for _, e := range c.Env {
				if !envs[e.Name] {
					t.Errorf("`loadtest %s --help` lists no variable %s", scenario, e.Name)
				}
			}
		})
	}
}

package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func start(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestVerdicts(t *testing.T) {
	var healthy, ready atomic.Bool
	base := start(t, Config{
		Healthy: func() (bool, []string) { return healthy.Load(), []string{"an event loop stopped"} },
		Ready:   func() (bool, []string) { return ready.Load(), []string{"draining"} },
		Fields:  map[string]any{"node": "gw-1"},
	})
	for _, tc := range []struct {
		name           string
		healthy, ready bool
		path           string
		code           int
		status         string
		reasons        []any
	}{
		{"healthy", true, false, "/healthz", 200, "ok", nil},
		{"failed", false, true, "/healthz", 503, "failed", []any{"an event loop stopped"}},
		{"ready", true, true, "/readyz", 200, "ready", nil},
		{"not ready", true, false, "/readyz", 503, "unavailable", []any{"draining"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			healthy.Store(tc.healthy)
			ready.Store(tc.ready)
			code, body := get(t, base+tc.path)
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if code != tc.code || got["status"] != tc.status || got["node"] != "gw-1" {
				t.Fatalf("%d %s", code, body)
			}
			if r, _ := got["reasons"].([]any); len(r) != len(tc.reasons) || (len(r) > 0 && r[0] != tc.reasons[0]) {
				t.Fatalf("reasons %v, want %v", got["reasons"], tc.reasons)
			}
		})
	}
}

func TestDefaultsAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "admin_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Add(3)
	base := start(t, Config{Metrics: reg})
	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || strings.TrimSpace(body) != `{"status":"ready"}` {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "admin_test_total 3") {
		t.Fatalf("metrics %d %s", code, body)
	}
	// The profiler is off unless asked for.
	if code, _ := get(t, base+"/debug/pprof/heap"); code != 404 {
		t.Fatalf("pprof heap without Pprof: %d, want 404", code)
	}
	resp, err := http.Post(base+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /readyz: %d", resp.StatusCode)
	}
}

func TestPprof(t *testing.T) {
	base := start(t, Config{Pprof: true})
	if code, _ := get(t, base+"/debug/pprof/heap"); code != 200 {
		t.Fatalf("pprof heap %d", code)
	}
	// The command line may hold a secret given as a flag.
	if code, body := get(t, base+"/debug/pprof/cmdline"); code != 404 || strings.Contains(body, os.Args[0]) {
		t.Fatalf("pprof cmdline %d %q", code, body)
	}
}

func TestListenError(t *testing.T) {
	if _, err := Start(Config{Addr: "127.0.0.1:notaport"}); err == nil {
		t.Fatal("bad address accepted")
	}
}

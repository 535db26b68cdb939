//go:build benchrss

// Package rssbench measures a gateway process's resident memory per idle,
// authenticated connection (make bench-rss). It is a measurement, not a
// pass/fail test: the figures go into docs/benchmarks.md.
package rssbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsfleet/wsfleet/internal/wsframe"
)

const secret = "rss-bench-secret-0123456789abcdef-0123"

func conns() int {
	if v, err := strconv.Atoi(os.Getenv("RSS_CONNS")); err == nil && v > 0 {
		return v
	}
	return 15000
}

// rssKB reads a process's resident set from /proc (smaps_rollup: what the
// kernel charges it, in KiB).
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Rss:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	t.Fatal("no Rss in smaps_rollup")
	return 0
}

func startGateway(t *testing.T, natsURL string, extra ...string) (*exec.Cmd, string, string) {
	t.Helper()
	bin, _ := filepath.Abs("../../bin/gateway")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: run make build", bin)
	}
	// --admin-pprof: settle forces a GC through the heap profile.
	args := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-pprof", "--nats-embedded-listen", "127.0.0.1:-1", "--auth-queue", "100000"}
	if natsURL != "" {
		args = append(args, "--nats-url", natsURL)
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Env = append(os.Environ(), "WSFLEET_GATEWAY_JWT_HS256_SECRET="+secret)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "gateway started" {
			go io.Copy(io.Discard, stderr)
			return cmd, m["listen"].(string), m["admin"].(string)
		}
	}
	t.Fatal("gateway did not start")
	return nil, "", ""
}

// settle forces a GC in the gateway (through pprof) and waits for its RSS
// to stop moving.
func settle(t *testing.T, pid int, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatalf("forcing a GC: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forcing a GC: /debug/pprof/heap answered %d", resp.StatusCode)
	}
	prev := rssKB(t, pid)
	for i := 0; i < 20; i++ {
		time.Sleep(250 * time.Millisecond)
		cur := rssKB(t, pid)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	return prev
}

func upgradeAndAuth(tok string) []byte {
	req := "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	p := []byte(`{"type":"auth","token":"` + tok + `"}`)
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{9, 8, 7, 6}}
	ws.Cipher(p, h.Mask, 0)
	return append(append([]byte(req), wsframe.Append(nil, h)...), p...)
}

func connectAll(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	return connectAllClaims(t, addr, n, "")
}

// connectAllClaims is connectAll with a topics claim (raw JSON; "": none).
func connectAllClaims(t *testing.T, addr string, n int, topicsJSON string) []net.Conn {
	t.Helper()
	var extra map[string]any
	if topicsJSON != "" {
		var v any
		if err := json.Unmarshal([]byte("["+topicsJSON+"]"), &v); err != nil {
			t.Fatal(err)
		}
		extra = map[string]any{"topics": v}
	}
	return connectWith(t, addr, n, extra, upgradeAndAuth)
}

// TestIdleRSS opens RSS_CONNS (default 15,000) authenticated connections,
// one user each, and reports the gateway's RSS growth per connection, with
// the embedded NATS server in the gateway process, with NATS outside it,
// and with NATS outside it and resumable delivery (--resume).
func TestIdleRSS(t *testing.T) {
	n := conns()
	for _, mode := range []string{"embedded NATS", "external NATS", "external NATS, --resume"} {
		t.Run(mode, func(t *testing.T) {
			url := ""
			var extra []string
			if mode != "embedded NATS" {
				o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
				if mode == "external NATS, --resume" {
					o.JetStream, o.StoreDir = true, t.TempDir()
					extra = []string{"--resume", "--history-storage", "memory", "--history-max-bytes", "67108864"}
				}
				ns, err := server.NewServer(o)
				if err != nil {
					t.Fatal(err)
				}
				go ns.Start()
				if !ns.ReadyForConnections(10 * time.Second) {
					t.Fatal("nats-server did not start")
				}
				defer ns.Shutdown()
				url = ns.ClientURL()
			}
			cmd, addr, admin := startGateway(t, url, extra...)
			pid := cmd.Process.Pid
			// One connection first, so lazily built state is in the baseline.
			warm := connectAll(t, addr, 1)
			base := settle(t, pid, admin)
			start := time.Now()
			cs := connectAll(t, addr, n)
			connectTime := time.Since(start)
			time.Sleep(2 * time.Second)
			after := settle(t, pid, admin)
			if f := os.Getenv("RSS_HEAP_PROFILE"); f != "" {
				if resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1"); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					os.WriteFile(f+"."+strings.ReplaceAll(mode, " ", "-"), b, 0o644)
				}
			}
			per := float64(after-base) * 1024 / float64(n)
			fmt.Printf("RESULT mode=%q conns=%d rss_base_kib=%d rss_after_kib=%d bytes_per_conn=%.0f connect_seconds=%.2f go=%s\n",
				mode, n, base, after, per, connectTime.Seconds(), runtime.Version())
			for _, c := range append(cs, warm...) {
				c.Close()
			}
		})
	}
}

//go:build benchrss

package rssbench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsfleet/wsfleet/internal/wsframe"
)

// subscribeAll sends each connection the subscribe frames of its topics
// (topics(i) for connection i) and waits for every "subscribed".
func subscribeAll(t *testing.T, cs []net.Conn, topics func(i int) []string) {
	t.Helper()
	buf := make([]byte, 64<<10)
	const batch = 1000
	for i := 0; i < len(cs); i += batch {
		end := min(len(cs), i+batch)
		for j := i; j < end; j++ {
			var out []byte
			for _, tp := range topics(j) {
				p := []byte(`{"type":"subscribe","topic":"` + tp + `"}`)
				h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{1, 2, 3, 4}}
				ws.Cipher(p, h.Mask, 0)
				out = append(append(out, wsframe.Append(nil, h)...), p...)
			}
			if _, err := cs[j].Write(out); err != nil {
				t.Fatal(err)
			}
		}
		for j := i; j < end; j++ {
			want := len(topics(j))
			cs[j].SetReadDeadline(time.Now().Add(30 * time.Second))
			var got []byte
			for bytes.Count(got, []byte(`"subscribed"`)) < want {
				m, err := cs[j].Read(buf)
				if err != nil {
					t.Fatalf("connection %d: %d of %d subscribed: %v (%q)", j, bytes.Count(got, []byte(`"subscribed"`)), want, err, got)
				}
				got = append(got, buf[:m]...)
			}
			cs[j].SetReadDeadline(time.Time{})
		}
	}
}

// TestTopicRSS measures what topic subscriptions cost a gateway process:
// RSS_CONNS connections (15,000), RSS growth per (connection, topic) pair
// with 1 and with 10 topics per connection, each in a fresh gateway
// process (NATS in another process). "shared": every connection
// subscribes to the same topics (the pair cost alone); "own": each
// connection's topics are its own (adds each topic's cost: the node's
// topic entry and its NATS subscription).
func TestTopicRSS(t *testing.T) {
	n := conns()
	for _, tc := range []struct {
		k     int
		share string
	}{{1, "shared"}, {10, "shared"}, {1, "own"}, {10, "own"}} {
		t.Run(fmt.Sprintf("%d topics %s", tc.k, tc.share), func(t *testing.T) {
			o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
			ns, err := server.NewServer(o)
			if err != nil {
				t.Fatal(err)
			}
			go ns.Start()
			if !ns.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats-server did not start")
			}
			defer ns.Shutdown()
			cmd, addr, admin := startGateway(t, ns.ClientURL(), "--max-topics-per-connection", "100")
			pid := cmd.Process.Pid
			warm := connectAllClaims(t, addr, 1, `">"`)
			subscribeAll(t, warm, func(int) []string { return []string{"warm"} })
			cs := connectAllClaims(t, addr, n, `">"`)
			time.Sleep(2 * time.Second)
			base := settle(t, pid, admin)
			baseHeap := heapAlloc(t, admin)
			profile(t, admin, fmt.Sprintf("base-%d-%s", tc.k, tc.share))
			topics := func(i int) []string {
				out := make([]string, tc.k)
				for j := range out {
					if tc.share == "shared" {
						out[j] = "t." + strconv.Itoa(j)
					} else {
						out[j] = "c" + strconv.Itoa(i) + "." + strconv.Itoa(j)
					}
				}
				return out
			}
			start := time.Now()
			subscribeAll(t, cs, topics)
			took := time.Since(start)
			time.Sleep(2 * time.Second)
			after := settle(t, pid, admin)
			afterHeap := heapAlloc(t, admin)
			profile(t, admin, fmt.Sprintf("after-%d-%s", tc.k, tc.share))
			pairs := n * tc.k
			fmt.Printf("RESULT topics_per_conn=%d topics=%s conns=%d rss_base_kib=%d rss_after_kib=%d rss_bytes_per_pair=%.1f heap_bytes_per_pair=%.1f subscribe_seconds=%.2f go=%s\n",
				tc.k, tc.share, n, base, after, float64(after-base)*1024/float64(pairs), float64(afterHeap-baseHeap)/float64(pairs), took.Seconds(), runtime.Version())
			for _, c := range append(cs, warm...) {
				c.Close()
			}
		})
	}
}

// heapAlloc reads the gateway's live heap (go_memstats_heap_alloc_bytes;
// settle forced a GC just before).
func heapAlloc(t *testing.T, admin string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_alloc_bytes "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(f)
		}
	}
	t.Fatal("no go_memstats_heap_alloc_bytes in /metrics")
	return 0
}

// profile writes the gateway's heap profile to $RSS_HEAP_PROFILE.name
// when that is set (go tool pprof -base the base one to see what the
// subscriptions hold).
func profile(t *testing.T, admin, name string) {
	t.Helper()
	f := os.Getenv("RSS_HEAP_PROFILE")
	if f == "" {
		return
	}
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(f+"."+name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

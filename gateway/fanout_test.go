package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// TestBroadcastFloodStaysBounded publishes broadcasts far faster than the
// node can write them, for many seconds, to a few thousand connections
// that read at full speed. Every queue on the way is bounded, and a
// wake-up of a loop runs at most one broadcast before its sockets and its
// tick: so the node drops broadcasts (and counts them) instead of growing
// memory, its timers keep time (pings every heartbeat, a silent client
// closed at its idle timeout), and no client that keeps up is closed.
func TestBroadcastFloodStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20 s flood to 2,000 connections")
	}
	const (
		readers   = 2000
		flood     = 20 * time.Second
		heartbeat = 500 * time.Millisecond
		idle      = 4 * time.Second
	)
	srv := startGateway(t, func(o *gateway.Options) {
		o.Heartbeat = heartbeat
		o.IdleTimeout = idle
		o.AuthTimeout = 30 * time.Second
		o.AuthQueue = 10000
		o.MaxClientMsgsPerSec = -1
		o.DispatchQueue = 1024
		o.LoopQueueBytes = 256 << 10
	})
	clients := connectMany(t, srv, readers, "reader")

	// Readers: read everything as fast as it comes, answer with a pong
	// every 200 ms (well inside the idle timeout), and note a close.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var closed atomic.Int64
	var pong = maskedText(protocol.PongJSON)
	for _, c := range clients {
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.br.Read(buf); err != nil {
					select {
					case <-stop:
					default:
						closed.Add(1)
					}
					return
				}
			}
		}()
		go pongEvery(&wg, c.c, pong, stop)
	}

	// The observer parses what it reads and times the server's pings.
	obs := connectMany(t, srv, 1, "observer")[0]
	var pingMu sync.Mutex
	var pings []time.Time
	wg.Add(2)
	go func() {
		defer wg.Done()
		br := bufio.NewReaderSize(obs.br, 64<<10)
		buf := make([]byte, 64<<10)
		for {
			h, err := ws.ReadHeader(br)
			if err != nil || h.Length > int64(len(buf)) {
				return
			}
			p := buf[:h.Length]
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			if bytes.Equal(p, protocol.PingJSON) {
				pingMu.Lock()
				pings = append(pings, time.Now())
				pingMu.Unlock()
			}
		}
	}()
	go pongEvery(&wg, obs.c, pong, stop)

	// A silent client: it must be closed at its idle timeout, flood or not.
	silent := dial(t, wsURL(srv), nil)
	send(t, silent, map[string]any{"type": "auth", "token": token(t, "silent")})
	readType(t, silent, protocol.TypeWelcome)
	silentSince := time.Now()
	silentClosed := make(chan time.Duration, 1)
	go func() {
		for {
			if _, _, err := silent.ReadMessage(); err != nil {
				if wstest.IsCloseError(err, int(protocol.CloseHeartbeatTimeout)) {
					silentClosed <- time.Since(silentSince)
				}
				return
			}
		}
	}()

	// The flood: 1 KiB broadcasts from two publishers, as fast as NATS
	// takes them.
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse
	ctx, cancel := context.WithTimeout(context.Background(), flood)
	defer cancel()
	var published atomic.Int64
	for range 2 {
		nc := natsConn(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte("x"), 1024)
			data[0], data[len(data)-1] = '"', '"'
			for ctx.Err() == nil {
				for range 100 {
					nc.Publish(protocol.DefaultSubjectPrefix+".broadcast", data)
				}
				published.Add(100)
				nc.Flush()
			}
		}()
	}
	var maxHeap uint64
	for ctx.Err() == nil {
		time.Sleep(250 * time.Millisecond) // sampling interval
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapInuse)
	}

	select {
	case d := <-silentClosed:
		if d < idle-250*time.Millisecond || d > idle+2*time.Second {
			t.Errorf("the silent client was closed %s after its last frame, want at its %s idle timeout", d, idle)
		}
	default:
		t.Errorf("the silent client was not closed with %d during the flood (idle timeout %s)", protocol.CloseHeartbeatTimeout, idle)
	}

	pingMu.Lock()
	var maxGap time.Duration
	for i := 1; i < len(pings); i++ {
		maxGap = max(maxGap, pings[i].Sub(pings[i-1]))
	}
	n := len(pings)
	pingMu.Unlock()
	if n < int(flood/heartbeat)/2 {
		t.Errorf("%d pings in %s at a %s heartbeat", n, flood, heartbeat)
	}
	if maxGap > heartbeat+time.Second {
		t.Errorf("pings %s apart at the longest during the flood, heartbeat %s: timers starved", maxGap, heartbeat)
	}
	if c := closed.Load(); c != 0 {
		t.Errorf("%d of %d clients reading at full speed were closed (slow consumer closes %v, write timeouts %v, idle closes %v)", c, readers,
			metricValue(t, srv, "wsfleet_gateway_slow_consumer_closes_total"), metricValue(t, srv, "wsfleet_gateway_write_timeouts_total"),
			metricValue(t, srv, `wsfleet_gateway_closes_total{code="4504"}`))
	}
	loopDrops := metricValue(t, srv, `wsfleet_gateway_dropped_total{reason="loop_queue_full"}`)
	natsDrops := metricValue(t, srv, `wsfleet_gateway_dropped_total{reason="dispatch_queue_full"}`)
	if loopDrops <= 0 {
		t.Errorf("no broadcast dropped at the loops' bound (loop %v, dispatch %v) for %d broadcasts beyond capacity", loopDrops, natsDrops, published.Load())
	}
	// The heap in use of this process, which holds the node, its NATS
	// server and the clients: an unbounded queue anywhere on the way would
	// grow it by the flood's gigabytes.
	if growth := int64(maxHeap) - int64(baseHeap); growth > 128<<20 {
		t.Errorf("the heap grew by %d MiB during the flood", growth>>20)
	}
	t.Logf("%d broadcasts published in %s; drops: %v at the loops, %v at the dispatch queue; pings: %d, longest gap %s; heap growth %d MiB",
		published.Load(), flood, loopDrops, natsDrops, n, maxGap, (int64(maxHeap)-int64(baseHeap))>>20)
	close(stop)
	for _, c := range clients {
		c.c.Close()
	}
	obs.c.Close()
	wg.Wait()
}

// pongEvery writes a pong frame every 200 ms until stop is closed: a
// client that answers well inside any idle timeout.
func pongEvery(wg *sync.WaitGroup, c net.Conn, pong []byte, stop <-chan struct{}) {
	defer wg.Done()
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			c.Write(pong)
		}
	}
}

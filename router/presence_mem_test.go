//go:build presencemem

package router

// Presence memory at a million online users (docs/benchmarks.md, "Presence
// memory (router)"):
//
//	go test -tags presencemem -run TestPresenceMemory -count=1 -v ./router/
//
// It fills the view the way the tracker does (view.set per change, user
// ids as freshly allocated strings, as json.Unmarshal makes them) and
// reports the Go heap after GC per online user, then times the scans a
// node's expiry and a node's snapshot cost at that size.

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// userID returns user i's id: "user-0000042" (12 bytes) or a UUID-shaped
// 36-byte id.
func userID(i int, uuid bool) string {
	if !uuid {
		return fmt.Sprintf("user-%07d", i)
	}
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i*7919)
}

// withReader runs f while another goroutine takes the read lock in a
// loop; it returns f's duration and the reader's longest wait.
func withReader(v *view, f func()) (time.Duration, time.Duration) {
	stop, done := make(chan struct{}), make(chan time.Duration)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stop:
				done <- worst
				return
			default:
			}
			s := time.Now()
			v.mu.RLock()
			worst = max(worst, time.Since(s))
			_, _ = v.lookup("user-0000001", false)
			v.mu.RUnlock()
		}
	}()
	start := time.Now()
	f()
	took := time.Since(start)
	close(stop)
	return took.Round(time.Millisecond), (<-done).Round(10 * time.Microsecond)
}

func TestPresenceMemory(t *testing.T) {
	const users = 1_000_000
	cases := []struct {
		name  string
		nodes int
		uuid  bool
		multi int // every multi-th user also has a device on a second node (0: none)
	}{
		{"1 node, 12-byte ids", 1, false, 0},
		{"4 nodes, 12-byte ids", 4, false, 0},
		{"4 nodes, 36-byte ids", 4, true, 0},
		{"4 nodes, 12-byte ids, 10% on two nodes", 4, false, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := heapAfterGC()
			v := newView()
			now := time.Now()
			nodes := make([]*nodeInfo, tc.nodes)
			for i := range nodes {
				nodes[i], _ = v.node("gateway-node-"+strconv.Itoa(i), now)
			}
			start := time.Now()
			for i := 0; i < users; i++ {
				v.set(nodes[i%tc.nodes], userID(i, tc.uuid), 1)
				if tc.multi > 0 && i%tc.multi == 0 {
					v.set(nodes[(i+1)%tc.nodes], userID(i, tc.uuid), 1)
				}
			}
			fill := time.Since(start)
			after := heapAfterGC()
			if len(v.users) != users {
				t.Fatalf("%d users in the view", len(v.users))
			}
			perUser := float64(after-before) / users
			t.Logf("%-42s heap %6.1f MiB = %5.1f B/user (fill %s)", tc.name, float64(after-before)/(1<<20), perUser, fill.Round(time.Millisecond))

			// A snapshot of an unchanged node (a resync) updates in
			// place; a node's expiry scans the view once. Both take the
			// write lock in steps: a reader meanwhile measures its
			// longest wait.
			if tc.nodes > 1 {
				var snap []change
				for i := 1; i < users; i += tc.nodes {
					snap = append(snap, change{user: userID(i, tc.uuid), devices: 1})
				}
				took, wait := withReader(v, func() { v.replaceNode(nodes[1], snap) })
				t.Logf("%-42s snapshot of node 1 (%d users): %s, longest reader wait %s", tc.name, len(snap), took, wait)
			}
			took, wait := withReader(v, func() { v.clearNode(nodes[0]) })
			t.Logf("%-42s dropping node 0 (%d users of %d): %s, longest reader wait %s", tc.name, users/tc.nodes, users, took, wait)
			runtime.KeepAlive(v)
		})
	}
}

package gateway

import (
	"testing"
	"time"
)

// Each load signal alone makes the node shed, and none does below its
// bound; the first signal that holds names the reason.
func TestShedReason(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pending   int64
		loopLag   time.Duration
		authQueue int           // tokens waiting for a worker
		authWait  time.Duration // the last token's wait
		natsWait  time.Duration // the oldest confirmation's wait (0: none)
		want      string
	}{
		{name: "idle", want: ""},
		{name: "below every bound", pending: 3, loopLag: 900 * time.Millisecond, authQueue: 2, authWait: 900 * time.Millisecond, natsWait: 900 * time.Millisecond},
		{name: "pending at the bound", pending: 4, want: shedPending},
		{name: "loop late", loopLag: time.Second, want: shedLoopLag},
		{name: "tokens queued behind a slow worker", authQueue: 1, authWait: 2 * time.Second, want: shedAuthLag},
		{name: "a slow wait with no token queued is over", authQueue: 0, authWait: 2 * time.Second, want: ""},
		{name: "NATS confirms late", natsWait: 1500 * time.Millisecond, want: shedNATSLag},
		{name: "pending is named first", pending: 9, loopLag: 5 * time.Second, natsWait: 5 * time.Second, want: shedPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{opts: Options{MaxPendingConnects: 4, ShedLag: time.Second}}
			s.auth = &authPool{jobs: make(chan authJob, 8)}
			for range tc.authQueue {
				s.auth.jobs <- authJob{}
			}
			s.adm.pending.Store(tc.pending)
			s.adm.authWait.Store(int64(tc.authWait))
			if tc.natsWait > 0 {
				s.adm.natsSince.Store(mono() - int64(tc.natsWait) + 1)
			}
			l := &loop{s: s, lag: int64(tc.loopLag)}
			if got := l.shedReason(); got != tc.want {
				t.Fatalf("shedReason() = %q, want %q", got, tc.want)
			}
		})
	}
}

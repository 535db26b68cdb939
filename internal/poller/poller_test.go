package poller

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// checkFor polls f until it returns nil or the timeout passes.
func checkFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal(err)
}

type errString string

func (e errString) Error() string { return string(e) }

func TestPostRunsEveryTaskOnOneGoroutine(t *testing.T) {
	var (
		sum     atomic.Int64
		running atomic.Int32
		overlap atomic.Bool
	)
	p, err := New(Config[int]{OnTask: func(v int) {
		if running.Add(1) != 1 {
			overlap.Store(true)
		}
		sum.Add(int64(v))
		running.Add(-1)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	const posters, each = 8, 1000
	for g := 0; g < posters; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= each; i++ {
				if i%10 == 0 {
					p.PostAll([]int{i, 0})
				} else {
					p.Post(i)
				}
			}
		}()
	}
	wg.Wait()
	want := int64(posters * each * (each + 1) / 2)
	checkFor(t, 5*time.Second, func() error {
		if sum.Load() != want {
			return errString("tasks lost")
		}
		return nil
	})
	if overlap.Load() {
		t.Fatal("tasks ran concurrently")
	}
}

func TestTicks(t *testing.T) {
	var ticks atomic.Int32
	p, err := New(Config[int]{OnTask: func(int) {}, Tick: 5 * time.Millisecond, OnTick: func() { ticks.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	checkFor(t, 5*time.Second, func() error {
		if ticks.Load() < 5 {
			return errString("not ticking")
		}
		return nil
	})
}

func TestFdEventsAndClose(t *testing.T) {
	p, err := New(Config[int]{OnTask: func(int) {}})
	if err != nil {
		t.Fatal(err)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	got := make(chan netpoll.EpollEvent, 16)
	if err := p.Add(fds[0], EventRead|EventEdge, func(ev netpoll.EpollEvent) { got <- ev }); err != nil {
		t.Fatal(err)
	}
	unix.Write(fds[1], []byte("x"))
	select {
	case ev := <-got:
		if ev&EventRead == 0 {
			t.Fatalf("event %v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no read event")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if ev := <-got; ev != EventClosed {
		t.Fatalf("after Close got %v, want EventClosed", ev)
	}
	p.Post(1) // dropped, must not touch the closed eventfd
}

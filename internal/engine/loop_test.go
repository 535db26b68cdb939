package engine

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	p, err := New(Config[int]{OnTask: func(v *int) bool {
		if running.Add(1) != 1 {
			overlap.Store(true)
		}
		sum.Add(int64(*v))
		running.Add(-1)
		return false
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
					p.Post(i)
					p.Post(0)
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
	p, err := New(Config[int]{OnTask: func(*int) bool { return false }, Tick: 5 * time.Millisecond, OnTick: func() { ticks.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	time.Sleep(20 * time.Millisecond) // not ticking before StartTicks
	if ticks.Load() != 0 {
		t.Fatal("ticked before StartTicks")
	}
	if err := p.StartTicks(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		if ticks.Load() < 5 {
			return errString("not ticking")
		}
		return nil
	})
}

func TestFdEventsAndClose(t *testing.T) {
	p, err := New(Config[int]{OnTask: func(*int) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	got := make(chan Event, 16)
	if err := p.Add(fds[0], EventRead|EventEdge, func(ev Event) { got <- ev }); err != nil {
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

func TestTryPostBoundsQueuedCost(t *testing.T) {
	release := make(chan struct{})
	var ran atomic.Int64
	p, err := New(Config[int]{MaxCost: 100, OnTask: func(v *int) bool {
		if *v == 0 {
			<-release // hold the loop while droppable tasks queue up
			return false
		}
		ran.Add(int64(*v))
		return false
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Post(0)
	cases := []struct {
		name string
		cost int64
		ok   bool
	}{
		{"first fits", 40, true},
		{"second fits", 40, true},
		{"third would pass the bound", 40, false},
		{"a smaller one still fits", 20, true},
		{"nothing more", 1, false},
	}
	for _, tc := range cases {
		if got := p.TryPost(int(tc.cost), tc.cost); got != tc.ok {
			t.Fatalf("%s: TryPost = %v, want %v", tc.name, got, tc.ok)
		}
	}
	if c := p.QueuedCost(); c != 100 {
		t.Fatalf("queued cost %d, want 100", c)
	}
	// Alone in the queue, a task larger than the bound is taken.
	q, err := New(Config[int]{MaxCost: 100, OnTask: func(*int) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if !q.TryPost(1, 500) {
		t.Fatal("a task over MaxCost was refused with nothing queued")
	}
	p.Post(-1000) // lifecycle tasks are never refused
	close(release)
	checkFor(t, 5*time.Second, func() error {
		if ran.Load() != 100-1000 || p.QueuedCost() != 0 {
			return errString("queued tasks did not all run")
		}
		return nil
	})
}

// A stream of droppable tasks that keeps re-posting itself must not keep
// the loop from its socket events and its ticks: a wake-up runs only the
// work it found, and one heavy task at a time.
func TestHeavyTasksLeaveRoomForEventsAndTicks(t *testing.T) {
	var (
		ticks, heavy atomic.Int64
		p            *Loop[int]
	)
	p, err := New(Config[int]{
		Tick:         time.Millisecond,
		OnTick:       func() { ticks.Add(1) },
		HeavyPerWake: 1,
		OnTask: func(*int) bool {
			heavy.Add(1)
			time.Sleep(100 * time.Microsecond) // some work
			p.TryPost(1, 1)                    // and more of it, forever
			p.TryPost(1, 1)
			return false
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.StartTicks()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var reads atomic.Int64
	if err := p.Add(fds[0], EventRead|EventEdge, func(ev Event) {
		var b [16]byte
		for {
			if n, _ := unix.Read(fds[0], b[:]); n <= 0 {
				break
			}
			reads.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	p.TryPost(1, 1)
	checkFor(t, 5*time.Second, func() error {
		if heavy.Load() < 50 {
			return errString("heavy tasks not running")
		}
		return nil
	})
	t0 := ticks.Load()
	checkFor(t, 5*time.Second, func() error {
		if ticks.Load() < t0+20 {
			return errString("ticks starved by the task stream")
		}
		return nil
	})
	for i := 0; i < 5; i++ {
		unix.Write(fds[1], []byte("x"))
		want := int64(i + 1)
		checkFor(t, 5*time.Second, func() error {
			if reads.Load() < want {
				return errString("socket events starved by the task stream")
			}
			return nil
		})
	}
}

func TestEpollFdsAreCloseOnExec(t *testing.T) {
	p, err := New(Config[int]{OnTask: func(*int) bool { return false }, Tick: time.Second, OnTick: func() {}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	epfd, evfd := epollFds(p.ep)
	for _, fd := range []struct {
		name, kind string
		fd         int
	}{
		{"epoll", "anon_inode:[eventpoll]", epfd},
		{"easygo eventfd", "anon_inode:[eventfd]", evfd},
		{"wake eventfd", "anon_inode:[eventfd]", p.efd},
		{"timerfd", "anon_inode:[timerfd]", p.tfd},
	} {
		// The kind checks that the mirror of easygo's layout found its fds.
		if got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd.fd)); err != nil || got != fd.kind {
			t.Fatalf("%s fd %d is %q (%v), want %s", fd.name, fd.fd, got, err, fd.kind)
		}
		flags, err := unix.FcntlInt(uintptr(fd.fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Fatalf("%s fd %d: flags %#x (%v), want FD_CLOEXEC", fd.name, fd.fd, flags, err)
		}
	}
}

// A long droppable task runs one step a wake-up and keeps its place: the
// droppable tasks posted after it wait for it, while lifecycle tasks and
// socket events that come meanwhile are handled between its steps.
func TestLongTaskStepsKeepOrderAndLetOthersRun(t *testing.T) {
	type job struct {
		name  string
		steps int
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var (
		mu  sync.Mutex
		log []string
		p   *Loop[job]
	)
	record := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	p, err := New(Config[job]{
		OnTask: func(j *job) bool {
			record(j.name)
			if j.steps == 4 && j.name == "long" {
				p.Post(job{name: "lifecycle"})  // posted during the long task
				unix.Write(fds[1], []byte("x")) // and a socket event
			}
			if j.steps > 1 {
				j.steps--
				return true
			}
			return false
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Add(fds[0], EventRead|EventEdge, func(ev Event) {
		var b [8]byte
		if n, _ := unix.Read(fds[0], b[:]); n > 0 {
			record("event")
		}
	}); err != nil {
		t.Fatal(err)
	}
	p.TryPost(job{name: "long", steps: 4}, 1)
	p.TryPost(job{name: "after"}, 1)
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(log) < 7 {
			return errString("not done")
		}
		return nil
	})
	mu.Lock()
	got := log
	mu.Unlock()
	pos := func(name string, nth int) int {
		for i, s := range got {
			if s == name {
				if nth == 0 {
					return i
				}
				nth--
			}
		}
		return -1
	}
	if got[len(got)-1] != "after" || pos("long", 3) < 0 {
		t.Fatalf("ran %v: want four steps of long, then after", got)
	}
	if l := pos("lifecycle", 0); l < 0 || l > pos("long", 3) {
		t.Fatalf("ran %v: the lifecycle task waited for the long one", got)
	}
	if e := pos("event", 0); e < 0 || e > pos("long", 3) {
		t.Fatalf("ran %v: the socket event waited for the long task", got)
	}
}
